// Package shamir splits a secret into shares with Shamir's secret sharing
// over GF(2^8), as HashiCorp Vault's shamir package does: any k of the n
// shares give back the secret, and fewer than k reveal nothing about it.
//
// Each byte of the secret is the constant term of its own random polynomial
// of degree k−1; a share is that polynomial evaluated at one non-zero x for
// every byte, followed by x itself, so a share is one byte longer than the
// secret. The field is GF(2^8) with the AES polynomial x^8+x^4+x^3+x+1, and
// its arithmetic runs in constant time (no tables indexed by secret data).
package shamir

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
)

// Limits on inputs.
const (
	// MaxShares is the largest number of shares: x runs over the 255
	// non-zero field elements.
	MaxShares = 255
	// MaxSecretBytes bounds the secret's length.
	MaxSecretBytes = 64 << 10
)

// ErrInvalidShares is returned by Combine for shares that cannot be
// combined: none, too many, of different or bad lengths, or with a zero or
// repeated x coordinate.
var ErrInvalidShares = errors.New("invalid shares")

// Split splits secret into n shares, any k of which recombine into it
// (1 ≤ k ≤ n ≤ MaxShares). With k = 1 every share holds the secret in the
// clear. Share i has x coordinate i+1.
func Split(secret []byte, n, k int) ([][]byte, error) {
	return split(rand.Reader, secret, n, k)
}

func split(r io.Reader, secret []byte, n, k int) ([][]byte, error) {
	switch {
	case len(secret) == 0 || len(secret) > MaxSecretBytes:
		return nil, fmt.Errorf("split: secret is %d bytes, want 1 to %d", len(secret), MaxSecretBytes)
	case n < 1 || n > MaxShares:
		return nil, fmt.Errorf("split: %d shares, want 1 to %d", n, MaxShares)
	case k < 1 || k > n:
		return nil, fmt.Errorf("split: threshold %d, want 1 to %d", k, n)
	}
	// coeffs[j*(k-1)+d] is the coefficient of x^(d+1) for secret byte j.
	coeffs := make([]byte, len(secret)*(k-1))
	defer clear(coeffs)
	if _, err := io.ReadFull(r, coeffs); err != nil {
		return nil, fmt.Errorf("split: random coefficients: %w", err)
	}
	return evaluate(secret, coeffs, k, n), nil
}

// evaluate returns the n shares of secret under the polynomials whose
// higher coefficients are coeffs (k−1 per secret byte, lowest degree
// first).
func evaluate(secret, coeffs []byte, k, n int) [][]byte {
	shares := make([][]byte, n)
	for i := range shares {
		x := byte(i + 1)
		s := make([]byte, len(secret)+1)
		for j, c0 := range secret {
			p := coeffs[j*(k-1) : (j+1)*(k-1)]
			// Horner: c0 + x(c1 + x(c2 + …)).
			var y byte
			for d := len(p) - 1; d >= 0; d-- {
				y = mul(y, x) ^ p[d]
			}
			s[j] = mul(y, x) ^ c0
		}
		s[len(secret)] = x
		shares[i] = s
	}
	return shares
}

// Combine recombines shares made by Split into the secret. Given fewer
// shares than the threshold they were made with, it returns a value
// unrelated to the secret: the shares do not say their threshold.
func Combine(shares [][]byte) ([]byte, error) {
	if len(shares) == 0 || len(shares) > MaxShares {
		return nil, fmt.Errorf("combine: %d shares, want 1 to %d: %w", len(shares), MaxShares, ErrInvalidShares)
	}
	l := len(shares[0])
	if l < 2 || l > MaxSecretBytes+1 {
		return nil, fmt.Errorf("combine: share of %d bytes, want 2 to %d: %w", l, MaxSecretBytes+1, ErrInvalidShares)
	}
	xs := make([]byte, len(shares))
	var seen [256]bool
	for i, s := range shares {
		if len(s) != l {
			return nil, fmt.Errorf("combine: share %d is %d bytes, share 0 is %d: %w", i, len(s), l, ErrInvalidShares)
		}
		x := s[l-1]
		if x == 0 || seen[x] {
			return nil, fmt.Errorf("combine: share %d has x %d, zero or repeated: %w", i, x, ErrInvalidShares)
		}
		seen[x] = true
		xs[i] = x
	}
	// Lagrange basis at 0: w_i = Π_{m≠i} x_m / (x_m − x_i); subtraction is
	// XOR in GF(2^8), and x_m ≠ x_i, so no division by zero.
	ws := make([]byte, len(shares))
	for i, xi := range xs {
		num, den := byte(1), byte(1)
		for m, xm := range xs {
			if m != i {
				num = mul(num, xm)
				den = mul(den, xm^xi)
			}
		}
		ws[i] = mul(num, inv(den))
	}
	secret := make([]byte, l-1)
	for j := range secret {
		var y byte
		for i, s := range shares {
			y ^= mul(ws[i], s[j])
		}
		secret[j] = y
	}
	return secret, nil
}

// mul multiplies in GF(2^8) modulo x^8+x^4+x^3+x+1, in constant time.
func mul(a, b byte) byte {
	var p byte
	for range 8 {
		p ^= -(b & 1) & a
		hi := -(a >> 7)
		a = a<<1 ^ hi&0x1b
		b >>= 1
	}
	return p
}

// inv returns a^-1 = a^254 (0 for 0), in constant time.
func inv(a byte) byte {
	// a^254 = a^(2+4+8+16+32+64+128).
	r := byte(1)
	sq := a
	for range 7 {
		sq = mul(sq, sq)
		r = mul(r, sq)
	}
	return r
}
