package kv

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrInvalidWrite is wrapped by [Tx.Err] (and so by [Store.Commit]) when a
// Put or Delete named an empty or over-long map, an over-long key, or carried
// an over-long value, or was made after Commit.
var ErrInvalidWrite = errors.New("invalid write")

var errTxDone = errors.New("transaction already committed")

// indexAbove is the number of reads or writes above which a Tx indexes them
// in a map rather than searching linearly.
const indexAbove = 16

// Tx is a transaction: reads of the store's current state, recorded for
// validation, and buffered writes. It is used by one goroutine at a time.
// See the package documentation.
type Tx struct {
	s        *Store
	reads    []read
	readIdx  map[mapKey]struct{} // set once len(reads) > indexAbove
	mapReads []mapRead
	writes   []txWrite
	writeIdx map[mapKey]int // index into writes, set once len(writes) > indexAbove
	err      error
	done     bool
}

type mapKey struct{ m, key string }

type read struct {
	mapKey
	stamp uint64
}

type mapRead struct {
	m     string
	stamp uint64
}

type txWrite struct {
	mapKey
	value   []byte
	deleted bool
}

// Get returns the value of key in map m, as written earlier by tx or else as
// currently in the store, and whether it is present. The caller MUST NOT
// modify the returned slice; appending to it is safe, as its capacity is its
// length. Unless tx itself wrote the key, Get records the
// read, so that Commit fails if the key has changed by then (including an
// absent key being created).
func (tx *Tx) Get(m, key string) (value []byte, ok bool) {
	if i := tx.findWrite(m, key); i >= 0 {
		w := &tx.writes[i]
		return w.value, !w.deleted
	}
	e, ok := tx.s.lookup(m, key)
	tx.recordRead(m, key, e.stamp)
	return e.value, ok
}

// Foreach calls fn for every present key of map m in increasing bytewise key
// order, with tx's own writes merged in (its puts added or replacing, its
// deletes removed), until fn returns false. The caller MUST NOT modify the
// values. Foreach works on a copy taken when it starts: writes that fn makes
// are not visited. It records a read of the whole map, so that Commit fails
// if any other transaction has written to m by then. It costs O(n log n) in
// the size of the map.
func (tx *Tx) Foreach(m string, fn func(key string, value []byte) bool) {
	type kv struct {
		key   string
		value []byte
	}
	var stored []kv
	var stamp uint64
	tx.s.mu.RLock()
	if ms := tx.s.maps[m]; ms != nil {
		stamp = ms.stamp
		stored = make([]kv, 0, len(ms.entries))
		for k, e := range ms.entries {
			stored = append(stored, kv{k, e.value})
		}
	}
	tx.s.mu.RUnlock()
	tx.recordMapRead(m, stamp)
	slices.SortFunc(stored, func(a, b kv) int { return strings.Compare(a.key, b.key) })

	var own []txWrite
	for _, w := range tx.writes {
		if w.m == m {
			own = append(own, w)
		}
	}
	slices.SortFunc(own, func(a, b txWrite) int { return strings.Compare(a.key, b.key) })

	for len(stored) > 0 || len(own) > 0 {
		switch {
		case len(own) == 0 || (len(stored) > 0 && stored[0].key < own[0].key):
			if !fn(stored[0].key, stored[0].value) {
				return
			}
			stored = stored[1:]
		default:
			w := own[0]
			if len(stored) > 0 && stored[0].key == w.key {
				stored = stored[1:]
			}
			own = own[1:]
			if !w.deleted && !fn(w.key, w.value) {
				return
			}
		}
	}
}

// Put sets key in map m to a copy of value.
func (tx *Tx) Put(m, key string, value []byte) {
	if len(value) > MaxValueLen {
		tx.setErr(fmt.Errorf("put in map %.64q: value length %d exceeds %d: %w", m, len(value), MaxValueLen, ErrInvalidWrite))
		return
	}
	v := make([]byte, len(value)) // cap == len: appending to a Get result never writes into it
	copy(v, value)
	tx.write(m, key, v, false)
}

// Delete removes key from map m. Deleting an absent key is a write all the
// same (it appears in the write set).
func (tx *Tx) Delete(m, key string) {
	tx.write(m, key, nil, true)
}

func (tx *Tx) write(m, key string, value []byte, deleted bool) {
	switch {
	case tx.done:
		tx.setErr(fmt.Errorf("write after commit: %w", ErrInvalidWrite))
		return
	case len(m) == 0 || len(m) > MaxMapNameLen:
		tx.setErr(fmt.Errorf("write: map name length %d not in [1, %d]: %w", len(m), MaxMapNameLen, ErrInvalidWrite))
		return
	case len(key) > MaxKeyLen:
		tx.setErr(fmt.Errorf("write in map %.64q: key length %d exceeds %d: %w", m, len(key), MaxKeyLen, ErrInvalidWrite))
		return
	}
	if i := tx.findWrite(m, key); i >= 0 {
		tx.writes[i].value, tx.writes[i].deleted = value, deleted
		return
	}
	k := mapKey{m, key}
	tx.writes = append(tx.writes, txWrite{mapKey: k, value: value, deleted: deleted})
	switch {
	case tx.writeIdx != nil:
		tx.writeIdx[k] = len(tx.writes) - 1
	case len(tx.writes) > indexAbove:
		tx.writeIdx = make(map[mapKey]int, 2*len(tx.writes))
		for i, w := range tx.writes {
			tx.writeIdx[w.mapKey] = i
		}
	}
}

func (tx *Tx) setErr(err error) {
	if tx.err == nil {
		tx.err = err
	}
}

// findWrite returns the index of tx's write to m/key, or -1.
func (tx *Tx) findWrite(m, key string) int {
	if tx.writeIdx != nil {
		if i, ok := tx.writeIdx[mapKey{m, key}]; ok {
			return i
		}
		return -1
	}
	for i := range tx.writes {
		if tx.writes[i].key == key && tx.writes[i].m == m {
			return i
		}
	}
	return -1
}

// recordRead records the first read of m/key.
func (tx *Tx) recordRead(m, key string, stamp uint64) {
	k := mapKey{m, key}
	if tx.readIdx != nil {
		if _, ok := tx.readIdx[k]; ok {
			return
		}
		tx.readIdx[k] = struct{}{}
	} else {
		for i := range tx.reads {
			if tx.reads[i].mapKey == k {
				return
			}
		}
	}
	tx.reads = append(tx.reads, read{mapKey: k, stamp: stamp})
	if tx.readIdx == nil && len(tx.reads) > indexAbove {
		tx.readIdx = make(map[mapKey]struct{}, 2*len(tx.reads))
		for _, r := range tx.reads {
			tx.readIdx[r.mapKey] = struct{}{}
		}
	}
}

// recordMapRead records the first iteration of m.
func (tx *Tx) recordMapRead(m string, stamp uint64) {
	for _, r := range tx.mapReads {
		if r.m == m {
			return
		}
	}
	tx.mapReads = append(tx.mapReads, mapRead{m: m, stamp: stamp})
}

// Err returns the first invalid write of tx (wrapping [ErrInvalidWrite]), or
// nil. A transaction with an error cannot commit.
func (tx *Tx) Err() error { return tx.err }

// ReadOnly reports whether tx has no writes.
func (tx *Tx) ReadOnly() bool { return len(tx.writes) == 0 }

// WriteSet returns the writes of tx as a well-formed [WriteSet]: maps sorted
// by name, keys by key, one write per key (the last one made). Its values are
// shared with tx and MUST NOT be modified. The result depends only on the
// final writes, not on the order they were made in.
func (tx *Tx) WriteSet() *WriteSet {
	ws := &WriteSet{}
	if len(tx.writes) == 0 {
		return ws
	}
	all := make([]Write, len(tx.writes))
	order := make([]*txWrite, len(tx.writes))
	nmaps := 0
	for i := range tx.writes {
		order[i] = &tx.writes[i]
	}
	slices.SortFunc(order, func(a, b *txWrite) int {
		if c := strings.Compare(a.m, b.m); c != 0 {
			return c
		}
		return strings.Compare(a.key, b.key)
	})
	for i, w := range order {
		if i == 0 || w.m != order[i-1].m {
			nmaps++
		}
		all[i] = Write{Key: w.key, Deleted: w.deleted}
		if !w.deleted {
			all[i].Value = w.value
		}
	}
	ws.Maps = make([]MapWrites, 0, nmaps)
	start := 0
	for i := 1; i <= len(order); i++ {
		if i == len(order) || order[i].m != order[start].m {
			ws.Maps = append(ws.Maps, MapWrites{Map: order[start].m, Writes: all[start:i:i]})
			start = i
		}
	}
	return ws
}
