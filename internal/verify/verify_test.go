package verify_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/node"
	"github.com/parleyhq/parley/internal/verify"
	"github.com/parleyhq/parley/internal/vfs"
)

// writeLedger makes a small ledger of several chunks and returns its
// directory and the node's identity.
func writeLedger(t testing.TB, txs int, chunkSize int64) (string, *node.Identity) {
	return writeLedgerOf(t, txs, chunkSize, 4, 0)
}

// writeLedgerOf signs every sigEvery transactions, each of which writes
// valueSize private bytes besides a small public value.
func writeLedgerOf(t testing.TB, txs int, chunkSize int64, sigEvery, valueSize int) (string, *node.Identity) {
	t.Helper()
	dir := t.TempDir()
	id, err := node.Init(vfs.OS{}, dir, node.InitOptions{SANs: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.Open(engine.Config{
		Dir:               filepath.Join(dir, node.LedgerDir),
		Secret:            id.Secret,
		NodeKey:           id.NodeKey,
		NodeCertPEM:       id.NodeCertPEM,
		ChunkSize:         chunkSize,
		SignatureTxCount:  sigEvery,
		SignatureInterval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	var last ledger.TxID
	for i := 0; i < txs; i++ {
		tx := e.Begin()
		value := []byte(fmt.Sprintf("value %d", i))
		if valueSize > len(value) {
			value = append(value, make([]byte, valueSize-len(value))...)
		}
		tx.Put("private:m", fmt.Sprint(i), value)
		tx.Put("public:m", fmt.Sprint(i), []byte("public"))
		if last, err = e.Commit(context.Background(), tx, engine.CommitOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The count policy signs every 4 transactions; wait for the last one.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if txs%sigEvery == 0 {
		if err := e.WaitCommitted(ctx, last); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, node.LedgerDir), id
}

func chunks(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "ledger_") {
			names = append(names, e.Name())
		}
	}
	sort.Slice(names, func(i, j int) bool { return startOf(names[i]) < startOf(names[j]) })
	return names
}

func startOf(name string) int {
	var n int
	fmt.Sscanf(strings.TrimPrefix(name, "ledger_"), "%d", &n)
	return n
}

func TestIntactLedgerVerifies(t *testing.T) {
	dir, id := writeLedger(t, 40, 1024)
	if n := len(chunks(t, dir)); n < 3 {
		t.Fatalf("%d chunks, want at least 3 for this test", n)
	}
	var progress []int64
	rep, err := verify.Ledger(vfs.OS{}, dir, id.Service.Cert, verify.Options{Progress: func(done, total int64) {
		progress = append(progress, done)
		if done > total {
			t.Errorf("progress %d > total %d", done, total)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Signatures < 10 || rep.Entries < 50 {
		t.Errorf("report = %+v, want ≥ 10 signatures and ≥ 50 entries", rep)
	}
	if len(progress) != rep.Chunks || progress[len(progress)-1] != rep.Bytes {
		t.Errorf("progress %v for %d chunks of %d bytes", progress, rep.Chunks, rep.Bytes)
	}
}

func TestWrongServiceCertificate(t *testing.T) {
	dir, _ := writeLedger(t, 8, 1<<20)
	other, err := node.Init(vfs.OS{}, t.TempDir(), node.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = verify.Ledger(vfs.OS{}, dir, other.Service.Cert, verify.Options{})
	var ve *verify.Error
	if !errors.As(err, &ve) || ve.TxID.Seqno == 0 {
		t.Fatalf("verify against another service: err = %v, want a *verify.Error naming a transaction", err)
	}
}

// TestEveryByteFlipDetected flips single bytes of every chunk file of a
// committed ledger; each flip must fail verification and name the chunk.
func TestEveryByteFlipDetected(t *testing.T) {
	dir, id := writeLedger(t, 8, 1024)
	stride := 1
	if testing.Short() {
		stride = 7
	}
	for _, name := range chunks(t, dir) {
		path := filepath.Join(dir, name)
		orig, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(orig); i += stride {
			bad := append([]byte(nil), orig...)
			bad[i] ^= 0x20
			if err := os.WriteFile(path, bad, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := verify.Ledger(vfs.OS{}, dir, id.Service.Cert, verify.Options{})
			var ve *verify.Error
			if !errors.As(err, &ve) {
				t.Fatalf("%s byte %d flipped: err = %v, want *verify.Error", name, i, err)
			}
			if ve.Chunk != name && ve.TxID.Seqno == 0 {
				t.Fatalf("%s byte %d flipped: %v names neither the chunk nor a transaction", name, i, err)
			}
		}
		if err := os.WriteFile(path, orig, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := verify.Ledger(vfs.OS{}, dir, id.Service.Cert, verify.Options{}); err != nil {
		t.Fatalf("restored ledger: %v", err)
	}
}

func TestChunkTampering(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(t *testing.T, dir string, names []string)
	}{
		{"truncate a complete chunk", func(t *testing.T, dir string, names []string) {
			p := filepath.Join(dir, names[1])
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-10], 0o644)
		}},
		{"drop a middle chunk", func(t *testing.T, dir string, names []string) {
			os.Remove(filepath.Join(dir, names[1]))
		}},
		{"drop the first chunk", func(t *testing.T, dir string, names []string) {
			os.Remove(filepath.Join(dir, names[0]))
		}},
		{"swap two chunks", func(t *testing.T, dir string, names []string) {
			a, b := filepath.Join(dir, names[0]), filepath.Join(dir, names[1])
			ab, _ := os.ReadFile(a)
			bb, _ := os.ReadFile(b)
			os.WriteFile(a, bb, 0o644)
			os.WriteFile(b, ab, 0o644)
		}},
		{"extra chunk", func(t *testing.T, dir string, names []string) {
			b, _ := os.ReadFile(filepath.Join(dir, names[1]))
			os.WriteFile(filepath.Join(dir, "ledger_100000-100010.committed"), b, 0o644)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, id := writeLedger(t, 24, 1024)
			names := chunks(t, dir)
			if len(names) < 3 {
				t.Fatalf("%d chunks, want at least 3", len(names))
			}
			tt.tamper(t, dir, names)
			_, err := verify.Ledger(vfs.OS{}, dir, id.Service.Cert, verify.Options{})
			var ve *verify.Error
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want *verify.Error", err)
			}
			if ve.Chunk == "" && ve.TxID.Seqno == 0 {
				t.Errorf("error %q names neither a chunk nor a transaction", err)
			}
		})
	}
}

// BenchmarkVerify verifies a ledger of 1 KiB transactions signed every 1000
// transactions (the default count), in 5 MiB chunks.
func BenchmarkVerify(b *testing.B) {
	dir, id := writeLedgerOf(b, 20000, 5<<20, 1000, 1024)
	rep, err := verify.Ledger(vfs.OS{}, dir, id.Service.Cert, verify.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(rep.Bytes)
	for b.Loop() {
		if _, err := verify.Ledger(vfs.OS{}, dir, id.Service.Cert, verify.Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
