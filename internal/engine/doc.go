// Package engine is the ledger of one node: it runs transactions over the
// key-value store, sequences them through raft (go.etcd.io/raft/v3, even with
// a single voter, so that adding nodes changes no format), seals each into a
// ledger entry, appends it to the chunked ledger files with group commit,
// keeps the Merkle tree over all entries, emits signature transactions and
// serves status and receipts.
//
// # Who knows the seqno when
//
// One goroutine, the sequencer, owns the raft node and the Merkle tree. A
// transaction's seqno is raft's index and its view raft's term; both are
// fixed when the sequencer builds the entry. The sequencer is the only
// proposer, and every entry raft holds has passed through it (its own, and
// those it learns from Ready, such as a new leader's no-op), so the next
// index is its last index plus one. The nonce, the commit evidence and the
// Merkle leaf are derived from that id before the entry leaves the
// sequencer. Submitting goroutines lay out each payload beforehand
// (ledger.Prepare), so the sequencer only does what needs the id.
//
// # Group commit and signatures
//
// Raft runs with asynchronous storage writes: an append thread writes every
// batch queued since its last fsync and fsyncs once, while the sequencer goes
// on. Sequenced transactions are answered at once (their ids are final) but
// held back from raft until the signature that will cover them is due, so a
// batch and its signature reach the disk in one fsync. A signature is due as
// soon as the previous one is durable (but at most every quarter of the
// signature interval), after SignatureTxCount transactions, or when the
// ticker finds unsigned transactions. A proposal raft refuses, or held
// entries when the node stops leading, are rolled back: their transactions
// turn Invalid.
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
//
// # Ledger secrets
//
// The engine keeps the ledger secrets as a list of epochs (first seqno,
// secret) and seals, opens and computes the commit evidence of each entry
// with the secret of its seqno (secrets.go). A rotation is a transaction
// that writes the next secret in a private map (PrepareRotation): the
// engine learns it when it sequences or applies that entry, and it seals
// from the next seqno on; rolling the entry back drops it. A ledger
// recovered from another service opens with the private domain before its
// first epoch closed: public write sets only, private writes refused,
// until PrepareRestore and CommitRestore apply the old private state with
// the old secrets, in one transaction that replay repeats (recovery.go).
package engine
