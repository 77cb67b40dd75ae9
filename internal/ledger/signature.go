package ledger

import (
	"encoding/json"
	"fmt"
)

// SignaturesMap is the public map a signature transaction writes, under the
// key [SignatureKey], as CCF names it.
const (
	SignaturesMap = "public:ccf.internal.signatures"
	SignatureKey  = "0"
)

// Signature is the value a signature transaction at Seqno writes: the node's
// ECDSA signature over the Merkle root of the first Seqno-1 transactions.
type Signature struct {
	NodeID      string `json:"node"`         // hex SHA-256 of the node's public key
	View        uint64 `json:"view"`         // view of the signature transaction itself
	Seqno       uint64 `json:"seqno"`        // seqno of the signature transaction itself
	CommitView  uint64 `json:"commit_view"`  // the signer's commit point when it signed
	CommitSeqno uint64 `json:"commit_seqno"` //
	Root        string `json:"root"`         // hex Merkle root of leaves 1..Seqno-1
	Sig         []byte `json:"sig"`          // DER ECDSA over the 32-byte root (prehashed)
	Cert        string `json:"cert"`         // the node certificate, PEM
}

// TreeSize is the number of leaves the signature covers.
func (s *Signature) TreeSize() uint64 { return s.Seqno - 1 }

// MaxSignatureSize bounds a signature value (certificate included).
const MaxSignatureSize = 64 << 10

// ParseSignature decodes a signature value and checks its shape.
func ParseSignature(b []byte) (*Signature, error) {
	if len(b) > MaxSignatureSize {
		return nil, fmt.Errorf("%w: signature value of %d bytes", ErrMalformed, len(b))
	}
	var s Signature
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%w: signature value: %w", ErrMalformed, err)
	}
	if s.Seqno < 2 {
		return nil, fmt.Errorf("%w: signature at seqno %d covers nothing", ErrMalformed, s.Seqno)
	}
	if len(s.Root) != 64 {
		return nil, fmt.Errorf("%w: signature root %q is not 32 bytes of hex", ErrMalformed, s.Root)
	}
	return &s, nil
}
