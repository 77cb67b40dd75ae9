package kv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// mustCommit commits tx at the next version.
func mustCommit(t *testing.T, s *Store, tx *Tx) Version {
	t.Helper()
	v := s.Version() + 1
	if err := s.Commit(tx, v); err != nil {
		t.Fatalf("Commit(tx, %d) error = %v", v, err)
	}
	return v
}

func put(t *testing.T, s *Store, m, key, value string) Version {
	t.Helper()
	tx := s.Begin()
	tx.Put(m, key, []byte(value))
	return mustCommit(t, s, tx)
}

func getString(tx *Tx, m, key string) string {
	v, ok := tx.Get(m, key)
	if !ok {
		return "<absent>"
	}
	return string(v)
}

// dump returns the store's state as an encoded snapshot, for comparisons.
func dump(t *testing.T, s *Store) []byte {
	t.Helper()
	ws, _ := s.Snapshot()
	b, err := ws.MarshalBinary()
	if err != nil {
		t.Fatalf("Snapshot().MarshalBinary() error = %v", err)
	}
	return b
}

func TestGetPutDelete(t *testing.T) {
	s := NewStore()
	put(t, s, "m", "a", "stored-a")
	put(t, s, "m", "b", "stored-b")

	tx := s.Begin()
	if !tx.ReadOnly() {
		t.Errorf("ReadOnly() of a new tx = false, want true")
	}
	value := []byte("own-a")
	tx.Put("m", "a", value)
	value[0] = 'X' // Put must have copied
	tx.Delete("m", "b")
	tx.Put("m", "c", nil)
	tx.Put("other", "a", []byte("other-a"))

	tests := []struct{ m, key, want string }{
		{"m", "a", "own-a"},
		{"m", "b", "<absent>"},
		{"m", "c", ""},
		{"m", "d", "<absent>"},
		{"other", "a", "other-a"},
		{"nomap", "a", "<absent>"},
	}
	for _, tt := range tests {
		if got := getString(tx, tt.m, tt.key); got != tt.want {
			t.Errorf("tx.Get(%q, %q) = %q, want %q", tt.m, tt.key, got, tt.want)
		}
	}
	if tx.ReadOnly() {
		t.Errorf("ReadOnly() after Put = true, want false")
	}

	// Nothing is visible to others before Commit.
	other := s.Begin()
	if got := getString(other, "m", "a"); got != "stored-a" {
		t.Errorf("other.Get before commit = %q, want %q", got, "stored-a")
	}
	v := mustCommit(t, s, tx)
	if got := s.Version(); got != v {
		t.Errorf("Version() = %d, want %d", got, v)
	}
	after := s.Begin()
	for _, tt := range tests {
		if got := getString(after, tt.m, tt.key); got != tt.want {
			t.Errorf("after commit: Get(%q, %q) = %q, want %q", tt.m, tt.key, got, tt.want)
		}
	}
	// Appending to a returned value must not write into the store's copy.
	if v, _ := after.Get("m", "a"); cap(v) != len(v) {
		t.Errorf("Get returned a slice with cap %d > len %d", cap(v), len(v))
	}
	applied := NewStore()
	roomy := make([]byte, 1, 64)
	if err := applied.Apply(&WriteSet{Maps: []MapWrites{{Map: "m", Writes: []Write{{Key: "k", Value: roomy}}}}}, 1); err != nil {
		t.Fatal(err)
	}
	if v, _ := applied.Begin().Get("m", "k"); cap(v) != len(v) {
		t.Errorf("Get after Apply returned a slice with cap %d > len %d", cap(v), len(v))
	}
}

func TestOwnWritesOverride(t *testing.T) {
	s := NewStore()
	tx := s.Begin()
	tx.Put("m", "k", []byte("1"))
	tx.Delete("m", "k")
	if got := getString(tx, "m", "k"); got != "<absent>" {
		t.Errorf("Get after Put, Delete = %q, want absent", got)
	}
	tx.Put("m", "k", []byte("2"))
	if got := getString(tx, "m", "k"); got != "2" {
		t.Errorf("Get after Put, Delete, Put = %q, want %q", got, "2")
	}
	// Many writes switch the tx to an index; lookups must still work.
	for i := range 100 {
		tx.Put("m", fmt.Sprint(i), []byte(fmt.Sprint(i*i)))
	}
	for i := range 100 {
		if got, want := getString(tx, "m", fmt.Sprint(i)), fmt.Sprint(i*i); got != want {
			t.Fatalf("Get(%d) = %q, want %q", i, got, want)
		}
	}
	tx.Put("m", "50", []byte("last"))
	ws := tx.WriteSet()
	if n := len(ws.Maps[0].Writes); n != 101 {
		t.Errorf("WriteSet has %d writes, want 101", n)
	}
	mustCommit(t, s, tx)
	if got := getString(s.Begin(), "m", "50"); got != "last" {
		t.Errorf("Get(50) after commit = %q, want %q", got, "last")
	}
}

func TestForeach(t *testing.T) {
	s := NewStore()
	setup := s.Begin()
	for _, k := range []string{"d", "b", "a", "f"} {
		setup.Put("m", k, []byte("stored-"+k))
	}
	setup.Put("n", "x", []byte("other map"))
	mustCommit(t, s, setup)

	tx := s.Begin()
	tx.Put("m", "c", []byte("own-c"))
	tx.Put("m", "b", []byte("own-b"))
	tx.Delete("m", "d")
	tx.Delete("m", "zz") // absent anyway
	tx.Put("m", "g", []byte("own-g"))

	type pair struct{ k, v string }
	var got []pair
	tx.Foreach("m", func(k string, v []byte) bool {
		got = append(got, pair{k, string(v)})
		return true
	})
	want := []pair{{"a", "stored-a"}, {"b", "own-b"}, {"c", "own-c"}, {"f", "stored-f"}, {"g", "own-g"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Foreach visited %v, want %v", got, want)
	}

	var stopped []string
	tx.Foreach("m", func(k string, v []byte) bool {
		stopped = append(stopped, k)
		return len(stopped) < 2
	})
	if want := []string{"a", "b"}; !reflect.DeepEqual(stopped, want) {
		t.Errorf("Foreach stopping after 2 visited %v, want %v", stopped, want)
	}

	var none []string
	tx.Foreach("absent", func(k string, v []byte) bool { none = append(none, k); return true })
	if len(none) != 0 {
		t.Errorf("Foreach of an absent map visited %v, want nothing", none)
	}
}

func TestConflicts(t *testing.T) {
	tests := []struct {
		name string
		// setup runs first and is committed; tx then runs its reads and
		// writes, other commits in between, and tx commits last.
		tx           func(tx *Tx)
		other        func(tx *Tx)
		wantConflict bool
	}{
		{
			name:         "read then other writes the key",
			tx:           func(tx *Tx) { tx.Get("m", "k"); tx.Put("m", "out", nil) },
			other:        func(tx *Tx) { tx.Put("m", "k", []byte("new")) },
			wantConflict: true,
		},
		{
			name:         "read then other deletes the key",
			tx:           func(tx *Tx) { tx.Get("m", "k"); tx.Put("m", "out", nil) },
			other:        func(tx *Tx) { tx.Delete("m", "k") },
			wantConflict: true,
		},
		{
			name:         "read of absent key then other creates it",
			tx:           func(tx *Tx) { tx.Get("m", "absent"); tx.Put("m", "out", nil) },
			other:        func(tx *Tx) { tx.Put("m", "absent", []byte("now here")) },
			wantConflict: true,
		},
		{
			name:         "read of key in absent map then other creates it",
			tx:           func(tx *Tx) { tx.Get("newmap", "k"); tx.Put("m", "out", nil) },
			other:        func(tx *Tx) { tx.Put("newmap", "k", []byte("v")) },
			wantConflict: true,
		},
		{
			name:         "read then other writes another key",
			tx:           func(tx *Tx) { tx.Get("m", "k"); tx.Put("m", "out", nil) },
			other:        func(tx *Tx) { tx.Put("m", "k2", []byte("new")) },
			wantConflict: false,
		},
		{
			name:         "blind writes to the same key",
			tx:           func(tx *Tx) { tx.Put("m", "k", []byte("mine")) },
			other:        func(tx *Tx) { tx.Put("m", "k", []byte("theirs")) },
			wantConflict: false,
		},
		{
			name:         "own write then read does not record a read",
			tx:           func(tx *Tx) { tx.Put("m", "k", []byte("mine")); tx.Get("m", "k") },
			other:        func(tx *Tx) { tx.Put("m", "k", []byte("theirs")) },
			wantConflict: false,
		},
		{
			name:         "foreach then other writes a new key in the map",
			tx:           func(tx *Tx) { tx.Foreach("m", func(string, []byte) bool { return true }); tx.Put("x", "out", nil) },
			other:        func(tx *Tx) { tx.Put("m", "brand-new", []byte("v")) },
			wantConflict: true,
		},
		{
			name:         "foreach then other deletes an absent key in the map",
			tx:           func(tx *Tx) { tx.Foreach("m", func(string, []byte) bool { return true }); tx.Put("x", "out", nil) },
			other:        func(tx *Tx) { tx.Delete("m", "never-there") },
			wantConflict: true,
		},
		{
			name:         "foreach stopped early still reads the whole map",
			tx:           func(tx *Tx) { tx.Foreach("m", func(string, []byte) bool { return false }); tx.Put("x", "out", nil) },
			other:        func(tx *Tx) { tx.Put("m", "zzz", []byte("v")) },
			wantConflict: true,
		},
		{
			name:         "foreach of absent map then other creates it",
			tx:           func(tx *Tx) { tx.Foreach("newmap", func(string, []byte) bool { return true }); tx.Put("x", "out", nil) },
			other:        func(tx *Tx) { tx.Put("newmap", "k", []byte("v")) },
			wantConflict: true,
		},
		{
			name:         "foreach then other writes another map",
			tx:           func(tx *Tx) { tx.Foreach("m", func(string, []byte) bool { return true }); tx.Put("x", "out", nil) },
			other:        func(tx *Tx) { tx.Put("m2", "k", []byte("v")) },
			wantConflict: false,
		},
		{
			name:         "read-only tx also validates",
			tx:           func(tx *Tx) { tx.Get("m", "k") },
			other:        func(tx *Tx) { tx.Put("m", "k", []byte("new")) },
			wantConflict: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStore()
			put(t, s, "m", "k", "old")
			tx := s.Begin()
			tt.tx(tx)

			other := s.Begin()
			tt.other(other)
			mustCommit(t, s, other)
			afterOther := dump(t, s)

			if err := s.Validate(tx); errors.Is(err, ErrConflict) != tt.wantConflict {
				t.Errorf("Validate() error = %v, want conflict %v", err, tt.wantConflict)
			}
			err := s.Commit(tx, s.Version()+1)
			if got := errors.Is(err, ErrConflict); got != tt.wantConflict {
				t.Fatalf("Commit() error = %v, want conflict %v", err, tt.wantConflict)
			}
			if err == nil {
				return
			}
			if got := dump(t, s); !bytes.Equal(got, afterOther) {
				t.Errorf("state after conflicting Commit = %x, want unchanged %x", got, afterOther)
			}
		})
	}
}

func TestBlindWritesLastCommitWins(t *testing.T) {
	s := NewStore()
	a, b := s.Begin(), s.Begin()
	a.Put("m", "k", []byte("a"))
	b.Put("m", "k", []byte("b"))
	mustCommit(t, s, b)
	mustCommit(t, s, a)
	if got := getString(s.Begin(), "m", "k"); got != "a" {
		t.Errorf("Get after commits b then a = %q, want %q", got, "a")
	}
}

func TestCommitErrors(t *testing.T) {
	s := NewStore()
	put(t, s, "m", "k", "v") // version 1

	tests := []struct {
		name string
		tx   func() *Tx
		v    Version
		want error // matched with errors.Is when non-nil
	}{
		{"version not above current", func() *Tx { tx := s.Begin(); tx.Put("m", "k", nil); return tx }, 1, nil},
		{"version zero", func() *Tx { return s.Begin() }, 0, nil},
		{"other store", func() *Tx { tx := NewStore().Begin(); tx.Put("m", "k", nil); return tx }, 2, nil},
		{"nil tx", func() *Tx { return nil }, 2, nil},
		{"empty map name", func() *Tx { tx := s.Begin(); tx.Put("", "k", nil); return tx }, 2, ErrInvalidWrite},
		{"map name too long", func() *Tx { tx := s.Begin(); tx.Delete(strings.Repeat("m", MaxMapNameLen+1), "k"); return tx }, 2, ErrInvalidWrite},
		{"key too long", func() *Tx { tx := s.Begin(); tx.Put("m", strings.Repeat("k", MaxKeyLen+1), nil); return tx }, 2, ErrInvalidWrite},
		{"value too long", func() *Tx { tx := s.Begin(); tx.Put("m", "k", make([]byte, MaxValueLen+1)); return tx }, 2, ErrInvalidWrite},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := dump(t, s)
			tx := tt.tx()
			if tt.want != nil && !errors.Is(tx.Err(), tt.want) {
				t.Errorf("tx.Err() = %v, want %v", tx.Err(), tt.want)
			}
			err := s.Commit(tx, tt.v)
			if err == nil {
				t.Fatalf("Commit(tx, %d) = nil, want an error", tt.v)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("Commit(tx, %d) error = %v, want %v", tt.v, err, tt.want)
			}
			if errors.Is(err, ErrConflict) {
				t.Errorf("Commit(tx, %d) error = %v, want no conflict", tt.v, err)
			}
			if got := dump(t, s); !bytes.Equal(got, before) || s.Version() != 1 {
				t.Errorf("state changed by failed Commit")
			}
		})
	}

	t.Run("limits at the boundary are fine", func(t *testing.T) {
		tx := s.Begin()
		tx.Put(strings.Repeat("m", MaxMapNameLen), strings.Repeat("k", MaxKeyLen), []byte("v"))
		tx.Put("m", "", nil)
		if err := tx.Err(); err != nil {
			t.Fatalf("tx.Err() = %v, want nil", err)
		}
		mustCommit(t, s, tx)
	})

	t.Run("commit twice", func(t *testing.T) {
		tx := s.Begin()
		tx.Put("m", "twice", []byte("v"))
		mustCommit(t, s, tx)
		if err := s.Commit(tx, s.Version()+1); err == nil {
			t.Errorf("second Commit = nil, want an error")
		}
		tx.Put("m", "after", nil)
		if !errors.Is(tx.Err(), ErrInvalidWrite) {
			t.Errorf("Err() after a write after commit = %v, want %v", tx.Err(), ErrInvalidWrite)
		}
	})

	t.Run("apply version not above current", func(t *testing.T) {
		if err := s.Apply(&WriteSet{}, s.Version()); err == nil {
			t.Errorf("Apply at the current version = nil, want an error")
		}
	})
}

func TestWriteSetDeterministic(t *testing.T) {
	type op struct {
		m, k string
		del  bool
	}
	ops := []op{
		{"public:b", "2", false}, {"a", "z", false}, {"public:b", "1", true},
		{"a", "y", false}, {"c", "", false}, {"a", "x", true},
	}
	var want []byte
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20 {
		perm := rng.Perm(len(ops))
		tx := NewStore().Begin()
		for _, j := range perm {
			o := ops[j]
			if o.del {
				tx.Delete(o.m, o.k)
			} else {
				tx.Put(o.m, o.k, []byte(o.m+"/"+o.k))
			}
		}
		got, err := tx.WriteSet().MarshalBinary()
		if err != nil {
			t.Fatalf("MarshalBinary() error = %v", err)
		}
		if i == 0 {
			want = got
			continue
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("write set of permutation %v = %x, want %x", perm, got, want)
		}
	}
	var ws WriteSet
	if err := ws.UnmarshalBinary(want); err != nil {
		t.Fatal(err)
	}
	wantWS := &WriteSet{Maps: []MapWrites{
		{Map: "a", Writes: []Write{{Key: "x", Deleted: true}, {Key: "y", Value: []byte("a/y")}, {Key: "z", Value: []byte("a/z")}}},
		{Map: "c", Writes: []Write{{Key: "", Value: []byte("c/")}}},
		{Map: "public:b", Writes: []Write{{Key: "1", Deleted: true}, {Key: "2", Value: []byte("public:b/2")}}},
	}}
	if !reflect.DeepEqual(&ws, wantWS) {
		t.Errorf("write set = %+v, want %+v", ws, wantWS)
	}
}

// TestConcurrentCounters runs read-modify-write increments from many
// goroutines, committed by one sequencer goroutine as the ledger engine
// does, with readers iterating concurrently. Every increment must count.
func TestConcurrentCounters(t *testing.T) {
	const (
		workers  = 8
		perEach  = 200
		counters = 3
	)
	s := NewStore()
	type req struct {
		tx   *Tx
		done chan error
	}
	reqs := make(chan req)
	var seqWG sync.WaitGroup
	seqWG.Go(func() {
		for r := range reqs {
			r.done <- s.Commit(r.tx, s.Version()+1)
		}
	})

	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			done := make(chan error)
			for i := range perEach {
				key := fmt.Sprint("c", (w+i)%counters)
				for {
					tx := s.Begin()
					var n uint64
					if v, ok := tx.Get("public:counters", key); ok {
						n = binary.BigEndian.Uint64(v)
					}
					tx.Put("public:counters", key, binary.BigEndian.AppendUint64(nil, n+1))
					// Also count per worker, in a private map.
					var mine uint64
					if v, ok := tx.Get("totals", fmt.Sprint("w", w)); ok {
						mine = binary.BigEndian.Uint64(v)
					}
					if mine != uint64(i) {
						t.Errorf("worker %d: totals = %d before increment %d", w, mine, i)
						return
					}
					tx.Put("totals", fmt.Sprint("w", w), binary.BigEndian.AppendUint64(nil, mine+1))
					reqs <- req{tx, done}
					err := <-done
					if err == nil {
						break
					}
					if !errors.Is(err, ErrConflict) {
						t.Errorf("Commit() error = %v, want nil or conflict", err)
						return
					}
				}
			}
		})
	}
	var readers sync.WaitGroup
	for range 2 {
		readers.Go(func() {
			for range 300 {
				tx := s.Begin()
				tx.Foreach("public:counters", func(string, []byte) bool { return true })
				tx.Get("totals", "w0")
				_ = s.Validate(tx)
				_, _ = s.Snapshot()
			}
		})
	}
	wg.Wait()
	readers.Wait()
	close(reqs)
	seqWG.Wait()

	tx := s.Begin()
	var sum uint64
	tx.Foreach("public:counters", func(_ string, v []byte) bool {
		sum += binary.BigEndian.Uint64(v)
		return true
	})
	if want := uint64(workers * perEach); sum != want {
		t.Errorf("sum of counters = %d, want %d", sum, want)
	}
	if got, want := s.Version(), Version(workers*perEach); got < want {
		t.Errorf("Version() = %d, want at least %d", got, want)
	}
	for w := range workers {
		v, _ := tx.Get("totals", fmt.Sprint("w", w))
		if got := binary.BigEndian.Uint64(v); got != perEach {
			t.Errorf("totals[w%d] = %d, want %d", w, got, perEach)
		}
	}
}

// randomWriteSet returns a well-formed write set over a small key space, so
// that overwrites and deletes of present keys are common.
func randomWriteSet(rng *rand.Rand) *WriteSet {
	tx := NewStore().Begin()
	for range rng.IntN(6) {
		m := []string{"a", "b", "public:c"}[rng.IntN(3)]
		k := fmt.Sprint(rng.IntN(8))
		if rng.IntN(3) == 0 {
			tx.Delete(m, k)
		} else {
			tx.Put(m, k, fmt.Appendf(nil, "%d", rng.Uint32()))
		}
	}
	return tx.WriteSet()
}

// TestRollbackModel applies random histories, rolls back to a random earlier
// version and compares with a fresh store that applied only the prefix; then
// continues and rolls back again.
func TestRollbackModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(42, 7))
	for iter := range 300 {
		s := NewStore()
		var history []*WriteSet // history[i] applied at version i+1
		compacted := Version(0)
		for round := range 3 {
			for range rng.IntN(12) {
				ws := randomWriteSet(rng)
				history = append(history, ws)
				if err := s.Apply(ws, Version(len(history))); err != nil {
					t.Fatalf("Apply error = %v", err)
				}
			}
			if len(history) > 0 && rng.IntN(3) == 0 {
				compacted = max(compacted, Version(rng.IntN(len(history)+1)))
				s.Compact(compacted)
			}
			to := Version(rng.IntN(len(history) + 1))
			err := s.Rollback(to)
			if to < compacted && to < Version(len(history)) {
				if !errors.Is(err, ErrCompacted) {
					t.Fatalf("iter %d round %d: Rollback(%d) after Compact(%d) error = %v, want %v", iter, round, to, compacted, err, ErrCompacted)
				}
				continue
			}
			if err != nil {
				t.Fatalf("iter %d round %d: Rollback(%d) error = %v", iter, round, to, err)
			}
			history = history[:min(int(to), len(history))]

			fresh := NewStore()
			for i, ws := range history {
				if err := fresh.Apply(ws, Version(i+1)); err != nil {
					t.Fatal(err)
				}
			}
			if got, want := dump(t, s), dump(t, fresh); !bytes.Equal(got, want) {
				t.Fatalf("iter %d round %d: state after Rollback(%d) = %x, want %x", iter, round, to, got, want)
			}
			if got, want := s.Version(), Version(len(history)); got != want {
				t.Fatalf("iter %d round %d: Version() after Rollback(%d) = %d, want %d", iter, round, to, got, want)
			}
			// Maps created only by rolled-back writes are forgotten.
			for name, ms := range s.maps {
				if ms.stamp == 0 {
					t.Fatalf("iter %d round %d: map %q left behind with stamp 0", iter, round, name)
				}
			}
		}
	}
}

// TestRollbackThenRewriteConflicts checks that a read of a value written at
// a version that is rolled back and rewritten (same version number, other
// value) is detected as stale.
func TestRollbackThenRewriteConflicts(t *testing.T) {
	s := NewStore()
	put(t, s, "m", "k", "v1") // version 1
	put(t, s, "m", "k", "v2") // version 2, to be rolled back

	tx := s.Begin()
	if got := getString(tx, "m", "k"); got != "v2" {
		t.Fatalf("Get = %q, want v2", got)
	}
	tx.Put("m", "out", []byte("derived from v2"))
	iter := s.Begin()
	iter.Foreach("m", func(string, []byte) bool { return true })
	iter.Put("x", "out", nil)

	if err := s.Rollback(1); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(&WriteSet{Maps: []MapWrites{{Map: "m", Writes: []Write{{Key: "k", Value: []byte("v2'")}}}}}, 2); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(tx, 3); !errors.Is(err, ErrConflict) {
		t.Errorf("Commit of a tx that read a rolled-back value = %v, want %v", err, ErrConflict)
	}
	if err := s.Commit(iter, 3); !errors.Is(err, ErrConflict) {
		t.Errorf("Commit of a tx that iterated a rolled-back map = %v, want %v", err, ErrConflict)
	}
}

func TestRollbackEdges(t *testing.T) {
	s := NewStore()
	put(t, s, "m", "k", "v1")
	put(t, s, "m", "k", "v2")
	if err := s.Rollback(5); err != nil || s.Version() != 2 {
		t.Errorf("Rollback above the version = %v (version %d), want nil at 2", err, s.Version())
	}
	s.Compact(1)
	s.Compact(0) // no-op
	if err := s.Rollback(0); !errors.Is(err, ErrCompacted) {
		t.Errorf("Rollback(0) after Compact(1) = %v, want %v", err, ErrCompacted)
	}
	if got := getString(s.Begin(), "m", "k"); got != "v2" || s.Version() != 2 {
		t.Errorf("after refused Rollback: Get = %q at version %d, want v2 at 2", got, s.Version())
	}
	if err := s.Rollback(1); err != nil {
		t.Fatalf("Rollback(1) after Compact(1) = %v, want nil", err)
	}
	if got := getString(s.Begin(), "m", "k"); got != "v1" {
		t.Errorf("after Rollback(1): Get = %q, want v1", got)
	}
	if len(s.undo) != 0 {
		t.Errorf("undo log holds %d records after Compact(1) and Rollback(1), want 0", len(s.undo))
	}
	// Compact beyond the version: later versions at or below it keep no undo.
	s.Compact(10)
	put(t, s, "m", "k", "v3")
	if len(s.undo) != 0 {
		t.Errorf("undo log holds %d records for a compacted version, want 0", len(s.undo))
	}
}

// TestReplay applies the write sets of committed transactions, through
// their encoding, to a new store and expects an identical state.
func TestReplay(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	s := NewStore()
	type entry struct {
		b []byte
		v Version
	}
	var log []entry
	for range 500 {
		tx := s.Begin()
		for range 1 + rng.IntN(4) {
			m := []string{"a", "public:b", "c"}[rng.IntN(3)]
			k := fmt.Sprint(rng.IntN(20))
			switch rng.IntN(4) {
			case 0:
				tx.Delete(m, k)
			case 1:
				tx.Foreach(m, func(string, []byte) bool { return true })
			default:
				old, _ := tx.Get(m, k)
				tx.Put(m, k, append(bytes.Clone(old), byte(rng.Uint32())))
			}
		}
		ws := tx.WriteSet()
		v := s.Version() + Version(1+rng.IntN(3)) // versions need not be dense
		if err := s.Commit(tx, v); err != nil {
			t.Fatal(err)
		}
		pub, priv := ws.Split()
		for _, half := range []*WriteSet{pub, priv} {
			b, err := half.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			log = append(log, entry{b, v})
		}
	}

	replica := NewStore()
	for i := 0; i < len(log); i += 2 {
		var pub, priv WriteSet
		if err := pub.UnmarshalBinary(log[i].b); err != nil {
			t.Fatal(err)
		}
		if err := priv.UnmarshalBinary(log[i+1].b); err != nil {
			t.Fatal(err)
		}
		if err := replica.Apply(Merge(&pub, &priv), log[i].v); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := dump(t, replica), dump(t, s); !bytes.Equal(got, want) {
		t.Errorf("replayed state = %x, want %x", got, want)
	}
	if got, want := replica.Version(), s.Version(); got != want {
		t.Errorf("replayed Version() = %d, want %d", got, want)
	}

	// A snapshot applied to a new store gives the same state too.
	snap, v := s.Snapshot()
	loaded := NewStore()
	if err := loaded.Apply(snap, v); err != nil {
		t.Fatal(err)
	}
	loaded.Compact(v)
	if got, want := dump(t, loaded), dump(t, s); !bytes.Equal(got, want) {
		t.Errorf("state loaded from snapshot = %x, want %x", got, want)
	}
}

func TestSnapshotSkipsEmptyMaps(t *testing.T) {
	s := NewStore()
	put(t, s, "m", "k", "v")
	tx := s.Begin()
	tx.Delete("m", "k")
	tx.Delete("never", "k")
	mustCommit(t, s, tx)
	ws, v := s.Snapshot()
	if !ws.Empty() || v != 2 {
		t.Errorf("Snapshot() = %+v at %d, want empty at 2", ws, v)
	}
}

// TestRollbackRestoresValidity checks that rolling back a write makes reads
// taken before it valid again, since the state is exactly what they saw.
func TestRollbackRestoresValidity(t *testing.T) {
	s := NewStore()
	put(t, s, "m", "k", "v1") // version 1
	tx := s.Begin()
	tx.Get("m", "k")
	tx.Get("m", "absent")
	tx.Foreach("m", func(string, []byte) bool { return true })
	tx.Put("out", "k", []byte("v"))

	w := s.Begin()
	w.Put("m", "k", []byte("v2"))
	w.Put("m", "absent", []byte("now here"))
	mustCommit(t, s, w) // version 2
	if err := s.Validate(tx); !errors.Is(err, ErrConflict) {
		t.Fatalf("Validate after a conflicting commit = %v, want %v", err, ErrConflict)
	}
	if err := s.Rollback(1); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(tx, 2); err != nil {
		t.Errorf("Commit after the conflicting write was rolled back = %v, want nil", err)
	}
}
