package engine

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"crypto/ecdsa"
	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// Metrics counts what the sequencer did; read with atomic loads.
type Metrics struct {
	Transactions atomic.Uint64 // transactions sequenced by this node
	Signatures   atomic.Uint64 // signature transactions emitted
	Conflicts    atomic.Uint64 // transactions refused with kv.ErrConflict
	Syncs        atomic.Uint64 // fsync batches
	Entries      atomic.Uint64 // entries persisted
	// Snapshots (snapshot.go).
	Snapshots          atomic.Uint64 // snapshot files written at this node's own signatures
	SnapshotsInstalled atomic.Uint64 // snapshots received from the primary and installed
	SnapshotsRefused   atomic.Uint64 // snapshots received that did not check out
}

// Metrics returns the engine's counters.
func (e *Engine) Metrics() *Metrics { return &e.metrics }

const maxBatch = 4096

// sequencer state, owned by the run goroutine.
type seqState struct {
	sinceSig  int    // transactions since the last signature
	lastSig   uint64 // seqno of the last signature this node proposed
	lastSigAt time.Time
	own       []pb.Entry
	// waiting are requests that arrived while no leader was known (an
	// election in progress); they are sequenced once this node leads.
	waiting []*request
	// held are entries sequenced (ids fixed, answered, in the store and the
	// tree) but not yet proposed: they wait for the signature that will
	// cover them.
	held []pb.Entry
	// confs are membership changes waiting to be proposed; lastConf is
	// the seqno of the last one this node proposed.
	confs    []*confRequest
	lastConf uint64
}

// maxWaiting bounds the requests held during an election.
const maxWaiting = 1 << 16

func (e *Engine) run() {
	defer close(e.done)
	defer close(e.snapc) // the sequencer is the snapshot writer's only sender
	appendDone := make(chan struct{})
	go e.appender(appendDone)
	st := seqState{lastSigAt: e.cfg.testOnlyNow()}
	defer func() {
		close(e.appendc)
		for {
			select {
			case <-e.stepc: // acknowledgements nobody will step now
				continue
			case <-appendDone:
			}
			break
		}
		e.failPending(&st)
	}()
	tick := time.NewTicker(e.cfg.TickInterval)
	defer tick.Stop()
	sigTick := time.NewTicker(max(e.minSignatureGap(), time.Millisecond))
	defer sigTick.Stop()
	if e.singleVoter() {
		if err := e.rn.Campaign(); err != nil {
			e.fail(fmt.Errorf("campaign: %w", err))
			return
		}
	}
	batch := make([]*request, 0, maxBatch)
	for {
		if err := e.drainReady(&st); err != nil {
			e.fail(err)
			return
		}
		// In a cluster, signatures are paced to the commit, which the
		// Ready just handled may have advanced.
		if st.sinceSig > 0 && !e.singleVoter() && e.signatureDue(&st) {
			if err := e.sequence(&st, nil, true); err != nil {
				e.fail(err)
				return
			}
		}
		if len(st.confs) > 0 {
			if err := e.tryConf(&st); err != nil {
				e.fail(err)
				return
			}
		}
		if len(st.waiting) > 0 && e.rn.BasicStatus().Lead != raft.None {
			waiting := st.waiting
			st.waiting = nil
			if err := e.sequence(&st, waiting, false); err != nil {
				e.fail(err)
				return
			}
			continue
		}
		batch = batch[:0]
		select {
		case <-e.stop:
			return
		case err := <-e.appendErr:
			e.fail(err)
			return
		case msgs := <-e.recvc:
			e.stepReceived(msgs)
			continue
		case msgs := <-e.stepc:
			e.step(msgs)
			// Whatever waited for the previous signature to be durable can
			// be signed now, without waiting for more transactions.
			if st.sinceSig > 0 && e.signatureDue(&st) {
				if err := e.sequence(&st, nil, true); err != nil {
					e.fail(err)
					return
				}
			}
			continue
		case <-tick.C:
			e.rn.Tick()
			e.noteProgress()
			e.watchSnapshots()
			continue
		case r := <-e.confc:
			st.confs = append(st.confs, r)
			continue
		case to := <-e.transferc:
			e.rn.TransferLeader(to)
			continue
		case <-sigTick.C:
			if st.sinceSig > 0 && e.signatureOverdue(&st) {
				if err := e.sequence(&st, nil, true); err != nil {
					e.fail(err)
					return
				}
			}
			continue
		case r := <-e.submit:
			batch = append(batch, r)
		}
	drain:
		for len(batch) < maxBatch {
			select {
			case r := <-e.submit:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		if err := e.sequence(&st, batch, false); err != nil {
			e.fail(err)
			return
		}
	}
}

// step delivers messages (storage acknowledgements) to raft.
func (e *Engine) step(msgs []pb.Message) {
	for _, m := range msgs {
		if err := e.rn.Step(m); err != nil {
			e.logger.Debug("raft step", slog.String("type", m.Type.String()), slog.Any("error", err))
		}
	}
}

// appender is the local append thread of raft's asynchronous storage
// writes: it persists entries and hard state with one fsync for all the
// messages queued since the last one (group commit), then hands raft the
// acknowledgements. Sequencing goes on meanwhile.
func (e *Engine) appender(done chan<- struct{}) {
	defer close(done)
	var batch []pb.Message
	for m := range e.appendc {
		batch = append(batch[:0], m)
	drain:
		for len(batch) < 1024 {
			select {
			case m, ok := <-e.appendc:
				if !ok {
					break drain
				}
				batch = append(batch, m)
			default:
				break drain
			}
		}
		resps, err := e.persist(batch)
		if err != nil {
			e.appendErr <- err
			// Keep draining so the sequencer never blocks on appendc.
			for range e.appendc {
			}
			return
		}
		if len(resps) > 0 {
			e.stepc <- resps
		}
	}
}

// persist writes a batch of MsgStorageAppend messages durably and returns
// the responses raft asked to be delivered after that.
func (e *Engine) persist(batch []pb.Message) ([]pb.Message, error) {
	var resps, remote []pb.Message
	var entries int
	hs := e.rlog.hardState()
	hsChanged := false
	for i := range batch {
		m := &batch[i]
		if m.Snapshot != nil && !raft.IsEmptySnap(*m.Snapshot) {
			if err := e.persistSnapshot(m.Snapshot); err != nil {
				return nil, err
			}
		}
		if len(m.Entries) > 0 {
			if err := e.rlog.append(m.Entries); err != nil {
				return nil, err
			}
			entries += len(m.Entries)
			e.mu.Lock()
			for i := range m.Entries {
				ent := &m.Entries[i]
				payload, _ := entryPayload(ent) // append checked it
				if p, ok := e.unwritten[ent.Index]; ok && sameBytes(p, payload) {
					delete(e.unwritten, ent.Index)
				}
			}
			e.mu.Unlock()
		}
		if m.Term != 0 || m.Vote != 0 || m.Commit != 0 {
			if m.Term != hs.Term || m.Vote != hs.Vote {
				hsChanged = true
			}
			hs = pb.HardState{Term: m.Term, Vote: m.Vote, Commit: m.Commit}
		}
		for _, r := range m.Responses {
			if r.To == e.cfg.RaftID {
				resps = append(resps, r)
			} else {
				remote = append(remote, r)
			}
		}
	}
	if entries > 0 && !e.cfg.testOnlySkipSync {
		if err := e.log.Sync(); err != nil {
			return nil, fmt.Errorf("sync ledger: %w", err)
		}
		e.metrics.Syncs.Add(1)
		e.metrics.Entries.Add(uint64(entries))
		e.durable.Store(e.log.LastIndex())
	}
	// The commit index is saved with term and vote, and also once it
	// covers a membership change, so that Open rebuilds the membership
	// with it (raft re-applies only the changes after the saved commit).
	if conf := e.lastConfIndex.Load(); conf > 0 && hs.Commit >= conf && e.log.HardState().Commit < conf {
		hsChanged = true
	}
	if hsChanged {
		if err := e.log.SetHardState(hs); err != nil {
			return nil, fmt.Errorf("save raft state: %w", err)
		}
	}
	e.rlog.setHardState(hs)
	if len(remote) > 0 {
		// Acknowledgements to the leader go out only now, durable.
		e.cfg.Transport.Send(remote)
	}
	if c := e.committed.Load(); c > e.log.Committed() && c <= e.log.LastIndex() {
		if err := e.log.MarkCommitted(c); err != nil {
			return nil, fmt.Errorf("mark chunks committed: %w", err)
		}
	}
	return resps, nil
}

// sendAppend queues a message for the append thread, taking in the
// thread's acknowledgements meanwhile so the two never wait on each other.
func (e *Engine) sendAppend(m pb.Message, pending *[]pb.Message) error {
	for {
		select {
		case e.appendc <- m:
			return nil
		case msgs := <-e.stepc:
			*pending = append(*pending, msgs...)
		case err := <-e.appendErr:
			return err
		}
	}
}

func (e *Engine) singleVoter() bool {
	return len(e.rlog.cs.Voters) == 1 && e.rlog.cs.Voters[0] == e.cfg.RaftID
}

func (e *Engine) fail(err error) {
	e.runErr = err
	e.logger.Error("ledger engine stopped", slog.Any("error", err))
}

// failPending answers every queued request once the loop has stopped.
func (e *Engine) failPending(st *seqState) {
	for _, r := range st.waiting {
		r.reply <- result{err: ErrClosed}
	}
	for _, r := range st.confs {
		r.reply <- result{err: ErrClosed}
	}
	for {
		select {
		case r := <-e.submit:
			r.reply <- result{err: ErrClosed}
		default:
			return
		}
	}
}

// sequence turns a batch of transactions (and, when due, a signature) into
// entries and proposes them to raft in one message.
func (e *Engine) sequence(st *seqState, batch []*request, forceSig bool) error {
	bs := e.rn.BasicStatus()
	if bs.Lead == raft.None && len(st.waiting)+len(batch) <= maxWaiting {
		st.waiting = append(st.waiting, batch...)
		return nil
	}
	if bs.RaftState != raft.StateLeader || bs.LeadTransferee != raft.None {
		for _, r := range batch {
			r.reply <- result{err: ErrNotLeader}
		}
		return nil
	}
	view := bs.Term
	replies := make([]result, len(batch))
	if view > ledger.MaxView {
		for i := range replies {
			replies[i].err = fmt.Errorf("view %d does not fit a nonce", view)
		}
		batch = nil
	}
	e.mu.RLock()
	start := e.lastIndex
	e.mu.RUnlock()
	next := start + 1
	// Validate and apply each transaction in the store, in order, fixing its
	// id; a conflict costs no seqno.
	todo := make([]sealing, 0, len(batch))
	for i, r := range batch {
		if err := e.commitToStore(r, next); err != nil {
			if errors.Is(err, kv.ErrConflict) {
				e.metrics.Conflicts.Add(1)
			}
			replies[i].err = err
			continue
		}
		todo = append(todo, sealing{req: i, id: ledger.TxID{View: view, Seqno: next}})
		next++
	}
	rotations, err := e.sealAll(batch, todo)
	if err != nil {
		// Nothing was proposed: undo the store and refuse the batch.
		e.mustRollbackStore(start)
		for _, t := range todo {
			replies[t.req].err = err
		}
		todo, next = nil, start+1
	}
	var seqErr error
	e.mu.Lock()
	for _, t := range todo {
		if rs := batch[t.req].restore; rs != nil {
			e.restoredLocked(rs)
		}
		e.tree.Append(t.leaf)
		e.unwritten[t.id.Seqno] = t.payload
		st.held = append(st.held, pb.Entry{Term: view, Index: t.id.Seqno, Type: pb.EntryNormal, Data: t.payload})
		replies[t.req].id = t.id
	}
	if len(todo) > 0 {
		e.lastIndex = next - 1
		e.noteTermLocked(view, start+1)
		e.keys.epochs = append(e.keys.epochs, rotations...)
	}
	st.sinceSig += len(todo)
	due := st.sinceSig > 0 && (forceSig || st.sinceSig >= e.cfg.SignatureTxCount || e.signatureDue(st))
	if due {
		payload, err := e.signature(st, view, next)
		if err != nil {
			seqErr = err
		} else {
			st.held = append(st.held, pb.Entry{Term: view, Index: next, Type: pb.EntryNormal, Data: payload})
			e.unwritten[next] = payload
			st.lastSig, st.lastSigAt = next, e.cfg.testOnlyNow()
			e.lastIndex = next
			e.noteTermLocked(view, next)
			st.sinceSig = 0
		}
	}
	e.mu.Unlock()
	e.captureDue()
	e.metrics.Transactions.Add(uint64(len(todo)))
	if e.cfg.Observer != nil {
		for _, t := range todo {
			if batch[t.req].restore != nil {
				e.reobserve(t.id.Seqno - 1)
			}
			e.cfg.Observer.Applied(t.id, ledger.KindTx, batch[t.req].ws)
		}
	}
	// The ids are final: answer now. The entries wait, sealed, for the
	// signature that will cover them, and go to raft together with it, so
	// that both reach the disk in one fsync.
	for i, r := range batch {
		r.reply <- replies[i]
	}
	if due && seqErr == nil {
		e.propose(st)
	}
	return seqErr
}

// propose hands the held entries to raft in one message. If raft refuses
// them (leadership lost meanwhile), they are rolled back: their
// transactions turn Invalid.
func (e *Engine) propose(st *seqState) {
	if len(st.held) == 0 {
		return
	}
	ents := st.held
	st.held = nil
	if err := e.rn.Step(pb.Message{Type: pb.MsgProp, From: e.cfg.RaftID, Entries: ents}); err != nil {
		e.logger.Warn("raft refused proposals", slog.Uint64("from", ents[0].Index), slog.Int("count", len(ents)), slog.Any("error", err))
		e.rollbackTo(ents[0].Index - 1)
		st.sinceSig = 0
		return
	}
	st.own = append(st.own, ents...)
}

// dropHeld rolls back entries sequenced but not yet proposed, when this
// node stops leading.
func (e *Engine) dropHeld(st *seqState) {
	if len(st.held) == 0 {
		return
	}
	e.rollbackTo(st.held[0].Index - 1)
	st.held = nil
	st.sinceSig = 0
}

// signatureDue paces signatures to the disk: the next one goes out as soon
// as the previous one is durable, with every transaction sequenced since,
// so a transaction commits one or two fsyncs after it arrives; but not
// within a quarter of the signature interval of the previous one, which
// bounds the signing cost. The signature ticker (at that quarter) signs
// whatever is left when nothing else happens.
//
// In a cluster the next signature waits instead for the previous one to be
// committed (durable on a quorum), or for the signature interval to pass:
// a commit there takes a replication round trip and the backups' fsyncs,
// and pacing to the local fsync only cut the same transactions into more,
// smaller signed batches, each costing a signature, an fsync on every
// node and raft messages (measured: docs/performance.md, "A three-node
// cluster").
func (e *Engine) signatureDue(st *seqState) bool {
	mark := e.durable.Load()
	if !e.singleVoter() {
		mark = e.committed.Load()
	}
	return st.lastSig <= mark && e.cfg.testOnlyNow().Sub(st.lastSigAt) >= e.minSignatureGap()
}

// signatureOverdue is the signature ticker's test: on one node, the
// quarter interval has passed; in a cluster, the signature is due or the
// whole interval has passed.
func (e *Engine) signatureOverdue(st *seqState) bool {
	since := e.cfg.testOnlyNow().Sub(st.lastSigAt)
	if e.singleVoter() {
		return since >= e.minSignatureGap()
	}
	return e.signatureDue(st) || since >= e.cfg.SignatureInterval
}

func (e *Engine) minSignatureGap() time.Duration { return e.cfg.SignatureInterval / 4 }

// sealing is one transaction of a batch on its way to the log.
type sealing struct {
	req     int // index in the batch
	id      ledger.TxID
	payload []byte
	leaf    [32]byte
}

// sealAll completes the prepared payloads of todo with their ids, each
// under the secret of its seqno, and returns the epochs the rotations among
// them start. (Splitting it between two goroutines measured no better on
// two shared cores: the submitters and the append thread keep the other
// core busy.)
func (e *Engine) sealAll(batch []*request, todo []sealing) ([]Epoch, error) {
	if len(todo) == 0 {
		return nil, nil
	}
	sec := e.secretFor(todo[0].id.Seqno)
	var rotations []Epoch
	for k := range todo {
		t := &todo[k]
		if sec == nil {
			return nil, fmt.Errorf("seal %s: %w", t.id, ErrPrivateClosed)
		}
		var err error
		if t.payload, t.leaf, err = sec.SealPrepared(batch[t.req].prep, t.id); err != nil {
			return nil, err
		}
		if r := batch[t.req].rotate; r != nil {
			sec = r
			rotations = append(rotations, Epoch{From: t.id.Seqno + 1, Secret: r})
		}
	}
	return rotations, nil
}

// signature builds the signature transaction at seqno, signing the root of
// every leaf before it. Called with e.mu held.
func (e *Engine) signature(st *seqState, view, seqno uint64) ([]byte, error) {
	if e.tree.Size() != seqno-1 {
		panic(fmt.Sprintf("engine: tree has %d leaves before signature at %d", e.tree.Size(), seqno))
	}
	root := e.tree.Root()
	sig, err := ecdsa.SignASN1(rand.Reader, e.cfg.NodeKey, root[:])
	if err != nil {
		return nil, fmt.Errorf("sign root: %w", err)
	}
	commit := e.committed.Load()
	s := &ledger.Signature{
		NodeID:      e.nodeID,
		View:        view,
		Seqno:       seqno,
		CommitView:  e.termOfLocked(commit),
		CommitSeqno: commit,
		Root:        hex.EncodeToString(root[:]),
		Sig:         sig,
		Cert:        e.nodeCert,
	}
	value, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode signature: %w", err)
	}
	ws := &kv.WriteSet{Maps: []kv.MapWrites{{Map: ledger.SignaturesMap, Writes: []kv.Write{{Key: ledger.SignatureKey, Value: value}}}}}
	if err := e.store.Apply(ws, kv.Version(seqno)); err != nil {
		return nil, fmt.Errorf("apply signature: %w", err)
	}
	pub, err := ws.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode signature write set: %w", err)
	}
	sec := e.secretForLocked(seqno)
	if sec == nil {
		e.mustRollbackStore(seqno - 1)
		return nil, fmt.Errorf("signature %d: %w", seqno, ErrPrivateClosed)
	}
	payload, leaf, err := sec.Seal(nil, &ledger.Tx{ID: ledger.TxID{View: view, Seqno: seqno}, Kind: ledger.KindSignature, Public: pub})
	if err != nil {
		e.mustRollbackStore(seqno - 1)
		return nil, err
	}
	e.tree.Append(leaf)
	e.sigs = append(e.sigs, seqno)
	e.cacheSignatureLocked(s)
	e.metrics.Signatures.Add(1)
	e.maybeCaptureLocked(seqno, view, payload)
	return payload, nil
}

func (e *Engine) cacheSignatureLocked(s *ledger.Signature) {
	if len(e.sigCache) >= 256 {
		clear(e.sigCache)
	}
	e.sigCache[s.Seqno] = s
}

// mustRollbackStore undoes the store's writes after index. Only
// uncommitted entries are ever rolled back, so failure is a broken invariant.
func (e *Engine) mustRollbackStore(index uint64) {
	if err := e.store.Rollback(kv.Version(index)); err != nil {
		panic(fmt.Sprintf("engine: %v", err))
	}
}

// noteTermLocked records that entries from index on are in term.
func (e *Engine) noteTermLocked(term, index uint64) {
	if n := len(e.terms); n > 0 && e.terms[n-1].term == term {
		return
	}
	e.terms = append(e.terms, termStart{term: term, index: index})
}

// rollbackTo forgets every entry after index in the store, the tree and the
// signature list. The files are truncated by raft's own overwrite.
func (e *Engine) rollbackTo(index uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mustRollbackStore(index)
	if err := e.tree.Truncate(index); err != nil {
		panic(fmt.Sprintf("engine: truncate tree to %d: %v", index, err))
	}
	for len(e.sigs) > 0 && e.sigs[len(e.sigs)-1] > index {
		delete(e.sigCache, e.sigs[len(e.sigs)-1])
		e.sigs = e.sigs[:len(e.sigs)-1]
	}
	e.trimSecretsLocked(index)
	e.snapshotRolledBackLocked(index)
	for len(e.terms) > 0 && e.terms[len(e.terms)-1].index > index {
		e.terms = e.terms[:len(e.terms)-1]
	}
	for seqno := range e.unwritten {
		if seqno > index {
			delete(e.unwritten, seqno)
		}
	}
	e.lastIndex = index
	if e.cfg.Observer != nil {
		e.cfg.Observer.RolledBack(index)
	}
}

// drainReady handles every Ready raft has. With asynchronous storage
// writes, entries reach the log through the append thread; this goroutine
// applies them to the store and the tree (learn) as they leave raft, in log
// order, and advances the commit watermark when raft reports entries
// committed.
func (e *Engine) drainReady(st *seqState) error {
	for e.rn.HasReady() {
		rd := e.rn.Ready()
		if err := e.handleReady(st, &rd); err != nil {
			return err
		}
	}
	return nil
}

func (e *Engine) handleReady(st *seqState, rd *raft.Ready) error {
	if rd.SoftState != nil {
		e.mu.Lock()
		wasLeader := e.leader
		e.leader = rd.SoftState.RaftState == raft.StateLeader
		e.lead = rd.SoftState.Lead
		e.mu.Unlock()
		if wasLeader && !e.leader {
			e.dropHeld(st)
		}
		if wasLeader != e.leader {
			e.logger.Info("raft role changed", slog.Bool("primary", e.leader), slog.Uint64("view", e.rn.BasicStatus().Term))
		}
	}
	if !raft.IsEmptyHardState(rd.HardState) {
		e.mu.Lock()
		e.view = rd.HardState.Term
		e.mu.Unlock()
	}
	var steps, peers []pb.Message
	for _, m := range rd.Messages {
		switch m.To {
		case raft.LocalAppendThread:
			if m.Snapshot != nil && !raft.IsEmptySnap(*m.Snapshot) {
				if err := e.installSnapshot(st, m.Snapshot); err != nil {
					return err
				}
			}
			if len(m.Entries) > 0 {
				if err := e.learn(st, m.Entries); err != nil {
					return err
				}
			}
			if err := e.sendAppend(m, &steps); err != nil {
				return err
			}
		case raft.LocalApplyThread:
			for i := range m.Entries {
				if m.Entries[i].Type == pb.EntryConfChangeV2 {
					if err := e.applyCommittedConf(&m.Entries[i]); err != nil {
						return err
					}
				}
			}
			if n := len(m.Entries); n > 0 {
				e.advanceCommit(m.Entries[n-1].Index)
			}
			steps = append(steps, m.Responses...)
		default:
			peers = append(peers, m)
		}
	}
	if len(peers) > 0 {
		e.cfg.Transport.Send(peers)
	}
	e.step(steps)
	return nil
}

// learn applies entries this node did not sequence itself (raft's no-op
// entries, and everything a backup receives), rolling back an overwritten
// suffix first.
func (e *Engine) learn(st *seqState, ents []pb.Entry) error {
	for _, ent := range ents {
		if len(st.own) > 0 {
			own := st.own[0]
			if own.Index == ent.Index && own.Term == ent.Term {
				if own.Type != ent.Type || len(own.Data) != len(ent.Data) {
					// Raft replaced a proposal it refused (a membership
					// change) with an empty entry: never let it pass.
					return fmt.Errorf("entry %d.%d: raft changed a proposal (%s, %d bytes) into %s, %d bytes", ent.Term, ent.Index, own.Type, len(own.Data), ent.Type, len(ent.Data))
				}
				st.own = st.own[1:]
				continue
			}
			st.own = nil // raft replaced what we proposed
		}
		e.mu.RLock()
		last := e.lastIndex
		e.mu.RUnlock()
		if ent.Index <= last {
			e.logger.Warn("rolling back uncommitted entries", slog.Uint64("from", ent.Index), slog.Uint64("to", last))
			e.rollbackTo(ent.Index - 1)
		}
		payload, err := entryPayload(&ent)
		if err != nil {
			return err
		}
		if ent.Type == pb.EntryConfChangeV2 {
			e.lastConfIndex.Store(ent.Index)
		}
		if err := e.applyEntry(ent.Term, ent.Index, payload, false); err != nil {
			return err
		}
	}
	if len(st.own) == 0 {
		st.own = nil
	}
	return nil
}

// applyEntry adds one entry written elsewhere to the store and the tree.
func (e *Engine) applyEntry(term, index uint64, payload []byte, written bool) error {
	p, err := ledger.Parse(payload)
	if err != nil {
		return fmt.Errorf("entry %d.%d: %w", term, index, err)
	}
	id := ledger.TxID{View: term, Seqno: index}
	var sig *ledger.Signature
	var rotation *ledger.Secret
	var restore *restoreOp
	ws := &kv.WriteSet{}
	sec := e.secretFor(index)
	if p.Kind != ledger.KindNoop {
		var private []byte
		if sec != nil {
			if private, err = sec.Open(&p, id); err != nil {
				return fmt.Errorf("entry %s: %w", id, err)
			}
		} else if err := p.CheckNonce(id); err != nil {
			// The closed domain of a recovered ledger: what Open would
			// check without the secret.
			return fmt.Errorf("entry %s: %w", id, err)
		}
		if ws, err = decodeWriteSets(p.Public, private); err != nil {
			return fmt.Errorf("entry %s: %w", id, err)
		}
		if sec != nil {
			if rotation, err = rotationIn(ws); err != nil {
				return fmt.Errorf("entry %s: %w", id, err)
			}
			if restore, err = e.restoreIn(ws, rotation); err != nil {
				return fmt.Errorf("entry %s: %w", id, err)
			}
		}
		applied := ws
		if restore != nil {
			applied = kv.Merge(restore.private, ws)
		}
		if p.Kind == ledger.KindSignature {
			if sig, err = signatureOf(ws); err != nil {
				return fmt.Errorf("entry %s: %w", id, err)
			}
		}
		if !applied.Empty() {
			if err := e.store.Apply(applied, kv.Version(index)); err != nil {
				return fmt.Errorf("entry %s: apply: %w", id, err)
			}
		}
	}
	e.mu.Lock()
	if e.tree.Size() != index-1 {
		e.mu.Unlock()
		return fmt.Errorf("entry %s: tree has %d leaves, want %d", id, e.tree.Size(), index-1)
	}
	if sig != nil {
		// The signature must sign the tree this node holds: a ledger whose
		// entries were replaced (even with valid frames) stops here.
		if root := e.tree.Root(); sig.Root != hex.EncodeToString(root[:]) || sig.Seqno != index || sig.View != term {
			e.mu.Unlock()
			return fmt.Errorf("signature %s signs root %s of %d.%d, but the entries before it hash to %x", id, sig.Root, sig.View, sig.Seqno, root)
		}
	}
	if restore != nil {
		e.restoredLocked(restore)
	}
	e.noteSecretsLocked(index, rotation, ws, sec != nil)
	e.tree.Append(p.Leaf())
	if !written && len(payload) > 0 {
		e.unwritten[index] = payload
	}
	if sig != nil {
		e.sigs = append(e.sigs, index)
		e.cacheSignatureLocked(sig)
	}
	e.noteTermLocked(term, index)
	e.lastIndex = index
	if sig != nil {
		e.maybeCaptureLocked(index, term, payload)
	}
	e.mu.Unlock()
	e.captureDue()
	if e.cfg.Observer != nil && p.Kind != ledger.KindSignature {
		if restore != nil {
			e.reobserve(index - 1)
		}
		e.cfg.Observer.Applied(id, p.Kind, ws)
	}
	return nil
}

func decodeWriteSets(public, private []byte) (*kv.WriteSet, error) {
	var pub kv.WriteSet
	if err := pub.UnmarshalBinary(public); err != nil {
		return nil, fmt.Errorf("public write set: %w", err)
	}
	if len(private) == 0 {
		return &pub, nil
	}
	var priv kv.WriteSet
	if err := priv.UnmarshalBinary(private); err != nil {
		return nil, fmt.Errorf("private write set: %w", err)
	}
	return kv.Merge(&pub, &priv), nil
}

func signatureOf(ws *kv.WriteSet) (*ledger.Signature, error) {
	for _, m := range ws.Maps {
		if m.Map != ledger.SignaturesMap {
			continue
		}
		for _, w := range m.Writes {
			if w.Key == ledger.SignatureKey && !w.Deleted {
				return ledger.ParseSignature(w.Value)
			}
		}
	}
	return nil, errors.New("signature transaction without a signature")
}

// advanceCommit moves the committed watermark to the last signature at or
// below raft's commit index.
func (e *Engine) advanceCommit(raftCommit uint64) {
	e.mu.RLock()
	var c uint64
	lo, hi := 0, len(e.sigs)
	for lo < hi {
		mid := (lo + hi) / 2
		if e.sigs[mid] <= raftCommit {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo > 0 {
		c = e.sigs[lo-1]
	}
	e.mu.RUnlock()
	e.rlog.forget(raftCommit)
	if c <= e.committed.Load() {
		return
	}
	e.store.Compact(kv.Version(c))
	e.setCommitted(c) // the append thread renames the chunks it covers
	e.snapshotCommitted(c)
}

// replay rebuilds the store and the tree from the ledger files, from
// seqno first on (after the snapshot Open loaded, if any).
func (e *Engine) replay(first uint64) error {
	first, last := max(first, e.log.FirstIndex()), e.log.LastIndex()
	for lo := first; lo <= last; {
		ents, err := e.log.Entries(lo, last+1, 64<<20)
		if err != nil {
			return fmt.Errorf("replay from %d: %w", lo, err)
		}
		for _, ent := range ents {
			if err := e.applyEntry(ent.Term, ent.Index, ent.Data, true); err != nil {
				return fmt.Errorf("replay: %w", err)
			}
			if ent.ConfChange {
				cc, err := confChangeOf(ent.Data)
				if err != nil {
					return fmt.Errorf("replay: entry %d: %w", ent.Index, err)
				}
				e.replayedConfs = append(e.replayedConfs, replayedConf{index: ent.Index, cc: cc})
				e.lastConfIndex.Store(ent.Index)
			}
		}
		lo += uint64(len(ents))
	}
	if last >= first {
		e.logger.Info("ledger replayed", slog.Uint64("entries", last-first+1), slog.Uint64("last", last))
	}
	return nil
}

// sameBytes reports whether a and b are the same slice (not just equal).
func sameBytes(a, b []byte) bool {
	return len(a) > 0 && len(a) == len(b) && &a[0] == &b[0]
}

func isSignature(payload []byte) bool {
	return len(payload) > 1 && ledger.Kind(payload[1]) == ledger.KindSignature
}
