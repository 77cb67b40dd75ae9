// Package verify checks a whole ledger directory offline, with nothing but
// the service certificate: every frame and chunk is in place, every entry
// re-hashes to its leaf, the Merkle tree rebuilt from the leaves has at each
// signature transaction the root that transaction signed, and every signing
// node certificate is endorsed by the service. It is what an auditor runs;
// it needs no ledger secret, so it checks the structure and signatures of
// private entries but not their plaintext.
package verify

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/merkle"
	"github.com/parleyhq/parley/internal/receipt"
	"github.com/parleyhq/parley/internal/storage"
	"github.com/parleyhq/parley/internal/vfs"
)

// Error describes the first problem found. Chunk is the chunk file it is in
// when known; TxID is zero when the problem is not in one transaction.
type Error struct {
	Chunk string
	TxID  ledger.TxID
	Err   error
}

func (e *Error) Error() string {
	switch {
	case e.TxID.Seqno != 0 && e.Chunk != "":
		return fmt.Sprintf("transaction %s (chunk %s): %v", e.TxID, e.Chunk, e.Err)
	case e.TxID.Seqno != 0:
		return fmt.Sprintf("transaction %s: %v", e.TxID, e.Err)
	case e.Chunk != "":
		return fmt.Sprintf("chunk %s: %v", e.Chunk, e.Err)
	}
	return e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Report summarises a ledger that verified.
type Report struct {
	Entries      uint64      // entries checked
	Signatures   uint64      // signature transactions checked
	Chunks       int         // chunk files
	Bytes        int64       // bytes of chunk files
	LastSigned   ledger.TxID // the last signature transaction
	UnsignedTail uint64      // entries after the last signature (not yet covered)
	Root         string      // hex root signed by the last signature
	// PreviousIdentities is the number of signing node certificates of
	// previous service identities, which chain to the service certificate
	// through endorsements the ledger records (after disaster recovery).
	PreviousIdentities int
	// SnapshotSeqno is the seqno of the snapshot the ledger was checked
	// from (LedgerFromSnapshot), 0 for a whole ledger.
	SnapshotSeqno uint64
	// SnapshotEvidence reports that the ledger records the digest of that
	// snapshot file (the primary's evidence, and it matched).
	SnapshotEvidence bool
}

// Options tune a verification run.
type Options struct {
	// ServiceEndorsements are earlier service certificates' endorsements of
	// later ones, oldest first (after disaster recovery).
	ServiceEndorsements []string
	// Progress, when set, is called with the bytes of chunk files done so
	// far and the total.
	Progress func(done, total int64)
}

// Ledger verifies the ledger directory dir against the service certificate.
// It returns a *Error for the first problem.
func Ledger(fsys vfs.FS, dir string, serviceCert *x509.Certificate, opts Options) (*Report, error) {
	return ledgerFrom(fsys, dir, serviceCert, opts, nil)
}

func ledgerFrom(fsys vfs.FS, dir string, serviceCert *x509.Certificate, opts Options, snap *Snapshot) (*Report, error) {
	v := &verifier{service: serviceCert, opts: opts, endorsed: map[string]bool{}, pending: map[string]uint64{}}
	if snap != nil {
		if err := v.startFrom(snap); err != nil {
			return nil, err
		}
	}
	total, err := totalSize(fsys, dir)
	if err != nil {
		return nil, &Error{Err: err}
	}
	var done int64
	var chunk storage.ChunkInfo
	var chunkHasEntries bool
	finishChunk := func() error {
		if chunkHasEntries && chunk.Complete && v.lastKind != ledger.KindSignature {
			return &Error{Chunk: chunk.Name, Err: errors.New("complete chunk does not end with a signature transaction")}
		}
		done += chunk.Size
		if opts.Progress != nil {
			opts.Progress(done, total)
		}
		return nil
	}
	err = storage.Scan(fsys, dir, func(c storage.ChunkInfo, e storage.Entry) error {
		if c.Name != chunk.Name {
			if chunk.Name == "" && c.Start != 1 && (snap == nil || c.Start > snap.Public.Seqno+1) {
				return &Error{Chunk: c.Name, Err: fmt.Errorf("the ledger starts at seqno %d: chunks before it are missing", c.Start)}
			}
			if chunk.Name != "" {
				if err := finishChunk(); err != nil {
					return err
				}
			}
			chunk = c
			v.report.Chunks++
			chunkHasEntries = false
		}
		chunkHasEntries = true
		id := ledger.TxID{View: e.Term, Seqno: e.Index}
		if snap != nil && e.Index <= snap.Public.Seqno {
			if err := v.snapshotEntry(snap, e); err != nil {
				return &Error{Chunk: c.Name, TxID: id, Err: err}
			}
			return nil
		}
		if err := v.entry(e); err != nil {
			return &Error{Chunk: c.Name, TxID: id, Err: err}
		}
		return nil
	})
	if err != nil {
		var ve *Error
		if errors.As(err, &ve) {
			return nil, ve
		}
		var ce *storage.CorruptError
		if errors.As(err, &ce) {
			e := &Error{Chunk: ce.File, Err: err}
			if ce.Seqno != 0 {
				e.TxID = ledger.TxID{View: v.termAt(ce.Seqno), Seqno: ce.Seqno}
			}
			return nil, e
		}
		return nil, &Error{Err: err}
	}
	if chunk.Name == "" {
		return nil, &Error{Err: fmt.Errorf("%s holds no ledger entries", dir)}
	}
	if err := finishChunk(); err != nil {
		return nil, err
	}
	if err := v.checkPending(); err != nil {
		return nil, err
	}
	v.report.Bytes = total
	return &v.report, nil
}

// totalSize adds up the sizes of the chunk files, for progress reports.
func totalSize(fsys vfs.FS, dir string) (int64, error) {
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("list %s: %w", dir, err)
	}
	var total int64
	for _, name := range names {
		if !strings.HasPrefix(name, "ledger_") {
			continue
		}
		f, err := fsys.OpenFile(filepath.Join(dir, name), os.O_RDONLY, 0)
		if err != nil {
			return 0, fmt.Errorf("open %s: %w", name, err)
		}
		size, err := f.Size()
		f.Close()
		if err != nil {
			return 0, fmt.Errorf("size of %s: %w", name, err)
		}
		total += size
	}
	return total, nil
}

type verifier struct {
	// previous are the endorsements of previous service identities the
	// ledger records (after disaster recovery), by the last seqno each
	// identity signed.
	previous []endorsement
	// pending are node certificates that do not chain to the service
	// certificate directly, with the seqno of the first signature by each:
	// checked at the end, through the endorsements the ledger records.
	pending  map[string]uint64
	service  *x509.Certificate
	opts     Options
	tree     merkle.Tree
	lastTerm uint64
	lastKind ledger.Kind
	endorsed map[string]bool // node certificate PEM → checked
	report   Report
	// snapDigest is the hex SHA-256 of the snapshot file the ledger is
	// checked from, if any; snapSeqno its seqno.
	snapDigest string
	snapSeqno  uint64
}

// termAt is the view of the seqno after the last entry checked, for naming
// a damaged entry whose own frame cannot be read.
func (v *verifier) termAt(seqno uint64) uint64 {
	if seqno == v.tree.Size()+1 {
		return v.lastTerm
	}
	return 0
}

func (v *verifier) entry(e storage.Entry) error {
	id := ledger.TxID{View: e.Term, Seqno: e.Index}
	if e.Term < v.lastTerm {
		return fmt.Errorf("view %d after view %d", e.Term, v.lastTerm)
	}
	v.lastTerm = e.Term
	if e.Index != v.tree.Size()+1 {
		return fmt.Errorf("seqno %d follows %d entries", e.Index, v.tree.Size())
	}
	p, err := ledger.Parse(e.Data)
	if err != nil {
		return err
	}
	if err := p.CheckNonce(id); err != nil {
		return err
	}
	if (p.Kind == ledger.KindSignature) != e.Signature {
		return errors.New("frame signature flag does not match the entry")
	}
	v.report.Entries++
	v.lastKind = p.Kind
	if p.Kind == ledger.KindSignature {
		if err := v.signature(id, &p); err != nil {
			return err
		}
	} else {
		v.report.UnsignedTail++
		if err := v.notePrevious(&p); err != nil {
			return err
		}
	}
	v.tree.Append(p.Leaf())
	return nil
}

func (v *verifier) signature(id ledger.TxID, p *ledger.Parsed) error {
	var ws kv.WriteSet
	if err := ws.UnmarshalBinary(p.Public); err != nil {
		return fmt.Errorf("signature write set: %w", err)
	}
	if len(ws.Maps) != 1 || ws.Maps[0].Map != ledger.SignaturesMap || len(ws.Maps[0].Writes) != 1 ||
		ws.Maps[0].Writes[0].Key != ledger.SignatureKey || ws.Maps[0].Writes[0].Deleted {
		return errors.New("signature transaction writes something other than one signature")
	}
	if len(p.Sealed) != 16 {
		return errors.New("signature transaction has private writes")
	}
	s, err := ledger.ParseSignature(ws.Maps[0].Writes[0].Value)
	if err != nil {
		return err
	}
	if s.Seqno != id.Seqno || s.View != id.View {
		return fmt.Errorf("signature claims to be %d.%d", s.View, s.Seqno)
	}
	if s.CommitSeqno >= s.Seqno {
		return fmt.Errorf("signature claims commit %d at or after itself", s.CommitSeqno)
	}
	root := v.tree.Root()
	if s.Root != hex.EncodeToString(root[:]) {
		return fmt.Errorf("signed root %s, but the entries before it hash to %x", s.Root, root)
	}
	if err := receipt.VerifyRootSignature(root, s.Sig, s.Cert, s.NodeID); err != nil {
		return err
	}
	if !v.endorsed[s.Cert] {
		if err := receipt.VerifyChain(s.Cert, v.opts.ServiceEndorsements, v.service); err == nil {
			v.endorsed[s.Cert] = true
		} else if _, ok := v.pending[s.Cert]; !ok {
			if len(v.pending) >= maxPending {
				return err
			}
			v.pending[s.Cert] = id.Seqno
		}
	}
	v.report.Signatures++
	v.report.LastSigned = id
	v.report.UnsignedTail = 0
	v.report.Root = s.Root
	return nil
}

// PreviousIdentitiesMap is where a recovered service records its
// endorsement of the previous service identity (package gov's map of the
// same name; JSON with "endorsement", PEM, and "lastSeqno").
const PreviousIdentitiesMap = "public:ccf.gov.service.previous_identities"

// maxPending bounds the node certificates awaiting an endorsement.
const maxPending = 4096

type endorsement struct {
	cert      string
	lastSeqno uint64
}

// notePrevious collects the endorsements of previous service identities an
// entry records.
func (v *verifier) notePrevious(p *ledger.Parsed) error {
	if p.Kind != ledger.KindTx {
		return nil
	}
	var ws kv.WriteSet
	if err := ws.UnmarshalBinary(p.Public); err != nil {
		return fmt.Errorf("public write set: %w", err)
	}
	for _, m := range ws.Maps {
		if m.Map == SnapshotEvidenceMap {
			if err := v.noteEvidence(m.Writes); err != nil {
				return err
			}
			continue
		}
		if m.Map != PreviousIdentitiesMap {
			continue
		}
		for _, w := range m.Writes {
			var rec struct {
				Endorsement string `json:"endorsement"`
				LastSeqno   uint64 `json:"lastSeqno"`
			}
			if w.Deleted || json.Unmarshal(w.Value, &rec) != nil || rec.Endorsement == "" {
				continue
			}
			if len(v.previous) >= receipt.MaxEndorsements {
				return errors.New("too many previous service identities")
			}
			v.previous = append(v.previous, endorsement{cert: rec.Endorsement, lastSeqno: rec.LastSeqno})
		}
	}
	return nil
}

// checkPending checks that every node certificate that did not chain to
// the service certificate directly chains to it through the endorsements
// the ledger records for the seqno it signed.
func (v *verifier) checkPending() error {
	sort.Slice(v.previous, func(i, j int) bool { return v.previous[i].lastSeqno < v.previous[j].lastSeqno })
	certs := make([]string, 0, len(v.pending))
	for c := range v.pending {
		certs = append(certs, c)
	}
	sort.Slice(certs, func(i, j int) bool { return v.pending[certs[i]] < v.pending[certs[j]] })
	for _, c := range certs {
		seqno := v.pending[c]
		var chain []string
		for _, e := range v.previous {
			if seqno <= e.lastSeqno {
				chain = append(chain, e.cert)
			}
		}
		chain = append(chain, v.opts.ServiceEndorsements...)
		if err := receipt.VerifyChain(c, chain, v.service); err != nil {
			return &Error{TxID: ledger.TxID{Seqno: seqno}, Err: fmt.Errorf("signing node certificate: %w", err)}
		}
		v.report.PreviousIdentities++
	}
	return nil
}
