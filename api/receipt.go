package api

import (
	"encoding/json"
	"errors"
)

// Application claim kinds and protocols (ACL ApplicationClaimKind and
// ApplicationClaimProtocol).
const (
	ClaimKindLedgerEntry = "LedgerEntry"
	ClaimKindClaimDigest = "ClaimDigest"

	ProtocolLedgerEntryV1 = "LedgerEntryV1"
)

// States of a ledger query (ACL LedgerQueryState): a receipt is either still
// being fetched or ready.
const (
	StateLoading = "Loading"
	StateReady   = "Ready"
)

// TransactionReceipt is the response of GET /app/transactions/{id}/receipt.
// Receipt is nil while State is [StateLoading].
type TransactionReceipt struct {
	ApplicationClaims []ApplicationClaim `json:"applicationClaims,omitempty"`
	Receipt           *Receipt           `json:"receipt,omitempty"`
	State             string             `json:"state"`
	TransactionID     string             `json:"transactionId"`
}

// Receipt is the ACL ReceiptContents object: the Merkle proof that a
// transaction is in the ledger, the signed root, and the certificates that
// tie the signing node to the service identity.
//
// Decoding also accepts the snake_case field names older ACL instances
// emitted (leaf_components, node_id, service_endorsements,
// is_signature_transaction); encoding always emits camelCase.
type Receipt struct {
	// Cert is the PEM certificate of the node that signed the root.
	Cert string `json:"cert,omitempty"`
	// Leaf is the hex Merkle leaf, present only in some receipts; when set
	// it must equal the leaf computed from LeafComponents.
	Leaf           string          `json:"leaf,omitempty"`
	LeafComponents *LeafComponents `json:"leafComponents,omitempty"`
	// NodeID is the lowercase hex SHA-256 of the node's public key
	// (SubjectPublicKeyInfo DER).
	NodeID string `json:"nodeId"`
	// Proof is the audit path from the leaf to the root, leaf side first.
	Proof []ProofElement `json:"proof"`
	// Root is the hex Merkle root, present only in some receipts; when set
	// it must equal the root computed from the proof.
	Root string `json:"root,omitempty"`
	// ServiceEndorsements are PEM certificates of previous service
	// identities endorsed by their successors, oldest first.
	ServiceEndorsements []string `json:"serviceEndorsements"`
	// Signature is the base64 DER ECDSA signature of the root by the node
	// key.
	Signature string `json:"signature"`
}

// LeafComponents are the three digests a Merkle leaf is the hash of.
type LeafComponents struct {
	ClaimsDigest   string `json:"claimsDigest"`
	CommitEvidence string `json:"commitEvidence"`
	WriteSetDigest string `json:"writeSetDigest"`
}

// ProofElement is one step of a Merkle audit path: a hex sibling hash on the
// left or on the right. Exactly one of the two must be set.
type ProofElement struct {
	Left  string `json:"left,omitempty"`
	Right string `json:"right,omitempty"`
}

// ApplicationClaim is a claim bound into a transaction's leaf through its
// claims digest. Kind says which of LedgerEntry or Digest is set.
type ApplicationClaim struct {
	Kind        string            `json:"kind"`
	LedgerEntry *LedgerEntryClaim `json:"ledgerEntry,omitempty"`
	Digest      *ClaimDigest      `json:"digest,omitempty"`
}

// LedgerEntryClaim is a claim over a ledger entry's collection and contents,
// keyed by a per-entry secret so the write set alone does not reveal them.
type LedgerEntryClaim struct {
	CollectionID string `json:"collectionId"`
	Contents     string `json:"contents"`
	Protocol     string `json:"protocol"`
	// SecretKey is the base64 per-entry HMAC key.
	SecretKey string `json:"secretKey"`
}

// ClaimDigest is an application claim in digested form: Value is the hex
// digest of the claim under Protocol.
type ClaimDigest struct {
	Protocol string `json:"protocol"`
	Value    string `json:"value"`
}

// receiptFields has no methods, so encoding it uses the struct tags.
type receiptFields Receipt

// MarshalJSON encodes r in camelCase, writing empty arrays rather than null
// for a missing proof or endorsement list.
func (r Receipt) MarshalJSON() ([]byte, error) {
	f := receiptFields(r)
	if f.Proof == nil {
		f.Proof = []ProofElement{}
	}
	if f.ServiceEndorsements == nil {
		f.ServiceEndorsements = []string{}
	}
	return json.Marshal(f)
}

// UnmarshalJSON decodes a receipt in either the camelCase or the older
// snake_case form. A field given in both forms is an error.
func (r *Receipt) UnmarshalJSON(b []byte) error {
	var w struct {
		Cert                     string          `json:"cert"`
		Leaf                     string          `json:"leaf"`
		LeafComponents           *LeafComponents `json:"leafComponents"`
		LeafComponentsSnake      *LeafComponents `json:"leaf_components"`
		NodeID                   *string         `json:"nodeId"`
		NodeIDSnake              *string         `json:"node_id"`
		Proof                    []ProofElement  `json:"proof"`
		Root                     string          `json:"root"`
		ServiceEndorsements      []string        `json:"serviceEndorsements"`
		ServiceEndorsementsSnake []string        `json:"service_endorsements"`
		Signature                string          `json:"signature"`
		IsSignatureTransaction   bool            `json:"is_signature_transaction"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	lc, err := pick(w.LeafComponents, w.LeafComponentsSnake, "leafComponents")
	if err != nil {
		return err
	}
	id, err := pick(w.NodeID, w.NodeIDSnake, "nodeId")
	if err != nil {
		return err
	}
	if w.ServiceEndorsements != nil && w.ServiceEndorsementsSnake != nil {
		return errors.New("receipt has both serviceEndorsements and service_endorsements")
	}
	if w.ServiceEndorsements == nil {
		w.ServiceEndorsements = w.ServiceEndorsementsSnake
	}
	*r = Receipt{
		Cert:                w.Cert,
		Leaf:                w.Leaf,
		LeafComponents:      lc,
		Proof:               w.Proof,
		Root:                w.Root,
		ServiceEndorsements: w.ServiceEndorsements,
		Signature:           w.Signature,
	}
	if id != nil {
		r.NodeID = *id
	}
	return nil
}

// UnmarshalJSON decodes leaf components in either the camelCase or the
// older snake_case form. A field given in both forms is an error.
func (c *LeafComponents) UnmarshalJSON(b []byte) error {
	var w struct {
		ClaimsDigest        *string `json:"claimsDigest"`
		ClaimsDigestSnake   *string `json:"claims_digest"`
		CommitEvidence      *string `json:"commitEvidence"`
		CommitEvidenceSnake *string `json:"commit_evidence"`
		WriteSetDigest      *string `json:"writeSetDigest"`
		WriteSetDigestSnake *string `json:"write_set_digest"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	var out LeafComponents
	for _, f := range []struct {
		dst          *string
		camel, snake *string
		name         string
	}{
		{&out.ClaimsDigest, w.ClaimsDigest, w.ClaimsDigestSnake, "claimsDigest"},
		{&out.CommitEvidence, w.CommitEvidence, w.CommitEvidenceSnake, "commitEvidence"},
		{&out.WriteSetDigest, w.WriteSetDigest, w.WriteSetDigestSnake, "writeSetDigest"},
	} {
		v, err := pick(f.camel, f.snake, f.name)
		if err != nil {
			return err
		}
		if v != nil {
			*f.dst = *v
		}
	}
	*c = out
	return nil
}

// pick returns whichever of the camelCase and snake_case values is set, and
// an error if both are.
func pick[T any](camel, snake *T, name string) (*T, error) {
	if camel != nil && snake != nil {
		return nil, errors.New("receipt has field " + name + " in both camelCase and snake_case")
	}
	if camel != nil {
		return camel, nil
	}
	return snake, nil
}
