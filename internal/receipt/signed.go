package receipt

import (
	"crypto/ecdsa"
	"crypto/x509"
	"fmt"

	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/internal/merkle"
)

// VerifySignedRoot checks a signature transaction's signature as a receipt's
// is checked (steps 4 to 6 of [Verify]): nodeID names the key of the node
// certificate certPEM, sig is that key's ECDSA signature of root, and the
// certificate chains to serviceCert through endorsements. checked, when not
// nil, remembers certificates whose chain was already verified, so a
// verifier of a whole ledger checks each node certificate once.
func VerifySignedRoot(root [32]byte, sig []byte, certPEM, nodeID string, endorsements []string, serviceCert *x509.Certificate, checked map[string]bool) error {
	node, err := verifyRootSignature(root, sig, certPEM, nodeID)
	if err != nil {
		return err
	}
	if checked != nil && checked[certPEM] {
		return nil
	}
	if err := verifyChain(node, endorsements, serviceCert); err != nil {
		return err
	}
	if checked != nil {
		checked[certPEM] = true
	}
	return nil
}

// VerifyRootSignature checks steps 4 and 5 of [Verify] only: nodeID names
// the key of the node certificate certPEM, and sig is that key's ECDSA
// signature of root. The certificate's chain is left to [VerifyChain].
func VerifyRootSignature(root [32]byte, sig []byte, certPEM, nodeID string) error {
	_, err := verifyRootSignature(root, sig, certPEM, nodeID)
	return err
}

func verifyRootSignature(root [32]byte, sig []byte, certPEM, nodeID string) (*x509.Certificate, error) {
	node, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, invalidf("node certificate: %w", err)
	}
	pub, ok := node.PublicKey.(*ecdsa.PublicKey)
	if !ok || !nistCurve(pub.Curve) {
		return nil, invalidf("node certificate: not an ECDSA key on a NIST curve")
	}
	if err := matchNodeID(nodeID, node); err != nil {
		return nil, invalidf("node id: %w", err)
	}
	if !ecdsa.VerifyASN1(pub, root[:], sig) {
		return nil, invalidf("signature over root %x does not verify", root)
	}
	return node, nil
}

// VerifyChain checks step 6 of [Verify]: the node certificate certPEM
// chains to serviceCert through endorsements, oldest first.
func VerifyChain(certPEM string, endorsements []string, serviceCert *x509.Certificate) error {
	node, err := parseCertPEM(certPEM)
	if err != nil {
		return invalidf("node certificate: %w", err)
	}
	return verifyChain(node, endorsements, serviceCert)
}

// VerifyConsistency checks a consistency proof between two signed roots:
// both signatures, and that the later tree extends the earlier one.
func VerifyConsistency(p *api.ConsistencyProof, serviceCert *x509.Certificate) error {
	from, err := verifyRoot(&p.From, serviceCert)
	if err != nil {
		return fmt.Errorf("from: %w", err)
	}
	to, err := verifyRoot(&p.To, serviceCert)
	if err != nil {
		return fmt.Errorf("to: %w", err)
	}
	proof := make([]merkle.Hash, len(p.Proof))
	for i, h := range p.Proof {
		if proof[i], err = parseDigest(h); err != nil {
			return invalidf("consistency proof element %d: %w", i, err)
		}
	}
	if err := merkle.VerifyConsistency(p.From.TreeSize, p.To.TreeSize, from, to, proof); err != nil {
		return invalidf("consistency: %w", err)
	}
	return nil
}

func verifyRoot(r *api.SignedRoot, serviceCert *x509.Certificate) ([32]byte, error) {
	root, err := parseDigest(r.Root)
	if err != nil {
		return root, invalidf("root: %w", err)
	}
	return root, VerifySignedRoot(root, r.Signature, r.Cert, r.NodeID, nil, serviceCert, nil)
}
