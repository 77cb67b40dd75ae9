package engine

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/parleyhq/parley/internal/storage"
	"github.com/parleyhq/parley/internal/vfs"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// raftLog adapts the ledger files to raft.Storage. It keeps the entries
// raft may still ask for soon (those not yet known to be applied) in memory,
// so that committing does not read back from disk what was just written.
// Only the sequencer goroutine calls it (raft calls it from there too).
type raftLog struct {
	mu        sync.Mutex // the append thread writes, the sequencer reads
	log       *storage.Log
	hs        pb.HardState
	cs        pb.ConfState
	tail      []pb.Entry // contiguous, ending at log.LastIndex(), possibly empty
	tailFirst uint64     // index of tail[0]
	// recovered is Config.RecoveredUpTo: membership changes up to it were
	// a previous service's, and are ordinary entries to this one.
	recovered uint64
	// snaps are the snapshot files, oldest first (at most snapshotsKept),
	// in snapDir on fsys. Raft's log starts after the oldest when there
	// are two (so that a follower just behind the newest still gets
	// entries), and after the ledger's own start in any case.
	snaps   []snapMeta
	fsys    vfs.FS
	snapDir string
}

var _ raft.Storage = (*raftLog)(nil)

func (r *raftLog) InitialState() (pb.HardState, pb.ConfState, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hs, r.cs, nil
}

func (r *raftLog) hardState() pb.HardState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hs
}

func (r *raftLog) setConfState(cs pb.ConfState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cs = cs
}

func (r *raftLog) setHardState(hs pb.HardState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hs = hs
}

func (r *raftLog) FirstIndex() (uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.firstLocked(), nil
}

func (r *raftLog) firstLocked() uint64 {
	first := r.log.FirstIndex()
	if len(r.snaps) >= snapshotsKept && r.snaps[len(r.snaps)-1].size <= maxSnapshotMessage {
		first = max(first, r.snaps[0].index+1)
	}
	return first
}

// addSnapshot records a snapshot file written (raft's log may now start
// later).
func (r *raftLog) addSnapshot(m snapMeta) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.snaps); n > 0 && r.snaps[n-1].index >= m.index {
		return
	}
	r.snaps = append(r.snaps, m)
	if n := len(r.snaps); n > snapshotsKept {
		r.snaps = append(r.snaps[:0], r.snaps[n-snapshotsKept:]...)
	}
}

// reset empties the ledger so that it goes on after the installed snapshot m.
func (r *raftLog) reset(index uint64, m snapMeta) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.log.Reset(index + 1); err != nil {
		return err
	}
	r.tail, r.tailFirst = nil, index+1
	r.snaps = []snapMeta{m}
	r.cs = m.cs
	return nil
}
func (r *raftLog) LastIndex() (uint64, error) { return r.log.LastIndex(), nil }

func (r *raftLog) Term(i uint64) (uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if first := r.firstLocked(); i < first {
		if i == 0 {
			return 0, nil
		}
		for _, m := range r.snaps {
			if m.index == i {
				return m.term, nil
			}
		}
		if i == first-1 && i >= r.log.FirstIndex() {
			t, err := r.log.Term(i)
			if err != nil {
				return 0, fmt.Errorf("term of %d: %w", i, err)
			}
			return t, nil
		}
		return 0, raft.ErrCompacted
	}
	if i > r.log.LastIndex() {
		return 0, raft.ErrUnavailable
	}
	if len(r.tail) > 0 && i >= r.tailFirst {
		return r.tail[i-r.tailFirst].Term, nil
	}
	t, err := r.log.Term(i)
	if err != nil {
		return 0, fmt.Errorf("term of %d: %w", i, err)
	}
	return t, nil
}

func (r *raftLog) Entries(lo, hi, maxSize uint64) ([]pb.Entry, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if lo < r.firstLocked() {
		return nil, raft.ErrCompacted
	}
	if hi > r.log.LastIndex()+1 {
		return nil, raft.ErrUnavailable
	}
	if len(r.tail) > 0 && lo >= r.tailFirst {
		// A copy: raft keeps the slice (in messages) while the tail moves.
		ents := limitSize(r.tail[lo-r.tailFirst:hi-r.tailFirst], maxSize)
		return append([]pb.Entry(nil), ents...), nil
	}
	stored, err := r.log.Entries(lo, hi, maxSize)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return nil, raft.ErrUnavailable
		}
		return nil, fmt.Errorf("entries [%d, %d): %w", lo, hi, err)
	}
	ents := make([]pb.Entry, len(stored))
	for i, e := range stored {
		if e.ConfChange && e.Index > r.recovered {
			if ents[i], err = raftEntryFromStored(e.Term, e.Index, e.Data); err != nil {
				return nil, err
			}
			continue
		}
		ents[i] = pb.Entry{Term: e.Term, Index: e.Index, Type: pb.EntryNormal, Data: e.Data}
	}
	return ents, nil
}

// Snapshot returns the newest snapshot file, which raft sends to a
// follower that needs entries before its first index.
func (r *raftLog) Snapshot() (pb.Snapshot, error) {
	r.mu.Lock()
	if len(r.snaps) == 0 {
		r.mu.Unlock()
		return pb.Snapshot{}, raft.ErrSnapshotTemporarilyUnavailable
	}
	m := r.snaps[len(r.snaps)-1]
	r.mu.Unlock()
	data, err := r.fsys.ReadFile(filepath.Join(r.snapDir, snapshotName(m.index)))
	if err != nil {
		return pb.Snapshot{}, raft.ErrSnapshotTemporarilyUnavailable
	}
	// The membership raft is told is the one applied now, not the one at
	// the snapshot: raft refuses a snapshot whose membership lacks the
	// receiver, and a node added after the snapshot was taken is just who
	// needs it. The changes between the snapshot and now are in the log
	// the receiver gets next; applying them again changes nothing (adding
	// a present node or removing an absent one is a no-op in raft).
	r.mu.Lock()
	cs := r.cs
	r.mu.Unlock()
	return pb.Snapshot{Data: data, Metadata: pb.SnapshotMetadata{Index: m.index, Term: m.term, ConfState: cs}}, nil
}

// append persists entries (not yet synced) and keeps them in the tail.
// Entries at or below the last index replace the suffix they overlap.
func (r *raftLog) append(ents []pb.Entry) error {
	if len(ents) == 0 {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	first := ents[0].Index
	if first <= r.log.LastIndex() {
		if err := r.log.TruncateFrom(first); err != nil {
			return fmt.Errorf("truncate from %d: %w", first, err)
		}
		if len(r.tail) > 0 && first >= r.tailFirst {
			r.tail = r.tail[:first-r.tailFirst]
		} else {
			r.tail = nil
		}
	}
	batch := make([]storage.Entry, len(ents))
	for i := range ents {
		e := &ents[i]
		payload, err := entryPayload(e)
		if err != nil {
			return err
		}
		batch[i] = storage.Entry{Term: e.Term, Index: e.Index, Signature: isSignature(payload), ConfChange: e.Type == pb.EntryConfChangeV2, Data: payload}
	}
	if err := r.log.Append(batch); err != nil {
		return fmt.Errorf("append [%d, %d]: %w", first, ents[len(ents)-1].Index, err)
	}
	if len(r.tail) == 0 {
		r.tailFirst = first
	}
	r.tail = append(r.tail, ents...)
	return nil
}

// forget drops tail entries up to and including applied.
func (r *raftLog) forget(applied uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.tail) == 0 || applied < r.tailFirst {
		return
	}
	n := applied - r.tailFirst + 1
	if n >= uint64(len(r.tail)) {
		r.tail = r.tail[:0]
		r.tailFirst = applied + 1
		return
	}
	// Copy down so the backing array does not grow without bound.
	k := copy(r.tail, r.tail[n:])
	clear(r.tail[k:])
	r.tail = r.tail[:k]
	r.tailFirst = applied + 1
}

func limitSize(ents []pb.Entry, maxSize uint64) []pb.Entry {
	if len(ents) == 0 {
		return ents
	}
	size := uint64(ents[0].Size())
	for i := 1; i < len(ents); i++ {
		size += uint64(ents[i].Size())
		if size > maxSize {
			return ents[:i]
		}
	}
	return ents
}
