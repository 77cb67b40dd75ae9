// Package engine is the ledger of one node: it runs transactions over the
// key-value store, sequences them through raft (go.etcd.io/raft/v3, even with
// a single voter, so that adding nodes changes no format), seals each into a
// ledger entry, appends it to the chunked ledger files with group commit,
// keeps the Merkle tree over all entries, emits signature transactions and
// serves status and receipts.
//
// # Who knows the seqno when
//
// One goroutine, the sequencer, owns the raft node, the Merkle tree and the
// ledger files. A transaction's seqno is raft's index and its view raft's
// term; both are fixed when the sequencer builds the entry, because the
// sequencer proposes only when raft holds no entry it has not yet persisted,
// so the next index is the last persisted index plus one, and raft appends a
// proposal at exactly that index in the current term. The nonce, the commit
// evidence and the Merkle leaf are all derived from that id before the entry
// leaves the sequencer. A proposal raft drops is rolled back before anything
// else is sequenced.
//
// # Status
//
// A transaction is Pending once sequenced and Committed once a signature
// transaction at a later seqno is durable on a quorum (raft-committed, which
// for one node means fsynced). Only then are its commit evidence and receipt
// served. A transaction whose seqno raft overwrote in a later view is
// Invalid.
//
// # Applying
//
// Entries enter the store and the tree when they enter the log, not when
// they commit, as in CCF: a primary executes against the latest state, and a
// backup applies each entry as it arrives. An uncommitted suffix that a new
// leader overwrites is rolled back in the store, the tree and the files.
package engine
