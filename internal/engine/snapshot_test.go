package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/receipt"
	"github.com/parleyhq/parley/internal/verify"
	"github.com/parleyhq/parley/internal/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
)

const testSnapshotInterval = 50

func snapshotTuning(cfg *Config) { cfg.SnapshotTxInterval = testSnapshotInterval }

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, not synchronising
	}
}

// stateOf is the encoded store of e, with its version.
func stateOf(t *testing.T, e *Engine) ([]byte, uint64) {
	t.Helper()
	ws, v := e.store.Snapshot()
	b, err := ws.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b, uint64(v)
}

// waitSameState waits until nodes a and b hold the same store.
func waitSameState(t *testing.T, a, b *Engine) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		sa, va := stateOf(t, a)
		sb, vb := stateOf(t, b)
		if va == vb && bytes.Equal(sa, sb) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stores differ: %d bytes at %d and %d bytes at %d", len(sa), va, len(sb), vb)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, not synchronising
	}
}

// stop closes node id and takes it off the network.
func (c *testCluster) stop(id uint64) {
	c.t.Helper()
	c.net.mu.Lock()
	delete(c.net.engines, id)
	c.net.mu.Unlock()
	if err := c.engines[id].Close(); err != nil {
		c.t.Fatalf("close node %d: %v", id, err)
	}
}

// TestSnapshotCatchUp stops a backup while the others commit several
// snapshot intervals; restarted, it is sent a snapshot (raft's log on the
// primary starts after the older of its two snapshots), installs it, its
// ledger goes on after it, and its state equals the primary's. Reads before
// the snapshot fail with ErrNotOnThisNode there; reads and receipts after it
// work. Restarted once more, it opens from the snapshot file.
func TestSnapshotCatchUp(t *testing.T) {
	c := newTunedCluster(t, 3, snapshotTuning)
	lead := c.leader(c.ids)
	early := c.commitOn(lead, 10, "early")
	c.waitAllCommitted(early[len(early)-1])
	var lag uint64
	for _, id := range c.ids {
		if id != lead {
			lag = id
			break
		}
	}
	c.stop(lag)
	var late []ledger.TxID
	for range 6 {
		late = append(late, c.commitOn(lead, testSnapshotInterval, "late")...)
	}
	waitFor(t, "two snapshots on the primary", func() bool { return c.engines[lead].Metrics().Snapshots.Load() >= 2 })

	e := c.reopen(lag)
	last := late[len(late)-1]
	c.waitAllCommitted(last)
	if got := e.Metrics().SnapshotsInstalled.Load(); got == 0 {
		t.Fatalf("the lagging node installed no snapshot")
	}
	start := e.StartSeqno()
	// The append thread moves the ledger on after the snapshot.
	waitFor(t, "the ledger to start after the snapshot", func() bool { return e.log.FirstIndex() == start+1 })
	if start <= early[len(early)-1].Seqno {
		t.Fatalf("lagging node: StartSeqno %d, ledger FirstIndex %d; want a snapshot after %d and the ledger after it", start, e.log.FirstIndex(), early[len(early)-1].Seqno)
	}
	waitSameState(t, c.engines[lead], e)

	if _, err := e.Read(early[0]); !errors.Is(err, ErrNotOnThisNode) {
		t.Errorf("Read(%s) before the snapshot: err = %v, want ErrNotOnThisNode", early[0], err)
	}
	if _, err := e.Receipt(early[0]); !errors.Is(err, ErrNotOnThisNode) {
		t.Errorf("Receipt(%s) before the snapshot: err = %v, want ErrNotOnThisNode", early[0], err)
	}
	if got := e.Status(early[0]); got != StatusCommitted {
		t.Errorf("Status(%s) before the snapshot = %v, want Committed", early[0], got)
	}
	// The whole cluster goes on writing; what follows the snapshot reads,
	// with receipts, on the node that caught up.
	more := c.commitOn(lead, 20, "more")
	c.waitAllCommitted(more[len(more)-1])
	waitSameState(t, c.engines[lead], e)
	rec, err := e.Read(more[19])
	if err != nil || valueIn(rec.WriteSet, "private:m", "more-19") != "more" {
		t.Errorf("Read(%s) = %v, %v", more[19], rec, err)
	}
	r, err := e.Receipt(more[3])
	if err != nil {
		t.Fatalf("Receipt(%s): %v", more[3], err)
	}
	if err := receipt.Verify(r, c.svc.Cert); err != nil {
		t.Errorf("receipt from the node that caught up does not verify: %v", err)
	}

	// Restarted, the node's ledger starts after the snapshot: Open must
	// load it.
	c.stop(lag)
	e = c.reopen(lag)
	if e.StartSeqno() == 0 || len(e.openSnaps) == 0 {
		t.Fatalf("reopened node: StartSeqno %d, snapshots %d; want it opened from a snapshot", e.StartSeqno(), len(e.openSnaps))
	}
	more = c.commitOn(lead, 20, "again")
	c.waitAllCommitted(more[len(more)-1])
	waitSameState(t, c.engines[lead], e)

	// Sealing is deterministic: a backup that followed all along wrote the
	// same bytes as the primary for the same seqno.
	for _, id := range c.ids {
		if id == lead || id == lag {
			continue
		}
		var common int
		for _, s := range snapshotSeqnos(t, c.dirs[id]) {
			if !slices.Contains(snapshotSeqnos(t, c.dirs[lead]), s) {
				continue
			}
			a, errA := vfs.OS{}.ReadFile(FindSnapshot(c.dirs[lead], s))
			b, errB := vfs.OS{}.ReadFile(FindSnapshot(c.dirs[id], s))
			if errA != nil || errB != nil {
				continue // removed meanwhile
			}
			common++
			if !bytes.Equal(a, b) {
				t.Errorf("snapshot %d differs between node %d and node %d", s, lead, id)
			}
		}
		if common == 0 {
			t.Errorf("node %d and the primary hold no snapshot at the same seqno", id)
		}
	}

	// The primary recorded the digest of a snapshot it wrote, and the
	// file with that digest is on its disk.
	ev, ok := c.engines[lead].SnapshotEvidenceAt()
	if !ok {
		t.Fatalf("no snapshot evidence on the ledger")
	}
	data, err := vfs.OS{}.ReadFile(FindSnapshot(c.dirs[lead], ev.Seqno))
	if err == nil {
		if sum := sha256.Sum256(data); ev.Digest != hexString(sum[:]) {
			t.Errorf("evidence digest %s does not match snapshot file %d", ev.Digest, ev.Seqno)
		}
	} else if !slices.Contains(snapshotSeqnos(t, c.dirs[lead]), ev.Seqno) && ev.Seqno > c.engines[lead].rlog.snaps[0].index {
		t.Errorf("evidence names snapshot %d, which the primary does not hold: %v", ev.Seqno, err)
	}
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 2*len(b))
	for i, v := range b {
		out[2*i], out[2*i+1] = digits[v>>4], digits[v&15]
	}
	return string(out)
}

func snapshotSeqnos(t *testing.T, ledgerDir string) []uint64 {
	t.Helper()
	s, err := snapshotFiles(vfs.OS{}, filepath.Join(ledgerDir, SnapshotDirName))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSnapshotNewNode adds a node with an empty ledger to a service whose
// primary has compacted raft's log: it catches up from a snapshot, serves
// reads after it, refuses those before it, and its ledger (after the
// snapshot) verifies with the snapshot's public part.
func TestSnapshotNewNode(t *testing.T) {
	c := newTunedCluster(t, 1, snapshotTuning)
	c.leader([]uint64{1})
	var first []ledger.TxID
	for range 5 {
		first = append(first, c.commitOn(1, testSnapshotInterval, "first")...)
	}
	waitFor(t, "two snapshots", func() bool { return c.engines[1].Metrics().Snapshots.Load() >= 2 })

	e := c.start(2, []uint64{1}, true)
	c.addNode(1, 2)
	second := c.commitOn(1, 20, "second")
	c.waitAllCommitted(second[len(second)-1])
	if e.Metrics().SnapshotsInstalled.Load() == 0 || e.StartSeqno() == 0 {
		t.Fatalf("new node: %d snapshots installed, StartSeqno %d; want it to start from a snapshot", e.Metrics().SnapshotsInstalled.Load(), e.StartSeqno())
	}
	waitSameState(t, c.engines[1], e)
	if _, err := e.Read(first[0]); !errors.Is(err, ErrNotOnThisNode) {
		t.Errorf("Read(%s): err = %v, want ErrNotOnThisNode", first[0], err)
	}
	if rec, err := e.Read(second[5]); err != nil || valueIn(rec.WriteSet, "private:m", "second-5") != "second" {
		t.Errorf("Read(%s) = %v, %v", second[5], rec, err)
	}
	// Its snapshot's public part checks out without the ledger secret.
	start := e.StartSeqno()
	pub, sig, err := ReadSnapshotPublic(vfs.OS{}, FindSnapshot(c.dirs[2], start))
	if err != nil {
		t.Fatalf("snapshot %d: %v", start, err)
	}
	if pub.Seqno != start || sig.Seqno != start {
		t.Errorf("snapshot public part at %d, signature at %d; want %d", pub.Seqno, sig.Seqno, start)
	}
	c.stop(2)
	rep, err := verify.LedgerFromSnapshot(vfs.OS{}, c.dirs[2], FindSnapshot(c.dirs[2], start), c.svc.Cert, verify.Options{})
	if err != nil {
		t.Fatalf("verify the new node's ledger from its snapshot: %v", err)
	}
	if rep.LastSigned.Seqno <= start {
		t.Errorf("verified up to %s, want past the snapshot at %d", rep.LastSigned, start)
	}
	if !rep.SnapshotEvidence {
		t.Errorf("the ledger after snapshot %d does not record its digest", start)
	}
	// A snapshot whose public state was changed (and its trailing digest
	// redone) still has a valid signature and tree, but the ledger's
	// evidence gives it away.
	data, err := vfs.OS{}.ReadFile(FindSnapshot(c.dirs[2], start))
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(data, []byte(`"public_state":"`)) + len(`"public_state":"`) + 10
	forged := bytes.Clone(data)
	forged[i] = map[bool]byte{true: 'B', false: 'A'}[forged[i] == 'A'] // another base64 digit
	forgedPath := filepath.Join(t.TempDir(), "forged")
	if err := vfs.WriteFileDurable(vfs.OS{}, forgedPath, reseal(forged), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := verify.LedgerFromSnapshot(vfs.OS{}, c.dirs[2], forgedPath, c.svc.Cert, verify.Options{}); err == nil || !strings.Contains(err.Error(), "records snapshot") {
		t.Errorf("verify with a forged snapshot: err = %v, want the evidence mismatch", err)
	}
}

// TestSnapshotRestart reopens a one-node service on its ledger with
// snapshots: without an Observer it loads the newest snapshot and replays
// only what follows; its state is the same either way; a torn or damaged
// newest snapshot is ignored in favour of the older one.
func TestSnapshotRestart(t *testing.T) {
	c := newTunedCluster(t, 1, snapshotTuning)
	c.leader([]uint64{1})
	var ids []ledger.TxID
	for range 5 {
		ids = append(ids, c.commitOn(1, testSnapshotInterval, "a")...)
	}
	waitFor(t, "two snapshots", func() bool { return len(snapshotSeqnos(t, c.dirs[1])) >= 2 })
	c.engines[1].Close() // waits for the snapshot writer
	seqnos := snapshotSeqnos(t, c.dirs[1])
	if len(seqnos) != snapshotsKept {
		t.Fatalf("snapshot files %v, want the newest %d", seqnos, snapshotsKept)
	}
	e := c.reopen(1)
	want, wantV := stateOf(t, e)
	if len(e.openSnaps) == 0 || e.openSnaps[len(e.openSnaps)-1].index != seqnos[0] {
		t.Fatalf("reopened with snapshots %v, want the newest, %d, loaded", e.openSnaps, seqnos[0])
	}
	if e.StartSeqno() != 0 {
		t.Errorf("StartSeqno = %d on a node that holds the whole ledger", e.StartSeqno())
	}
	if r, err := e.Receipt(ids[0]); err != nil {
		t.Errorf("Receipt(%s) after a restart from a snapshot: %v", ids[0], err)
	} else if err := receipt.Verify(r, c.svc.Cert); err != nil {
		t.Errorf("receipt does not verify: %v", err)
	}
	e.Close()

	// The same ledger replayed whole (snapshots off) gives the same state.
	full := c.cfgs[1]
	full.SnapshotDir = t.TempDir()
	e2, err := Open(full)
	if err != nil {
		t.Fatal(err)
	}
	got, gotV := stateOf(t, e2)
	e2.Close()
	if gotV != wantV || !bytes.Equal(got, want) {
		t.Fatalf("state from the snapshot (%d bytes at %d) differs from the full replay (%d bytes at %d)", len(want), wantV, len(got), gotV)
	}

	// With an Observer, which rebuilds its index from every entry, the
	// node replays the whole ledger it holds, and still knows its
	// snapshot files (raft may send them).
	withObs := c.cfgs[1]
	obs := &countObserver{}
	withObs.Observer = obs
	e3, err := Open(withObs)
	if err != nil {
		t.Fatal(err)
	}
	seen := obs.n.Load()
	n3 := len(e3.openSnaps)
	got3, got3V := stateOf(t, e3)
	e3.Close()
	if seen < int64(len(ids)) || n3 != snapshotsKept {
		t.Errorf("with an Observer: %d entries observed (want at least %d), %d snapshot files known (want %d)", seen, len(ids), n3, snapshotsKept)
	}
	if got3V != wantV || !bytes.Equal(got3, want) {
		t.Errorf("state with an Observer differs")
	}

	// Damage the newest snapshot: the older one serves.
	newest := FindSnapshot(c.dirs[1], seqnos[0])
	data, err := vfs.OS{}.ReadFile(newest)
	if err != nil {
		t.Fatal(err)
	}
	if err := vfs.WriteFileDurable(vfs.OS{}, newest, data[:len(data)/2], 0o640); err != nil {
		t.Fatal(err)
	}
	e = c.reopen(1)
	if n := len(e.openSnaps); n == 0 || e.openSnaps[n-1].index != seqnos[1] {
		t.Fatalf("with the newest snapshot torn, loaded %v, want the older, %d", e.openSnaps, seqnos[1])
	}
	if got, v := stateOf(t, e); v != wantV || !bytes.Equal(got, want) {
		t.Fatalf("state from the older snapshot differs")
	}
	more := c.commitOn(1, 10, "b")
	if more[0].Seqno <= ids[len(ids)-1].Seqno {
		t.Errorf("new transaction at %s, not after %s", more[0], ids[len(ids)-1])
	}
}

// reseal recomputes a snapshot file's trailing digest after a change.
func reseal(data []byte) []byte {
	body := data[:len(data)-sha256.Size]
	sum := sha256.Sum256(body)
	return append(bytes.Clone(body), sum[:]...)
}

// TestSnapshotTamperedRefused changes a snapshot file in ways that keep its
// framing and digest valid: each is refused.
func TestSnapshotTamperedRefused(t *testing.T) {
	c := newTunedCluster(t, 1, snapshotTuning)
	c.leader([]uint64{1})
	for range 2 {
		c.commitOn(1, testSnapshotInterval, "a")
	}
	waitFor(t, "a snapshot", func() bool { return len(snapshotSeqnos(t, c.dirs[1])) >= 1 })
	c.engines[1].Close()
	s := snapshotSeqnos(t, c.dirs[1])[0]
	data, err := vfs.OS{}.ReadFile(FindSnapshot(c.dirs[1], s))
	if err != nil {
		t.Fatal(err)
	}
	secretFor := []Epoch{{From: 1, Secret: c.secret}}
	if _, err := decodeSnapshot(data, secretFor); err != nil {
		t.Fatalf("the untouched snapshot does not decode: %v", err)
	}
	pubLen := int(binary.BigEndian.Uint32(data[len(snapshotMagic):]))
	pubStart := len(snapshotMagic) + 4
	leaves := bytes.Index(data[pubStart:pubStart+pubLen], []byte(`"leaves":"`)) + pubStart + len(`"leaves":"`)
	flip := func(at int) []byte {
		d := bytes.Clone(data)
		d[at] ^= 1
		return d
	}
	cases := []struct {
		name string
		data []byte
	}{
		{"torn", data[:len(data)-7]},
		{"flipped bit, digest not redone", flip(len(data) / 2)},
		{"a leaf changed", reseal(flip(leaves + 3))},
		{"sealed part changed", reseal(flip(len(data) - sha256.Size - 5))},
		{"seqno changed", reseal(bytes.Replace(data, []byte(`"seqno":`), []byte(`"seqnp":`), 1))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeSnapshot(tc.data, secretFor); !errors.Is(err, ErrBadSnapshot) {
				t.Errorf("decode: err = %v, want ErrBadSnapshot", err)
			}
		})
	}
	// Under another ledger secret, the sealed part does not open.
	other, _ := ledger.NewSecret(bytes.Repeat([]byte{7}, ledger.SecretSize))
	if _, err := decodeSnapshot(data, []Epoch{{From: 1, Secret: other}}); !errors.Is(err, ErrBadSnapshot) && !errors.Is(err, ErrPrivateClosed) {
		t.Errorf("decode under another secret: err = %v, want ErrBadSnapshot", err)
	}
}

// TestSnapshotRestartMeasure times Open on a one-node ledger of
// PARLEY_MEASURE_SNAPSHOT transactions with and without its snapshot
// (figures in docs/performance.md).
func TestSnapshotRestartMeasure(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("PARLEY_MEASURE_SNAPSHOT"))
	if n <= 0 {
		t.Skip("set PARLEY_MEASURE_SNAPSHOT=transactions to measure")
	}
	c := newTunedCluster(t, 1, func(cfg *Config) {
		cfg.SnapshotTxInterval = n / 2
		cfg.ChunkSize = 0
	})
	c.leader([]uint64{1})
	for i := 0; i < n; i += 1000 {
		c.commitOn(1, 1000, fmt.Sprintf("m%d", i))
	}
	waitFor(t, "a snapshot", func() bool { return len(snapshotSeqnos(t, c.dirs[1])) > 0 })
	// What a capture costs the sequencer: the store's snapshot and the
	// copy of the leaves, taken under the engine's lock.
	e1 := c.engines[1]
	e1.Close() // the sequencer's state is the test's now
	start := time.Now()
	e1.pendingSnap, e1.snapLast = nil, 0
	sig := e1.sigs[len(e1.sigs)-1]
	if uint64(e1.store.Version()) == sig {
		e1.maybeCaptureLocked(sig, e1.termOfLocked(sig), nil)
		e1.captureDue()
	}
	captured := e1.pendingSnap != nil
	t.Logf("capture of %d keys and %d leaves: %v (captured %v)", n, sig, time.Since(start), captured)
	c.engines[1].Close()
	for _, withSnap := range []bool{false, true} {
		cfg := c.cfgs[1]
		if !withSnap {
			cfg.SnapshotDir = t.TempDir()
		}
		start := time.Now()
		e, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		t.Logf("%d transactions, snapshot %v (at %v): Open took %v", n, withSnap, e.openSnaps, took)
		e.Close()
	}
}

// TestSnapshotTamperedInTransit changes the snapshots the primary sends to
// a lagging node: the node refuses them and installs nothing; once they
// arrive intact (the primary retries after reporting the failed one), it
// installs one and catches up.
func TestSnapshotTamperedInTransit(t *testing.T) {
	old := snapshotTimeout
	snapshotTimeout = 200 * time.Millisecond
	defer func() { snapshotTimeout = old }()
	c := newTunedCluster(t, 3, snapshotTuning)
	lead := c.leader(c.ids)
	c.commitOn(lead, 10, "early")
	lag := c.ids[0]
	if lag == lead {
		lag = c.ids[1]
	}
	c.stop(lag)
	var late []ledger.TxID
	for range 6 {
		late = append(late, c.commitOn(lead, testSnapshotInterval, "late")...)
	}
	waitFor(t, "two snapshots on the primary", func() bool { return c.engines[lead].Metrics().Snapshots.Load() >= 2 })
	var tampered atomic.Int64
	c.net.mu.Lock()
	c.net.mutate = func(m *pb.Message) {
		if m.Type == pb.MsgSnap && m.Snapshot != nil {
			d := bytes.Clone(m.Snapshot.Data)
			i := bytes.Index(d, []byte(`"leaves":"`)) + len(`"leaves":"`) + 5
			d[i] ^= 1 // a base64 digit of a leaf
			m.Snapshot = &pb.Snapshot{Data: reseal(d), Metadata: m.Snapshot.Metadata}
			tampered.Add(1)
		}
	}
	c.net.mu.Unlock()
	e := c.reopen(lag)
	waitFor(t, "a refused snapshot", func() bool { return e.Metrics().SnapshotsRefused.Load() >= 2 })
	if got := e.Metrics().SnapshotsInstalled.Load(); got != 0 {
		t.Fatalf("the node installed %d tampered snapshots", got)
	}
	if tampered.Load() < 2 {
		t.Fatalf("the primary sent %d snapshots, want it to retry after a refusal", tampered.Load())
	}
	c.net.mu.Lock()
	c.net.mutate = nil
	c.net.mu.Unlock()
	c.waitAllCommitted(late[len(late)-1])
	if e.Metrics().SnapshotsInstalled.Load() == 0 {
		t.Fatalf("the node caught up without a snapshot")
	}
	waitSameState(t, c.engines[lead], e)
}

// countObserver counts the transactions it is shown.
type countObserver struct{ n atomic.Int64 }

func (o *countObserver) Applied(ledger.TxID, ledger.Kind, *kv.WriteSet) { o.n.Add(1) }
func (o *countObserver) RolledBack(uint64)                              {}

// TestSnapshotAfterRotation: a node that joined from a snapshot, then
// learnt a ledger secret rotation from the ledger, writes snapshots sealed
// under the new secret; restarted with only the secrets it was given at
// its join, it opens its newest one through the key wrapped under the old
// secret, and reads what the new secret seals.
func TestSnapshotAfterRotation(t *testing.T) {
	c := newTunedCluster(t, 1, snapshotTuning)
	c.leader([]uint64{1})
	for range 3 {
		c.commitOn(1, testSnapshotInterval, "first")
	}
	waitFor(t, "two snapshots", func() bool { return c.engines[1].Metrics().Snapshots.Load() >= 2 })
	c.start(2, []uint64{1}, true)
	c.addNode(1, 2)

	tx := c.engines[1].Begin()
	raw, err := c.engines[1].PrepareRotation(tx)
	if err != nil {
		t.Fatal(err)
	}
	clear(raw)
	rot, err := c.engines[1].Commit(context.Background(), tx, CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var after []ledger.TxID
	for range 4 {
		after = append(after, c.commitOn(1, testSnapshotInterval, "after")...)
	}
	c.waitAllCommitted(after[len(after)-1])
	e := c.engines[2]
	waitFor(t, "a snapshot of node 2 after the rotation", func() bool {
		s := snapshotSeqnos(t, c.dirs[2])
		return len(s) > 0 && s[0] > rot.Seqno && e.StartSeqno() > 0
	})
	c.stop(2)
	if eps := c.cfgs[2].Secrets; len(eps) > 0 {
		t.Fatalf("node 2 configured with %d secret epochs, want the one initial secret", len(eps))
	}
	e = c.reopen(2)
	if n := len(e.openSnaps); n == 0 || e.openSnaps[n-1].index <= rot.Seqno {
		t.Fatalf("node 2 reopened from snapshots %v, want one after the rotation at %d", e.openSnaps, rot.Seqno)
	}
	last := after[len(after)-1]
	rec, err := e.Read(last)
	if err != nil || valueIn(rec.WriteSet, "private:m", "after-49") != "after" {
		t.Fatalf("Read(%s) after reopening: %v, %v", last, rec, err)
	}
	more := c.commitOn(1, 10, "more")
	c.waitAllCommitted(more[len(more)-1])
	waitSameState(t, c.engines[1], e)
}
