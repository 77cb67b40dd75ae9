package receipt

import (
	"encoding/base64"
	"encoding/hex"
	"slices"

	"github.com/parleyhq/parley/api"
)

// Proof is a Merkle audit path, leaf side first.
type Proof = []api.ProofElement

// LeafParts are what a transaction's Merkle leaf is the hash of.
type LeafParts struct {
	WriteSetDigest [32]byte
	// CommitEvidence is "ce:<view>.<seqno>:<64 hex>".
	CommitEvidence string
	// ClaimsDigest is zero for a transaction without application claims.
	ClaimsDigest [32]byte
}

// Leaf returns the Merkle leaf of p.
func (p LeafParts) Leaf() [32]byte {
	return Leaf(p.WriteSetDigest, CommitEvidenceDigest(p.CommitEvidence), p.ClaimsDigest)
}

// Left returns the proof element for a sibling h on the left of the path.
func Left(h [32]byte) api.ProofElement { return api.ProofElement{Left: hex.EncodeToString(h[:])} }

// Right returns the proof element for a sibling h on the right of the path.
func Right(h [32]byte) api.ProofElement { return api.ProofElement{Right: hex.EncodeToString(h[:])} }

// New assembles a receipt: the signing node's PEM certificate and id, the
// transaction's leaf parts, the audit path from its leaf to the signed root,
// the node's DER ECDSA signature of that root, and the service endorsements
// (PEM, oldest first). New copies proof and endorsements; it checks nothing,
// so callers that want assurance run [Verify] on the result.
func New(nodeCertPEM []byte, nodeID string, leaf LeafParts, proof Proof, signature []byte, endorsements []string) *api.Receipt {
	if proof == nil {
		proof = Proof{}
	}
	if endorsements == nil {
		endorsements = []string{}
	}
	return &api.Receipt{
		Cert: string(nodeCertPEM),
		LeafComponents: &api.LeafComponents{
			ClaimsDigest:   hex.EncodeToString(leaf.ClaimsDigest[:]),
			CommitEvidence: leaf.CommitEvidence,
			WriteSetDigest: hex.EncodeToString(leaf.WriteSetDigest[:]),
		},
		NodeID:              nodeID,
		Proof:               slices.Clone(proof),
		ServiceEndorsements: slices.Clone(endorsements),
		Signature:           base64.StdEncoding.EncodeToString(signature),
	}
}
