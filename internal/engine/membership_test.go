package engine

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/storage"
	"github.com/parleyhq/parley/internal/verify"
	"github.com/parleyhq/parley/internal/vfs"
)

// waitMembers polls node id until its membership is want.
func (c *testCluster) waitMembers(id uint64, want Membership) {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var got Membership
	for time.Now().Before(deadline) {
		got = c.engines[id].Members()
		if slices.Equal(got.Voters, want.Voters) && slices.Equal(got.Learners, want.Learners) {
			return
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, not synchronising
	}
	c.t.Fatalf("node %d: members %+v, want %+v", id, got, want)
}

// addNode adds id through the leader as a learner, waits for it to catch
// up, and promotes it to voter.
func (c *testCluster) addNode(lead, id uint64) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e := c.engines[lead]
	if _, err := e.AddLearner(ctx, id); err != nil {
		c.t.Fatalf("add learner %d: %v", id, err)
	}
	target := e.CommittedID().Seqno
	for e.Progress()[id] < target {
		if ctx.Err() != nil {
			c.t.Fatalf("learner %d did not catch up to %d: progress %v", id, target, e.Progress())
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, not synchronising
	}
	if _, err := e.AddVoter(ctx, id); err != nil {
		c.t.Fatalf("add voter %d: %v", id, err)
	}
}

// TestMembershipJoinReplayRemove grows a one-node service to three nodes
// that start with empty ledgers, shows the joined nodes form a quorum
// without the first one, restarts every node (the membership comes back
// from the ledger files), removes a node, and checks every ledger
// verifies, membership changes included.
func TestMembershipJoinReplayRemove(t *testing.T) {
	c := newTestCluster(t, 1)
	c.leader([]uint64{1})
	first := c.commitOn(1, 20, "first")

	c.start(2, []uint64{1}, true)
	c.start(3, []uint64{1}, true)
	if got := c.engines[2].Members(); !slices.Equal(got.Voters, []uint64{1}) {
		t.Fatalf("joiner's members before it is added: %+v, want voters [1]", got)
	}
	c.addNode(1, 2)
	c.addNode(1, 3)
	all := Membership{Voters: []uint64{1, 2, 3}}
	for _, id := range c.ids {
		c.waitMembers(id, all)
	}
	second := c.commitOn(1, 20, "second")
	c.waitAllCommitted(second[len(second)-1])
	c.waitAllCommitted(first[0])
	c.checkSameCommittedPrefix(c.engines[1].CommittedID().Seqno)

	// The joined nodes are voters: without node 1 they elect and commit.
	c.net.isolate(1, c.ids, true)
	lead := c.leader([]uint64{2, 3})
	third := c.commitOn(lead, 5, "third")
	c.net.isolate(1, c.ids, false)
	c.waitAllCommitted(third[len(third)-1])

	// Restart: the membership is rebuilt from the ledger files.
	for _, id := range c.ids {
		c.engines[id].Close()
	}
	for _, id := range c.ids {
		c.reopen(id)
	}
	for _, id := range c.ids {
		c.waitMembers(id, all)
	}
	lead = c.leader(c.ids)
	fourth := c.commitOn(lead, 5, "fourth")
	c.waitAllCommitted(fourth[len(fourth)-1])

	// Remove a node that is not the primary (asking whichever node is
	// primary now: under load an election may move it).
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.engines[lead].RemoveNode(ctx, lead); !errors.Is(err, ErrRemoveSelf) {
		t.Errorf("node removing itself: err = %v, want ErrRemoveSelf", err)
	}
	var gone uint64
	onPrimary := func(f func(lead uint64) error) {
		t.Helper()
		for {
			lead = c.leader(c.ids)
			if gone == 0 || gone == lead {
				gone = c.ids[0]
				if gone == lead {
					gone = c.ids[1]
				}
			}
			err := f(lead)
			if !errors.Is(err, ErrNotLeader) {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("no stable primary: %v", err)
			}
		}
	}
	onPrimary(func(lead uint64) error {
		_, err := c.engines[lead].AddVoter(ctx, gone)
		if errors.Is(err, ErrNoChange) {
			return nil
		}
		if err == nil {
			err = errors.New("adding a voter again succeeded")
		}
		return err
	})
	var rmID ledger.TxID
	onPrimary(func(lead uint64) (err error) {
		rmID, err = c.engines[lead].RemoveNode(ctx, gone)
		return err
	})
	var rest []uint64
	for _, id := range c.ids {
		if id != gone {
			rest = append(rest, id)
		}
	}
	for _, id := range rest {
		c.waitMembers(id, Membership{Voters: rest})
	}
	c.engines[gone].Close()
	fifth := c.commitOn(lead, 5, "fifth")
	for _, id := range rest {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := c.engines[id].WaitCommitted(ctx, fifth[len(fifth)-1]); err != nil {
			t.Fatalf("node %d after the removal: %v", id, err)
		}
		cancel()
	}
	// The change is an ordinary, verifiable ledger transaction.
	rec, err := c.engines[lead].Read(rmID)
	if err != nil {
		t.Fatalf("read the removal %s: %v", rmID, err)
	}
	cc, err := confChangeIn(rec.WriteSet)
	if err != nil || cc != (ConfChange{Op: OpRemove, RaftID: gone}) {
		t.Errorf("removal records %+v, %v; want remove %d", cc, err, gone)
	}
	for _, id := range rest {
		c.engines[id].Close()
	}
	for _, id := range c.ids {
		if _, err := verify.Ledger(vfs.OS{}, c.dirs[id], c.svc.Cert, verify.Options{}); err != nil {
			t.Errorf("node %d ledger: %v", id, err)
		}
	}
	// The flag marks exactly the membership changes in the files.
	var flagged int
	if err := storage.Scan(vfs.OS{}, c.dirs[lead], func(_ storage.ChunkInfo, e storage.Entry) error {
		if e.ConfChange {
			flagged++
			if _, err := confChangeOf(e.Data); err != nil {
				t.Errorf("flagged entry %d: %v", e.Index, err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if flagged != 5 { // learner and voter for 2 and 3, remove
		t.Errorf("%d flagged membership changes in the files, want 5", flagged)
	}
}

// TestMembershipChangeRolledBack has an isolated primary propose a
// membership change it cannot commit; the others elect a new primary and
// overwrite it. The change fails with ErrInvalid, never takes effect, and
// is gone after a restart.
func TestMembershipChangeRolledBack(t *testing.T) {
	c := newTestCluster(t, 3)
	three := Membership{Voters: []uint64{1, 2, 3}}
	var old uint64
	var lost ledger.TxID
	var lostErr error
	for attempt := 0; attempt < 10 && lost.Seqno == 0; attempt++ {
		old = c.leader(c.ids)
		c.commitOn(old, 3, "before")
		c.net.isolate(old, c.ids, true)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		done := make(chan struct{})
		go func() {
			defer close(done)
			// Returns once raft overwrote it (ErrInvalid), after healing.
			_, lostErr = c.engines[old].AddLearner(ctx, 9)
		}()
		// Wait until the change is in the isolated primary's log.
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			var ok bool
			if lost, ok = c.findConf(old, 9); ok {
				break
			}
			time.Sleep(time.Millisecond) // polling a condition, not synchronising
		}
		var rest []uint64
		for _, id := range c.ids {
			if id != old {
				rest = append(rest, id)
			}
		}
		neu := c.leader(rest)
		after := c.commitOn(neu, 3, "after")
		c.net.isolate(old, c.ids, false)
		<-done
		cancel()
		c.waitAllCommitted(after[len(after)-1])
		if lost.Seqno == 0 {
			t.Logf("attempt %d: the primary stepped down before proposing (%v); again", attempt, lostErr)
		}
	}
	if lost.Seqno == 0 {
		t.Fatal("the isolated primary never proposed the change")
	}
	if !errors.Is(lostErr, ErrInvalid) {
		t.Errorf("rolled-back change: err = %v, want ErrInvalid", lostErr)
	}
	for _, id := range c.ids {
		c.waitMembers(id, three)
		if got := c.engines[id].Status(lost); got != StatusInvalid {
			t.Errorf("node %d: change %s is %v, want Invalid", id, lost, got)
		}
	}
	c.engines[old].Close()
	c.reopen(old)
	c.waitMembers(old, three)
	if _, ok := c.findConf(old, 9); ok {
		t.Errorf("node %d still holds the rolled-back change after a restart", old)
	}
}

// findConf looks in node id's recent log for a membership change naming
// raftID.
func (c *testCluster) findConf(id, raftID uint64) (ledger.TxID, bool) {
	e := c.engines[id]
	cur := e.Current().Seqno
	for s := cur; s > 0 && s+8 > cur; s-- {
		e.mu.RLock()
		txid := ledger.TxID{View: e.termOfLocked(s), Seqno: s}
		e.mu.RUnlock()
		rec, err := e.Read(txid)
		if err != nil {
			continue
		}
		if cc, err := confChangeIn(rec.WriteSet); err == nil && cc.RaftID == raftID {
			return txid, true
		}
	}
	return ledger.TxID{}, false
}

// TestTransferLeadershipThenRemove hands the primary role to another voter,
// which then removes the old primary: the way a retiring primary leaves.
func TestTransferLeadershipThenRemove(t *testing.T) {
	c := newTestCluster(t, 3)
	old := c.leader(c.ids)
	c.commitOn(old, 3, "before")
	to := c.ids[0]
	if to == old {
		to = c.ids[1]
	}
	// Raft abandons a transfer the target does not complete within an
	// election timeout (short here); ask again until it is done.
	deadline := time.Now().Add(10 * time.Second)
	for !c.engines[to].IsPrimary() {
		if time.Now().After(deadline) {
			t.Fatalf("node %d is not primary 10s after transfers to it", to)
		}
		if cur := c.leader(c.ids); cur != to {
			c.engines[cur].TransferLeadership(to)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, not synchronising
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.engines[to].RemoveNode(ctx, old); err != nil {
		t.Fatalf("remove the old primary: %v", err)
	}
	var rest []uint64
	for _, id := range c.ids {
		if id != old {
			rest = append(rest, id)
		}
	}
	for _, id := range rest {
		c.waitMembers(id, Membership{Voters: rest})
	}
	c.net.isolate(old, c.ids, true)
	after := c.commitOn(to, 3, "after")
	for _, id := range rest {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := c.engines[id].WaitCommitted(ctx, after[len(after)-1]); err != nil {
			t.Errorf("node %d: %v", id, err)
		}
		cancel()
	}
}

// TestJoiningNodeWaits: a joining node with an empty ledger that no one
// added never campaigns or leads; the service's membership is unchanged;
// a joining node needs the service's voters.
func TestJoiningNodeWaits(t *testing.T) {
	c := newTestCluster(t, 1)
	c.leader([]uint64{1})
	c.start(2, []uint64{1}, true)
	c.commitOn(1, 3, "x")
	// It hears from no one: it knows no primary and never campaigns.
	if got := c.engines[2].Primary(); got != 0 {
		t.Errorf("the joining node knows primary %d before it was added", got)
	}
	if c.engines[2].IsPrimary() || c.engines[2].View() > c.engines[1].View() {
		t.Errorf("the joining node campaigned: primary %v, view %d", c.engines[2].IsPrimary(), c.engines[2].View())
	}
	if got := c.engines[1].Members(); !slices.Equal(got.Voters, []uint64{1}) || len(got.Learners) != 0 {
		t.Errorf("members %+v, want voters [1]", got)
	}
	if _, err := Open(Config{Dir: t.TempDir(), Secret: c.secret, NodeKey: c.cfgs[2].NodeKey, NodeCertPEM: c.cfgs[2].NodeCertPEM, RaftID: 3, Joining: true, Transport: testLink{net: c.net, from: 3}}); err == nil {
		t.Error("a joining node opened without the service's voters")
	}
}
