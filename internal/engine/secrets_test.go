package engine

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/receipt"
	"github.com/parleyhq/parley/internal/verify"
	"github.com/parleyhq/parley/internal/vfs"
)

// rotate commits a ledger secret rotation on e and returns its id.
func rotate(t testing.TB, e *Engine) ledger.TxID {
	t.Helper()
	for range MaxConflictRetries {
		tx := e.Begin()
		raw, err := e.PrepareRotation(tx)
		if err != nil {
			t.Fatalf("PrepareRotation: %v", err)
		}
		clear(raw)
		id, err := e.Commit(context.Background(), tx, CommitOptions{})
		if err == nil {
			return id
		}
		t.Logf("rotation commit: %v (retrying)", err)
	}
	t.Fatal("rotation kept conflicting")
	return ledger.TxID{}
}

func froms(eps []Epoch) []uint64 {
	var out []uint64
	for _, ep := range eps {
		out = append(out, ep.From)
	}
	return out
}

// TestRotateUnderLoad rotates the ledger secret twice while writers commit
// private entries, then reads every entry back and checks its receipt,
// before and after a restart (replay), and verifies the ledger files.
func TestRotateUnderLoad(t *testing.T) {
	n := newTestNode(t, vfs.OS{}, t.TempDir())
	e := n.open(t)
	type written struct {
		id    ledger.TxID
		key   string
		value string
	}
	var (
		mu  sync.Mutex
		all []written
		wg  sync.WaitGroup
	)
	stop := make(chan struct{})
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key, value := fmt.Sprintf("w%d-%d", w, i), fmt.Sprintf("value %d/%d", w, i)
				tx := e.Begin()
				tx.Put("private:m", key, []byte(value))
				id, err := e.Commit(context.Background(), tx, CommitOptions{})
				if err != nil {
					t.Errorf("commit %s: %v", key, err)
					return
				}
				mu.Lock()
				all = append(all, written{id, key, value})
				mu.Unlock()
			}
		})
	}
	waitFor := func(n int) {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			got := len(all)
			mu.Unlock()
			if got >= n {
				return
			}
			time.Sleep(time.Millisecond) // polling progress of the writers
		}
		t.Fatalf("writers did not reach %d transactions", n)
	}
	waitFor(200)
	r1 := rotate(t, e)
	waitFor(600)
	r2 := rotate(t, e)
	waitFor(1000)
	close(stop)
	wg.Wait()
	last := put(t, e, "private:m", "last", "after both rotations")
	all = append(all, written{last, "last", "after both rotations"})
	waitCommitted(t, e, last)

	want := []uint64{1, r1.Seqno + 1, r2.Seqno + 1}
	if got := froms(e.Epochs()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("epochs start at %v, want %v", got, want)
	}
	// The entries after a rotation are sealed under the new secret: the
	// genesis secret does not open them.
	p, err := e.entry(last)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.id.Secret.Open(&p, last); err == nil {
		t.Errorf("the genesis secret opens %s, sealed after two rotations", last)
	}
	check := func(e *Engine, when string) {
		t.Helper()
		for i, w := range all {
			rec, err := e.Read(w.id)
			if err != nil {
				t.Fatalf("%s: Read(%s): %v", when, w.id, err)
			}
			if got := valueIn(rec.WriteSet, "private:m", w.key); got != w.value {
				t.Fatalf("%s: Read(%s) = %q, want %q", when, w.id, got, w.value)
			}
			if i%97 == 0 || w.id.Seqno == r1.Seqno+1 || w.id.Seqno == r2.Seqno+1 {
				r, err := e.Receipt(w.id)
				if err != nil {
					t.Fatalf("%s: Receipt(%s): %v", when, w.id, err)
				}
				if err := receipt.Verify(r, n.id.Service.Cert); err != nil {
					t.Fatalf("%s: receipt of %s: %v", when, w.id, err)
				}
			}
		}
	}
	check(e, "live")
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = n.open(t)
	defer e.Close()
	if got := froms(e.Epochs()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after replay, epochs start at %v, want %v", got, want)
	}
	after := put(t, e, "private:m", "after restart", "x")
	waitCommitted(t, e, after)
	check(e, "after restart")
	e.Close()
	if _, err := verify.Ledger(vfs.OS{}, n.config().Dir, n.id.Service.Cert, verify.Options{}); err != nil {
		t.Errorf("verify: %v", err)
	}
}

// TestRotationsConflict: two rotations prepared over the same state cannot
// both commit, or the second's history would miss the first's secret.
func TestRotationsConflict(t *testing.T) {
	n := newTestNode(t, vfs.OS{}, t.TempDir())
	e := n.open(t)
	defer e.Close()
	tx1, tx2 := e.Begin(), e.Begin()
	if _, err := e.PrepareRotation(tx1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.PrepareRotation(tx2); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Commit(context.Background(), tx1, CommitOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Commit(context.Background(), tx2, CommitOptions{}); err == nil {
		t.Fatal("a second rotation prepared before the first committed")
	}
	if got := len(e.Epochs()); got != 2 {
		t.Errorf("%d epochs, want 2", got)
	}
}

// TestClusterRotation: backups learn a rotation from the entry; a rotation
// written by an isolated leader and rolled back leaves the old secret in
// use on every node.
func TestClusterRotation(t *testing.T) {
	c := newTestCluster(t, 3)
	old := c.leader(c.ids)
	before := c.commitOn(old, 5, "before")
	c.waitAllCommitted(before[len(before)-1])

	c.net.isolate(old, c.ids, true)
	tx := c.engines[old].Begin()
	if _, err := c.engines[old].PrepareRotation(tx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.engines[old].Commit(context.Background(), tx, CommitOptions{}); err != nil {
		t.Skipf("the isolated leader stepped down before the rotation: %v", err)
	}
	if got := len(c.engines[old].Epochs()); got != 2 {
		t.Fatalf("isolated leader has %d epochs after its rotation, want 2", got)
	}
	var rest []uint64
	for _, id := range c.ids {
		if id != old {
			rest = append(rest, id)
		}
	}
	neu := c.leader(rest)
	after := c.commitOn(neu, 5, "after")
	c.net.isolate(old, c.ids, false)
	c.waitAllCommitted(after[len(after)-1])
	for _, id := range c.ids {
		if got := froms(c.engines[id].Epochs()); len(got) != 1 {
			t.Errorf("node %d: epochs %v after the rotation was rolled back, want [1]", id, got)
		}
		rec, err := c.engines[id].Read(after[4])
		if err != nil || valueIn(rec.WriteSet, "private:m", "after-4") != "after" {
			t.Errorf("node %d: Read(%s) = %v, %v", id, after[4], rec, err)
		}
	}

	// A rotation that commits reaches every node.
	r := rotate(t, c.engines[neu])
	later := c.commitOn(neu, 5, "later")
	c.waitAllCommitted(later[len(later)-1])
	for _, id := range c.ids {
		if got, want := froms(c.engines[id].Epochs()), []uint64{1, r.Seqno + 1}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("node %d: epochs %v, want %v", id, got, want)
		}
		rec, err := c.engines[id].Read(later[4])
		if err != nil || valueIn(rec.WriteSet, "private:m", "later-4") != "later" {
			t.Errorf("node %d: Read(%s) = %v, %v", id, later[4], rec, err)
		}
	}
	c.checkSameCommittedPrefix(c.engines[neu].CommittedID().Seqno)
}

// FuzzDecryptHistory feeds arbitrary historical-secrets records: no panic,
// and nothing decrypts under a key that did not seal it.
func FuzzDecryptHistory(f *testing.F) {
	newer := make([]byte, ledger.SecretSize)
	s, _ := ledger.NewSecret(make([]byte, ledger.SecretSize))
	good, _ := encryptHistory(newer, []Epoch{{From: 1, Secret: s}, {From: 7, Secret: s}})
	f.Add(newer, good)
	f.Add(newer, []byte(`{"secrets":[{"from":0,"encryptedSecret":""}]}`))
	f.Add([]byte("short"), []byte(`{}`))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		eps, err := DecryptHistory(key, value)
		if err != nil {
			return
		}
		if len(eps) > 0 && !(len(key) == len(newer) && string(key) == string(newer)) {
			t.Fatalf("a record decrypted under a key that did not seal it")
		}
		for i := 1; i < len(eps); i++ {
			if eps[i].From <= eps[i-1].From {
				t.Fatalf("epochs out of order: %v", froms(eps))
			}
		}
	})
}
