// Package ledger defines one ledger entry: what the bytes of a transaction
// are, how its private part is encrypted under the ledger secret, its commit
// evidence, and the Merkle leaf that stands for it. It is pure: no I/O, no
// goroutines. The framing of entries into chunk files is package storage's;
// the tree over the leaves is package merkle's.
//
// # Entry payload
//
// Every raft entry's data is one payload (little-endian integers):
//
//	offset  size  field
//	0       1     version, 1
//	1       1     kind: 1 transaction, 2 signature transaction
//	2       6     reserved, zero
//	8       32    claims digest (zero when the transaction has no claims)
//	40      32    SHA-256 of the commit evidence string
//	72      12    AES-GCM nonce: seqno u64, then view u32 (top bit zero)
//	84      8     length P of the public write set
//	92      P     public write set (package kv encoding), in clear
//	92+P    ...   private write set (package kv encoding, or empty when the
//	              transaction wrote no private map) sealed with AES-256-GCM:
//	              ciphertext followed by the 16-byte tag
//
// The additional data of the seal is every byte before it (offsets 0 to
// 92+P), so the public part is integrity-protected by the ledger secret too.
// An empty payload is raft's own no-op entry, written by each new leader; it
// is a transaction with no writes.
//
// # Digests and the leaf
//
//	writeSetDigest = SHA-256(payload[72:])             (empty payload: SHA-256 of nothing)
//	commitEvidence = "ce:<view>.<seqno>:" + hex(HMAC-SHA256(commitKey, "<view>.<seqno>"))
//	leaf           = SHA-256(writeSetDigest ‖ SHA-256(commitEvidence) ‖ claimsDigest)
//
// The payload stores SHA-256(commitEvidence), so a verifier without the
// ledger secret recomputes every leaf; the evidence itself stays secret until
// the transaction is committed, and revealing it in a receipt proves commit.
// An empty payload's leaf uses zero for both the evidence digest and the
// claims digest.
//
// # Keys and nonces
//
// From the 32-byte ledger secret, HKDF-SHA256 derives the AES-256-GCM key
// (info "parley ledger encryption v1") and the commit-evidence key (info
// "parley commit evidence v1"). The nonce is derived from the transaction id,
// as CCF does: seqno (64 bits) and view (31 bits). Raft writes at most one
// entry per (view, seqno) — a view has one leader, and a leader writes each
// index once — so a nonce never repeats under one key, across crashes,
// rollbacks and view changes alike. The sequencer that builds a payload must
// therefore know its final (view, seqno) before sealing; see package engine.
package ledger
