package engine

import (
	"errors"
	"fmt"
	"sync"

	"github.com/parleyhq/parley/internal/storage"
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

func (r *raftLog) FirstIndex() (uint64, error) { return r.log.FirstIndex(), nil }
func (r *raftLog) LastIndex() (uint64, error)  { return r.log.LastIndex(), nil }

func (r *raftLog) Term(i uint64) (uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i < r.log.FirstIndex() {
		if i == r.log.FirstIndex()-1 {
			return 0, nil // no snapshots yet: the log starts at its first index
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
	if lo < r.log.FirstIndex() {
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

func (r *raftLog) Snapshot() (pb.Snapshot, error) {
	return pb.Snapshot{}, raft.ErrSnapshotTemporarilyUnavailable
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
