package kv

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Version is the ledger seqno at which a value was written. Version 0 means
// never written: a new [Store] is at version 0.
type Version uint64

// ErrConflict is wrapped by the error [Store.Commit] and [Store.Validate]
// return when a key or map the transaction read has changed since it was
// read. The caller may retry the transaction from [Store.Begin].
var ErrConflict = errors.New("transaction conflict")

// ErrCompacted is wrapped by the error [Store.Rollback] returns when asked to
// roll back below the version last passed to [Store.Compact].
var ErrCompacted = errors.New("undo information compacted")

// Store is the in-memory state: named maps of keys to values, at a version.
// It is safe for concurrent use. Values held by the store are never modified
// in place, so slices handed out by [Tx.Get], [Tx.Foreach] and
// [Store.Snapshot] stay valid; callers MUST NOT modify them.
type Store struct {
	mu        sync.RWMutex
	maps      map[string]*mapState
	stamp     uint64 // last stamp handed out; never decreases
	undo      []undo // by increasing version
	compacted Version

	version atomic.Uint64 // written under mu, read without it
}

// mapState is one map. Its stamp is that of the last write to it (0 if it
// was never written), and changes on every write, so that a transaction that
// iterated the map can detect any later write.
type mapState struct {
	name    string
	entries map[string]entry
	stamp   uint64
}

// entry is a present key. Its stamp identifies the write that produced it:
// stamps are unique per Commit or Apply and never reused, even across
// Rollback, so an equal stamp means an equal value. Absent keys have stamp 0.
type entry struct {
	value []byte
	stamp uint64
}

// undo restores one write: the key's previous entry (or absence) and the
// map's previous stamp.
type undo struct {
	m         *mapState
	key       string
	prev      entry
	existed   bool
	prevStamp uint64
	v         Version
}

// NewStore returns an empty store at version 0.
func NewStore() *Store {
	return &Store{maps: make(map[string]*mapState)}
}

// Version returns the highest version applied (by Commit or Apply, and not
// rolled back).
func (s *Store) Version() Version { return Version(s.version.Load()) }

// Begin starts a transaction over s.
func (s *Store) Begin() *Tx { return &Tx{s: s} }

// lookup returns the entry at m/key, or the zero entry and false.
func (s *Store) lookup(m, key string) (entry, bool) {
	s.mu.RLock()
	var e entry
	var ok bool
	if ms := s.maps[m]; ms != nil {
		e, ok = ms.entries[key]
	}
	s.mu.RUnlock()
	return e, ok
}

// Commit validates tx and, if every read is still current, applies its
// writes atomically at version v, which MUST be greater than [Store.Version].
// Commit is meant to be called by the one goroutine that assigns versions.
//
// Commit returns an error wrapping [ErrConflict] if a read is stale, the
// error of [Tx.Err] if a write was invalid, or another error if v is not
// above the current version, tx belongs to another store or was already
// committed. On error, nothing changes. After a successful Commit, tx MUST
// NOT be used for further writes.
func (s *Store) Commit(tx *Tx, v Version) error {
	switch {
	case tx == nil:
		return errors.New("commit: nil transaction")
	case tx.s != s:
		return errors.New("commit: transaction of another store")
	case tx.done:
		return errTxDone
	case tx.err != nil:
		return fmt.Errorf("commit: %w", tx.err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkVersionLocked(v); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if err := s.validateLocked(tx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	s.stamp++
	var ms *mapState
	for i := range tx.writes {
		w := &tx.writes[i]
		if ms == nil || ms.name != w.m {
			ms = s.mapLocked(w.m)
		}
		s.writeLocked(ms, w.key, w.value, w.deleted, v)
	}
	s.version.Store(uint64(v))
	tx.done = true
	return nil
}

// Validate reports whether every read of tx is still current: it returns nil
// or an error wrapping [ErrConflict]. A read-only transaction whose Validate
// returns nil has seen a consistent state, the store's state at the time of
// the call. Validate changes nothing.
func (s *Store) Validate(tx *Tx) error {
	if tx == nil || tx.s != s {
		return errors.New("validate: transaction of another store")
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.validateLocked(tx)
}

func (s *Store) validateLocked(tx *Tx) error {
	for i := range tx.reads {
		r := &tx.reads[i]
		var cur uint64
		if ms := s.maps[r.m]; ms != nil {
			cur = ms.entries[r.key].stamp
		}
		if cur != r.stamp {
			return fmt.Errorf("read in map %.64q: %w", r.m, ErrConflict)
		}
	}
	for _, r := range tx.mapReads {
		var cur uint64
		if ms := s.maps[r.m]; ms != nil {
			cur = ms.stamp
		}
		if cur != r.stamp {
			return fmt.Errorf("iteration of map %.64q: %w", r.m, ErrConflict)
		}
	}
	return nil
}

func (s *Store) checkVersionLocked(v Version) error {
	if cur := s.Version(); v <= cur {
		return fmt.Errorf("version %d not above current version %d", v, cur)
	}
	return nil
}

// Apply applies ws at version v without validation, as when replaying the
// ledger or following a leader. v MUST be greater than [Store.Version]; if it
// is not, Apply returns an error and changes nothing. ws should be
// well-formed (as decoded by [WriteSet.UnmarshalBinary] or built by
// [Tx.WriteSet]); if a key appears twice, the later write wins. Apply keeps
// references to the values of ws: the caller MUST NOT modify them afterwards.
// A nil ws applies no writes but still advances the version.
func (s *Store) Apply(ws *WriteSet, v Version) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkVersionLocked(v); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	s.stamp++
	if ws != nil {
		for _, mw := range ws.Maps {
			ms := s.mapLocked(mw.Map)
			for _, w := range mw.Writes {
				s.writeLocked(ms, w.Key, w.Value, w.Deleted, v)
			}
		}
	}
	s.version.Store(uint64(v))
	return nil
}

// mapLocked returns the state of map m, creating it if needed.
func (s *Store) mapLocked(m string) *mapState {
	ms := s.maps[m]
	if ms == nil {
		ms = &mapState{name: m, entries: make(map[string]entry)}
		s.maps[m] = ms
	}
	return ms
}

// writeLocked applies one write at version v with the current stamp,
// recording how to undo it unless v is already compacted.
func (s *Store) writeLocked(ms *mapState, key string, value []byte, deleted bool, v Version) {
	prev, existed := ms.entries[key]
	if v > s.compacted {
		s.undo = append(s.undo, undo{m: ms, key: key, prev: prev, existed: existed, prevStamp: ms.stamp, v: v})
	}
	ms.stamp = s.stamp
	if deleted {
		if existed {
			delete(ms.entries, key)
		}
		return
	}
	ms.entries[key] = entry{value: value[:len(value):len(value)], stamp: s.stamp}
}

// Rollback undoes every write at a version above to, restoring exactly the
// state at version to, and sets the version to to. It is a no-op if to is not
// below [Store.Version]. If to is below the version last passed to
// [Store.Compact], the undo information is gone: Rollback then returns an
// error wrapping [ErrCompacted] and changes nothing.
//
// Transactions that read any value Rollback removes will conflict at Commit.
func (s *Store) Rollback(to Version) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if to >= s.Version() {
		return nil
	}
	if to < s.compacted {
		return fmt.Errorf("rollback to %d below %d: %w", to, s.compacted, ErrCompacted)
	}
	i := len(s.undo)
	for ; i > 0 && s.undo[i-1].v > to; i-- {
		u := &s.undo[i-1]
		if u.existed {
			u.m.entries[u.key] = u.prev
		} else {
			delete(u.m.entries, u.key)
		}
		u.m.stamp = u.prevStamp
		if u.prevStamp == 0 && len(u.m.entries) == 0 {
			delete(s.maps, u.m.name)
		}
	}
	clear(s.undo[i:])
	s.undo = s.undo[:i]
	s.version.Store(uint64(to))
	return nil
}

// Compact forgets the undo information for versions at or below committed,
// which MUST be committed (never to be rolled back). Afterwards
// [Store.Rollback] below committed returns an error. Compact with a version
// at or below an earlier one is a no-op.
func (s *Store) Compact(committed Version) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if committed <= s.compacted {
		return
	}
	s.compacted = committed
	i := 0
	for i < len(s.undo) && s.undo[i].v <= committed {
		i++
	}
	if live := len(s.undo) - i; live <= i {
		// Move the live records to the front, keeping the capacity, when
		// that costs no more than the records dropped: no allocation in
		// the steady state.
		copy(s.undo, s.undo[i:])
		clear(s.undo[live:]) // drop references to overwritten values
		s.undo = s.undo[:live]
		return
	}
	clear(s.undo[:i])
	s.undo = s.undo[i:]
}

// Snapshot returns the whole state as a write set of puts, maps sorted by
// name and keys by key, together with the version it is at. Two stores hold
// the same state exactly when their snapshots are equal (for example, when
// their MarshalBinary encodings are equal). The values are shared with the
// store and MUST NOT be modified. A snapshot is loaded by applying it to a
// new store with [Store.Apply].
func (s *Store) Snapshot() (*WriteSet, Version) {
	s.mu.RLock()
	ws := &WriteSet{Maps: make([]MapWrites, 0, len(s.maps))}
	for name, ms := range s.maps {
		if len(ms.entries) == 0 {
			continue
		}
		mw := MapWrites{Map: name, Writes: make([]Write, 0, len(ms.entries))}
		for k, e := range ms.entries {
			mw.Writes = append(mw.Writes, Write{Key: k, Value: e.value})
		}
		ws.Maps = append(ws.Maps, mw)
	}
	v := s.Version()
	s.mu.RUnlock()

	slices.SortFunc(ws.Maps, func(a, b MapWrites) int { return strings.Compare(a.Map, b.Map) })
	for _, mw := range ws.Maps {
		slices.SortFunc(mw.Writes, func(a, b Write) int { return strings.Compare(a.Key, b.Key) })
	}
	return ws, v
}
