#!/usr/bin/env python3
"""Independent verifier of Azure Confidential Ledger write receipts.

Usage: verify_receipt.py RECEIPT.json SERVICE_CERT.pem
       verify_receipt.py --batch < PAIRS

Exits 0 if the receipt verifies against the service certificate, 1 if it
does not (the reason goes to stderr), 2 on usage or I/O errors. RECEIPT.json
is a receipt object, in camelCase or the older snake_case, or a transaction
receipt wrapping one under "receipt".

With --batch, each line of standard input is "RECEIPT.json<TAB>CERT.pem", and
each gets one line of output, "ok" or "invalid: <reason>"; the exit code is
0 unless a file cannot be read (2).

Written from the published ACL algorithm, not from Parley's Go code, so that
the Go tests can check the two agree. Needs only the standard library and
the `cryptography` package.
"""

import base64
import binascii
import hashlib
import json
import re
import sys

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

COMMIT_EVIDENCE = re.compile(r"ce:(0|[1-9][0-9]*)\.(0|[1-9][0-9]*):[0-9a-fA-F]{64}")
MAX_UINT64 = 2**64 - 1


class Invalid(Exception):
    pass


def field(obj, camel, snake):
    if camel in obj and snake in obj:
        raise Invalid("both %s and %s" % (camel, snake))
    return obj.get(camel, obj.get(snake))


def digest(value, name):
    if not isinstance(value, str) or len(value) != 64:
        raise Invalid("%s is not 64 hex characters" % name)
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise Invalid("%s is not hex" % name)


def load_cert(pem, name):
    if not isinstance(pem, str) or not pem:
        raise Invalid("%s missing" % name)
    if pem.count("-----BEGIN") != 1:
        raise Invalid("%s is not exactly one PEM block" % name)
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError as e:
        raise Invalid("%s does not parse: %s" % (name, e))


def check_issued_by(child, parent, what):
    # The parent must be allowed to sign certificates: a CA, and with
    # keyCertSign if it restricts its key usage.
    try:
        bc = parent.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = bc.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise Invalid("%s: signer is not a CA" % what)
    try:
        ku = parent.extensions.get_extension_for_class(x509.KeyUsage).value
        if not ku.key_cert_sign:
            raise Invalid("%s: signer may not sign certificates" % what)
    except x509.ExtensionNotFound:
        pass
    key = parent.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise Invalid("%s: signer key is not EC" % what)
    try:
        key.verify(
            child.signature,
            child.tbs_certificate_bytes,
            ec.ECDSA(child.signature_hash_algorithm),
        )
    except (InvalidSignature, ValueError, TypeError) as e:
        raise Invalid("%s: signature does not verify (%r)" % (what, e))


def verify(receipt, service_cert):
    if not isinstance(receipt, dict):
        raise Invalid("receipt is not an object")
    lc = field(receipt, "leafComponents", "leaf_components")
    if not isinstance(lc, dict):
        raise Invalid("no leaf components")
    ws = digest(field(lc, "writeSetDigest", "write_set_digest"), "writeSetDigest")
    claims = digest(field(lc, "claimsDigest", "claims_digest"), "claimsDigest")
    ce = field(lc, "commitEvidence", "commit_evidence")
    if not isinstance(ce, str):
        raise Invalid("no commit evidence")
    m = COMMIT_EVIDENCE.fullmatch(ce)
    if not m or int(m.group(1)) > MAX_UINT64 or int(m.group(2)) > MAX_UINT64:
        raise Invalid("commit evidence %r is malformed" % ce)

    leaf = hashlib.sha256(ws + hashlib.sha256(ce.encode()).digest() + claims).digest()
    if receipt.get("leaf"):
        if digest(receipt["leaf"], "leaf") != leaf:
            raise Invalid("stated leaf differs")

    proof = receipt.get("proof")
    if not isinstance(proof, list) or len(proof) > 64:
        raise Invalid("bad proof")
    current = leaf
    for i, element in enumerate(proof):
        if not isinstance(element, dict):
            raise Invalid("proof element %d is not an object" % i)
        left, right = element.get("left"), element.get("right")
        if bool(left) == bool(right):
            raise Invalid("proof element %d needs exactly one of left, right" % i)
        if left:
            current = hashlib.sha256(digest(left, "left") + current).digest()
        else:
            current = hashlib.sha256(current + digest(right, "right")).digest()
    root = current
    if receipt.get("root"):
        if digest(receipt["root"], "root") != root:
            raise Invalid("stated root differs")

    node_cert = load_cert(receipt.get("cert"), "node certificate")
    node_key = node_cert.public_key()
    if not isinstance(node_key, ec.EllipticCurvePublicKey):
        raise Invalid("node key is not EC")
    spki = node_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    node_id = digest(field(receipt, "nodeId", "node_id"), "nodeId")
    if hashlib.sha256(spki).digest() != node_id:
        raise Invalid("node id does not match the node certificate")

    signature = receipt.get("signature")
    if not isinstance(signature, str):
        raise Invalid("no signature")
    try:
        sig = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid("signature is not base64")
    try:
        node_key.verify(sig, root, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except (InvalidSignature, ValueError) as e:
        raise Invalid("signature does not verify (%r)" % e)

    endorsements = field(receipt, "serviceEndorsements", "service_endorsements") or []
    if not isinstance(endorsements, list):
        raise Invalid("service endorsements are not a list")
    chain = [load_cert(e, "service endorsement %d" % i) for i, e in enumerate(endorsements)]
    chain.append(service_cert)
    child = node_cert
    for i, parent in enumerate(chain):
        check_issued_by(child, parent, "chain link %d" % i)
        child = parent


def check(receipt_path, cert_path):
    """Returns None if the receipt verifies, else the reason it does not.
    Raises OSError or ValueError if a file cannot be read."""
    with open(receipt_path, "rb") as f:
        doc = json.load(f)
    with open(cert_path, "rb") as f:
        service_cert = x509.load_pem_x509_certificate(f.read())
    if isinstance(doc, dict) and isinstance(doc.get("receipt"), dict):
        doc = doc["receipt"]
    try:
        verify(doc, service_cert)
    except Invalid as e:
        return str(e)
    except Exception as e:  # a receipt that breaks the parser is invalid too
        return "%s: %s" % (type(e).__name__, e)
    return None


def main(argv):
    usage = "\n".join(__doc__.strip().splitlines()[2:4])
    if len(argv) == 2 and argv[1] == "--batch":
        for line in sys.stdin:
            receipt_path, cert_path = line.rstrip("\n").split("\t")
            try:
                reason = check(receipt_path, cert_path)
            except (OSError, ValueError) as e:
                print("error: %s" % e, file=sys.stderr)
                return 2
            print("ok" if reason is None else "invalid: " + reason, flush=True)
        return 0
    if len(argv) != 3:
        print(usage, file=sys.stderr)
        return 2
    try:
        reason = check(argv[1], argv[2])
    except (OSError, ValueError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    if reason is not None:
        print("invalid: %s" % reason, file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
