#!/usr/bin/env python3
"""Independent Shamir-over-GF(2^8) test vectors for package shamir.

Uses log/exp tables with generator 3 (the Go code multiplies bitwise), the
AES polynomial 0x11b, share = evaluations || x with x = 1..n. Coefficients
come from SHA-256 in counter mode over a label, so the vectors are fixed.
Run: python3 testdata/vectors.py > testdata/vectors.json
"""
import hashlib, itertools, json

EXP, LOG = [0] * 512, [0] * 256
v = 1
for i in range(255):
    EXP[i] = v
    LOG[v] = i
    v2 = v << 1
    if v2 & 0x100:
        v2 ^= 0x11B
    v = v2 ^ v  # multiply by 3
for i in range(255, 512):
    EXP[i] = EXP[i - 255]

def mul(a, b):
    return 0 if a == 0 or b == 0 else EXP[LOG[a] + LOG[b]]

def div(a, b):
    return 0 if a == 0 else EXP[(LOG[a] - LOG[b]) % 255]

def stream(label, n):
    out, c = b"", 0
    while len(out) < n:
        out += hashlib.sha256(label.encode() + c.to_bytes(4, "big")).digest()
        c += 1
    return out[:n]

def split(secret, coeffs, n, k):
    shares = []
    for x in range(1, n + 1):
        s = []
        for j, c0 in enumerate(secret):
            p = [c0] + list(coeffs[j * (k - 1):(j + 1) * (k - 1)])
            y, xp = 0, 1
            for c in p:
                y ^= mul(c, xp)
                xp = mul(xp, x)
            s.append(y)
        shares.append(bytes(s + [x]))
    return shares

def combine(shares):
    xs = [s[-1] for s in shares]
    out = []
    for j in range(len(shares[0]) - 1):
        y = 0
        for i, s in enumerate(shares):
            w = 1
            for m, xm in enumerate(xs):
                if m != i:
                    w = mul(w, div(xm, xm ^ xs[i]))
            y ^= mul(w, s[j])
        out.append(y)
    return bytes(out)

cases = []
for name, secret, n, k in [
    ("one byte 2 of 3", b"\x42", 3, 2),
    ("ascii 3 of 5", b"hello, shamir", 5, 3),
    ("32 bytes 2 of 3", bytes(range(32)), 3, 2),
    ("32 bytes 5 of 5", stream("secret", 32), 5, 5),
    ("1 of 1", b"\x00\xff", 1, 1),
    ("16 bytes 7 of 10", stream("s16", 16), 10, 7),
]:
    coeffs = stream(name, len(secret) * (k - 1))
    shares = split(secret, coeffs, n, k)
    for sub in itertools.combinations(shares, k):
        assert combine(list(sub)) == secret
    cases.append({"name": name, "secret": secret.hex(), "n": n, "k": k,
                  "coeffs": coeffs.hex(), "shares": [s.hex() for s in shares]})
print(json.dumps(cases, indent=1))
