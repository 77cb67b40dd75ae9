// Package storage is the ledger's entry log on disk: chunked, append-only
// files of framed entries, written by group commit and recovered after a
// crash. The raft log is the ledger: raft index = seqno, raft term = view.
// Entries are opaque payloads plus (term, index, signature and
// membership-change flags).
//
// # Directory layout
//
// A ledger directory holds chunk files and one raft_state file. Files whose
// name does not start with "ledger_" or "raft_state" are ignored; a name that
// starts with "ledger_" but is not one of the three forms below is
// corruption.
//
//	ledger_<start>                 the open chunk, being appended to
//	ledger_<start>-<end>           complete, not every entry committed yet
//	ledger_<start>-<end>.committed complete and every entry committed
//
// start and end are the inclusive seqnos of the chunk's first and last
// entries, in canonical decimal (no sign, no leading zeros). Chunks are
// contiguous: each starts at the previous one's end + 1, and the first
// starts at the log's first index (1 unless the log was started from a
// snapshot). Only the last chunk may be open. A complete chunk always ends
// with a signature entry: when an entry with the signature flag is appended
// and the open chunk's size is at least [Options.ChunkSize] (5 MiB by
// default), the chunk is completed, and the next entry starts a new file.
//
// # Chunk file format
//
// A chunk file is the 8-byte magic "PRLYLDG1" followed by frames, one per
// entry, in index order with no gaps. A frame is:
//
//	offset size field
//	0      1    version, = 1
//	1      1    flags: bit 0 = signature transaction; bit 1 = raft
//	            membership change (the payload is still one ledger
//	            transaction); bits 2-7 MUST be 0
//	2      6    payload size in bytes, unsigned little-endian (at most 64 MiB)
//	8      8    term (raft term = view), unsigned little-endian
//	16     8    index (raft index = seqno), unsigned little-endian
//	24     n    payload
//	24+n   4    CRC-32C (Castagnoli) of bytes [0, 24+n), little-endian
//
// A frame is therefore 28 bytes longer than its payload. Terms never
// decrease from one entry to the next.
//
// # raft_state
//
// raft_state holds the raft HardState, 36 bytes, written atomically with
// [vfs.WriteFileDurable] (through raft_state.tmp, which may be left over
// after a crash and is ignored):
//
//	0  8  magic "PRLYHS01"
//	8  8  term, unsigned little-endian
//	16 8  vote, unsigned little-endian
//	24 8  commit, unsigned little-endian
//	32 4  CRC-32C (Castagnoli) of bytes [0, 32), little-endian
//
// # Durability
//
// [Log.Append] only buffers and writes; nothing is durable until
// [Log.Sync] returns nil. Before a chunk is renamed to its complete name its
// data is fsynced, so a complete or committed chunk is always whole on disk;
// only the open chunk can have a torn tail after a crash, and [Open] cuts it
// off. [Log.TruncateFrom], [Log.MarkCommitted] and [Log.SetHardState] are
// durable when they return. After any write or fsync error the Log refuses
// further changes (an fsync failure leaves the page cache in an unknown
// state), and must be closed and reopened.
package storage
