package api

// ConsistencyProof is a Parley extension (no ACL client has it): it proves
// that the Merkle tree signed at To extends the tree signed at From, by the
// RFC 6962 consistency-proof algorithm over the ledger's hashing
// (SHA-256(left ‖ right), no domain-separation prefixes).
type ConsistencyProof struct {
	From  SignedRoot `json:"from"`
	To    SignedRoot `json:"to"`
	Proof []string   `json:"proof"` // hex hashes, RFC 9162 §2.1.4 order
}

// SignedRoot is the Merkle root a signature transaction signed.
type SignedRoot struct {
	TransactionID string `json:"transactionId"` // of the signature transaction
	TreeSize      uint64 `json:"treeSize"`      // leaves covered: seqno of the signature - 1
	Root          string `json:"root"`          // hex
	Signature     []byte `json:"signature"`     // base64 DER ECDSA over the root, prehashed
	NodeID        string `json:"nodeId"`
	Cert          string `json:"cert"` // the signing node's certificate, PEM
}
