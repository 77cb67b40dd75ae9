package consensus

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"

	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/identity"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/verify"
	"github.com/parleyhq/parley/internal/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
)

// testNode is one engine with its transport and HTTPS listener.
type testNode struct {
	id     uint64
	addr   string
	dir    string
	key    *ecdsa.PrivateKey
	cert   []byte // DER
	eng    *engine.Engine
	tr     *Transport
	srv    *http.Server
	served chan struct{}
}

type testCluster struct {
	t      *testing.T
	faults *faults
	svc    *identity.Service
	secret *ledger.Secret
	ids    []uint64
	nodes  map[uint64]*testNode
}

func newKeyCert(t *testing.T, svc *identity.Service) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := svc.EndorseNode(&key.PublicKey, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

func newTestCluster(t *testing.T, n int) *testCluster {
	t.Helper()
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
	c := &testCluster{t: t, svc: svc, secret: secret, nodes: map[uint64]*testNode{}, faults: &faults{cut: map[[2]uint64]bool{}}}
	lns := map[uint64]net.Listener{}
	for i := 1; i <= n; i++ {
		id := uint64(i)
		c.ids = append(c.ids, id)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[id] = ln
		key, der := newKeyCert(t, svc)
		c.nodes[id] = &testNode{id: id, addr: ln.Addr().String(), dir: filepath.Join(t.TempDir(), "ledger"), key: key, cert: der}
	}
	for _, id := range c.ids {
		c.start(id, lns[id])
	}
	t.Cleanup(func() {
		for _, id := range c.ids {
			c.stop(id)
		}
	})
	return c
}

func (c *testCluster) peers() []Peer {
	var ps []Peer
	for _, id := range c.ids {
		n := c.nodes[id]
		nid, err := identity.NodeID(&n.key.PublicKey)
		if err != nil {
			c.t.Fatal(err)
		}
		ps = append(ps, Peer{ID: id, Address: n.addr, NodeID: nid})
	}
	return ps
}

// start opens node id's engine and serves its transport on ln (a new
// listener on its address when nil).
func (c *testCluster) start(id uint64, ln net.Listener) {
	c.t.Helper()
	n := c.nodes[id]
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", n.addr); err != nil {
			c.t.Fatal(err)
		}
	}
	tlsCert := tls.Certificate{Certificate: [][]byte{n.cert}, PrivateKey: n.key}
	tr, err := New(Config{ID: id, Peers: c.peers(), Certificate: tlsCert, ServiceCert: c.svc.Cert})
	if err != nil {
		c.t.Fatal(err)
	}
	eng, err := engine.Open(engine.Config{
		Dir:          n.dir,
		Secret:       c.secret,
		NodeKey:      n.key,
		NodeCertPEM:  identity.EncodeCertPEM(n.cert),
		RaftID:       id,
		Voters:       c.ids,
		Transport:    faultyLink{tr: tr, faults: c.faults, from: id},
		TickInterval: 10 * time.Millisecond,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	tr.SetReceiver(eng)
	n.eng, n.tr = eng, tr
	n.srv = &http.Server{
		Handler: tr,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{tlsCert},
			ClientAuth:   tls.RequestClientCert,
			MinVersion:   tls.VersionTLS12,
			NextProtos:   []string{"h2", "http/1.1"},
		},
		ReadHeaderTimeout: 10 * time.Second,
	}
	n.served = make(chan struct{})
	go func() {
		defer close(n.served)
		n.srv.ServeTLS(ln, "", "")
	}()
}

// faults cuts links between nodes: a faultyLink drops what its node
// sends over a cut link, before the real transport sees it.
type faults struct {
	mu  sync.Mutex
	cut map[[2]uint64]bool
}

type faultyLink struct {
	tr     *Transport
	faults *faults
	from   uint64
}

func (l faultyLink) Send(msgs []pb.Message) {
	l.faults.mu.Lock()
	keep := make([]pb.Message, 0, len(msgs))
	for _, m := range msgs {
		if !l.faults.cut[[2]uint64{l.from, m.To}] {
			keep = append(keep, m)
		}
	}
	l.faults.mu.Unlock()
	l.tr.Send(keep)
}

// isolate cuts (or heals) every link to and from id.
func (c *testCluster) isolate(id uint64, cut bool) {
	c.faults.mu.Lock()
	defer c.faults.mu.Unlock()
	for _, o := range c.ids {
		if o != id {
			c.faults.cut[[2]uint64{id, o}] = cut
			c.faults.cut[[2]uint64{o, id}] = cut
		}
	}
}

// stop closes node id's server, transport and engine.
func (c *testCluster) stop(id uint64) {
	n := c.nodes[id]
	if n.eng == nil {
		return
	}
	n.srv.Close()
	<-n.served
	n.tr.Close()
	n.eng.Close()
	n.eng = nil
}

func (c *testCluster) leader(among []uint64) uint64 {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var leaders []uint64
		for _, id := range among {
			if c.nodes[id].eng.IsPrimary() {
				leaders = append(leaders, id)
			}
		}
		if len(leaders) == 1 {
			return leaders[0]
		}
		time.Sleep(5 * time.Millisecond) // polling a condition
	}
	c.t.Fatalf("no single leader among %v", among)
	return 0
}

// commitOn commits n transactions on the primary among the given nodes and
// waits until the last is committed; it returns that primary and the ids.
// Leadership may move while the cluster settles (a busy machine can miss a
// heartbeat): then the whole batch goes again on the new primary, so the ids
// returned are all of one view.
func (c *testCluster) commitOn(among []uint64, n int, prefix string) (uint64, []ledger.TxID) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		id := c.leader(among)
		ids, err := c.tryCommit(id, n, prefix)
		if err == nil {
			return id, ids
		}
		if !(errors.Is(err, engine.ErrNotLeader) || errors.Is(err, engine.ErrInvalid)) || time.Now().After(deadline) {
			c.t.Fatalf("commit on node %d: %v", id, err)
		}
	}
}

func (c *testCluster) tryCommit(id uint64, n int, prefix string) ([]ledger.TxID, error) {
	e := c.nodes[id].eng
	var ids []ledger.TxID
	for i := range n {
		tx := e.Begin()
		tx.Put("private:m", fmt.Sprintf("%s-%d", prefix, i), []byte(prefix))
		txid, err := e.Commit(context.Background(), tx, engine.CommitOptions{})
		if err != nil {
			return nil, err
		}
		ids = append(ids, txid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.WaitCommitted(ctx, ids[len(ids)-1]); err != nil {
		return nil, fmt.Errorf("wait for %s: %w", ids[len(ids)-1], err)
	}
	return ids, nil
}

func (c *testCluster) waitCommitted(on []uint64, txid ledger.TxID) {
	c.t.Helper()
	for _, id := range on {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := c.nodes[id].eng.WaitCommitted(ctx, txid)
		cancel()
		if err != nil {
			c.t.Fatalf("node %d: %s: %v", id, txid, err)
		}
	}
}

// TestTransportReplicatesAndFailsOver runs three engines over loopback
// TLS: they replicate; the leader stops; the other two elect a new leader
// in a later view and commit; the old leader restarts on its data and
// catches up; every committed transaction is on every node with the same
// value, and every ledger verifies.
func TestTransportReplicatesAndFailsOver(t *testing.T) {
	c := newTestCluster(t, 3)
	old, before := c.commitOn(c.ids, 20, "before")
	c.waitCommitted(c.ids, before[len(before)-1])

	c.stop(old)
	var rest []uint64
	for _, id := range c.ids {
		if id != old {
			rest = append(rest, id)
		}
	}
	_, after := c.commitOn(rest, 20, "after")
	if after[0].View <= before[0].View {
		t.Fatalf("new leader wrote in view %d, not after view %d", after[0].View, before[0].View)
	}
	c.waitCommitted(rest, after[len(after)-1])

	c.start(old, nil)
	c.waitCommitted(c.ids, after[len(after)-1])
	for _, id := range c.ids {
		e := c.nodes[id].eng
		for _, txid := range append(before, after...) {
			if got := e.Status(txid); got != engine.StatusCommitted {
				t.Errorf("node %d: %s is %v, want Committed", id, txid, got)
			}
		}
		rec, err := e.Read(after[5])
		if err != nil {
			t.Fatalf("node %d: read %s: %v", id, after[5], err)
		}
		if rec == nil {
			t.Fatalf("node %d: no record for %s", id, after[5])
		}
		if v, _ := e.Begin().Get("private:m", "before-7"); !bytes.Equal(v, []byte("before")) {
			t.Errorf("node %d: before-7 = %q, want %q", id, v, "before")
		}
	}
	for _, id := range c.ids {
		if s := c.nodes[id].tr.Stats(); s.Received == 0 {
			t.Errorf("node %d received no raft message over the network", id)
		}
	}
	for _, id := range c.ids {
		c.stop(id)
		if _, err := verify.Ledger(vfs.OS{}, c.nodes[id].dir, c.svc.Cert, verify.Options{}); err != nil {
			t.Errorf("node %d ledger: %v", id, err)
		}
	}
}

// TestTransportRefusesStrangers posts to a node with certificates that must
// be refused: none, one from another service, and a service-endorsed one
// of a node that is not a member; and a member claiming another's messages.
func TestTransportRefusesStrangers(t *testing.T) {
	c := newTestCluster(t, 2)
	target := c.nodes[1]
	other, err := identity.NewService("Other", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreignKey, foreignCert := newKeyCert(t, other)
	strangerKey, strangerCert := newKeyCert(t, c.svc)
	member := c.nodes[2]
	var body bytes.Buffer
	if err := Encode(&body, []pb.Message{{Type: pb.MsgHeartbeat, From: 3, To: 1}}); err != nil {
		t.Fatal(err)
	}
	var good bytes.Buffer
	if err := Encode(&good, []pb.Message{{Type: pb.MsgHeartbeat, From: 2, To: 1, Term: 0}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cert *tls.Certificate
		body []byte
		want int
	}{
		{"no client certificate", nil, good.Bytes(), http.StatusForbidden},
		{"other service", &tls.Certificate{Certificate: [][]byte{foreignCert}, PrivateKey: foreignKey}, good.Bytes(), http.StatusForbidden},
		{"endorsed non-member", &tls.Certificate{Certificate: [][]byte{strangerCert}, PrivateKey: strangerKey}, good.Bytes(), http.StatusForbidden},
		{"member spoofing sender", &tls.Certificate{Certificate: [][]byte{member.cert}, PrivateKey: member.key}, body.Bytes(), http.StatusForbidden},
		{"member, garbage", &tls.Certificate{Certificate: [][]byte{member.cert}, PrivateKey: member.key}, []byte{0xff, 0xff, 0xff}, http.StatusBadRequest},
		{"member", &tls.Certificate{Certificate: [][]byte{member.cert}, PrivateKey: member.key}, good.Bytes(), http.StatusNoContent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			roots := c.svc.Cert
			cfg := &tls.Config{RootCAs: poolOf(roots), MinVersion: tls.VersionTLS12}
			if tt.cert != nil {
				cfg.Certificates = []tls.Certificate{*tt.cert}
			}
			hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
			defer hc.CloseIdleConnections()
			resp, err := hc.Post("https://"+target.addr+Path, "application/octet-stream", bytes.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
}

func TestEncodeDecode(t *testing.T) {
	tests := []struct {
		name string
		msgs []pb.Message
	}{
		{"none", nil},
		{"one", []pb.Message{{Type: pb.MsgApp, From: 1, To: 2, Term: 3, Index: 4, Entries: []pb.Entry{{Term: 3, Index: 5, Data: []byte("x")}}}}},
		{"several", []pb.Message{{Type: pb.MsgHeartbeat, From: 1, To: 2}, {Type: pb.MsgVote, From: 1, To: 3, Term: 9}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := Encode(&b, tt.msgs); err != nil {
				t.Fatal(err)
			}
			got, err := Decode(&b)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.msgs) {
				t.Fatalf("got %d messages, want %d", len(got), len(tt.msgs))
			}
			for i := range got {
				if got[i].String() != tt.msgs[i].String() {
					t.Errorf("message %d: got %v, want %v", i, got[i], tt.msgs[i])
				}
			}
		})
	}
	if _, err := Decode(bytes.NewReader([]byte{0x05, 1, 2})); err == nil {
		t.Error("Decode of a truncated message: err = nil, want an error")
	}
	if _, err := Decode(bytes.NewReader([]byte{0xff, 0xff, 0xff, 0xff, 0x7f})); err == nil {
		t.Error("Decode of an oversized length: err = nil, want an error")
	}
}

func FuzzDecode(f *testing.F) {
	var b bytes.Buffer
	Encode(&b, []pb.Message{{Type: pb.MsgApp, From: 1, To: 2, Entries: []pb.Entry{{Data: []byte("x")}}}})
	f.Add(b.Bytes())
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, err := Decode(bytes.NewReader(data))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := Encode(&out, msgs); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		again, err := Decode(&out)
		if err != nil || len(again) != len(msgs) {
			t.Fatalf("round trip: %d messages, %v; want %d", len(again), err, len(msgs))
		}
	})
}

func poolOf(c *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c)
	return p
}

// TestTransportPartition isolates the primary of three nodes over the real
// transport: the isolated minority cannot commit; the majority elects a new
// primary in a later view and commits; no view ever has two primaries;
// after healing, the old primary's uncommitted transactions are Invalid and
// every node converges on the majority's log.
func TestTransportPartition(t *testing.T) {
	c := newTestCluster(t, 3)
	old, before := c.commitOn(c.ids, 10, "before")
	c.waitCommitted(c.ids, before[len(before)-1])

	// Watch who is primary in which view, until the test ends.
	var (
		mu        sync.Mutex
		primaries = map[uint64]map[uint64]bool{} // view -> ids
	)
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stopWatch:
				return
			default:
			}
			for _, id := range c.ids {
				e := c.nodes[id].eng
				v1 := e.View()
				p := e.IsPrimary()
				if p && e.View() == v1 {
					mu.Lock()
					if primaries[v1] == nil {
						primaries[v1] = map[uint64]bool{}
					}
					primaries[v1][id] = true
					mu.Unlock()
				}
			}
			time.Sleep(time.Millisecond) // sampling pace
		}
	}()

	c.isolate(old, true)
	var lost []ledger.TxID
	for i := range 5 {
		tx := c.nodes[old].eng.Begin()
		tx.Put("private:m", fmt.Sprintf("lost-%d", i), []byte("lost"))
		txid, err := c.nodes[old].eng.Commit(context.Background(), tx, engine.CommitOptions{})
		if err != nil {
			break // it may already have stepped down
		}
		lost = append(lost, txid)
	}
	if len(lost) == 0 {
		t.Fatalf("the isolated primary accepted no transaction: nothing to roll back")
	}
	var rest []uint64
	for _, id := range c.ids {
		if id != old {
			rest = append(rest, id)
		}
	}
	neu, after := c.commitOn(rest, 10, "after")
	if after[0].View <= before[0].View {
		t.Fatalf("new primary wrote in view %d, not after view %d", after[0].View, before[0].View)
	}
	// The minority committed nothing of its own: the new primary, which
	// holds every committed entry, does not hold them.
	for _, txid := range lost {
		if got := c.nodes[neu].eng.Status(txid); got == engine.StatusCommitted || got == engine.StatusPending {
			t.Errorf("%s, written by the isolated primary, is %v on the new primary", txid, got)
		}
		if got := c.nodes[old].eng.Status(txid); got == engine.StatusCommitted {
			t.Errorf("%s committed on the isolated primary", txid)
		}
	}

	c.isolate(old, false)
	c.waitCommitted(c.ids, after[len(after)-1])
	for _, txid := range lost {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := c.nodes[old].eng.WaitCommitted(ctx, txid)
		cancel()
		if !errors.Is(err, engine.ErrInvalid) {
			t.Errorf("%s on the old primary after healing: err = %v, want ErrInvalid", txid, err)
		}
	}
	for _, id := range c.ids {
		for _, txid := range append(before, after...) {
			if got := c.nodes[id].eng.Status(txid); got != engine.StatusCommitted {
				t.Errorf("node %d: %s is %v, want Committed", id, txid, got)
			}
		}
		if v, _ := c.nodes[id].eng.Begin().Get("private:m", "lost-0"); v != nil {
			t.Errorf("node %d still holds a rolled-back write", id)
		}
	}
	close(stopWatch)
	<-watched
	mu.Lock()
	defer mu.Unlock()
	for view, ids := range primaries {
		if len(ids) > 1 {
			t.Errorf("view %d had %d primaries: %v", view, len(ids), ids)
		}
	}
	if len(primaries) < 2 {
		t.Errorf("saw primaries in %d views, want the old and the new", len(primaries))
	}
}

// BenchmarkEncodeDecode encodes and decodes a batch of 64 appends of 1 KiB
// entries, as a busy primary sends them.
func BenchmarkEncodeDecode(b *testing.B) {
	msgs := make([]pb.Message, 64)
	size := 0
	for i := range msgs {
		msgs[i] = pb.Message{Type: pb.MsgApp, From: 1, To: 2, Term: 3, Index: uint64(i), Entries: []pb.Entry{{Term: 3, Index: uint64(i + 1), Data: bytes.Repeat([]byte{1}, 1024)}}}
		size += msgs[i].Size()
	}
	var buf bytes.Buffer
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		if err := Encode(&buf, msgs); err != nil {
			b.Fatal(err)
		}
		if _, err := Decode(&buf); err != nil {
			b.Fatal(err)
		}
	}
}

// TestTransportCloseAndDrops sends to a peer that is down: Send never
// blocks, what cannot be queued or delivered is counted as dropped, and
// Close stops the senders.
func TestTransportCloseAndDrops(t *testing.T) {
	svc, err := identity.NewService("Parley Service", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, der := newKeyCert(t, svc)
	_, peerDER := newKeyCert(t, svc)
	peerCert, err := x509.ParseCertificate(peerDER)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close() // nothing listens there now
	tr, err := New(Config{
		ID:          1,
		Peers:       []Peer{{ID: 2, Address: down, NodeID: nodeIDOf(peerCert)}},
		Certificate: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		ServiceCert: svc.Cert,
		QueueSize:   8,
	})
	if err != nil {
		t.Fatal(err)
	}
	msgs := make([]pb.Message, 100)
	for i := range msgs {
		msgs[i] = pb.Message{Type: pb.MsgHeartbeat, From: 1, To: 2}
	}
	tr.Send(msgs)                                                  // more than the queue holds
	tr.Send([]pb.Message{{Type: pb.MsgHeartbeat, From: 1, To: 9}}) // unknown peer
	deadline := time.Now().Add(10 * time.Second)
	for tr.Stats().Dropped < 101 {
		if time.Now().After(deadline) {
			t.Fatalf("dropped %d, want 101", tr.Stats().Dropped)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition
	}
	if s := tr.Stats(); s.Sent != 0 {
		t.Errorf("sent %d to a peer that is down", s.Sent)
	}
	tr.Close()
	tr.Close()    // idempotent
	tr.Send(msgs) // after Close: must not block
}

func TestNewRefusesBadConfig(t *testing.T) {
	svc, err := identity.NewService("Parley Service", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, der := newKeyCert(t, svc)
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	const nid = "1af37ec4bbc2b9e3bd6189966ebb4c2f4f40f44a113efb8d48f2f605466d550d"
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no service cert", Config{ID: 1, Certificate: cert}},
		{"no certificate", Config{ID: 1, ServiceCert: svc.Cert}},
		{"peer id 0", Config{ID: 1, Certificate: cert, ServiceCert: svc.Cert, Peers: []Peer{{ID: 0, Address: "127.0.0.1:1", NodeID: nid}}}},
		{"duplicate peer", Config{ID: 1, Certificate: cert, ServiceCert: svc.Cert, Peers: []Peer{{ID: 2, Address: "127.0.0.1:1", NodeID: nid}, {ID: 2, Address: "127.0.0.1:2", NodeID: nid}}}},
		{"bad address", Config{ID: 1, Certificate: cert, ServiceCert: svc.Cert, Peers: []Peer{{ID: 2, Address: "nowhere", NodeID: nid}}}},
		{"bad node id", Config{ID: 1, Certificate: cert, ServiceCert: svc.Cert, Peers: []Peer{{ID: 2, Address: "127.0.0.1:1", NodeID: "abc"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := New(tt.cfg)
			if err == nil {
				tr.Close()
				t.Fatal("New succeeded, want an error")
			}
		})
	}
}

// TestSetPeers adds a node to a running transport and removes it again:
// its messages are accepted only while it is a peer, and a bad list
// changes nothing.
func TestSetPeers(t *testing.T) {
	c := newTestCluster(t, 1)
	target := c.nodes[1]
	key, der := newKeyCert(t, c.svc)
	nid, err := identity.NodeID(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	if err := Encode(&body, []pb.Message{{Type: pb.MsgHeartbeatResp, From: 7, To: 1}}); err != nil {
		t.Fatal(err)
	}
	post := func() int {
		cfg := &tls.Config{RootCAs: poolOf(c.svc.Cert), MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
		defer hc.CloseIdleConnections()
		resp, err := hc.Post("https://"+target.addr+Path, "application/octet-stream", bytes.NewReader(body.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := post(); got != http.StatusForbidden {
		t.Fatalf("before SetPeers: status %d, want 403", got)
	}
	newcomer := Peer{ID: 7, Address: "127.0.0.1:1", NodeID: nid}
	if err := target.tr.SetPeers([]Peer{newcomer, {ID: 7, Address: "127.0.0.1:2", NodeID: nid}}); err == nil {
		t.Fatal("SetPeers accepted a peer listed twice")
	}
	if err := target.tr.SetPeers([]Peer{newcomer}); err != nil {
		t.Fatal(err)
	}
	if got := target.tr.Peers(); len(got) != 1 || got[0] != newcomer {
		t.Fatalf("Peers() = %v, want [%v]", got, newcomer)
	}
	if got := post(); got != http.StatusNoContent {
		t.Fatalf("after SetPeers: status %d, want 204", got)
	}
	if err := target.tr.SetPeers(nil); err != nil {
		t.Fatal(err)
	}
	if got := post(); got != http.StatusForbidden {
		t.Fatalf("after removal: status %d, want 403", got)
	}
}

func TestAuthenticateCachesChainNotMembership(t *testing.T) {
	svc, err := identity.NewService("Parley Service", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := identity.NewService("Other", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	selfKey, selfCert := newKeyCert(t, svc)
	peerKey, peerCert := newKeyCert(t, svc)
	_, foreignCert := newKeyCert(t, other)
	peerID, err := identity.NodeID(&peerKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := New(Config{
		ID:          1,
		Peers:       []Peer{{ID: 2, Address: "127.0.0.1:1", NodeID: peerID}},
		Certificate: tls.Certificate{Certificate: [][]byte{selfCert}, PrivateKey: selfKey},
		ServiceCert: svc.Cert,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	state := func(der []byte) *tls.ConnectionState {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}}
	}
	for i := range 3 {
		id, err := tr.Authenticate(state(peerCert))
		if err != nil || id != 2 {
			t.Fatalf("call %d: Authenticate(peer) = %d, %v, want 2, nil", i, id, err)
		}
	}
	if got := tr.verifications.Load(); got != 1 {
		t.Errorf("chain verifications after 3 calls = %d, want 1 (cached)", got)
	}
	for i := range 2 {
		if _, err := tr.Authenticate(state(foreignCert)); err == nil {
			t.Fatalf("call %d: Authenticate(other service's node) = nil error", i)
		}
	}
	if got := tr.verifications.Load(); got != 3 {
		t.Errorf("chain verifications after 2 refusals = %d, want 3 (failures are not cached)", got)
	}
	if err := tr.SetPeers(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Authenticate(state(peerCert)); !errors.Is(err, ErrUnknownPeer) {
		t.Errorf("Authenticate(removed peer, chain cached) = %v, want ErrUnknownPeer", err)
	}
}
