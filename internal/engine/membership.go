package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// Membership changes
//
// A change of raft's membership is one ledger transaction like any other: it
// writes a JSON ConfChange to ConfChangesMap (public), takes a seqno, a leaf
// and a nonce, is covered by the next signature, and so is verifiable and
// has receipts. What sets it apart is how raft carries it: its raft entry is
// of type EntryConfChangeV2, whose Data is the protobuf ConfChangeV2 with
// the ledger payload as its Context (the last field, so the payload is the
// suffix of Data); the ledger frame holds only the payload, with the
// membership-change flag (storage.Entry.ConfChange) from which the raft
// entry is rebuilt when raft reads it back. A change takes effect when it
// commits, on every node, in log order (RawNode.ApplyConfChange); at Open
// the membership is rebuilt from Config.Voters (the membership before the
// first entry) and every change up to the durable commit index, and raft
// applies again those after it once they commit.
//
// The primary proposes one change at a time, only once everything of its
// term before it is applied, so raft never refuses one (it would replace
// it with an empty entry that the ledger could not hold).

// ConfChangesMap is the public map a membership change writes, under key
// "", its ConfChange in JSON.
const ConfChangesMap = "public:ccf.internal.conf_changes"

// Membership change operations.
const (
	OpAddLearner = "add_learner"
	OpAddVoter   = "add_voter"
	OpRemove     = "remove"
)

// ConfChange is one membership change as the ledger records it.
type ConfChange struct {
	// Op is OpAddLearner, OpAddVoter or OpRemove.
	Op string `json:"op"`
	// RaftID is the node it changes.
	RaftID uint64 `json:"raft_id"`
}

// Membership is raft's membership as this node has applied it.
type Membership struct {
	Voters   []uint64 `json:"voters"`
	Learners []uint64 `json:"learners,omitempty"`
}

// Contains reports whether id is a voter or learner.
func (m Membership) Contains(id uint64) bool {
	return slices.Contains(m.Voters, id) || slices.Contains(m.Learners, id)
}

// Errors of membership changes.
var (
	// ErrNoChange is returned when the membership already is as asked.
	ErrNoChange = errors.New("membership already as asked")
	// ErrRemoveSelf is returned when a node is asked to remove itself: the
	// primary transfers the leadership first, and the new one removes it.
	ErrRemoveSelf = errors.New("the primary cannot remove itself")
)

// confRequest asks the sequencer for a membership change.
type confRequest struct {
	cc    ConfChange
	reply chan result
}

// AddLearner adds raftID to raft as a learner (it receives the log but does
// not vote) and returns once the change is committed. It must be called on
// the primary; it returns ErrNoChange if the node is already a member.
func (e *Engine) AddLearner(ctx context.Context, raftID uint64) (ledger.TxID, error) {
	return e.changeMembership(ctx, ConfChange{Op: OpAddLearner, RaftID: raftID})
}

// AddVoter makes raftID a voter (adding it, or promoting a learner) and
// returns once the change is committed. Promote a learner only once it has
// caught up (see Progress), or writes stall until it has.
func (e *Engine) AddVoter(ctx context.Context, raftID uint64) (ledger.TxID, error) {
	return e.changeMembership(ctx, ConfChange{Op: OpAddVoter, RaftID: raftID})
}

// RemoveNode removes raftID from raft and returns once the change is
// committed. A node cannot remove itself (ErrRemoveSelf).
func (e *Engine) RemoveNode(ctx context.Context, raftID uint64) (ledger.TxID, error) {
	return e.changeMembership(ctx, ConfChange{Op: OpRemove, RaftID: raftID})
}

func (e *Engine) changeMembership(ctx context.Context, cc ConfChange) (ledger.TxID, error) {
	if cc.RaftID == 0 {
		return ledger.TxID{}, errors.New("membership change: raft id 0")
	}
	if cc.Op == OpRemove && cc.RaftID == e.cfg.RaftID {
		return ledger.TxID{}, ErrRemoveSelf
	}
	req := &confRequest{cc: cc, reply: make(chan result, 1)}
	select {
	case e.confc <- req:
	case <-e.stop:
		return ledger.TxID{}, ErrClosed
	case <-ctx.Done():
		return ledger.TxID{}, ctx.Err()
	}
	var r result
	select {
	case r = <-req.reply:
	case <-e.done:
		select {
		case r = <-req.reply:
		default:
			return ledger.TxID{}, ErrClosed
		}
	case <-ctx.Done():
		return ledger.TxID{}, ctx.Err()
	}
	if r.err != nil {
		return ledger.TxID{}, r.err
	}
	if err := e.WaitCommitted(ctx, r.id); err != nil {
		return r.id, err
	}
	return r.id, nil
}

// Members returns raft's membership as this node has applied it.
func (e *Engine) Members() Membership {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return Membership{Voters: slices.Clone(e.members.Voters), Learners: slices.Clone(e.members.Learners)}
}

// Progress returns, on the primary, the highest log index known to be
// replicated on each member (its raft Match), refreshed every tick; nil on
// a backup.
func (e *Engine) Progress() map[uint64]uint64 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if !e.leader {
		return nil
	}
	out := make(map[uint64]uint64, len(e.progress))
	for k, v := range e.progress {
		out[k] = v
	}
	return out
}

// TransferLeadership asks raft to hand the primary role to raftID (a voter
// that has caught up); it returns at once. Used before retiring the
// primary.
func (e *Engine) TransferLeadership(raftID uint64) {
	select {
	case e.transferc <- raftID:
	case <-e.stop:
	}
}

// noteProgress copies raft's replication progress for Progress; called by
// the sequencer on each tick.
func (e *Engine) noteProgress() {
	if !e.IsPrimary() {
		return
	}
	st := e.rn.Status()
	p := make(map[uint64]uint64, len(st.Progress))
	for id, pr := range st.Progress {
		p[id] = pr.Match
	}
	e.mu.Lock()
	e.progress = p
	e.mu.Unlock()
}

// tryConf proposes the queued membership changes that can go now.
func (e *Engine) tryConf(st *seqState) error {
	for len(st.confs) > 0 {
		bs := e.rn.BasicStatus()
		if bs.RaftState != raft.StateLeader || bs.LeadTransferee != raft.None {
			for _, r := range st.confs {
				r.reply <- result{err: ErrNotLeader}
			}
			st.confs = nil
			return nil
		}
		// Raft refuses a change while an earlier one (or, for a new
		// leader, anything of the log it inherited) is not yet applied.
		e.mu.RLock()
		termStart := uint64(0)
		if n := len(e.terms); n > 0 && e.terms[n-1].term == bs.Term {
			termStart = e.terms[n-1].index
		}
		e.mu.RUnlock()
		if termStart == 0 || bs.Applied < termStart || bs.Applied < st.lastConf {
			return nil // again on the next event or tick
		}
		req := st.confs[0]
		st.confs = st.confs[1:]
		if err := e.checkConf(req.cc); err != nil {
			req.reply <- result{err: err}
			continue
		}
		id, err := e.sequenceConf(st, bs.Term, req.cc)
		req.reply <- result{id: id, err: err}
		if err != nil {
			return err
		}
	}
	return nil
}

// checkConf refuses a change that is no change or that raft would refuse.
func (e *Engine) checkConf(cc ConfChange) error {
	m := e.Members()
	voter, learner := slices.Contains(m.Voters, cc.RaftID), slices.Contains(m.Learners, cc.RaftID)
	switch cc.Op {
	case OpAddLearner:
		if voter || learner {
			return fmt.Errorf("add learner %d: %w", cc.RaftID, ErrNoChange)
		}
	case OpAddVoter:
		if voter {
			return fmt.Errorf("add voter %d: %w", cc.RaftID, ErrNoChange)
		}
	case OpRemove:
		if cc.RaftID == e.cfg.RaftID {
			return ErrRemoveSelf
		}
		if !voter && !learner {
			return fmt.Errorf("remove %d: %w", cc.RaftID, ErrNoChange)
		}
	default:
		return fmt.Errorf("membership change: unknown op %q", cc.Op)
	}
	return nil
}

// sequenceConf seals cc as a ledger transaction at the next seqno and
// proposes it, with the held entries and a signature, to raft.
func (e *Engine) sequenceConf(st *seqState, view uint64, cc ConfChange) (ledger.TxID, error) {
	e.mu.RLock()
	index := e.lastIndex + 1
	e.mu.RUnlock()
	id := ledger.TxID{View: view, Seqno: index}
	ws, payload, leaf, err := e.confPayload(id, cc)
	if err != nil {
		return ledger.TxID{}, err
	}
	data, err := confEntryData(cc, payload)
	if err != nil {
		return ledger.TxID{}, err
	}
	if err := e.store.Apply(ws, kv.Version(index)); err != nil {
		return ledger.TxID{}, fmt.Errorf("apply membership change: %w", err)
	}
	// The payload in unwritten is the suffix of data, so that the append
	// thread recognizes it as the one it writes.
	e.mu.Lock()
	e.tree.Append(leaf)
	e.unwritten[index] = data[len(data)-len(payload):]
	e.lastIndex = index
	e.noteTermLocked(view, index)
	st.held = append(st.held, pb.Entry{Term: view, Index: index, Type: pb.EntryConfChangeV2, Data: data})
	e.mu.Unlock()
	st.sinceSig++
	st.lastConf = index
	e.lastConfIndex.Store(index)
	if e.cfg.Observer != nil {
		e.cfg.Observer.Applied(id, ledger.KindTx, ws)
	}
	e.logger.Info("proposing a membership change", slog.String("op", cc.Op), slog.Uint64("raft_id", cc.RaftID), slog.String("txid", id.String()))
	// Sign and propose at once: the change, and whatever waited with it.
	if err := e.sequence(st, nil, true); err != nil {
		return ledger.TxID{}, err
	}
	return id, nil
}

// confPayload builds the ledger transaction of a membership change.
func (e *Engine) confPayload(id ledger.TxID, cc ConfChange) (*kv.WriteSet, []byte, [32]byte, error) {
	value, err := json.Marshal(cc)
	if err != nil {
		return nil, nil, [32]byte{}, fmt.Errorf("encode membership change: %w", err)
	}
	ws := &kv.WriteSet{Maps: []kv.MapWrites{{Map: ConfChangesMap, Writes: []kv.Write{{Key: "", Value: value}}}}}
	pub, err := ws.MarshalBinary()
	if err != nil {
		return nil, nil, [32]byte{}, fmt.Errorf("encode membership change write set: %w", err)
	}
	payload, leaf, err := e.secretFor(id.Seqno).Seal(nil, &ledger.Tx{ID: id, Kind: ledger.KindTx, Public: pub})
	if err != nil {
		return nil, nil, [32]byte{}, fmt.Errorf("seal membership change: %w", err)
	}
	return ws, payload, leaf, nil
}

// raftChange is cc as raft's protobuf change.
func raftChange(cc ConfChange) (pb.ConfChangeSingle, error) {
	var t pb.ConfChangeType
	switch cc.Op {
	case OpAddLearner:
		t = pb.ConfChangeAddLearnerNode
	case OpAddVoter:
		t = pb.ConfChangeAddNode
	case OpRemove:
		t = pb.ConfChangeRemoveNode
	default:
		return pb.ConfChangeSingle{}, fmt.Errorf("membership change: unknown op %q", cc.Op)
	}
	return pb.ConfChangeSingle{Type: t, NodeID: cc.RaftID}, nil
}

// confEntryData is the Data of the raft entry of a membership change: the
// ConfChangeV2 with the ledger payload as Context, which marshals last.
func confEntryData(cc ConfChange, payload []byte) ([]byte, error) {
	ch, err := raftChange(cc)
	if err != nil {
		return nil, err
	}
	v2 := pb.ConfChangeV2{Changes: []pb.ConfChangeSingle{ch}, Context: payload}
	data, err := v2.Marshal()
	if err != nil {
		return nil, fmt.Errorf("encode raft membership change: %w", err)
	}
	if !bytes.HasSuffix(data, payload) {
		return nil, errors.New("encode raft membership change: payload is not the suffix")
	}
	return data, nil
}

// entryPayload returns the ledger payload of a raft entry: its Data, or for
// a membership change the Context inside it (aliasing Data).
func entryPayload(ent *pb.Entry) ([]byte, error) {
	switch ent.Type {
	case pb.EntryNormal:
		return ent.Data, nil
	case pb.EntryConfChangeV2:
		var v2 pb.ConfChangeV2
		if err := v2.Unmarshal(ent.Data); err != nil {
			return nil, fmt.Errorf("entry %d: membership change: %w", ent.Index, err)
		}
		if !bytes.HasSuffix(ent.Data, v2.Context) {
			return nil, fmt.Errorf("entry %d: membership change: payload is not the suffix", ent.Index)
		}
		return ent.Data[len(ent.Data)-len(v2.Context):], nil
	}
	return nil, fmt.Errorf("entry %d: raft entry type %s is not used by the ledger", ent.Index, ent.Type)
}

// confChangeOf returns the membership change a ledger payload records.
func confChangeOf(payload []byte) (ConfChange, error) {
	p, err := ledger.Parse(payload)
	if err != nil {
		return ConfChange{}, err
	}
	var ws kv.WriteSet
	if err := ws.UnmarshalBinary(p.Public); err != nil {
		return ConfChange{}, fmt.Errorf("membership change write set: %w", err)
	}
	return confChangeIn(&ws)
}

func confChangeIn(ws *kv.WriteSet) (ConfChange, error) {
	for _, m := range ws.Maps {
		if m.Map != ConfChangesMap {
			continue
		}
		for _, w := range m.Writes {
			if w.Key == "" && !w.Deleted {
				var cc ConfChange
				if err := json.Unmarshal(w.Value, &cc); err != nil {
					return ConfChange{}, fmt.Errorf("membership change: %w", err)
				}
				if _, err := raftChange(cc); err != nil {
					return ConfChange{}, err
				}
				return cc, nil
			}
		}
	}
	return ConfChange{}, errors.New("membership change entry without a change")
}

// raftEntryFromStored rebuilds the raft entry of a stored membership change.
func raftEntryFromStored(term, index uint64, payload []byte) (pb.Entry, error) {
	cc, err := confChangeOf(payload)
	if err != nil {
		return pb.Entry{}, fmt.Errorf("entry %d: %w", index, err)
	}
	data, err := confEntryData(cc, payload)
	if err != nil {
		return pb.Entry{}, fmt.Errorf("entry %d: %w", index, err)
	}
	return pb.Entry{Term: term, Index: index, Type: pb.EntryConfChangeV2, Data: data}, nil
}

// foldConf applies a simple membership change to a ConfState, as raft does.
func foldConf(cs pb.ConfState, cc ConfChange) pb.ConfState {
	del := func(s []uint64, id uint64) []uint64 {
		return slices.DeleteFunc(slices.Clone(s), func(v uint64) bool { return v == id })
	}
	switch cc.Op {
	case OpAddLearner:
		if !slices.Contains(cs.Voters, cc.RaftID) && !slices.Contains(cs.Learners, cc.RaftID) {
			cs.Learners = append(slices.Clone(cs.Learners), cc.RaftID)
		}
	case OpAddVoter:
		cs.Learners = del(cs.Learners, cc.RaftID)
		if !slices.Contains(cs.Voters, cc.RaftID) {
			cs.Voters = append(slices.Clone(cs.Voters), cc.RaftID)
		}
	case OpRemove:
		cs.Voters = del(cs.Voters, cc.RaftID)
		cs.Learners = del(cs.Learners, cc.RaftID)
	}
	slices.Sort(cs.Voters)
	slices.Sort(cs.Learners)
	return cs
}

// applyCommittedConf applies a committed membership change to raft and
// records the new membership.
func (e *Engine) applyCommittedConf(ent *pb.Entry) error {
	var v2 pb.ConfChangeV2
	if err := v2.Unmarshal(ent.Data); err != nil {
		return fmt.Errorf("entry %d: membership change: %w", ent.Index, err)
	}
	v2.Context = nil
	cs := e.rn.ApplyConfChange(v2)
	e.rlog.setConfState(*cs)
	e.mu.Lock()
	e.members = pb.ConfState{Voters: slices.Sorted(slices.Values(cs.Voters)), Learners: slices.Sorted(slices.Values(cs.Learners))}
	e.noteConfLocked(ent.Index, e.members)
	e.mu.Unlock()
	e.logger.Info("membership changed", slog.Uint64("seqno", ent.Index), slog.Any("voters", cs.Voters), slog.Any("learners", cs.Learners))
	return nil
}

// InitialVoters are the raft membership before the first entry of the log
// (Config.Voters): what a node that joins must start from.
func (e *Engine) InitialVoters() []uint64 {
	if len(e.cfg.Voters) == 0 {
		return []uint64{e.cfg.RaftID}
	}
	return slices.Sorted(slices.Values(e.cfg.Voters))
}
