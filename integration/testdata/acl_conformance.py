"""Conformance check of a Parley ledger against the real Azure Python client.

Run with Debian's /usr/bin/python3 and python3-azure (azure.confidentialledger
1.0.1) and python3-cryptography:

    acl_conformance.py ENDPOINT SERVICE_CERT_PEM CLIENT_PEM

CLIENT_PEM holds an Administrator's certificate and private key, as
ConfidentialLedgerCertificateClient wants them. Every call goes through the
SDK; every receipt the ledger returns is verified here with the ACL
algorithm (acl-ccf-reference.md section 4), written with hashlib, hmac and
cryptography only. Exits 0 and prints the final line
"acl conformance: all checks passed" on success; raises otherwise.
"""

import base64
import copy
import datetime
import hashlib
import hmac
import asyncio
import json
import os
import struct
import sys
import tempfile
import time

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import NameOID

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
)
import azure.confidentialledger._patch as ledger_patch
import azure.confidentialledger.aio._patch as ledger_aio_patch
from azure.confidentialledger import (
    ConfidentialLedgerCertificateCredential,
    ConfidentialLedgerClient,
)
from azure.confidentialledger.aio import ConfidentialLedgerClient as AsyncConfidentialLedgerClient
from azure.confidentialledger.certificate import ConfidentialLedgerCertificateClient

# Poll fast: the SDK's default interval is 0.5 s and Parley commits in ms.
POLL = 0.005
# Entries per list page on the server (docs/api.md, pageSize).
PAGE_SIZE = 100
DEFAULT_COLLECTION = "subledger:0"

CHECKS = []
# Collections of this run, unique so the script can run twice on one ledger.
_RUN = os.urandom(4).hex()
COL = {n: "%s-%s" % (n, _RUN) for n in ("conf-a", "conf-page", "conf-users", "conf-bad", "conf-other", "conf-early", "conf-async")}
# The paged collection's id needs escaping in a query and in nextLink. It
# avoids + & # % ; which SDK 1.0.1 cannot page through (on any server): its
# generated paging code decodes nextLink's query and sends the values back
# unescaped, and azure-core 1.26 does not quote them.
COL["conf-page"] += " \u00fc/?=:@!$'()*,~"


def check(name):
    """Records a passed check and prints it."""
    CHECKS.append(name)
    print("ok:", name, flush=True)


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def expect_raises(exc_type, fn, *, status=None, code=None):
    """Calls fn and asserts it raises exc_type with the given status/code."""
    try:
        fn()
    except exc_type as e:
        if status is not None:
            got = getattr(getattr(e, "response", None), "status_code", None)
            expect(got == status, "got status %r, want %r (%s)" % (got, status, e))
        if code is not None:
            got = getattr(getattr(e, "error", None), "code", None)
            expect(got == code, "got error code %r, want %r (%s)" % (got, code, e))
        return e
    raise AssertionError("no %s raised" % exc_type.__name__)


# ---------------------------------------------------------------- receipts


class ReceiptError(Exception):
    """A receipt that does not verify."""


def sha256(b):
    return hashlib.sha256(b).digest()


def hex32(s, what):
    b = bytes.fromhex(s)
    if len(b) != 32:
        raise ReceiptError("%s is %d bytes, want 32" % (what, len(b)))
    return b


def verify_receipt(receipt, service_cert):
    """Verifies an ACL write receipt against the pinned service certificate.

    Returns the signed root. Raises on any mismatch.
    """
    lc = receipt["leafComponents"]
    ce = sha256(lc["commitEvidence"].encode("utf-8"))
    leaf = sha256(
        hex32(lc["writeSetDigest"], "writeSetDigest")
        + ce
        + hex32(lc["claimsDigest"], "claimsDigest")
    )
    cur = leaf
    for step in receipt["proof"]:
        if set(step) == {"left"}:
            cur = sha256(hex32(step["left"], "proof left") + cur)
        elif set(step) == {"right"}:
            cur = sha256(cur + hex32(step["right"], "proof right"))
        else:
            raise ReceiptError("proof step %r has not exactly one of left/right" % step)

    node_cert = x509.load_pem_x509_certificate(receipt["cert"].encode("ascii"))
    node_key = node_cert.public_key()
    spki = node_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if hashlib.sha256(spki).hexdigest() != receipt["nodeId"]:
        raise ReceiptError("nodeId is not SHA-256 of the node certificate's SPKI")
    try:
        node_key.verify(
            base64.b64decode(receipt["signature"], validate=True),
            cur,
            ec.ECDSA(Prehashed(hashes.SHA256())),
        )
    except InvalidSignature as e:
        raise ReceiptError("signature over the root does not verify") from e

    chain = [node_cert]
    chain += [
        x509.load_pem_x509_certificate(p.encode("ascii"))
        for p in receipt.get("serviceEndorsements", [])
    ]
    chain.append(service_cert)
    for child, parent in zip(chain, chain[1:]):
        try:
            parent.public_key().verify(
                child.signature,
                child.tbs_certificate_bytes,
                ec.ECDSA(child.signature_hash_algorithm),
            )
        except InvalidSignature as e:
            raise ReceiptError("%s is not signed by %s" % (child.subject, parent.subject)) from e
    return cur


def ledger_entry_claims_digest(claim):
    """The claims digest of one LedgerEntryV1 application claim, as hex."""
    expect(claim["kind"] == "LedgerEntry", "claim kind %r" % claim["kind"])
    le = claim["ledgerEntry"]
    expect(le["protocol"] == "LedgerEntryV1", "claim protocol %r" % le["protocol"])
    k = base64.b64decode(le["secretKey"], validate=True)
    d = sha256(
        hmac.new(k, le["collectionId"].encode("utf-8"), hashlib.sha256).digest()
        + hmac.new(k, le["contents"].encode("utf-8"), hashlib.sha256).digest()
    )
    one = sha256(b"LedgerEntryV1" + d)
    return hashlib.sha256(struct.pack("<I", 1) + one).hexdigest()


def flip_hex(s):
    """s with its first hex digit changed."""
    return ("1" if s[0] != "1" else "2") + s[1:]


def tampered_receipts(receipt):
    """Yields (what, receipt) with one byte of the receipt changed."""
    def variant(what, f):
        r = copy.deepcopy(receipt)
        f(r)
        return what, r

    lc = "leafComponents"
    yield variant("writeSetDigest", lambda r: r[lc].__setitem__("writeSetDigest", flip_hex(r[lc]["writeSetDigest"])))
    yield variant("claimsDigest", lambda r: r[lc].__setitem__("claimsDigest", flip_hex(r[lc]["claimsDigest"])))
    yield variant("commitEvidence", lambda r: r[lc].__setitem__(
        "commitEvidence", r[lc]["commitEvidence"][:-1] + ("0" if r[lc]["commitEvidence"][-1] != "0" else "1")))

    def flip_sig(r):
        sig = bytearray(base64.b64decode(r["signature"]))
        sig[-1] ^= 0x01
        r["signature"] = base64.b64encode(bytes(sig)).decode("ascii")
    yield variant("signature", flip_sig)

    def flip_proof(r):
        step = r["proof"][0]
        side = next(iter(step))
        step[side] = flip_hex(step[side])
    if receipt["proof"]:
        yield variant("proof", flip_proof)

    def swap_side(r):
        step = r["proof"][0]
        side = next(iter(step))
        r["proof"][0] = {("right" if side == "left" else "left"): step[side]}
    if receipt["proof"]:
        yield variant("proof side", swap_side)
    yield variant("nodeId", lambda r: r.__setitem__("nodeId", flip_hex(r["nodeId"])))


# ---------------------------------------------------------------- helpers


def new_identity(common_name):
    """A fresh P-384 key and self-signed certificate, and the PEM holding both."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.utcnow()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA384())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert, pem


def fingerprints(cert):
    """The user id of cert: lowercase hex and ACL's colon-separated uppercase form."""
    h = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return h, ":".join(h[i:i + 2] for i in range(0, 64, 2)).upper()


def bounded_pages(pager, most):
    """The pages of an SDK pager holding at most `most` items: a server whose
    nextLink never ends fails here instead of looping."""
    pages, n = [], 0
    for page in pager.by_page():
        pages.append(list(page))
        n += len(pages[-1])
        if n > most or len(pages) > most // PAGE_SIZE + 2:
            raise AssertionError("pager still going after %d items in %d pages, want at most %d items"
                                 % (n, len(pages), most))
    return pages


def bounded_items(pager, most):
    """The items of an SDK pager holding at most `most` items."""
    return [item for page in bounded_pages(pager, most) for item in page]


class NoIdentityService:
    """Stands in for the identity-service client: the pinned file exists, so the
    SDK must never construct it."""

    def __init__(self, *args, **kwargs):
        raise AssertionError("the SDK called the identity service although the ledger certificate file exists")


# ---------------------------------------------------------------- checks


def main(endpoint, service_cert_path, client_pem_path):
    start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="acl-conformance-")
    with open(service_cert_path, "rb") as f:
        service_cert = x509.load_pem_x509_certificate(f.read())

    ledger_patch.ConfidentialLedgerCertificateClient = NoIdentityService
    ledger_aio_patch.ConfidentialLedgerCertificateClient = NoIdentityService

    def make_client(pem_path, **kwargs):
        return ConfidentialLedgerClient(
            endpoint,
            credential=ConfidentialLedgerCertificateCredential(pem_path),
            ledger_certificate_path=service_cert_path,
            **kwargs,
        )

    client = make_client(client_pem_path)
    client26 = make_client(client_pem_path, api_version="2026-02-23")
    check("clients built with a certificate credential and the pinned service certificate")

    receipts = {}  # transaction id -> receipt, every one verified

    def verified(resp, txid):
        expect(resp["state"] == "Ready", "receipt state %r" % resp.get("state"))
        expect(resp["transactionId"] == txid, "receipt for %r, want %r" % (resp["transactionId"], txid))
        verify_receipt(resp["receipt"], service_cert)
        expect(resp["receipt"]["leafComponents"]["commitEvidence"].startswith("ce:%s:" % txid),
               "commitEvidence %r names another transaction" % resp["receipt"]["leafComponents"]["commitEvidence"])
        receipts[txid] = resp["receipt"]
        return resp

    # A ledger whose certificate is not pinned is refused by the TLS layer.
    wrong_cert, _ = new_identity("not the ledger")
    wrong_path = os.path.join(workdir, "wrong_service_cert.pem")
    with open(wrong_path, "wb") as f:
        f.write(wrong_cert.public_bytes(serialization.Encoding.PEM))
    wrong = ConfidentialLedgerClient(
        endpoint,
        credential=ConfidentialLedgerCertificateCredential(client_pem_path),
        ledger_certificate_path=wrong_path,
        retry_total=0,
    )
    expect_raises(ServiceRequestError, lambda: wrong.get_constitution())
    check("a client pinning another certificate is refused by TLS")

    # The identity service: Parley serves GET /ledgerIdentity/{ledgerId}. The
    # SDK's certificate client is pointed at it (its default host is Azure's)
    # and, for this bootstrap call only, trusts the service certificate.
    identity = ConfidentialLedgerCertificateClient(endpoint, connection_verify=service_cert_path)
    got = identity.get_ledger_identity("parley")
    expect(got["ledgerId"] == "parley", "ledgerId %r" % got.get("ledgerId"))
    expect(x509.load_pem_x509_certificate(got["ledgerTlsCertificate"].encode("ascii")) == service_cert,
           "ledgerTlsCertificate is not the service certificate")

    # The SDK's own first-use path: no certificate file yet, so the client
    # fetches it from the identity service, writes it and pins it.
    def parley_identity(**kwargs):
        return ConfidentialLedgerCertificateClient(endpoint, connection_verify=service_cert_path, **kwargs)
    ledger_patch.ConfidentialLedgerCertificateClient = parley_identity
    fetched_path = os.path.join(workdir, "fetched_service_cert.pem")
    fetched = ConfidentialLedgerClient(
        endpoint,
        credential=ConfidentialLedgerCertificateCredential(client_pem_path),
        ledger_certificate_path=fetched_path,
    )
    ledger_patch.ConfidentialLedgerCertificateClient = NoIdentityService
    with open(fetched_path, "rb") as f:
        expect(x509.load_pem_x509_certificate(f.read()) == service_cert, "the SDK wrote another certificate")
    expect(fetched.get_constitution()["digest"], "no constitution digest")
    check("get_ledger_identity returns the service certificate; a client without one fetches, writes and pins it")

    # --- create, wait for commit, read back, default collection
    first = client.create_ledger_entry({"contents": "conformance: first entry"})
    expect(first["collectionId"] == DEFAULT_COLLECTION, "collectionId %r" % first)
    txid = first["transactionId"]
    expect(txid.count(".") == 1, "transactionId %r" % txid)
    check("create_ledger_entry without a collection -> %s in %s" % (txid, DEFAULT_COLLECTION))

    status = client.begin_wait_for_commit(txid, polling_interval=POLL).result()
    expect(status == {"state": "Committed", "transactionId": txid}, "status %r" % status)
    check("begin_wait_for_commit -> Committed")

    status = client.get_transaction_status(txid)
    expect(status["state"] == "Committed" and status["transactionId"] == txid, "status %r" % status)
    check("get_transaction_status")

    got = client.get_ledger_entry(txid)
    expect(got["state"] == "Ready", "state %r" % got)
    expect(got["entry"] == {"contents": "conformance: first entry", "collectionId": DEFAULT_COLLECTION,
                            "transactionId": txid}, "entry %r" % got["entry"])
    check("get_ledger_entry")

    got = client.begin_get_ledger_entry(txid, polling_interval=POLL).result()
    expect(got["entry"]["contents"] == "conformance: first entry", "entry %r" % got)
    check("begin_get_ledger_entry")

    verified(client.begin_get_receipt(txid, polling_interval=POLL).result(), txid)
    check("begin_get_receipt, verified")

    # --- with a collection, through the long-running create
    created = client.begin_create_ledger_entry(
        {"contents": "conformance: in a collection"}, collection_id=COL["conf-a"], polling_interval=POLL
    ).result()
    expect(created["collectionId"] == COL["conf-a"], "created %r" % created)
    a_txid = created["transactionId"]
    expect(client.get_transaction_status(a_txid)["state"] == "Committed", "not committed after the poller")
    check("begin_create_ledger_entry with a collection -> %s, Committed" % a_txid)

    got = client.get_ledger_entry(a_txid, collection_id=COL["conf-a"])
    expect(got["entry"] == {"contents": "conformance: in a collection", "collectionId": COL["conf-a"],
                            "transactionId": a_txid}, "entry %r" % got)
    got = client.begin_get_ledger_entry(a_txid, collection_id=COL["conf-a"], polling_interval=POLL).result()
    expect(got["entry"]["collectionId"] == COL["conf-a"], "entry %r" % got)
    expect_raises(ResourceNotFoundError, lambda: client.get_ledger_entry(a_txid, collection_id=COL["conf-other"]))
    check("get_ledger_entry / begin_get_ledger_entry with a collection; another collection -> 404")

    cur = client.get_current_ledger_entry(collection_id=COL["conf-a"])
    expect(cur == {"contents": "conformance: in a collection", "collectionId": COL["conf-a"],
                   "transactionId": a_txid}, "current %r" % cur)
    cur = client.get_current_ledger_entry()
    expect(cur["collectionId"] == DEFAULT_COLLECTION and cur["contents"] == "conformance: first entry",
           "current %r" % cur)
    check("get_current_ledger_entry with and without a collection")

    resp = client.get_receipt(a_txid)
    if resp["state"] != "Ready":
        resp = client.begin_get_receipt(a_txid, polling_interval=POLL).result()
    verified(resp, a_txid)
    check("get_receipt, verified")

    # 2026-02-23 receipts carry the application claim: check it commits to
    # the entry's collection and contents.
    resp = verified(client26.get_receipt(a_txid), a_txid)
    claims = resp["applicationClaims"]
    expect(len(claims) == 1, "claims %r" % claims)
    expect(claims[0]["ledgerEntry"]["contents"] == "conformance: in a collection"
           and claims[0]["ledgerEntry"]["collectionId"] == COL["conf-a"], "claim %r" % claims[0])
    expect(ledger_entry_claims_digest(claims[0]) == resp["receipt"]["leafComponents"]["claimsDigest"],
           "the LedgerEntryV1 claim does not match the receipt's claimsDigest")
    check("api-version 2026-02-23 receipt, verified, its LedgerEntryV1 claim matches claimsDigest")

    # Read straight after the write: the SDK's pollers wait through the
    # Loading state a Pending transaction answers with.
    early = client.create_ledger_entry({"contents": "conformance: read early"}, collection_id=COL["conf-early"])
    e_txid = early["transactionId"]
    first_state = client.get_receipt(e_txid)["state"]
    expect(first_state in ("Loading", "Ready"), "receipt state %r" % first_state)
    verified(client.begin_get_receipt(e_txid, polling_interval=POLL).result(), e_txid)
    got = client.begin_get_ledger_entry(e_txid, polling_interval=POLL).result()
    expect(got["state"] == "Ready" and got["entry"]["contents"] == "conformance: read early", "entry %r" % got)
    check("begin_get_receipt / begin_get_ledger_entry straight after the write (first state %s), verified"
          % first_state)

    # --- tampering
    base = receipts[a_txid]
    verify_receipt(base, service_cert)
    n = 0
    for what, bad in tampered_receipts(base):
        try:
            verify_receipt(bad, service_cert)
        except (ReceiptError, InvalidSignature, ValueError) as e:
            n += 1
            print("   tampered %s rejected: %s" % (what, e), flush=True)
            continue
        raise AssertionError("receipt with a changed %s verified" % what)
    try:
        verify_receipt(base, wrong_cert)
    except ReceiptError:
        pass
    else:
        raise AssertionError("receipt verified against another service certificate")
    check("%d byte-flipped receipts and a foreign service certificate rejected" % n)

    # --- more than one page
    count = PAGE_SIZE + 30
    ids = []
    for i in range(count):
        r = client.create_ledger_entry({"contents": "page entry %d" % i}, collection_id=COL["conf-page"])
        ids.append(r["transactionId"])
    client.begin_wait_for_commit(ids[-1], polling_interval=POLL).result()
    pages = bounded_pages(client.list_ledger_entries(collection_id=COL["conf-page"]), count)
    expect(len(pages) >= 2, "%d entries came in %d page(s), want at least 2" % (count, len(pages)))
    entries = [e for p in pages for e in p]
    expect([e["transactionId"] for e in entries] == ids,
           "listed ids %r..., want %r..." % ([e["transactionId"] for e in entries][:3], ids[:3]))
    expect(all(e["contents"] == "page entry %d" % i and e["collectionId"] == COL["conf-page"]
               for i, e in enumerate(entries)), "listed contents differ")
    check("list_ledger_entries: %d entries over %d pages (sizes %s) via nextLink"
          % (len(entries), len(pages), [len(p) for p in pages]))

    flat = bounded_items(client.list_ledger_entries(collection_id=COL["conf-page"]), count)
    expect([e["transactionId"] for e in flat] == ids, "item iteration differs from pages")
    ranged = bounded_items(client.list_ledger_entries(collection_id=COL["conf-page"],
                                                      from_transaction_id=ids[10], to_transaction_id=ids[20]), 11)
    expect([e["transactionId"] for e in ranged] == ids[10:21], "range %r" % [e["transactionId"] for e in ranged])
    ranged = bounded_pages(client.list_ledger_entries(collection_id=COL["conf-page"],
                                                      from_transaction_id=ids[5], to_transaction_id=ids[-3]),
                           count - 7)
    expect([e["transactionId"] for p in ranged for e in p] == ids[5:-2] and len(ranged) == 2,
           "range over pages: %d pages, %d entries" % (len(ranged), sum(len(p) for p in ranged)))
    default = bounded_items(client.list_ledger_entries(), count)
    expect(txid in [e["transactionId"] for e in default]
           and all(e["collectionId"] == DEFAULT_COLLECTION for e in default),
           "default collection lists %r" % default)
    check("list_ledger_entries: item paging, from/to ranges within and across pages, default collection")

    for t in (ids[0], ids[PAGE_SIZE], ids[-1]):
        verified(client.get_receipt(t), t)
    check("receipts of listed entries verified")

    # --- users
    fresh_cert, fresh_pem = new_identity("conformance user")
    hex_id, colon_id = fingerprints(fresh_cert)
    fresh_path = os.path.join(workdir, "fresh.pem")
    with open(fresh_path, "wb") as f:
        f.write(fresh_pem)
    fresh = make_client(fresh_path, retry_total=0)

    expect_raises(ResourceNotFoundError, lambda: client.get_user(hex_id), status=404, code="UserNotFound")
    expect_raises(ClientAuthenticationError, lambda: fresh.get_current_ledger_entry(), status=401,
                  code="InvalidAuthenticationInfo")
    check("unknown user: get_user -> ResourceNotFoundError, its certificate -> ClientAuthenticationError")

    u = client.create_or_update_user(colon_id, {"assignedRole": "Reader"})
    expect(u == {"userId": colon_id, "assignedRole": "Reader"}, "created %r" % u)
    u = client.get_user(hex_id)
    expect(u == {"userId": hex_id, "assignedRole": "Reader"}, "got %r" % u)
    u = client.get_user(colon_id)
    expect(u == {"userId": colon_id, "assignedRole": "Reader"}, "got %r" % u)
    check("create_or_update_user by colon fingerprint, get_user by both forms")

    cur = fresh.get_current_ledger_entry(collection_id=COL["conf-a"])
    expect(cur["transactionId"] == a_txid, "reader got %r" % cur)
    expect_raises(HttpResponseError, lambda: fresh.create_ledger_entry({"contents": "no"}),
                  status=403, code="AuthorizationFailed")
    check("the new Reader reads; its write -> 403 AuthorizationFailed")

    u = client.create_or_update_user(hex_id, {"assignedRole": "Contributor"})
    expect(u == {"userId": hex_id, "assignedRole": "Contributor"}, "updated %r" % u)
    r = fresh.create_ledger_entry({"contents": "by the contributor"}, collection_id=COL["conf-users"])
    client.begin_wait_for_commit(r["transactionId"], polling_interval=POLL).result()
    verified(fresh.get_receipt(r["transactionId"]), r["transactionId"])
    expect_raises(HttpResponseError, lambda: fresh.get_user(hex_id), status=403, code="AuthorizationFailed")
    check("create_or_update_user by hex promotes to Contributor; it writes; get_user by it -> 403")

    expect(client.delete_user(colon_id) is None, "delete_user returned a value")
    expect_raises(ResourceNotFoundError, lambda: client.get_user(hex_id), status=404)
    expect_raises(ResourceNotFoundError, lambda: client.delete_user(hex_id), status=404, code="UserNotFound")
    expect_raises(ClientAuthenticationError, lambda: fresh.get_current_ledger_entry(), status=401)
    check("delete_user; then get/delete -> ResourceNotFoundError and its certificate -> 401")

    with open(client_pem_path, "rb") as f:
        admin_cert = x509.load_pem_x509_certificate(f.read())
    admin_hex, _ = fingerprints(admin_cert)
    u = client.get_user(admin_hex)
    expect(u["assignedRole"] == "Administrator", "user0 %r" % u)
    expect_raises(ResourceExistsError, lambda: client.delete_user(admin_hex), status=409, code="LastAdministrator")
    check("deleting the last Administrator -> 409 ResourceExistsError")

    # --- collections, governance, evidence
    collections = {c["collectionId"] for c in bounded_items(client.list_collections(), 1000)}
    want = {DEFAULT_COLLECTION, COL["conf-a"], COL["conf-page"], COL["conf-users"]}
    expect(want <= collections, "collections %r, want %r" % (collections, want))
    check("list_collections -> %s" % sorted(collections))

    constitution = client.get_constitution()
    expect(constitution["script"], "empty constitution")
    expect(constitution["digest"] == hashlib.sha256(constitution["script"].encode("utf-8")).hexdigest(),
           "constitution digest is not SHA-256 of the script")
    check("get_constitution, digest = SHA-256(script)")

    members = bounded_items(client.list_consortium_members(), 100)
    expect(len(members) >= 1, "no members")
    for m in members:
        mc = x509.load_pem_x509_certificate(m["certificate"].encode("ascii"))
        expect(fingerprints(mc)[0] == m["id"], "member id %r is not its certificate's fingerprint" % m["id"])
    check("list_consortium_members -> %d member(s), ids are certificate fingerprints" % len(members))

    quotes = client.get_enclave_quotes()
    node = quotes["currentNodeId"]
    expect(node in quotes["enclaveQuotes"], "no quote for the current node %r" % node)
    q = quotes["enclaveQuotes"][node]
    expect(q["nodeId"] == node, "quote %r" % q)
    expect(node == base["nodeId"], "current node %r did not sign the receipts (%r)" % (node, base["nodeId"]))
    evidence = json.loads(bytes.fromhex(q["raw"]))
    expect(evidence.get("nodeId") == node, "evidence %r" % evidence)
    check("get_enclave_quotes: current node %s... signs the receipts (quoteVersion %s)"
          % (node[:12], q.get("quoteVersion")))

    # --- bad input through the SDK: status, code, and nothing written
    expect_raises(HttpResponseError, lambda: client.create_ledger_entry({"contents": "x" * 9000},
                                                                        collection_id=COL["conf-bad"]),
                  status=400, code="EntrySizeCapacityExceeded")
    expect_raises(HttpResponseError, lambda: client.create_ledger_entry({"contents": "x"},
                                                                        collection_id="c" * 257),
                  status=400, code="CollectionIdTooLong")
    expect_raises(HttpResponseError, lambda: client.create_ledger_entry({"nothing": "here"},
                                                                        collection_id=COL["conf-bad"]),
                  status=400, code="InvalidInput")
    expect_raises(ResourceNotFoundError, lambda: client.get_current_ledger_entry(collection_id=COL["conf-bad"]),
                  status=404)
    expect(COL["conf-bad"] not in {c["collectionId"] for c in bounded_items(client.list_collections(), 1000)},
           "conf-bad was created")
    check("oversized entry, too-long collection id, no contents -> 400 with ACL codes; nothing written")

    expect_raises(HttpResponseError, lambda: client.get_ledger_entry("not-a-txid"),
                  status=400, code="InvalidTransactionId")
    expect_raises(HttpResponseError, lambda: client.get_transaction_status("1.0"),
                  status=400, code="InvalidTransactionId")
    missing = "%s.%d" % (txid.split(".")[0], 10 ** 9)
    expect_raises(ResourceNotFoundError, lambda: client.get_ledger_entry(missing), status=404)
    expect_raises(ResourceNotFoundError, lambda: client.get_receipt(missing), status=404)
    expect_raises(ResourceNotFoundError, lambda: client.get_transaction_status(missing), status=404,
                  code="TransactionNotFound")
    expect_raises(ResourceNotFoundError,
                  lambda: client.begin_wait_for_commit(missing, polling_interval=POLL).result(), status=404)
    check("bad and unknown transaction ids -> 400 / ResourceNotFoundError, wait_for_commit gives up")

    asyncio.run(check_async(endpoint, service_cert_path, client_pem_path, client, verified, txid))

    expect(len(receipts) >= 8, "only %d receipts verified" % len(receipts))
    print("verified %d receipts, %d checks, %.1fs" % (len(receipts), len(CHECKS), time.monotonic() - start))
    print("acl conformance: all checks passed", flush=True)


async def check_async(endpoint, service_cert_path, client_pem_path, sync_client, verified, txid):
    """The same ledger through the SDK's asyncio client (aiohttp transport)."""
    async with AsyncConfidentialLedgerClient(
        endpoint,
        credential=ConfidentialLedgerCertificateCredential(client_pem_path),
        ledger_certificate_path=service_cert_path,
    ) as client:
        poller = await client.begin_create_ledger_entry(
            {"contents": "conformance: async"}, collection_id=COL["conf-async"], polling_interval=POLL
        )
        created = await poller.result()
        a_txid = created["transactionId"]
        expect(created["collectionId"] == COL["conf-async"], "created %r" % created)
        status = await client.get_transaction_status(a_txid)
        expect(status["state"] == "Committed", "status %r" % status)
        got = await (await client.begin_get_ledger_entry(a_txid, polling_interval=POLL)).result()
        expect(got["entry"]["contents"] == "conformance: async", "entry %r" % got)
        verified(await (await client.begin_get_receipt(a_txid, polling_interval=POLL)).result(), a_txid)
        check("aio: begin_create_ledger_entry, begin_get_ledger_entry, begin_get_receipt (verified)")

        # Write the page through the blocking client: azure-core's aiohttp
        # transport builds a new SSL context, hence a new TLS connection,
        # for every request (~15 ms each here).
        ids = [sync_client.create_ledger_entry({"contents": "async page %d" % i},
                                               collection_id=COL["conf-async"])["transactionId"]
               for i in range(PAGE_SIZE + 5)]
        await (await client.begin_wait_for_commit(ids[-1], polling_interval=POLL)).result()
        pages = []
        async for page in client.list_ledger_entries(collection_id=COL["conf-async"]).by_page():
            pages.append([e async for e in page])
            expect(len(pages) <= 3, "async pager did not stop")
        listed = [e["transactionId"] for p in pages for e in p]
        expect(listed == [a_txid] + ids, "async list: %d ids, want %d" % (len(listed), len(ids) + 1))
        check("aio: list_ledger_entries %d entries over %d pages" % (len(listed), len(pages)))

        try:
            await client.get_transaction_status("%s.%d" % (txid.split(".")[0], 10 ** 9))
        except ResourceNotFoundError:
            pass
        else:
            raise AssertionError("aio: unknown transaction did not raise ResourceNotFoundError")
        try:
            await client.create_ledger_entry({"contents": "x" * 9000})
        except HttpResponseError as e:
            expect(e.status_code == 400 and e.error.code == "EntrySizeCapacityExceeded", "aio: %s" % e)
        else:
            raise AssertionError("aio: oversized entry accepted")
        check("aio: 404 -> ResourceNotFoundError, oversized entry -> 400 EntrySizeCapacityExceeded")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: acl_conformance.py ENDPOINT SERVICE_CERT_PEM CLIENT_PEM")
    main(sys.argv[1], sys.argv[2], sys.argv[3])
