package receipt

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/parleyhq/parley/api"
)

// ErrInvalidReceipt is wrapped by every error [Verify] and
// [VerifyTransactionReceipt] return for a receipt that does not verify.
var ErrInvalidReceipt = errors.New("invalid receipt")

// Bounds on receipt inputs.
const (
	// MaxProofLength is the longest audit path accepted: a tree of 2^64
	// leaves.
	MaxProofLength = 64
	// MaxEndorsements is the most service endorsements accepted.
	MaxEndorsements = 64
	// maxCertPEM bounds one PEM certificate.
	maxCertPEM = 16 << 10
	// maxSignature bounds the base64 signature: a DER P-521 signature is
	// at most 139 bytes.
	maxSignature = 256
	// maxCommitEvidence is "ce:" + two 20-digit numbers, '.', ':' and 64 hex.
	maxCommitEvidence = 3 + 20 + 1 + 20 + 1 + 64
)

// invalidError is a reason a receipt does not verify. It wraps
// ErrInvalidReceipt and the underlying cause, if any.
type invalidError struct{ err error }

func (e *invalidError) Error() string   { return e.err.Error() }
func (e *invalidError) Unwrap() []error { return []error{ErrInvalidReceipt, e.err} }

func invalidf(format string, args ...any) error {
	return &invalidError{fmt.Errorf(format, args...)}
}

// Leaf returns the Merkle leaf of a transaction:
// SHA-256(writeSetDigest ‖ commitEvidenceDigest ‖ claimsDigest). A
// transaction without application claims has the zero claims digest.
func Leaf(writeSetDigest, commitEvidenceDigest, claimsDigest [32]byte) [32]byte {
	var b [96]byte
	copy(b[:32], writeSetDigest[:])
	copy(b[32:64], commitEvidenceDigest[:])
	copy(b[64:], claimsDigest[:])
	return sha256.Sum256(b[:])
}

// CommitEvidenceDigest returns SHA-256 of the commit evidence string.
func CommitEvidenceDigest(commitEvidence string) [32]byte {
	return sha256.Sum256([]byte(commitEvidence))
}

// ParseCommitEvidence checks that ce has the form
// "ce:<view>.<seqno>:<64 hex digits>" and returns the transaction id it
// names. Numbers have no sign and no leading zeros.
func ParseCommitEvidence(ce string) (view, seqno uint64, err error) {
	if len(ce) > maxCommitEvidence {
		return 0, 0, fmt.Errorf("commit evidence is %d bytes, at most %d allowed", len(ce), maxCommitEvidence)
	}
	rest, ok := strings.CutPrefix(ce, "ce:")
	if !ok {
		return 0, 0, fmt.Errorf("commit evidence %q does not start with \"ce:\"", ce)
	}
	txid, secret, ok := strings.Cut(rest, ":")
	if !ok {
		return 0, 0, fmt.Errorf("commit evidence %q has no \":\" after the transaction id", ce)
	}
	v, s, ok := strings.Cut(txid, ".")
	if !ok {
		return 0, 0, fmt.Errorf("commit evidence %q: transaction id %q is not <view>.<seqno>", ce, txid)
	}
	if view, err = parseUint(v); err != nil {
		return 0, 0, fmt.Errorf("commit evidence %q: view: %w", ce, err)
	}
	if seqno, err = parseUint(s); err != nil {
		return 0, 0, fmt.Errorf("commit evidence %q: seqno: %w", ce, err)
	}
	if len(secret) != 64 {
		return 0, 0, fmt.Errorf("commit evidence %q: secret is %d characters, want 64 hex digits", ce, len(secret))
	}
	if _, err := hex.DecodeString(secret); err != nil {
		return 0, 0, fmt.Errorf("commit evidence %q: secret: %w", ce, err)
	}
	return view, seqno, nil
}

func parseUint(s string) (uint64, error) {
	if len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("%q has a leading zero", s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not a decimal number", s)
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a decimal number", s)
	}
	return n, nil
}

// Root folds the audit path proof into leaf and returns the Merkle root:
// {left: h} gives SHA-256(h ‖ cur), {right: h} gives SHA-256(cur ‖ h).
// Each element must have exactly one of left and right, 64 hex digits.
func Root(leaf [32]byte, proof Proof) ([32]byte, error) {
	if len(proof) > MaxProofLength {
		return [32]byte{}, fmt.Errorf("proof has %d elements, at most %d allowed", len(proof), MaxProofLength)
	}
	cur := leaf
	var buf [64]byte
	for i, p := range proof {
		switch {
		case p.Left != "" && p.Right != "":
			return [32]byte{}, fmt.Errorf("proof element %d has both left and right", i)
		case p.Left != "":
			h, err := parseDigest(p.Left)
			if err != nil {
				return [32]byte{}, fmt.Errorf("proof element %d: left: %w", i, err)
			}
			copy(buf[:32], h[:])
			copy(buf[32:], cur[:])
		case p.Right != "":
			h, err := parseDigest(p.Right)
			if err != nil {
				return [32]byte{}, fmt.Errorf("proof element %d: right: %w", i, err)
			}
			copy(buf[:32], cur[:])
			copy(buf[32:], h[:])
		default:
			return [32]byte{}, fmt.Errorf("proof element %d has neither left nor right", i)
		}
		cur = sha256.Sum256(buf[:])
	}
	return cur, nil
}

// Verify checks an ACL receipt against the service certificate:
//
//  1. The leaf is recomputed from the leaf components, whose digests must be
//     64 hex digits and whose commit evidence must be well formed.
//  2. The root is recomputed by folding the proof into the leaf.
//  3. If the receipt states a leaf or a root, it must equal the computed one.
//  4. nodeId must be the SHA-256 of the node certificate's public key.
//  5. The signature must be the node key's ECDSA signature (any NIST curve)
//     of the root, taken as a prehashed digest.
//  6. The node certificate must chain to serviceCert through
//     serviceEndorsements, oldest first: each certificate is signed by the
//     key of the next, the last by serviceCert's. Every signer must be a
//     CA. Validity periods are not checked.
//
// Every failure wraps [ErrInvalidReceipt] and says which check failed.
func Verify(r *api.Receipt, serviceCert *x509.Certificate) error {
	if serviceCert == nil {
		return errors.New("verify receipt: no service certificate")
	}
	if r == nil {
		return invalidf("no receipt")
	}
	lc := r.LeafComponents
	if lc == nil {
		return invalidf("receipt has no leaf components")
	}
	ws, err := parseDigest(lc.WriteSetDigest)
	if err != nil {
		return invalidf("write set digest: %w", err)
	}
	claims, err := parseDigest(lc.ClaimsDigest)
	if err != nil {
		return invalidf("claims digest: %w", err)
	}
	if _, _, err := ParseCommitEvidence(lc.CommitEvidence); err != nil {
		return invalidf("%w", err)
	}
	leaf := Leaf(ws, CommitEvidenceDigest(lc.CommitEvidence), claims)
	if r.Leaf != "" {
		if err := matchDigest(r.Leaf, leaf); err != nil {
			return invalidf("leaf: %w", err)
		}
	}
	root, err := Root(leaf, r.Proof)
	if err != nil {
		return invalidf("%w", err)
	}
	if r.Root != "" {
		if err := matchDigest(r.Root, root); err != nil {
			return invalidf("root: %w", err)
		}
	}

	node, err := parseCertPEM(r.Cert)
	if err != nil {
		return invalidf("node certificate: %w", err)
	}
	nodePub, ok := node.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return invalidf("node certificate: %T is not an ECDSA key", node.PublicKey)
	}
	if !nistCurve(nodePub.Curve) {
		return invalidf("node certificate: key is not on a NIST curve")
	}
	if err := matchNodeID(r.NodeID, node); err != nil {
		return invalidf("node id: %w", err)
	}
	if len(r.Signature) > maxSignature {
		return invalidf("signature is %d characters, at most %d allowed", len(r.Signature), maxSignature)
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(r.Signature)
	if err != nil {
		return invalidf("signature is not base64: %w", err)
	}
	if !ecdsa.VerifyASN1(nodePub, root[:], sig) {
		return invalidf("signature does not verify")
	}
	return verifyChain(node, r.ServiceEndorsements, serviceCert)
}

// verifyChain checks that node chains to service through endorsements.
func verifyChain(node *x509.Certificate, endorsements []string, service *x509.Certificate) error {
	if len(endorsements) > MaxEndorsements {
		return invalidf("%d service endorsements, at most %d allowed", len(endorsements), MaxEndorsements)
	}
	child, childName := node, "node certificate"
	for i, e := range endorsements {
		parent, err := parseCertPEM(e)
		if err != nil {
			return invalidf("service endorsement %d: %w", i, err)
		}
		if err := child.CheckSignatureFrom(parent); err != nil {
			return invalidf("%s not endorsed by service endorsement %d: %w", childName, i, err)
		}
		child, childName = parent, fmt.Sprintf("service endorsement %d", i)
	}
	if err := child.CheckSignatureFrom(service); err != nil {
		return invalidf("%s not endorsed by the service certificate: %w", childName, err)
	}
	return nil
}

func nistCurve(c elliptic.Curve) bool {
	switch c {
	case elliptic.P224(), elliptic.P256(), elliptic.P384(), elliptic.P521():
		return true
	}
	return false
}

func matchNodeID(id string, node *x509.Certificate) error {
	want, err := parseDigest(id)
	if err != nil {
		return err
	}
	got := sha256.Sum256(node.RawSubjectPublicKeyInfo)
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return fmt.Errorf("receipt says %s, node certificate key hashes to %x", id, got)
	}
	return nil
}

func matchDigest(stated string, computed [32]byte) error {
	d, err := parseDigest(stated)
	if err != nil {
		return err
	}
	if d != computed {
		return fmt.Errorf("receipt says %s, computed %x", stated, computed)
	}
	return nil
}

// parseDigest decodes exactly 32 bytes of hex.
func parseDigest(s string) ([32]byte, error) {
	var d [32]byte
	if len(s) != 64 {
		return d, fmt.Errorf("%d hex characters, want 64", len(s))
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return d, err
	}
	return d, nil
}

// parseCertPEM parses a string holding exactly one PEM certificate.
func parseCertPEM(s string) (*x509.Certificate, error) {
	if s == "" {
		return nil, errors.New("missing")
	}
	if len(s) > maxCertPEM {
		return nil, fmt.Errorf("%d bytes of PEM, at most %d allowed", len(s), maxCertPEM)
	}
	block, rest := pem.Decode([]byte(s))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return nil, errors.New("data after the PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}
