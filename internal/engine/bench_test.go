package engine

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/vfs"
)

// BenchmarkCommitDurable measures durable, signed commits of 1 KiB private
// entries in-process: many submitters, group commit (one fsync per batch),
// default signature policy; the clock stops when the last transaction is
// Committed (covered by a durable signature).
func BenchmarkCommitDurable(b *testing.B) {
	n := newTestNode(b, vfs.OS{}, b.TempDir())
	cfg := n.config()
	cfg.ChunkSize = 0 // default 5 MiB chunks
	e, err := Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	value := make([]byte, 1024)
	rand.Read(value)
	const submitters = 512
	var next atomic.Int64
	var last atomic.Uint64
	var lastID sync.Mutex
	var maxID ledger.TxID
	total := int64(b.N)
	b.SetBytes(int64(len(value)))
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := 0; w < submitters; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= total {
				tx := e.Begin()
				tx.Put("entries", "k", value)
				id, err := e.Commit(context.Background(), tx, CommitOptions{})
				if err != nil {
					b.Error(err)
					return
				}
				if id.Seqno > last.Load() {
					lastID.Lock()
					if id.Seqno > maxID.Seqno {
						maxID = id
						last.Store(id.Seqno)
					}
					lastID.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if err := e.WaitCommitted(context.Background(), maxID); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tx/s")
	m := e.Metrics()
	if s := m.Syncs.Load(); s > 0 {
		b.ReportMetric(float64(m.Entries.Load())/float64(s), "entries/fsync")
	}
}

// BenchmarkCommitAndWait64 is the service's pattern in-process: 64 clients
// each commit a 1 KiB entry and wait until it is Committed before the next.
func BenchmarkCommitAndWait64(b *testing.B) {
	n := newTestNode(b, vfs.OS{}, b.TempDir())
	cfg := n.config()
	cfg.ChunkSize = 0
	e, err := Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	value := make([]byte, 1024)
	rand.Read(value)
	var next atomic.Int64
	total := int64(b.N)
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= total {
				tx := e.Begin()
				tx.Put("entries", "k", value)
				id, err := e.Commit(context.Background(), tx, CommitOptions{})
				if err == nil {
					err = e.WaitCommitted(context.Background(), id)
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tx/s")
	m := e.Metrics()
	b.ReportMetric(float64(m.Entries.Load())/float64(m.Syncs.Load()), "entries/fsync")
	b.ReportMetric(float64(m.Signatures.Load()), "signatures")
}

// BenchmarkRawAppendFsync is the same-run baseline for BenchmarkCommitDurable:
// what the disk does with no engine at all, appending 1.2 KiB records (about
// the size of a 1 KiB transaction's frame) to one file and fsyncing after
// every batch of 500 (about the engine's group size under load).
func BenchmarkRawAppendFsync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "raw"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	rec := make([]byte, 1200)
	buf := make([]byte, 0, 500*len(rec))
	b.SetBytes(int64(len(rec)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		buf = append(buf, rec...)
		if len(buf) == cap(buf) || i == b.N-1 {
			if _, err := f.Write(buf); err != nil {
				b.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
			buf = buf[:0]
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkReceipt builds receipts of committed transactions of a 100k
// transaction ledger (read the entry, audit path, signature from cache).
func BenchmarkReceipt(b *testing.B) {
	n := newTestNode(b, vfs.OS{}, b.TempDir())
	e := n.open(b)
	defer e.Close()
	value := make([]byte, 1024)
	var ids []ledger.TxID
	for i := 0; i < 100000; i++ {
		tx := e.Begin()
		tx.Put("entries", "k", value)
		id, err := e.Commit(context.Background(), tx, CommitOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if i%97 == 0 {
			ids = append(ids, id)
		}
	}
	last := ids[len(ids)-1]
	if err := e.WaitCommitted(context.Background(), last); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if _, err := e.Receipt(ids[i%len(ids)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
