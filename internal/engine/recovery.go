package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"

	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/storage"
	"github.com/parleyhq/parley/internal/vfs"
)

// RestoredMap is the public map in which the transaction that restores a
// recovered ledger's private state records, under key "", the last seqno
// it restored (JSON Restored). Replaying that transaction restores the
// private state again, so a recovered node restarts without shares.
const RestoredMap = "public:ccf.internal.recovery.restored"

// Restored is the value of RestoredMap.
type Restored struct {
	RestoredUpTo uint64 `json:"restoredUpTo"`
}

// ErrNotRecovering is returned by PrepareRestore when the private state is
// open already.
var ErrNotRecovering = errors.New("private state is not closed")

// restoreOp is the private state of a recovered ledger's closed domain,
// ready to apply with the transaction that restores it.
type restoreOp struct {
	closedFrom uint64         // epochs[0].From when it was computed
	old        []Epoch        // the secrets of the closed domain
	private    *kv.WriteSet   // every private write of the closed domain, the last per key
	fresh      *ledger.Secret // the secret the restoring transaction introduces
}

// Restoration is a prepared restore of the private state; see
// PrepareRestore.
type Restoration struct{ op *restoreOp }

// NewSecret returns a copy of the ledger secret that seals every entry
// after the restoring transaction; the caller clears it.
func (r *Restoration) NewSecret() []byte { return r.op.fresh.Raw() }

// ClosedUpTo is the last seqno of the closed private domain, 0 when the
// private state is open.
func (e *Engine) ClosedUpTo() uint64 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.keys.epochs[0].From - 1
}

// PrepareRestore readies the restore of a recovered ledger's private state
// with latest, the raw latest ledger secret of the closed domain (as the
// recovery shares unwrap it). It decrypts the earlier secrets from the
// closed domain's last HistoricalSecretsMap record, opens every entry of
// the closed domain with them (a wrong secret fails here, and nothing
// changes), and writes into tx a rotation to a fresh secret whose history
// holds every secret known (so that the ledger stays recoverable from its
// latest secret alone) and the RestoredMap record. Commit tx with
// CommitRestore; afterwards every entry is readable and private writes are
// accepted.
func (e *Engine) PrepareRestore(tx *kv.Tx, latest []byte) (*Restoration, error) {
	e.mu.RLock()
	closedFrom := e.keys.epochs[0].From
	lastRot := e.keys.lastClosedRotation
	current := slices.Clone(e.keys.epochs)
	e.mu.RUnlock()
	if closedFrom == 1 {
		return nil, ErrNotRecovering
	}
	latestSecret, err := ledger.NewSecret(latest)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	var old []Epoch
	// A read, so that two restores (or a restore and a rotation) conflict.
	hist, ok := tx.Get(HistoricalSecretsMap, "")
	if lastRot > 0 {
		if !ok {
			return nil, errors.New("restore: the ledger records a rotation but no historical secrets")
		}
		if old, err = DecryptHistory(latest, hist); err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
	}
	old = append(old, Epoch{From: lastRot + 1, Secret: latestSecret})
	if old[0].From != 1 {
		return nil, fmt.Errorf("restore: the historical secrets start at seqno %d, not 1", old[0].From)
	}
	private, err := e.closedPrivate(old, closedFrom-1)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	raw, err := e.writeRotation(tx, append(slices.Clone(old), current...))
	if err != nil {
		return nil, err
	}
	fresh, err := ledger.NewSecret(raw)
	clear(raw)
	if err != nil {
		return nil, err
	}
	b, _ := json.Marshal(Restored{RestoredUpTo: closedFrom - 1})
	tx.Put(RestoredMap, "", b)
	return &Restoration{op: &restoreOp{closedFrom: closedFrom, old: old, private: private, fresh: fresh}}, nil
}

// CommitRestore commits the transaction PrepareRestore wrote into: the
// restored private state enters the store at its seqno, and the closed
// domain's secrets join the engine's.
func (e *Engine) CommitRestore(ctx context.Context, tx *kv.Tx, r *Restoration) (ledger.TxID, error) {
	if r == nil || r.op == nil {
		return ledger.TxID{}, errors.New("restore: not prepared")
	}
	return e.commit(ctx, tx, CommitOptions{}, r.op)
}

// restoreIn recognises, in an entry being applied, the transaction that
// restored the private state, and prepares the same restore again (on
// replay, or at a backup). rotation is the secret the entry introduces.
func (e *Engine) restoreIn(ws *kv.WriteSet, rotation *ledger.Secret) (*restoreOp, error) {
	if !writes(ws, RestoredMap) {
		return nil, nil
	}
	e.mu.RLock()
	closedFrom := e.keys.epochs[0].From
	e.mu.RUnlock()
	if closedFrom == 1 {
		return nil, nil // restored already: a record of an earlier recovery
	}
	var hist []byte
	for _, m := range ws.Maps {
		if m.Map == HistoricalSecretsMap {
			for _, w := range m.Writes {
				if w.Key == "" && !w.Deleted {
					hist = w.Value
				}
			}
		}
	}
	if rotation == nil || hist == nil {
		return nil, errors.New("restore record without its rotation")
	}
	raw := rotation.Raw()
	all, err := DecryptHistory(raw, hist)
	clear(raw)
	if err != nil {
		return nil, err
	}
	var old []Epoch
	for _, ep := range all {
		if ep.From < closedFrom {
			old = append(old, ep)
		}
	}
	if len(old) == 0 || old[0].From != 1 {
		return nil, errors.New("restore record lacks the secrets of the closed domain")
	}
	private, err := e.closedPrivate(old, closedFrom-1)
	if err != nil {
		return nil, err
	}
	return &restoreOp{closedFrom: closedFrom, old: old, private: private, fresh: rotation}, nil
}

// commitToStore validates and applies a sequenced transaction at seqno
// next; a restoring transaction brings the closed domain's private state
// with it.
func (e *Engine) commitToStore(r *request, next uint64) error {
	if r.restore == nil {
		return e.store.Commit(r.tx, kv.Version(next))
	}
	if e.ClosedUpTo()+1 != r.restore.closedFrom {
		return fmt.Errorf("restore: %w", ErrNotRecovering)
	}
	if err := e.store.Validate(r.tx); err != nil {
		return err
	}
	return e.store.Apply(kv.Merge(r.restore.private, r.ws), kv.Version(next))
}

// restoredLocked opens the closed domain with its secrets. Called with
// e.mu held.
func (e *Engine) restoredLocked(rs *restoreOp) {
	e.keys.epochs = append(slices.Clone(rs.old), e.keys.epochs...)
	e.keys.lastClosedRotation = 0
	e.logger.Info("private state restored", slog.Uint64("up_to", rs.closedFrom-1), slog.Int("secrets", len(rs.old)))
}

// closedPrivate opens every entry up to last with the secrets eps and
// returns their private writes, the last write of each key.
func (e *Engine) closedPrivate(eps []Epoch, last uint64) (*kv.WriteSet, error) {
	state := map[string]map[string]kv.Write{}
	secretOf := func(seqno uint64) *ledger.Secret {
		i := sort.Search(len(eps), func(i int) bool { return eps[i].From > seqno })
		return eps[i-1].Secret // eps[0].From == 1
	}
	for lo := uint64(1); lo <= last; {
		ents, err := e.log.Entries(lo, last+1, 64<<20)
		if err != nil {
			return nil, fmt.Errorf("read entries from %d: %w", lo, err)
		}
		if len(ents) == 0 {
			return nil, fmt.Errorf("read entries from %d: none", lo)
		}
		for _, ent := range ents {
			if err := mergePrivate(state, ent, secretOf(ent.Index)); err != nil {
				return nil, err
			}
		}
		lo += uint64(len(ents))
	}
	ws := &kv.WriteSet{}
	for _, m := range slices.Sorted(maps.Keys(state)) {
		keys := state[m]
		mw := kv.MapWrites{Map: m}
		for _, k := range slices.Sorted(maps.Keys(keys)) {
			mw.Writes = append(mw.Writes, keys[k])
		}
		ws.Maps = append(ws.Maps, mw)
	}
	return ws, nil
}

func mergePrivate(state map[string]map[string]kv.Write, ent storage.Entry, sec *ledger.Secret) error {
	id := ledger.TxID{View: ent.Term, Seqno: ent.Index}
	p, err := ledger.Parse(ent.Data)
	if err != nil {
		return fmt.Errorf("entry %s: %w", id, err)
	}
	if p.Kind == ledger.KindNoop {
		return nil
	}
	private, err := sec.Open(&p, id)
	if err != nil {
		return fmt.Errorf("entry %s: %w", id, err)
	}
	if len(private) == 0 {
		return nil
	}
	var ws kv.WriteSet
	if err := ws.UnmarshalBinary(private); err != nil {
		return fmt.Errorf("entry %s: private write set: %w", id, err)
	}
	for _, m := range ws.Maps {
		keys := state[m.Map]
		if keys == nil {
			keys = map[string]kv.Write{}
			state[m.Map] = keys
		}
		for _, w := range m.Writes {
			keys[w.Key] = w
		}
	}
	return nil
}

// reobserve hands the Observer every transaction up to last again, now
// with its private writes, after a restore: the Observer saw the closed
// domain's public writes only.
func (e *Engine) reobserve(last uint64) {
	e.cfg.Observer.RolledBack(0)
	for seqno := uint64(1); seqno <= last; seqno++ {
		e.mu.RLock()
		data, ok := e.unwritten[seqno]
		term := e.termOfLocked(seqno)
		e.mu.RUnlock()
		if !ok {
			ent, err := e.log.Entry(seqno)
			if err != nil {
				e.logger.Error("reindex after restore", slog.Uint64("seqno", seqno), slog.Any("error", err))
				return
			}
			data, term = ent.Data, ent.Term
		}
		id := ledger.TxID{View: term, Seqno: seqno}
		p, err := ledger.Parse(data)
		if err != nil || p.Kind == ledger.KindSignature {
			continue
		}
		ws := &kv.WriteSet{}
		if p.Kind != ledger.KindNoop {
			sec := e.secretFor(seqno)
			if sec == nil {
				continue
			}
			private, err := sec.Open(&p, id)
			if err == nil {
				ws, err = decodeWriteSets(p.Public, private)
			}
			if err != nil {
				e.logger.Error("reindex after restore", slog.Uint64("seqno", seqno), slog.Any("error", err))
				return
			}
		}
		e.cfg.Observer.Applied(id, p.Kind, ws)
	}
}

// ServiceEndorsement is an earlier service identity's certificate issued
// by the current service key (identity.Service.EndorseService), covering
// the transactions that identity signed: those up to LastSeqno.
type ServiceEndorsement struct {
	Cert      string
	LastSeqno uint64
}

// SetServiceEndorsements sets the endorsements receipts carry, after
// recovery: a receipt whose signature is at or before an endorsement's
// LastSeqno carries it (oldest first), so that it chains to the current
// service certificate.
func (e *Engine) SetServiceEndorsements(eps []ServiceEndorsement) {
	eps = slices.Clone(eps)
	slices.SortFunc(eps, func(a, b ServiceEndorsement) int {
		switch {
		case a.LastSeqno < b.LastSeqno:
			return -1
		case a.LastSeqno > b.LastSeqno:
			return 1
		}
		return 0
	})
	e.mu.Lock()
	e.keys.endorsements = eps
	e.mu.Unlock()
}

// endorsementsFor returns the endorsements a receipt whose signature is at
// sigSeqno carries.
func (e *Engine) endorsementsFor(sigSeqno uint64) []string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	var out []string
	for _, ep := range e.keys.endorsements {
		if sigSeqno <= ep.LastSeqno {
			out = append(out, ep.Cert)
		}
	}
	return append(out, e.cfg.ServiceEndorsements...)
}

// TruncateToLastSignature prepares a copy of an old ledger for recovery:
// it cuts every entry after the last signature transaction in dir (as CCF
// recovers up to the last signature: what follows was never committed)
// and returns that signature's seqno.
func TruncateToLastSignature(fsys vfs.FS, dir string, logger *slog.Logger) (uint64, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	log, err := storage.Open(dir, storage.Options{FS: fsys, Logger: logger})
	if err != nil {
		return 0, fmt.Errorf("open ledger: %w", err)
	}
	defer log.Close()
	var last uint64
	for i := log.LastIndex(); i >= log.FirstIndex() && i > 0; i-- {
		ent, err := log.Entry(i)
		if err != nil {
			return 0, fmt.Errorf("read entry %d: %w", i, err)
		}
		if isSignature(ent.Data) {
			last = i
			break
		}
	}
	if last == 0 {
		return 0, errors.New("the ledger holds no signature transaction: nothing to recover")
	}
	if err := log.TruncateFrom(last + 1); err != nil {
		return 0, fmt.Errorf("cut the unsigned tail after %d: %w", last, err)
	}
	if err := log.Close(); err != nil {
		return 0, fmt.Errorf("close ledger: %w", err)
	}
	return last, nil
}
