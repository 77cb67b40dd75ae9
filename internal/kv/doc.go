// Package kv is the transactional key-value state that every Parley
// transaction runs over, in the CCF model: a set of named maps from string
// keys to byte values. A map whose name starts with "public:" is public (its
// writes are stored in clear in the ledger); every other map is private (the
// caller encrypts its writes). See [IsPublic] and [WriteSet.Split].
//
// The package is pure: no I/O, no goroutines, no logging.
//
// # Transactions
//
// [Store.Begin] starts a [Tx]. A transaction reads the store's current state
// through [Tx.Get] and [Tx.Foreach], buffers its writes ([Tx.Put],
// [Tx.Delete]) and sees its own writes first. Each read is recorded together
// with an internal stamp of the value it saw; [Tx.Foreach] also records a
// read of the whole map.
//
// Concurrency control is optimistic. The single sequencer goroutine of the
// ledger engine calls [Store.Commit] with the transaction and the version
// (the ledger seqno) it is to be written at. Commit validates, under the
// store's write lock, that every key the transaction read still holds what
// it saw (an absent key must still be absent) and that no map it iterated has
// been written since; if so it applies the writes at that version, and
// otherwise it returns an error wrapping [ErrConflict] and changes nothing.
// Transactions that only write (blind writes) never conflict: they are
// serialised by commit order. A committed transaction is serialisable at its
// commit point.
//
// Reads are not taken from a snapshot: two Gets of a transaction can observe
// states on either side of a concurrent commit. Commit validation catches
// that for read-write transactions. A read-only transaction that needs a
// consistent view calls [Store.Validate] after its reads: if that returns nil,
// every value it read was current at the same moment.
//
// A [Tx] is used by one goroutine at a time (it may be handed to the
// sequencer for Commit). [Store] is safe for concurrent use: many
// transactions may read while Commit, Apply, Rollback and Compact run.
//
// # Versions, rollback and compaction
//
// [Store.Commit] and [Store.Apply] write at a [Version] that must be greater
// than [Store.Version]. The store keeps an undo log (for each write: the key's
// previous value or absence, and the map's previous stamp) so that
// [Store.Rollback] can restore exactly the state at an earlier version, as
// needed when a new Raft leader overwrites an uncommitted suffix.
// [Store.Compact] forgets the undo information for versions at or below a
// committed version; a later Rollback below it returns an error wrapping
// [ErrCompacted] and changes nothing. Callers MUST call Compact as the commit
// index advances, or the undo log (which holds every overwritten value) grows
// without bound.
//
// Stamps are never reused, so a transaction that read a value written at
// version 5 conflicts if version 5 is rolled back and rewritten, even with the
// same version number; a read of a value that Rollback restores is valid
// again.
//
// # Snapshots
//
// [Store.Snapshot] returns the whole state as a [WriteSet] of puts, together
// with its version. Two stores hold the same state exactly when their
// snapshots encode to the same bytes. Loading a snapshot is [Store.Apply] of
// it to a new store, followed by [Store.Compact] at its version.
//
// # Limits
//
// Map names are 1 to [MaxMapNameLen] bytes, keys 0 to [MaxKeyLen] bytes and
// values 0 to [MaxValueLen] bytes. A Put or Delete outside these limits is not
// recorded; instead the transaction's error is set (see [Tx.Err], which wraps
// [ErrInvalidWrite]), and Commit returns it. The decoder rejects encodings
// outside these limits.
//
// # Write set encoding
//
// [WriteSet.MarshalBinary] produces the canonical encoding of a write set,
// which is what the ledger stores (the public and private halves are encoded
// separately, see [WriteSet.Split]). All integers written "uvarint" are
// unsigned LEB128 as in Go's [encoding/binary.AppendUvarint]: 7 bits per byte,
// least significant group first, high bit set on every byte but the last,
// and minimal (no trailing 0x80 continuation into a zero byte; the value 0 is
// the single byte 0x00). The layout is:
//
//	writeset = version:byte(0x01) mapCount:uvarint map*
//	map      = nameLen:uvarint name:byte[nameLen] writeCount:uvarint write*
//	write    = keyLen:uvarint key:byte[keyLen] flag:byte body
//	body     = (flag 0x00, put)    valueLen:uvarint value:byte[valueLen]
//	         | (flag 0x01, delete) nothing
//
// Constraints, all enforced by [WriteSet.UnmarshalBinary], which accepts
// exactly the byte strings MarshalBinary produces:
//   - the version byte is 0x01;
//   - maps appear in strictly increasing bytewise order of name (so no
//     duplicates), every name is 1 to [MaxMapNameLen] bytes, and every map has
//     at least one write;
//   - within a map, writes appear in strictly increasing bytewise order of
//     key, every key is at most [MaxKeyLen] bytes;
//   - the flag byte is 0x00 or 0x01, and a value is at most [MaxValueLen]
//     bytes;
//   - every uvarint is minimal and fits in 64 bits, every length fits in the
//     remaining input, and nothing follows the last map.
//
// An empty write set encodes as the two bytes 0x01 0x00. For example, a put
// of "v" at key "k" in map "public:m" followed by a delete of key "x" in the
// same map encodes as
//
//	01 01 08 "public:m" 02 01 "k" 00 01 "v" 01 "x" 01
package kv
