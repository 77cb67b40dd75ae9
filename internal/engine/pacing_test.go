package engine

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/ledger"
	pb "go.etcd.io/raft/v3/raftpb"
)

// In a cluster the primary signs again only once its previous signature
// is committed, or after the whole signature interval: while no backup's
// acknowledgement arrives, it must not sign at the pace of its own fsync.
func TestClusterPacesSignaturesToCommit(t *testing.T) {
	c := newTestCluster(t, 3)
	// A long signature interval, so that a quarter of it (the fsync pacing
	// of one node) is well above this machine's fsync time.
	const interval = 40 * time.Millisecond
	for _, id := range c.ids {
		if err := c.engines[id].Close(); err != nil {
			t.Fatal(err)
		}
		cfg := c.cfgs[id]
		cfg.SignatureInterval = interval
		cfg.TickInterval = 20 * time.Millisecond // no election from a slow heartbeat
		c.cfgs[id] = cfg
	}
	for _, id := range c.ids {
		c.reopen(id)
	}
	lead := c.leader(c.ids)
	c.commitOn(lead, 3, "settle")
	e := c.engines[lead]

	// Acknowledgements of appends are lost; heartbeats still flow, so the
	// primary keeps its quorum and leads on.
	c.net.mu.Lock()
	c.net.drop = func(m pb.Message) bool { return m.Type == pb.MsgAppResp }
	c.net.mu.Unlock()
	before := e.Metrics().Signatures.Load()
	start := time.Now()
	var last ledger.TxID
	for i := 0; time.Since(start) < 20*interval; i++ {
		tx := e.Begin()
		tx.Put("private:m", fmt.Sprintf("p-%d", i), []byte("x"))
		id, err := e.Commit(context.Background(), tx, CommitOptions{})
		if err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
		last = id
		time.Sleep(time.Millisecond) // a steady trickle of writes, not synchronisation
	}
	elapsed := time.Since(start)
	got := e.Metrics().Signatures.Load() - before
	// At the fsync's pace (a quarter interval apart) there would be about
	// four times as many.
	t.Logf("%d signatures in %v", got, elapsed)
	if limit := uint64(elapsed/interval) + 2; got > limit {
		t.Errorf("%d signatures in %v without a commit, want at most %d (one per %v)", got, elapsed, limit, interval)
	}
	if !e.IsPrimary() {
		t.Fatalf("node %d stopped leading", lead)
	}

	c.net.mu.Lock()
	c.net.drop = nil
	c.net.mu.Unlock()
	c.waitAllCommitted(last)
}
