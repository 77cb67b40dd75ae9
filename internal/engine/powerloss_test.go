package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/ledgertest/lazyfs"
	"github.com/parleyhq/parley/internal/node"
)

// cut is the file system as it was at one instant, with the highest seqno
// the engine had reported committed by then.
type cut struct {
	fs        *lazyfs.FS
	committed uint64
}

// runToCuts drives an engine over a lazy file system with concurrent
// writers and returns the file system cloned after every mutating
// operation, plus every transaction written and its value.
func runToCuts(t *testing.T, skipSync bool) ([]cut, map[ledger.TxID]string) {
	return runToCutsSnap(t, skipSync, -1)
}

// runToCutsSnap is runToCuts with snapshots every snapshotInterval seqnos
// (-1: none); with snapshots, the ledger secret does not rotate (a node
// opens a snapshot only with the secret that seals it).
func runToCutsSnap(t *testing.T, skipSync bool, snapshotInterval int) ([]cut, map[ledger.TxID]string) {
	fsys := lazyfs.New()
	n := newTestNode(t, fsys, "/node")
	cfg := n.config()
	cfg.ChunkSize = 2 << 10
	cfg.SignatureTxCount = 7
	cfg.testOnlySkipSync = skipSync
	cfg.SnapshotTxInterval = snapshotInterval
	e, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var cuts []cut
	fsys.SetHook(func(op, name string) {
		c := e.committed.Load()
		clone := fsys.Clone()
		mu.Lock()
		cuts = append(cuts, cut{fs: clone, committed: c})
		mu.Unlock()
	})
	written := map[ledger.TxID]string{}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 40; i++ {
				if w == 0 && i%13 == 5 && snapshotInterval < 0 {
					// A ledger secret rotation among the writes: replay
					// after every cut must follow it.
					tx := e.Begin()
					raw, err := e.PrepareRotation(tx)
					if err != nil {
						t.Error(err)
						return
					}
					clear(raw)
					if _, err := e.Commit(context.Background(), tx, CommitOptions{}); err != nil {
						t.Error(err)
						return
					}
				}
				v := fmt.Sprintf("writer %d value %d", w, i)
				tx := e.Begin()
				tx.Put("private:m", fmt.Sprintf("%d/%d", w, i), []byte(v))
				id, err := e.Commit(context.Background(), tx, CommitOptions{})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				written[id] = v
				mu.Unlock()
				if i%10 == 9 {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					err := e.WaitCommitted(ctx, id)
					cancel()
					if err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	fsys.SetHook(nil)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	return cuts, written
}

// lostAfterCut crashes the cut's file system (tearing unsynced appends at
// random), reopens the node on it and returns a description of the first
// transaction reported committed before the cut that is missing or changed.
func lostAfterCut(t *testing.T, c cut, written map[ledger.TxID]string, r *rand.Rand) string {
	msg, _ := lostAfterCutSnap(t, c, written, r, -1)
	return msg
}

// lostAfterCutSnap is lostAfterCut for a node taking snapshots; it also
// reports whether the node opened from a snapshot.
func lostAfterCutSnap(t *testing.T, c cut, written map[ledger.TxID]string, r *rand.Rand, snapshotInterval int) (string, bool) {
	c.fs.CrashTorn(r)
	id, err := node.Load(c.fs, "/node")
	if err != nil {
		return fmt.Sprintf("node identity lost: %v", err), false
	}
	tn := &testNode{dir: "/node", fs: c.fs, id: id}
	cfg := tn.config()
	cfg.ChunkSize = 2 << 10
	cfg.SnapshotTxInterval = snapshotInterval
	e, err := Open(cfg)
	if err != nil {
		return fmt.Sprintf("reopen: %v", err), false
	}
	defer e.Close()
	loaded := len(e.openSnaps) > 0
	for txid, want := range written {
		if txid.Seqno > c.committed {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := e.WaitCommitted(ctx, txid)
		cancel()
		if err != nil {
			return fmt.Sprintf("%s (committed before the cut at %d): %v", txid, c.committed, err), loaded
		}
		rec, err := e.Read(txid)
		if err != nil {
			return fmt.Sprintf("%s: %v", txid, err), loaded
		}
		got := ""
		for _, m := range rec.WriteSet.Maps {
			for _, w := range m.Writes {
				got = string(w.Value)
			}
		}
		if got != want {
			return fmt.Sprintf("%s = %q, want %q", txid, got, want), loaded
		}
	}
	return "", loaded
}

// TestPowerLoss cuts power after every file-system operation of a running
// engine (lazyfs forgets whatever was not fsynced, and tears unsynced
// appends); after each cut the node reopens and every transaction it had
// reported committed is there, unchanged.
func TestPowerLoss(t *testing.T) {
	cuts, written := runToCuts(t, false)
	if len(cuts) < 50 {
		t.Fatalf("only %d cut points", len(cuts))
	}
	stride := 1
	if testing.Short() {
		stride = 5
	}
	r := rand.New(rand.NewPCG(1, 2))
	var checked, withCommits int
	for i := 0; i < len(cuts); i += stride {
		if msg := lostAfterCut(t, cuts[i], written, r); msg != "" {
			t.Fatalf("cut %d of %d: %s", i, len(cuts), msg)
		}
		checked++
		if cuts[i].committed > 0 {
			withCommits++
		}
	}
	if withCommits < checked/2 {
		t.Errorf("only %d of %d cuts had committed transactions", withCommits, checked)
	}
	t.Logf("%d cut points checked, %d transactions written", checked, len(written))
}

// TestPowerLossNeedsTheFsync shows the power-loss test would catch an
// engine that reports transactions committed before fsyncing them.
func TestPowerLossNeedsTheFsync(t *testing.T) {
	cuts, written := runToCuts(t, true)
	r := rand.New(rand.NewPCG(1, 2))
	for i := len(cuts) - 1; i >= 0; i-- {
		if lostAfterCut(t, cuts[i], written, r) != "" {
			return // caught
		}
	}
	t.Fatalf("without the fsync, no cut lost a committed transaction: the test cannot tell")
}

// TestPowerLossSnapshots is TestPowerLoss with snapshots written all along:
// a cut while a snapshot file is being written (its temporary file torn or
// lost, or the rename not yet durable) never leaves a snapshot that is half
// used: the node opens from a whole snapshot or from the ledger, with every
// committed transaction.
func TestPowerLossSnapshots(t *testing.T) {
	cuts, written := runToCutsSnap(t, false, 10)
	stride := 1
	if testing.Short() {
		stride = 5
	}
	r := rand.New(rand.NewPCG(3, 4))
	var checked, fromSnapshot int
	for i := 0; i < len(cuts); i += stride {
		msg, loaded := lostAfterCutSnap(t, cuts[i], written, r, 10)
		if msg != "" {
			t.Fatalf("cut %d of %d: %s", i, len(cuts), msg)
		}
		checked++
		if loaded {
			fromSnapshot++
		}
	}
	if fromSnapshot < checked/4 {
		t.Errorf("only %d of %d cuts reopened from a snapshot: the test does not exercise them", fromSnapshot, checked)
	}
	t.Logf("%d cut points checked, %d reopened from a snapshot", checked, fromSnapshot)
}
