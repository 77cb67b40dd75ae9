package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"time"

	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/merkle"
	"github.com/parleyhq/parley/internal/verify"
	"github.com/parleyhq/parley/internal/vfs"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

// snapMeta is what raft's storage knows of a snapshot file.
type snapMeta struct {
	index, term uint64
	cs          pb.ConfState
	size        int // bytes of the file
}

// confAt is the membership from a seqno on.
type confAt struct {
	index uint64
	cs    pb.ConfState
}

// snapshotInterval is the configured interval, 0 when snapshots are off.
func (e *Engine) snapshotInterval() uint64 {
	if e.cfg.SnapshotTxInterval < 0 {
		return 0
	}
	return uint64(e.cfg.SnapshotTxInterval)
}

// captureReq is a capture due at a signature just appended.
type captureReq struct {
	seqno, term uint64
	payload     []byte
}

// maybeCaptureLocked notes that the state at the signature just appended
// at seqno is to be captured, if a snapshot is due. Called with e.mu held,
// on the sequencer goroutine (or in replay); the caller runs captureDue
// once it has released e.mu, before the store moves on.
func (e *Engine) maybeCaptureLocked(seqno, term uint64, sigPayload []byte) {
	iv := e.snapshotInterval()
	if iv == 0 || seqno < e.snapLast+iv || e.keys.epochs[0].From != 1 {
		return
	}
	e.captureAt = &captureReq{seqno: seqno, term: term, payload: sigPayload}
	e.snapLast = seqno
}

// captureDue captures the state noted by maybeCaptureLocked. It runs on
// the sequencer goroutine (or in replay), which alone changes the store,
// the tree and the metadata it copies, so it reads them without e.mu:
// readers are not held up while it copies (linear in the keys and the
// seqnos: about 0.3 s for 200,000 keys on the test machine, during which
// the sequencer does nothing else).
func (e *Engine) captureDue() {
	req := e.captureAt
	if req == nil {
		return
	}
	e.captureAt = nil
	seqno, term, sigPayload := req.seqno, req.term, req.payload
	state, v := e.store.Snapshot()
	if uint64(v) != seqno {
		e.logger.Warn("snapshot skipped: store not at the signature", slog.Uint64("seqno", seqno), slog.Uint64("store", uint64(v)))
		return
	}
	leaves := make([]byte, 0, seqno*32)
	for i := range seqno {
		l, err := e.tree.Leaf(i)
		if err != nil {
			return
		}
		leaves = append(leaves, l[:]...)
	}
	c := &capturedSnap{
		pub: SnapshotPublic{
			Seqno:       seqno,
			Term:        term,
			Signatures:  slices.Clone(e.sigs),
			Leaves:      leaves,
			SignatureTx: sigPayload,
		},
		state:  state,
		sealer: e.secretForLocked(seqno), // sequencer: no lock needed
	}
	for _, t := range e.terms {
		c.pub.Terms = append(c.pub.Terms, [2]uint64{t.term, t.index})
	}
	for _, ep := range e.keys.epochs {
		if ep.From <= seqno {
			c.secrets = append(c.secrets, ep)
		}
	}
	c.pub.SecretFrom = c.secrets[len(c.secrets)-1].From
	// Only the newest capture waits for its commit: an older one not yet
	// written is superseded.
	e.mu.Lock()
	if e.lastIndex >= seqno {
		e.pendingSnap = c
	}
	e.mu.Unlock()
}

// confAtLocked is the membership at seqno.
func (e *Engine) confAtLocked(seqno uint64) confAt {
	i, _ := slices.BinarySearchFunc(e.confHist, seqno+1, func(c confAt, s uint64) int { return cmpU64(c.index, s) })
	if i == 0 {
		return confAt{cs: pb.ConfState{Voters: e.InitialVoters()}}
	}
	return e.confHist[i-1]
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// noteConfLocked records the membership from index on.
func (e *Engine) noteConfLocked(index uint64, cs pb.ConfState) {
	for len(e.confHist) > 0 && e.confHist[len(e.confHist)-1].index >= index {
		e.confHist = e.confHist[:len(e.confHist)-1]
	}
	e.confHist = append(e.confHist, confAt{index: index, cs: cs})
}

// snapshotRolledBackLocked forgets a capture of entries being rolled back.
func (e *Engine) snapshotRolledBackLocked(index uint64) {
	if e.pendingSnap != nil && e.pendingSnap.pub.Seqno > index {
		e.pendingSnap = nil
	}
	if e.captureAt != nil && e.captureAt.seqno > index {
		e.captureAt = nil
	}
	if e.snapLast > index {
		e.snapLast = e.snapWritten
	}
	for len(e.confHist) > 0 && e.confHist[len(e.confHist)-1].index > index {
		e.confHist = e.confHist[:len(e.confHist)-1]
	}
}

// snapshotCommitted hands the pending capture to the writer once the
// signature it is at is committed.
func (e *Engine) snapshotCommitted(c uint64) {
	e.mu.Lock()
	p := e.pendingSnap
	if p == nil || p.pub.Seqno > c {
		e.mu.Unlock()
		return
	}
	e.pendingSnap = nil
	e.snapWritten = p.pub.Seqno
	// The membership at the seqno: raft has applied every change up to it
	// now (a change can commit after the signature was captured).
	cs := e.confAtLocked(p.pub.Seqno)
	p.pub.Voters, p.pub.Learners, p.pub.LastConf = cs.cs.Voters, cs.cs.Learners, cs.index
	e.mu.Unlock()
	select {
	case e.snapc <- p:
	default:
		e.logger.Warn("snapshot skipped: the writer is busy", slog.Uint64("seqno", p.pub.Seqno))
	}
}

// snapshotWriter writes captured snapshots, off the sequencer.
func (e *Engine) snapshotWriter() {
	defer close(e.snapDone)
	for c := range e.snapc {
		if err := e.writeSnapshot(c); err != nil {
			e.logger.Error("snapshot not written", slog.Uint64("seqno", c.pub.Seqno), slog.Any("error", err))
		}
	}
}

func (e *Engine) writeSnapshot(c *capturedSnap) error {
	start := time.Now()
	data, err := encodeSnapshot(c)
	if err != nil {
		return err
	}
	if err := e.saveSnapshotFile(c.pub.Seqno, data); err != nil {
		return err
	}
	e.rlog.addSnapshot(snapMeta{index: c.pub.Seqno, term: c.pub.Term, cs: pb.ConfState{Voters: c.pub.Voters, Learners: c.pub.Learners}, size: len(data)})
	e.metrics.Snapshots.Add(1)
	digest := sha256.Sum256(data)
	e.logger.Info("snapshot written", slog.Uint64("seqno", c.pub.Seqno), slog.Int("bytes", len(data)), slog.Duration("took", time.Since(start)))
	if e.IsPrimary() {
		e.recordEvidence(c.pub.Seqno, digest)
	}
	return nil
}

// saveSnapshotFile writes a snapshot file durably and keeps only the
// newest snapshotsKept.
func (e *Engine) saveSnapshotFile(seqno uint64, data []byte) error {
	if err := vfs.MkdirAllDurable(e.cfg.FS, e.snapDir, 0o750); err != nil {
		return fmt.Errorf("create snapshot directory: %w", err)
	}
	if err := vfs.WriteFileDurable(e.cfg.FS, filepath.Join(e.snapDir, snapshotName(seqno)), data, 0o640); err != nil {
		return fmt.Errorf("write snapshot %d: %w", seqno, err)
	}
	seqnos, _ := snapshotFiles(e.cfg.FS, e.snapDir)
	for _, s := range seqnos[min(len(seqnos), snapshotsKept):] {
		if err := e.cfg.FS.Remove(filepath.Join(e.snapDir, snapshotName(s))); err != nil {
			e.logger.Warn("old snapshot not removed", slog.Uint64("seqno", s), slog.Any("error", err))
		}
	}
	return nil
}

// recordEvidence commits the digest of the snapshot at seqno to the ledger.
func (e *Engine) recordEvidence(seqno uint64, digest [32]byte) {
	value, _ := json.Marshal(SnapshotEvidence{Seqno: seqno, Digest: hex.EncodeToString(digest[:])})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		select {
		case <-e.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	if _, err := Retry(ctx, e, CommitOptions{}, func(tx *kv.Tx) error {
		tx.Put(SnapshotEvidenceMap, "", value)
		return nil
	}); err != nil {
		e.logger.Warn("snapshot evidence not recorded", slog.Uint64("seqno", seqno), slog.Any("error", err))
	}
}

// SnapshotEvidenceAt returns the evidence the ledger holds now (the last
// snapshot recorded), if any.
func (e *Engine) SnapshotEvidenceAt() (*SnapshotEvidence, bool) {
	v, ok := e.store.Begin().Get(SnapshotEvidenceMap, "")
	if !ok {
		return nil, false
	}
	var ev SnapshotEvidence
	if json.Unmarshal(v, &ev) != nil {
		return nil, false
	}
	return &ev, true
}

// StartSeqno is the seqno of the snapshot this node's ledger continues
// from, 0 when it holds the ledger from seqno 1.
func (e *Engine) StartSeqno() uint64 { return e.snapBase.Load() }

// notOnThisNode reports whether seqno is before this node's ledger.
func (e *Engine) notOnThisNode(seqno uint64) bool {
	return seqno <= e.snapBase.Load()
}

// checkIncomingSnapshot checks a MsgSnap before raft sees it. A snapshot
// that does not check out is dropped (the leader retries or gives up).
func (e *Engine) checkIncomingSnapshot(m *pb.Message) bool {
	if m.Snapshot == nil || raft.IsEmptySnap(*m.Snapshot) {
		return true
	}
	snap, err := decodeSnapshot(m.Snapshot.Data, e.Epochs())
	if err == nil && (snap.pub.Seqno != m.Snapshot.Metadata.Index || snap.pub.Term != m.Snapshot.Metadata.Term) {
		err = fmt.Errorf("%w: metadata %d.%d, content %d.%d", ErrBadSnapshot, m.Snapshot.Metadata.Term, m.Snapshot.Metadata.Index, snap.pub.Term, snap.pub.Seqno)
	}
	if err != nil {
		e.metrics.SnapshotsRefused.Add(1)
		e.logger.Warn("refusing a snapshot", slog.Uint64("from", m.From), slog.Uint64("seqno", m.Snapshot.Metadata.Index), slog.Any("error", err))
		return false
	}
	e.recvSnap = snap
	return true
}

// installSnapshot replaces this node's state by the snapshot raft
// restored (a follower too far behind, or a new node). Called on the
// sequencer goroutine before the entries after it are learnt; the append
// thread then writes the file and moves the ledger on to S+1.
func (e *Engine) installSnapshot(st *seqState, s *pb.Snapshot) error {
	snap := e.recvSnap
	e.recvSnap = nil
	if snap == nil || snap.pub.Seqno != s.Metadata.Index {
		var err error
		if snap, err = decodeSnapshot(s.Data, e.Epochs()); err != nil {
			return fmt.Errorf("install snapshot %d: %w", s.Metadata.Index, err)
		}
	}
	e.dropHeld(st)
	st.own = nil
	if c := e.committed.Load(); e.lastIndexNow() > c {
		e.rollbackTo(c)
	}
	// Counted first: loading it makes what it covers committed, which
	// waiters see at once. If loading fails the engine stops.
	e.metrics.SnapshotsInstalled.Add(1)
	if err := e.loadSnapshotState(snap, &s.Metadata.ConfState); err != nil {
		return err
	}
	e.rlog.setConfState(s.Metadata.ConfState)
	e.logger.Info("installed a snapshot", slog.Uint64("seqno", snap.pub.Seqno), slog.Int("bytes", len(snap.data)))
	return nil
}

func (e *Engine) lastIndexNow() uint64 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.lastIndex
}

// loadSnapshotState makes the engine's in-memory state that of snap: the
// store (by a write set that deletes what snap lacks and puts all of it),
// the tree, the metadata and the secrets.
// cs, when set, is the membership raft restored with the snapshot (see
// raftLog.Snapshot), used instead of the one at the snapshot.
func (e *Engine) loadSnapshotState(snap *snapshot, cs *pb.ConfState) error {
	s := snap.pub.Seqno
	cur, v := e.store.Snapshot()
	if uint64(v) >= s {
		return fmt.Errorf("install snapshot %d: the store is at %d already", s, v)
	}
	want := map[string]map[string]bool{}
	for _, m := range snap.state.Maps {
		keys := make(map[string]bool, len(m.Writes))
		for _, w := range m.Writes {
			keys[w.Key] = true
		}
		want[m.Map] = keys
	}
	diff := &kv.WriteSet{}
	for _, m := range cur.Maps {
		var dels []kv.Write
		for _, w := range m.Writes {
			if !want[m.Map][w.Key] {
				dels = append(dels, kv.Write{Key: w.Key, Deleted: true})
			}
		}
		if len(dels) > 0 {
			diff.Maps = append(diff.Maps, kv.MapWrites{Map: m.Map, Writes: dels})
		}
	}
	diff = kv.Merge(diff, snap.state)
	if err := e.store.Apply(diff, kv.Version(s)); err != nil {
		return fmt.Errorf("install snapshot %d: apply state: %w", s, err)
	}
	e.store.Compact(kv.Version(s))
	var tree merkle.Tree
	for i := range s {
		tree.Append(merkle.Hash(snap.pub.Leaves[i*32 : i*32+32]))
	}
	members := snap.meta().cs
	if cs != nil {
		members = pb.ConfState{Voters: slices.Sorted(slices.Values(cs.Voters)), Learners: slices.Sorted(slices.Values(cs.Learners))}
	}
	e.mu.Lock()
	e.tree = tree
	e.sigs = slices.Clone(snap.pub.Signatures)
	e.terms = e.terms[:0]
	for _, t := range snap.pub.Terms {
		e.terms = append(e.terms, termStart{term: t[0], index: t[1]})
	}
	clear(e.sigCache)
	clear(e.unwritten)
	e.cacheSignatureLocked(snap.sig)
	e.lastIndex = s
	e.members = members
	e.confHist = []confAt{{index: snap.pub.LastConf, cs: snap.meta().cs}}
	e.pendingSnap = nil
	e.snapLast, e.snapWritten = s, s
	// Secrets this node lacks (rotations before S it never saw) come from
	// the snapshot; its own stay.
	for _, ep := range snap.secrets {
		if !slices.ContainsFunc(e.keys.epochs, func(o Epoch) bool { return o.From == ep.From }) {
			e.keys.epochs = append(e.keys.epochs, ep)
		}
	}
	slices.SortFunc(e.keys.epochs, func(a, b Epoch) int { return cmpU64(a.From, b.From) })
	e.mu.Unlock()
	e.lastConfIndex.Store(snap.pub.LastConf)
	e.snapBase.Store(s)
	e.setCommitted(s)
	if e.cfg.Observer != nil {
		e.cfg.Observer.RolledBack(s)
	}
	return nil
}

// persistSnapshot is the append thread's part of installing a snapshot:
// the file first (durably), then the ledger moves on to S+1.
func (e *Engine) persistSnapshot(s *pb.Snapshot) error {
	idx := s.Metadata.Index
	if err := e.saveSnapshotFile(idx, s.Data); err != nil {
		return err
	}
	if err := e.rlog.reset(idx, snapMeta{index: idx, term: s.Metadata.Term, cs: s.Metadata.ConfState, size: len(s.Data)}); err != nil {
		return fmt.Errorf("start the ledger after snapshot %d: %w", idx, err)
	}
	e.durable.Store(idx)
	return nil
}

// watchSnapshots tells raft a snapshot sent to a follower failed when the
// follower has not caught up with it for snapshotTimeout (it refused or
// lost it): raft then probes it again rather than waiting forever.
func (e *Engine) watchSnapshots() {
	if !e.leaderNow() {
		clear(e.snapSent)
		return
	}
	now := time.Now()
	for id, pr := range e.rn.Status().Progress {
		if pr.State != tracker.StateSnapshot {
			delete(e.snapSent, id)
			continue
		}
		since, ok := e.snapSent[id]
		if !ok {
			e.snapSent[id] = now
			continue
		}
		if now.Sub(since) > snapshotTimeout {
			e.rn.ReportSnapshot(id, raft.SnapshotFailure)
			delete(e.snapSent, id)
		}
	}
}

// snapshotTimeout is how long a follower may stay in raft's snapshot state
// before the primary reports the snapshot failed (a var for tests).
var snapshotTimeout = 10 * time.Second

func (e *Engine) leaderNow() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.leader
}

// openSnapshot loads the newest usable snapshot at Open. It must when the
// ledger files start after seqno 1 (or end before the newest snapshot: a
// crash while installing one); otherwise it does when no Observer needs
// every entry replayed. It returns the seqno replay starts after.
func (e *Engine) openSnapshot() (uint64, error) {
	seqnos, err := snapshotFiles(e.cfg.FS, e.snapDir)
	if err != nil {
		return 0, err
	}
	first, last := e.log.FirstIndex(), e.log.LastIndex()
	// The Observer rebuilds its index from every entry: a node that holds
	// the whole ledger replays it all.
	replayAll := e.cfg.Observer != nil && first == 1
	var metas []snapMeta
	var chosen *snapshot
	for _, s := range seqnos {
		data, err := e.cfg.FS.ReadFile(filepath.Join(e.snapDir, snapshotName(s)))
		if err != nil {
			return 0, fmt.Errorf("read snapshot %d: %w", s, err)
		}
		if chosen != nil {
			if vs, err := verify.ParseSnapshot(data); err == nil && vs.Public.Seqno == s {
				pub := &vs.Public
				metas = append(metas, snapMeta{index: s, term: pub.Term, cs: pb.ConfState{Voters: pub.Voters, Learners: pub.Learners}, size: len(data)})
			}
			continue
		}
		snap, err := decodeSnapshot(data, e.Epochs())
		if err == nil && snap.pub.Seqno != s {
			err = fmt.Errorf("%w: file name says %d, content %d", ErrBadSnapshot, s, snap.pub.Seqno)
		}
		if err != nil {
			// A torn or damaged snapshot is never half used: an older one
			// or the ledger itself serves.
			e.logger.Warn("ignoring a snapshot", slog.Uint64("seqno", s), slog.Any("error", err))
			continue
		}
		if s+1 < first {
			break // older than the ledger: of no use, nor are older ones
		}
		if s <= last && replayAll {
			// Not loaded, but raft may send it, and replay need not
			// capture what it covers again.
			metas = append(metas, snap.meta())
			if len(metas) == snapshotsKept {
				break
			}
			continue
		}
		if s >= first && s <= last {
			// The ledger holds the signature at s: it must be this one.
			ent, err := e.log.Entry(s)
			if err != nil || ent.Term != snap.pub.Term || string(ent.Data) != string(snap.pub.SignatureTx) {
				e.logger.Warn("ignoring a snapshot that the ledger contradicts", slog.Uint64("seqno", s))
				continue
			}
		}
		chosen = snap
		metas = append(metas, snap.meta())
	}
	if chosen == nil && len(metas) > 0 {
		e.mu.Lock()
		e.snapLast, e.snapWritten = metas[0].index, metas[0].index
		e.mu.Unlock()
		slices.Reverse(metas)
		e.openSnaps = metas
	}
	if chosen == nil {
		if first > 1 {
			return 0, fmt.Errorf("the ledger starts at seqno %d but no valid snapshot at %d is in %s", first, first-1, e.snapDir)
		}
		return 0, nil
	}
	s := chosen.pub.Seqno
	if s > last {
		// Installed, but the ledger had not moved on yet.
		if err := e.log.Reset(s + 1); err != nil {
			return 0, fmt.Errorf("start the ledger after snapshot %d: %w", s, err)
		}
	}
	if err := e.loadSnapshotState(chosen, nil); err != nil {
		return 0, err
	}
	// What the node cannot serve is what its ledger lacks, not all the
	// snapshot covers.
	e.snapBase.Store(e.log.FirstIndex() - 1)
	slices.Reverse(metas)
	e.openSnaps = metas
	e.logger.Info("loaded a snapshot", slog.Uint64("seqno", s), slog.Int("bytes", len(chosen.data)))
	return s, nil
}

// stepReceived delivers messages from other nodes to raft, dropping a
// snapshot that does not check out.
func (e *Engine) stepReceived(msgs []pb.Message) {
	for i := range msgs {
		m := &msgs[i]
		if m.Type == pb.MsgSnap && !e.checkIncomingSnapshot(m) {
			continue
		}
		if err := e.rn.Step(*m); err != nil {
			e.logger.Debug("raft step", slog.String("type", m.Type.String()), slog.Any("error", err))
		}
	}
}
