package engine

import (
	"encoding/hex"
	"errors"
	"fmt"
	"sort"

	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/merkle"
	"github.com/parleyhq/parley/internal/receipt"
	"github.com/parleyhq/parley/internal/storage"
)

// Record is a transaction read back from the ledger.
type Record struct {
	ID     ledger.TxID
	Kind   ledger.Kind
	Claims [32]byte
	// WriteSet holds the public and the decrypted private writes.
	WriteSet *kv.WriteSet
}

// Read returns the transaction id from this node's ledger, decrypted. It
// fails with ErrUnknownTx or ErrInvalid when the node holds no such
// transaction.
func (e *Engine) Read(id ledger.TxID) (*Record, error) {
	switch e.Status(id) {
	case StatusUnknown:
		return nil, fmt.Errorf("%s: %w", id, ErrUnknownTx)
	case StatusInvalid:
		return nil, fmt.Errorf("%s: %w", id, ErrInvalid)
	}
	p, err := e.entry(id)
	if err != nil {
		return nil, err
	}
	rec := &Record{ID: id, Kind: p.Kind, Claims: p.ClaimsDigest, WriteSet: &kv.WriteSet{}}
	if p.Kind == ledger.KindNoop {
		return rec, nil
	}
	sec := e.secretFor(id.Seqno)
	if sec == nil {
		return nil, fmt.Errorf("%s: %w", id, ErrPrivateClosed)
	}
	private, err := sec.Open(&p, id)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", id, err)
	}
	if rec.WriteSet, err = decodeWriteSets(p.Public, private); err != nil {
		return nil, fmt.Errorf("%s: %w", id, err)
	}
	return rec, nil
}

// entry reads and parses the stored entry of id, checking its term.
func (e *Engine) entry(id ledger.TxID) (ledger.Parsed, error) {
	if e.notOnThisNode(id.Seqno) {
		return ledger.Parsed{}, fmt.Errorf("%s: %w (seqno %d)", id, ErrNotOnThisNode, e.StartSeqno())
	}
	e.mu.RLock()
	data, ok := e.unwritten[id.Seqno]
	term := e.termOfLocked(id.Seqno)
	e.mu.RUnlock()
	if !ok {
		ent, err := e.log.Entry(id.Seqno)
		if err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				return ledger.Parsed{}, fmt.Errorf("%s: %w", id, ErrUnknownTx)
			}
			return ledger.Parsed{}, fmt.Errorf("read %s: %w", id, err)
		}
		data, term = ent.Data, ent.Term
	}
	if term != id.View {
		return ledger.Parsed{}, fmt.Errorf("%s: %w", id, ErrInvalid)
	}
	p, err := ledger.Parse(data)
	if err != nil {
		return ledger.Parsed{}, fmt.Errorf("%s: %w", id, err)
	}
	return p, nil
}

// Receipt returns the ACL receipt of a committed transaction: its leaf
// components, the audit path to the root signed by the first signature
// transaction after it, and that signature.
func (e *Engine) Receipt(id ledger.TxID) (*api.Receipt, error) {
	switch e.Status(id) {
	case StatusCommitted:
	case StatusPending:
		return nil, fmt.Errorf("%s: %w", id, ErrNotCommitted)
	case StatusInvalid:
		return nil, fmt.Errorf("%s: %w", id, ErrInvalid)
	default:
		return nil, fmt.Errorf("%s: %w", id, ErrUnknownTx)
	}
	p, err := e.entry(id)
	if err != nil {
		return nil, err
	}
	if p.Kind == ledger.KindSignature {
		return nil, fmt.Errorf("%s: %w", id, ErrSignatureTx)
	}
	sec := e.secretFor(id.Seqno)
	if sec == nil {
		return nil, fmt.Errorf("%s: %w", id, ErrPrivateClosed)
	}
	sigSeqno, path, err := e.pathToSignature(id.Seqno)
	if err != nil {
		return nil, err
	}
	sig, err := e.signatureAt(sigSeqno)
	if err != nil {
		return nil, err
	}
	proof := make([]api.ProofElement, len(path))
	for i, s := range path {
		h := hex.EncodeToString(s.Sibling[:])
		if s.Left {
			proof[i].Left = h
		} else {
			proof[i].Right = h
		}
	}
	leaf := receipt.LeafParts{
		WriteSetDigest: p.WriteSetDigest(),
		ClaimsDigest:   p.ClaimsDigest,
		CommitEvidence: sec.CommitEvidence(id),
	}
	return receipt.New([]byte(sig.Cert), sig.NodeID, leaf, proof, sig.Sig, e.endorsementsFor(sigSeqno)), nil
}

// pathToSignature finds the first signature after seqno and the audit path
// of seqno's leaf in the tree that signature signed.
func (e *Engine) pathToSignature(seqno uint64) (uint64, []merkle.Step, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	i := sort.Search(len(e.sigs), func(i int) bool { return e.sigs[i] > seqno })
	if i == len(e.sigs) || e.sigs[i] > e.committed.Load() {
		return 0, nil, fmt.Errorf("seqno %d: %w", seqno, ErrNotCommitted)
	}
	s := e.sigs[i]
	path, err := e.tree.Path(seqno-1, s-1)
	if err != nil {
		return 0, nil, fmt.Errorf("audit path of %d: %w", seqno, err)
	}
	return s, path, nil
}

// signatureAt returns the signature transaction at seqno.
func (e *Engine) signatureAt(seqno uint64) (*ledger.Signature, error) {
	e.mu.RLock()
	s, ok := e.sigCache[seqno]
	e.mu.RUnlock()
	if ok {
		return s, nil
	}
	if e.notOnThisNode(seqno) {
		return nil, fmt.Errorf("signature %d: %w (seqno %d)", seqno, ErrNotOnThisNode, e.StartSeqno())
	}
	ent, err := e.log.Entry(seqno)
	if err != nil {
		return nil, fmt.Errorf("read signature %d: %w", seqno, err)
	}
	p, err := ledger.Parse(ent.Data)
	if err != nil {
		return nil, fmt.Errorf("signature %d: %w", seqno, err)
	}
	var ws kv.WriteSet
	if err := ws.UnmarshalBinary(p.Public); err != nil {
		return nil, fmt.Errorf("signature %d: %w", seqno, err)
	}
	s, err = signatureOf(&ws)
	if err != nil {
		return nil, fmt.Errorf("signature %d: %w", seqno, err)
	}
	e.mu.Lock()
	e.cacheSignatureLocked(s)
	e.mu.Unlock()
	return s, nil
}

// Consistency returns a consistency proof between the trees signed by the
// signature transactions at oldSig and newSig (oldSig ≤ newSig), with both
// signatures, so that an auditor holding the older root can check that the
// ledger only grew.
func (e *Engine) Consistency(oldSig, newSig uint64) (*api.ConsistencyProof, error) {
	if oldSig > newSig {
		return nil, fmt.Errorf("consistency: from %d is after to %d", oldSig, newSig)
	}
	if newSig > e.committed.Load() {
		return nil, fmt.Errorf("consistency: signature %d: %w", newSig, ErrNotCommitted)
	}
	from, err := e.signatureAt(oldSig)
	if err != nil {
		return nil, err
	}
	to, err := e.signatureAt(newSig)
	if err != nil {
		return nil, err
	}
	if from.Seqno != oldSig || to.Seqno != newSig {
		return nil, fmt.Errorf("consistency: %d or %d is not a signature transaction", oldSig, newSig)
	}
	e.mu.RLock()
	hashes, err := e.tree.Consistency(from.TreeSize(), to.TreeSize())
	e.mu.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("consistency: %w", err)
	}
	proof := make([]string, len(hashes))
	for i, h := range hashes {
		proof[i] = hex.EncodeToString(h[:])
	}
	return &api.ConsistencyProof{From: signedRoot(from), To: signedRoot(to), Proof: proof}, nil
}

func signedRoot(s *ledger.Signature) api.SignedRoot {
	return api.SignedRoot{
		TransactionID: ledger.TxID{View: s.View, Seqno: s.Seqno}.String(),
		TreeSize:      s.TreeSize(),
		Root:          s.Root,
		Signature:     s.Sig,
		NodeID:        s.NodeID,
		Cert:          s.Cert,
	}
}
