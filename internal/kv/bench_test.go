package kv

import (
	"fmt"
	"testing"
)

// BenchmarkCommit measures Begin, one Put of a 1 KiB value and Commit, with
// the undo log compacted as a ledger engine would as commit advances.
func BenchmarkCommit(b *testing.B) {
	s := NewStore()
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = fmt.Sprint("key-", i)
	}
	value := make([]byte, 1024)
	b.ReportAllocs()
	b.SetBytes(int64(len(value)))
	i := 0
	for b.Loop() {
		tx := s.Begin()
		tx.Put("public:app.entries", keys[i%len(keys)], value)
		v := s.Version() + 1
		if err := s.Commit(tx, v); err != nil {
			b.Fatal(err)
		}
		if i%1024 == 0 {
			s.Compact(v)
		}
		i++
	}
}

// BenchmarkCommitReadModifyWrite is BenchmarkCommit with one Get first, so
// that Commit validates one read.
func BenchmarkCommitReadModifyWrite(b *testing.B) {
	s := NewStore()
	value := make([]byte, 1024)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		tx := s.Begin()
		tx.Get("public:app.counters", "c")
		tx.Put("public:app.counters", "c", value)
		v := s.Version() + 1
		if err := s.Commit(tx, v); err != nil {
			b.Fatal(err)
		}
		if i%1024 == 0 {
			s.Compact(v)
		}
		i++
	}
}

func BenchmarkGet(b *testing.B) {
	s := NewStore()
	setup := s.Begin()
	for i := range 1 << 16 {
		setup.Put("public:app.entries", fmt.Sprint("key-", i), make([]byte, 1024))
	}
	if err := s.Commit(setup, 1); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	tx := s.Begin()
	for b.Loop() {
		if _, ok := tx.Get("public:app.entries", "key-4242"); !ok {
			b.Fatal("key absent")
		}
	}
}

// BenchmarkGetParallel measures Get from many goroutines, one Tx each.
func BenchmarkGetParallel(b *testing.B) {
	s := NewStore()
	setup := s.Begin()
	setup.Put("public:app.entries", "k", make([]byte, 1024))
	if err := s.Commit(setup, 1); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		tx := s.Begin()
		for pb.Next() {
			tx.Get("public:app.entries", "k")
		}
	})
}

// BenchmarkWriteSetEncode measures building and encoding the write set of a
// transaction with one 1 KiB put.
func BenchmarkWriteSetEncode(b *testing.B) {
	tx := NewStore().Begin()
	tx.Put("public:app.entries", "key-4242", make([]byte, 1024))
	buf := make([]byte, 0, 2048)
	b.ReportAllocs()
	b.SetBytes(1024)
	for b.Loop() {
		var err error
		buf, err = tx.WriteSet().AppendBinary(buf[:0])
		if err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteSetDecode(b *testing.B) {
	tx := NewStore().Begin()
	tx.Put("public:app.entries", "key-4242", make([]byte, 1024))
	enc, err := tx.WriteSet().MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(enc)))
	for b.Loop() {
		var ws WriteSet
		if err := ws.UnmarshalBinary(enc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCommitOnly times Store.Commit alone for transactions of one
// 1 KiB put, prepared in batches outside the timer.
func BenchmarkCommitOnly(b *testing.B) {
	s := NewStore()
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = fmt.Sprint("key-", i)
	}
	value := make([]byte, 1024)
	batch := make([]*Tx, 4096)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i%len(batch) == 0 {
			b.StopTimer()
			s.Compact(s.Version())
			for j := range batch {
				batch[j] = s.Begin()
				batch[j].Put("public:app.entries", keys[(i+j)%len(keys)], value)
			}
			b.StartTimer()
		}
		if err := s.Commit(batch[i%len(batch)], s.Version()+1); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// benchKeys is the number of distinct keys the commit benchmarks cycle
// through: a ledger app map of this size no longer fits in the CPU caches.
var benchKeys = 1 << 16
