package engine

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/identity"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/receipt"
	"github.com/parleyhq/parley/internal/storage"
	"github.com/parleyhq/parley/internal/verify"
	"github.com/parleyhq/parley/internal/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
)

// testNet delivers raft messages between in-process engines, and can cut
// links to make partitions.
type testNet struct {
	mu      sync.Mutex
	engines map[uint64]*Engine
	cut     map[[2]uint64]bool
	mutate  func(*pb.Message)     // if set, applied to every message sent
	drop    func(pb.Message) bool // drops the messages it is true of, if set
}

type testLink struct {
	net  *testNet
	from uint64
}

func (l testLink) Send(msgs []pb.Message) {
	l.net.mu.Lock()
	byTo := map[*Engine][]pb.Message{}
	for _, m := range msgs {
		if l.net.cut[[2]uint64{l.from, m.To}] || (l.net.drop != nil && l.net.drop(m)) {
			continue
		}
		if l.net.mutate != nil {
			l.net.mutate(&m)
		}
		if e := l.net.engines[m.To]; e != nil {
			byTo[e] = append(byTo[e], m)
		}
	}
	l.net.mu.Unlock()
	for e, ms := range byTo {
		e.Receive(ms)
	}
}

// isolate cuts every link to and from id (or heals them).
func (n *testNet) isolate(id uint64, ids []uint64, cut bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, o := range ids {
		if o != id {
			n.cut[[2]uint64{id, o}] = cut
			n.cut[[2]uint64{o, id}] = cut
		}
	}
}

type testCluster struct {
	t       *testing.T
	net     *testNet
	ids     []uint64
	svc     *identity.Service
	dirs    map[uint64]string
	engines map[uint64]*Engine
	secret  *ledger.Secret
	cfgs    map[uint64]Config // each node's configuration, to reopen it
	tune    func(*Config)     // applied to each node's configuration, if set
}

// newTestCluster starts n engines forming one new service: one service
// identity, one ledger secret, a node key and endorsed certificate each.
func newTestCluster(t *testing.T, n int) *testCluster {
	return newTunedCluster(t, n, nil)
}

// newTunedCluster is newTestCluster with tune applied to every node's
// configuration.
func newTunedCluster(t *testing.T, n int, tune func(*Config)) *testCluster {
	svc, err := identity.NewService("Parley Service", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, ledger.SecretSize)
	rand.Read(raw)
	secret, err := ledger.NewSecret(raw)
	if err != nil {
		t.Fatal(err)
	}
	c := &testCluster{t: t, net: &testNet{engines: map[uint64]*Engine{}, cut: map[[2]uint64]bool{}}, svc: svc, dirs: map[uint64]string{}, engines: map[uint64]*Engine{}, secret: secret, cfgs: map[uint64]Config{}, tune: tune}
	for i := 1; i <= n; i++ {
		c.ids = append(c.ids, uint64(i))
	}
	voters := slices.Clone(c.ids)
	for _, id := range voters {
		c.start(id, voters, false)
	}
	t.Cleanup(func() {
		for _, e := range c.engines {
			e.Close()
		}
	})
	return c
}

// start makes node id (a new key, an endorsed certificate, an empty
// ledger) and opens its engine with the given initial voters; joining
// marks a node that joins the running service.
func (c *testCluster) start(id uint64, voters []uint64, joining bool) *Engine {
	c.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		c.t.Fatal(err)
	}
	der, err := c.svc.EndorseNode(&key.PublicKey, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		c.t.Fatal(err)
	}
	c.dirs[id] = filepath.Join(c.t.TempDir(), "ledger")
	c.cfgs[id] = Config{
		Dir:          c.dirs[id],
		Secret:       c.secret,
		NodeKey:      key,
		NodeCertPEM:  identity.EncodeCertPEM(der),
		RaftID:       id,
		Voters:       voters,
		Joining:      joining,
		Transport:    testLink{net: c.net, from: id},
		TickInterval: 5 * time.Millisecond,
		ChunkSize:    4 << 10,
	}
	if c.tune != nil {
		cfg := c.cfgs[id]
		c.tune(&cfg)
		c.cfgs[id] = cfg
	}
	if !slices.Contains(c.ids, id) {
		c.ids = append(c.ids, id)
	}
	return c.reopen(id)
}

// reopen opens node id's engine on its ledger (after Close).
func (c *testCluster) reopen(id uint64) *Engine {
	c.t.Helper()
	e, err := Open(c.cfgs[id])
	if err != nil {
		c.t.Fatalf("open node %d: %v", id, err)
	}
	c.engines[id] = e
	c.net.mu.Lock()
	c.net.engines[id] = e
	c.net.mu.Unlock()
	return e
}

// leader waits until exactly one of the given nodes leads and returns it.
func (c *testCluster) leader(among []uint64) uint64 {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var leaders []uint64
		for _, id := range among {
			if c.engines[id].IsPrimary() {
				leaders = append(leaders, id)
			}
		}
		if len(leaders) == 1 {
			return leaders[0]
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, not synchronising
	}
	c.t.Fatalf("no single leader among %v", among)
	return 0
}

// commitOn writes n transactions on node id and waits until all commit.
func (c *testCluster) commitOn(id uint64, n int, prefix string) []ledger.TxID {
	c.t.Helper()
	e := c.engines[id]
	var ids []ledger.TxID
	for i := 0; i < n; i++ {
		tx := e.Begin()
		tx.Put("private:m", fmt.Sprintf("%s-%d", prefix, i), []byte(prefix))
		txid, err := e.Commit(context.Background(), tx, CommitOptions{})
		if err != nil {
			c.t.Fatalf("commit on node %d: %v", id, err)
		}
		ids = append(ids, txid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.WaitCommitted(ctx, ids[len(ids)-1]); err != nil {
		c.t.Fatalf("wait for %s on node %d: %v", ids[len(ids)-1], id, err)
	}
	return ids
}

// waitAllCommitted waits until every node has txid committed.
func (c *testCluster) waitAllCommitted(txid ledger.TxID) {
	c.t.Helper()
	for _, id := range c.ids {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.engines[id].WaitCommitted(ctx, txid)
		cancel()
		if err != nil {
			c.t.Fatalf("node %d: %s: %v", id, txid, err)
		}
	}
}

// checkSameCommittedPrefix compares every node's log up to seqno, entry by
// entry, and the state of their stores.
func (c *testCluster) checkSameCommittedPrefix(seqno uint64) {
	c.t.Helper()
	var want []storage.Entry
	for i, id := range c.ids {
		ents, err := c.engines[id].log.Entries(1, seqno+1, 1<<40)
		if err != nil {
			c.t.Fatalf("node %d entries: %v", id, err)
		}
		if i == 0 {
			want = ents
			continue
		}
		if len(ents) != len(want) {
			c.t.Fatalf("node %d has %d committed entries, node %d has %d", id, len(ents), c.ids[0], len(want))
		}
		for k := range ents {
			if ents[k].Term != want[k].Term || !bytes.Equal(ents[k].Data, want[k].Data) {
				c.t.Fatalf("node %d entry %d differs from node %d's", id, ents[k].Index, c.ids[0])
			}
		}
	}
}

func TestClusterReplicates(t *testing.T) {
	c := newTestCluster(t, 3)
	lead := c.leader(c.ids)
	ids := c.commitOn(lead, 30, "a")
	last := ids[len(ids)-1]
	c.waitAllCommitted(last)
	c.checkSameCommittedPrefix(c.engines[lead].CommittedID().Seqno)
	for _, id := range c.ids {
		if got := c.engines[id].Primary(); got != lead {
			t.Errorf("node %d: Primary() = %d, want %d", id, got, lead)
		}
		if got := c.engines[id].RaftID(); got != id {
			t.Errorf("node %d: RaftID() = %d", id, got)
		}
	}
	for _, id := range c.ids {
		e := c.engines[id]
		r, err := e.Receipt(ids[3])
		if err != nil {
			t.Fatalf("node %d receipt: %v", id, err)
		}
		if err := receipt.Verify(r, c.svc.Cert); err != nil {
			t.Errorf("node %d receipt does not verify: %v", id, err)
		}
		rec, err := e.Read(last)
		if err != nil || valueIn(rec.WriteSet, "private:m", "a-29") != "a" {
			t.Errorf("node %d Read(%s) = %v, %v", id, last, rec, err)
		}
	}
	for _, id := range c.ids {
		if id == lead {
			continue
		}
		tx := c.engines[id].Begin()
		tx.Put("m", "k", []byte("v"))
		if _, err := c.engines[id].Commit(context.Background(), tx, CommitOptions{}); !errors.Is(err, ErrNotLeader) {
			t.Errorf("commit on backup %d: err = %v, want ErrNotLeader", id, err)
		}
	}
}

// TestClusterFailoverRollsBack isolates the leader with uncommitted
// transactions, lets the others elect a new leader and commit in a later
// view, then heals the partition: the old leader's uncommitted suffix is
// rolled back (its transactions turn Invalid), every committed transaction
// is on every node, the committed prefixes are identical, and every node's
// ledger verifies.
func TestClusterFailoverRollsBack(t *testing.T) {
	c := newTestCluster(t, 3)
	old := c.leader(c.ids)
	before := c.commitOn(old, 10, "before")
	c.waitAllCommitted(before[len(before)-1])

	c.net.isolate(old, c.ids, true)
	var lost []ledger.TxID
	for i := 0; i < 5; i++ {
		tx := c.engines[old].Begin()
		tx.Put("private:m", fmt.Sprintf("lost-%d", i), []byte("lost"))
		txid, err := c.engines[old].Commit(context.Background(), tx, CommitOptions{})
		if err != nil {
			break // it may already have stepped down
		}
		lost = append(lost, txid)
	}
	if len(lost) == 0 {
		t.Fatalf("the isolated leader accepted no transaction: nothing to roll back")
	}
	var rest []uint64
	for _, id := range c.ids {
		if id != old {
			rest = append(rest, id)
		}
	}
	neu := c.leader(rest)
	after := c.commitOn(neu, 10, "after")
	if after[0].View <= before[0].View {
		t.Fatalf("new leader wrote in view %d, not after view %d", after[0].View, before[0].View)
	}
	for _, txid := range lost {
		if got := c.engines[neu].Status(txid); got == StatusCommitted {
			t.Fatalf("%s, written by the isolated leader, is committed on the new leader", txid)
		}
	}

	c.net.isolate(old, c.ids, false)
	c.waitAllCommitted(after[len(after)-1])
	for _, txid := range lost {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.engines[old].WaitCommitted(ctx, txid)
		cancel()
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s on the old leader after healing: err = %v, want ErrInvalid", txid, err)
		}
	}
	for _, txid := range append(before, after...) {
		for _, id := range c.ids {
			if got := c.engines[id].Status(txid); got != StatusCommitted {
				t.Errorf("node %d: %s is %v, want Committed", id, txid, got)
			}
		}
	}
	c.checkSameCommittedPrefix(c.engines[neu].CommittedID().Seqno)
	for _, id := range c.ids {
		if v, _ := c.engines[id].Begin().Get("private:m", "lost-0"); v != nil {
			t.Errorf("node %d still holds a rolled-back write", id)
		}
	}
	for _, id := range c.ids {
		c.engines[id].Close()
		if _, err := verify.Ledger(vfs.OS{}, c.dirs[id], c.svc.Cert, verify.Options{}); err != nil {
			t.Errorf("node %d ledger: %v", id, err)
		}
	}
}
