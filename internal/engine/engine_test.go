package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/node"
	"github.com/parleyhq/parley/internal/receipt"
	"github.com/parleyhq/parley/internal/storage"
	"github.com/parleyhq/parley/internal/vfs"
)

type testNode struct {
	dir string
	fs  vfs.FS
	id  *node.Identity
}

func newTestNode(t testing.TB, fsys vfs.FS, dir string) *testNode {
	t.Helper()
	id, err := node.Init(fsys, dir, node.InitOptions{SANs: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	return &testNode{dir: dir, fs: fsys, id: id}
}

func (n *testNode) config() Config {
	return Config{
		Dir:         filepath.Join(n.dir, node.LedgerDir),
		FS:          n.fs,
		Secret:      n.id.Secret,
		NodeKey:     n.id.NodeKey,
		NodeCertPEM: n.id.NodeCertPEM,
		ChunkSize:   64 << 10,
	}
}

func (n *testNode) open(t testing.TB) *Engine {
	t.Helper()
	e, err := Open(n.config())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func put(t testing.TB, e *Engine, m, key, value string) ledger.TxID {
	t.Helper()
	tx := e.Begin()
	tx.Put(m, key, []byte(value))
	id, err := e.Commit(context.Background(), tx, CommitOptions{})
	if err != nil {
		t.Fatalf("Commit(%s/%s): %v", m, key, err)
	}
	return id
}

func waitCommitted(t testing.TB, e *Engine, id ledger.TxID) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.WaitCommitted(ctx, id); err != nil {
		t.Fatalf("WaitCommitted(%s): %v", id, err)
	}
}

func TestCommitStatusReceipt(t *testing.T) {
	n := newTestNode(t, vfs.OS{}, t.TempDir())
	e := n.open(t)
	defer e.Close()

	id := put(t, e, "private:entries", "k", "hello")
	if got := e.Status(id); got != StatusPending && got != StatusCommitted {
		t.Errorf("Status(%s) = %v right after Commit, want Pending or Committed", id, got)
	}
	waitCommitted(t, e, id)
	if got := e.Status(id); got != StatusCommitted {
		t.Errorf("Status(%s) = %v, want Committed", id, got)
	}
	r, err := e.Receipt(id)
	if err != nil {
		t.Fatal(err)
	}
	if err := receipt.Verify(r, n.id.Service.Cert); err != nil {
		t.Errorf("receipt of %s does not verify: %v", id, err)
	}
	if want := "ce:" + id.String() + ":"; r.LeafComponents == nil || !bytes.HasPrefix([]byte(r.LeafComponents.CommitEvidence), []byte(want)) {
		t.Errorf("receipt commit evidence = %+v, want prefix %q", r.LeafComponents, want)
	}
	rec, err := e.Read(id)
	if err != nil {
		t.Fatal(err)
	}
	if got := valueIn(rec.WriteSet, "private:entries", "k"); got != "hello" {
		t.Errorf("Read(%s) value = %q, want hello", id, got)
	}
	if got := e.Status(ledger.TxID{View: id.View, Seqno: id.Seqno + 1000}); got != StatusUnknown {
		t.Errorf("Status of a future seqno = %v, want Unknown", got)
	}
	if got := e.Status(ledger.TxID{View: id.View + 1, Seqno: id.Seqno}); got != StatusInvalid {
		t.Errorf("Status of a later view at a committed seqno = %v, want Invalid", got)
	}
	if id.View > 0 {
		if got := e.Status(ledger.TxID{View: id.View - 1, Seqno: id.Seqno}); got != StatusInvalid {
			t.Errorf("Status of an earlier view at a committed seqno = %v, want Invalid", got)
		}
	}
}

func valueIn(ws *kv.WriteSet, m, key string) string {
	for _, mw := range ws.Maps {
		if mw.Map != m {
			continue
		}
		for _, w := range mw.Writes {
			if w.Key == key {
				return string(w.Value)
			}
		}
	}
	return ""
}

func TestNoReceiptForSignatureOrPending(t *testing.T) {
	n := newTestNode(t, vfs.OS{}, t.TempDir())
	cfg := n.config()
	cfg.SignatureInterval = time.Hour // only the count triggers a signature
	cfg.SignatureTxCount = 3
	e, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	a := put(t, e, "m", "a", "1")
	if _, err := e.Receipt(a); !errors.Is(err, ErrNotCommitted) {
		t.Errorf("Receipt of a pending transaction: err = %v, want ErrNotCommitted", err)
	}
	put(t, e, "m", "b", "2")
	c := put(t, e, "m", "c", "3")
	waitCommitted(t, e, c)
	sigID := ledger.TxID{View: c.View, Seqno: c.Seqno + 1}
	if _, err := e.Receipt(sigID); !errors.Is(err, ErrSignatureTx) {
		t.Errorf("Receipt of signature transaction %s: err = %v, want ErrSignatureTx", sigID, err)
	}
	for _, id := range []ledger.TxID{a, c} {
		r, err := e.Receipt(id)
		if err != nil {
			t.Fatal(err)
		}
		if err := receipt.Verify(r, n.id.Service.Cert); err != nil {
			t.Errorf("receipt of %s: %v", id, err)
		}
	}
}

func TestConflictDetected(t *testing.T) {
	n := newTestNode(t, vfs.OS{}, t.TempDir())
	e := n.open(t)
	defer e.Close()
	put(t, e, "m", "counter", "0")
	t1, t2 := e.Begin(), e.Begin()
	t1.Get("m", "counter")
	t2.Get("m", "counter")
	t1.Put("m", "counter", []byte("1"))
	t2.Put("m", "counter", []byte("2"))
	if _, err := e.Commit(context.Background(), t1, CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Commit(context.Background(), t2, CommitOptions{}); !errors.Is(err, kv.ErrConflict) {
		t.Errorf("second read-modify-write: err = %v, want kv.ErrConflict", err)
	}
}

func TestConcurrentCountersExact(t *testing.T) {
	n := newTestNode(t, vfs.OS{}, t.TempDir())
	e := n.open(t)
	defer e.Close()
	const workers, each = 8, 25
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				for {
					tx := e.Begin()
					v, _ := tx.Get("m", "n")
					var cur int
					fmt.Sscan(string(v), &cur)
					tx.Put("m", "n", []byte(fmt.Sprint(cur+1)))
					_, err := e.Commit(context.Background(), tx, CommitOptions{})
					if err == nil {
						break
					}
					if !errors.Is(err, kv.ErrConflict) {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	tx := e.Begin()
	v, _ := tx.Get("m", "n")
	if got, want := string(v), fmt.Sprint(workers*each); got != want {
		t.Errorf("counter = %s, want %s", got, want)
	}
}

func TestRestartRebuildsState(t *testing.T) {
	n := newTestNode(t, vfs.OS{}, t.TempDir())
	e := n.open(t)
	var ids []ledger.TxID
	for i := 0; i < 300; i++ {
		ids = append(ids, put(t, e, "private:m", fmt.Sprintf("k%03d", i%50), fmt.Sprintf("v%d", i)))
	}
	waitCommitted(t, e, ids[len(ids)-1])
	e.mu.RLock()
	unwritten := len(e.unwritten)
	e.mu.RUnlock()
	if unwritten != 0 {
		t.Errorf("%d committed entries still held outside the ledger files", unwritten)
	}
	before, _ := e.store.Snapshot()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	e = n.open(t)
	defer e.Close()
	if got, _ := e.store.Snapshot(); !equalWriteSets(got, before) {
		t.Errorf("state after replay differs from state before restart")
	}
	for _, id := range ids {
		waitCommitted(t, e, id)
		r, err := e.Receipt(id)
		if err != nil {
			t.Fatalf("Receipt(%s) after restart: %v", id, err)
		}
		if err := receipt.Verify(r, n.id.Service.Cert); err != nil {
			t.Fatalf("receipt of %s after restart: %v", id, err)
		}
	}
	next := put(t, e, "private:m", "after", "restart")
	if next.Seqno <= ids[len(ids)-1].Seqno || next.View <= ids[0].View {
		t.Errorf("transaction after restart = %s, want a later seqno in a later view than %s", next, ids[len(ids)-1])
	}
	waitCommitted(t, e, next)
}

func equalWriteSets(a, b *kv.WriteSet) bool {
	x, err1 := a.MarshalBinary()
	y, err2 := b.MarshalBinary()
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

func TestNoPrivatePlaintextOnDisk(t *testing.T) {
	dir := t.TempDir()
	n := newTestNode(t, vfs.OS{}, dir)
	e := n.open(t)
	const marker = "SECRET-MARKER-7f3a9c"
	var last ledger.TxID
	for i := 0; i < 50; i++ {
		last = put(t, e, "private:m", "key-"+marker, fmt.Sprintf("%s-%d", marker, i))
	}
	publicID := put(t, e, "public:m", "pub", "PUBLIC-MARKER-c0ffee")
	waitCommitted(t, e, publicID)
	waitCommitted(t, e, last)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	var sawPublic bool
	err := filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(marker)) {
			t.Errorf("%s contains private plaintext", path)
		}
		if bytes.Contains(b, []byte("PUBLIC-MARKER-c0ffee")) {
			sawPublic = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !sawPublic {
		t.Errorf("public marker not found in the ledger: the scan looked in the wrong place")
	}
}

func TestOversizedTransactionRejected(t *testing.T) {
	n := newTestNode(t, vfs.OS{}, t.TempDir())
	e := n.open(t)
	defer e.Close()
	waitCommitted(t, e, put(t, e, "m", "first", "1"))
	before := e.Current()
	tx := e.Begin()
	tx.Put("m", "a", make([]byte, MaxTxSize/2+1))
	tx.Put("m", "b", make([]byte, MaxTxSize/2+1))
	if _, err := e.Commit(context.Background(), tx, CommitOptions{}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Commit of an oversized transaction: err = %v, want ErrTooLarge", err)
	}
	if got := e.Current(); got != before {
		t.Errorf("Current() = %s after a rejected transaction, want %s", got, before)
	}
	tx = e.Begin()
	tx.Get("m", "a")
	if v, ok := tx.Get("m", "a"); ok {
		t.Errorf("rejected write is visible: %d bytes", len(v))
	}
	id := put(t, e, "m", "c", "ok")
	if id.Seqno != before.Seqno+1 {
		t.Errorf("next transaction at %s, want seqno %d (no hole)", id, before.Seqno+1)
	}
}

func TestConsistencyProof(t *testing.T) {
	n := newTestNode(t, vfs.OS{}, t.TempDir())
	cfg := n.config()
	cfg.SignatureTxCount = 5
	cfg.SignatureInterval = time.Hour
	e, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var last ledger.TxID
	for i := 0; i < 25; i++ { // a multiple of the count: the last one is signed
		last = put(t, e, "m", fmt.Sprint(i), "v")
	}
	waitCommitted(t, e, last)
	var sigs []uint64
	e.mu.RLock()
	for _, s := range e.sigs {
		if s <= e.committed.Load() {
			sigs = append(sigs, s)
		}
	}
	e.mu.RUnlock()
	if len(sigs) < 3 {
		t.Fatalf("%d signatures, want at least 3", len(sigs))
	}
	p, err := e.Consistency(sigs[0], sigs[len(sigs)-1])
	if err != nil {
		t.Fatal(err)
	}
	if err := receipt.VerifyConsistency(p, n.id.Service.Cert); err != nil {
		t.Errorf("consistency proof does not verify: %v", err)
	}
	p.Proof[0] = p.Proof[1]
	if err := receipt.VerifyConsistency(p, n.id.Service.Cert); err == nil {
		t.Errorf("a corrupted consistency proof verifies")
	}
}

// TestOpenRefusesRewrittenLedger rewrites a ledger with one transaction
// replaced by an empty (no-op) entry in well-formed frames: the frames'
// checksums hold, but the next signature no longer signs the tree, and the
// engine refuses to open the ledger for writing, saying why.
func TestOpenRefusesRewrittenLedger(t *testing.T) {
	n := newTestNode(t, vfs.OS{}, t.TempDir())
	e := n.open(t)
	var last ledger.TxID
	for i := 0; i < 10; i++ {
		last = put(t, e, "public:m", fmt.Sprint(i), "v")
	}
	waitCommitted(t, e, last)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	src, err := storage.Open(n.config().Dir, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ents, err := src.Entries(src.FirstIndex(), src.LastIndex()+1, 1<<30)
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	for i := range ents {
		if ents[i].Index == last.Seqno-2 {
			ents[i].Data = nil
		}
	}
	forged := filepath.Join(t.TempDir(), "ledger")
	dst, err := storage.Open(forged, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.Append(ents); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := n.config()
	cfg.Dir = forged
	if e, err := Open(cfg); err == nil {
		e.Close()
		t.Fatal("Open of a rewritten ledger succeeded")
	} else if !strings.Contains(err.Error(), "hash to") {
		t.Errorf("Open error = %q, want it to say the signed root does not match", err)
	}
}
