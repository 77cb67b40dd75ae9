package verify

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/merkle"
	"github.com/parleyhq/parley/internal/receipt"
	"github.com/parleyhq/parley/internal/storage"
	"github.com/parleyhq/parley/internal/vfs"
)

// Snapshot files (docs/ledger-format.md, "Snapshots"):
//
//	magic "PARLEYSNAP1\n"
//	u32 BE length ‖ public part (JSON SnapshotPublic)
//	u32 BE length ‖ sealed part (the private maps; package engine opens it)
//	SHA-256 of everything before it
//
// This package checks the public part, which needs no ledger secret.

// SnapshotMagic starts a snapshot file.
const SnapshotMagic = "PARLEYSNAP1\n"

// MaxSnapshotSize bounds a snapshot file.
const MaxSnapshotSize = 1 << 30

// ErrBadSnapshot is wrapped by the errors for a snapshot that does not
// check out (torn, tampered, or not matching its signature).
var ErrBadSnapshot = errors.New("invalid snapshot")

// SnapshotPublic is the public part of a snapshot file: the state at the
// committed signature transaction at Seqno, but the private maps.
type SnapshotPublic struct {
	Seqno uint64 `json:"seqno"`
	Term  uint64 `json:"term"`
	// Voters and Learners are the raft membership at Seqno.
	Voters   []uint64 `json:"voters"`
	Learners []uint64 `json:"learners,omitempty"`
	// LastConf is the seqno of the last membership change at or below Seqno.
	LastConf uint64 `json:"last_conf,omitempty"`
	// Terms are [term, first seqno] pairs, ascending.
	Terms [][2]uint64 `json:"terms"`
	// Signatures are the seqnos of the signature transactions up to Seqno.
	Signatures []uint64 `json:"signatures"`
	// Leaves are the Merkle leaves of seqnos 1..Seqno, 32 bytes each.
	Leaves []byte `json:"leaves"`
	// SignatureTx is the ledger entry (payload) of the signature at Seqno.
	SignatureTx []byte `json:"signature_tx"`
	// PublicState is the public maps at Seqno (kv write set encoding).
	PublicState []byte `json:"public_state"`
	// SecretFrom is the first seqno of the ledger secret that seals the
	// sealed part.
	SecretFrom uint64 `json:"secret_from"`
	// KeyWraps hold the key of the sealed part wrapped under every ledger
	// secret up to Seqno, so that a node that knows an older secret but
	// not the one of Seqno (a rotation it learnt from ledger entries it
	// no longer replays) can open it.
	KeyWraps []SnapshotKeyWrap `json:"key_wraps,omitempty"`
}

// SnapshotKeyWrap is the sealed part's key under the ledger secret whose
// epoch starts at From (docs/ledger-format.md §12).
type SnapshotKeyWrap struct {
	From    uint64 `json:"from"`
	Wrapped []byte `json:"wrapped"`
}

// Snapshot is a snapshot file whose public part checked out.
type Snapshot struct {
	Public     SnapshotPublic
	Signature  *ledger.Signature
	PublicJSON []byte // the public part as stored (additional data of the sealed part)
	Sealed     []byte // the sealed part
	digest     string // hex SHA-256 of the file
}

// ParseSnapshot checks a snapshot file's framing and digest, that its
// leaves hash to the root its signature transaction signs, and that the
// signature verifies against the node certificate it names. It does not
// check that certificate against a service certificate (CheckSnapshot does).
func ParseSnapshot(data []byte) (*Snapshot, error) {
	if len(data) > MaxSnapshotSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadSnapshot, len(data))
	}
	if len(data) < len(SnapshotMagic)+8+sha256.Size || string(data[:len(SnapshotMagic)]) != SnapshotMagic {
		return nil, fmt.Errorf("%w: not a snapshot file", ErrBadSnapshot)
	}
	body, sum := data[:len(data)-sha256.Size], data[len(data)-sha256.Size:]
	if want := sha256.Sum256(body); !bytes.Equal(sum, want[:]) {
		return nil, fmt.Errorf("%w: digest does not match (torn or damaged file)", ErrBadSnapshot)
	}
	rest := body[len(SnapshotMagic):]
	n := uint64(binary.BigEndian.Uint32(rest))
	if n > uint64(len(rest)-8) {
		return nil, fmt.Errorf("%w: public part overruns the file", ErrBadSnapshot)
	}
	s := &Snapshot{PublicJSON: rest[4 : 4+n]}
	whole := sha256.Sum256(data)
	s.digest = hex.EncodeToString(whole[:])
	rest = rest[4+n:]
	if m := uint64(binary.BigEndian.Uint32(rest)); m != uint64(len(rest)-4) {
		return nil, fmt.Errorf("%w: sealed part is %d bytes, the file holds %d", ErrBadSnapshot, m, len(rest)-4)
	}
	s.Sealed = rest[4:]
	if err := json.Unmarshal(s.PublicJSON, &s.Public); err != nil {
		return nil, fmt.Errorf("%w: public part: %v", ErrBadSnapshot, err)
	}
	var err error
	if s.Signature, err = checkSnapshotPublic(&s.Public); err != nil {
		return nil, err
	}
	return s, nil
}

// LedgerFromSnapshot verifies a ledger directory that starts from the
// snapshot file at snapshotPath (a node that joined or caught up from it):
// the snapshot's public part (ParseSnapshot, and its signer's certificate
// against serviceCert), then every entry after it as Ledger does, on top
// of the snapshot's Merkle tree. Entries at or below the snapshot that the
// directory holds must have the snapshot's leaves. The private maps in
// the snapshot's sealed part are not checked (that needs the ledger
// secret).
func LedgerFromSnapshot(fsys vfs.FS, dir, snapshotPath string, serviceCert *x509.Certificate, opts Options) (*Report, error) {
	data, err := fsys.ReadFile(snapshotPath)
	if err != nil {
		return nil, &Error{Err: fmt.Errorf("read snapshot: %w", err)}
	}
	snap, err := ParseSnapshot(data)
	if err != nil {
		return nil, &Error{Err: fmt.Errorf("snapshot %s: %w", snapshotPath, err)}
	}
	return ledgerFrom(fsys, dir, serviceCert, opts, snap)
}

// SnapshotEvidenceMap is the public map in which the primary records the
// digest of each snapshot it writes (package engine's map of the same
// name): key "", JSON {"seqno", "digest": hex SHA-256 of the file}.
const SnapshotEvidenceMap = "public:ccf.internal.snapshot_evidence"

// noteEvidence checks snapshot evidence on the ledger against the
// snapshot the ledger is checked from: the same seqno with another digest
// means the snapshot is not the one the primary wrote.
func (v *verifier) noteEvidence(writes []kv.Write) error {
	for _, w := range writes {
		var ev struct {
			Seqno  uint64 `json:"seqno"`
			Digest string `json:"digest"`
		}
		if w.Deleted || json.Unmarshal(w.Value, &ev) != nil || v.snapSeqno == 0 || ev.Seqno != v.snapSeqno {
			continue
		}
		if ev.Digest != v.snapDigest {
			return fmt.Errorf("the ledger records snapshot %d with digest %s, the snapshot file's is %s", ev.Seqno, ev.Digest, v.snapDigest)
		}
		v.report.SnapshotEvidence = true
	}
	return nil
}

func checkSnapshotPublic(pub *SnapshotPublic) (*ledger.Signature, error) {
	s := pub.Seqno
	if s == 0 || uint64(len(pub.Leaves)) != s*32 {
		return nil, fmt.Errorf("%w: %d bytes of leaves for seqno %d", ErrBadSnapshot, len(pub.Leaves), s)
	}
	if len(pub.Voters) == 0 || len(pub.Terms) == 0 || len(pub.Signatures) == 0 || pub.Signatures[len(pub.Signatures)-1] != s {
		return nil, fmt.Errorf("%w: metadata does not end at a signature at %d", ErrBadSnapshot, s)
	}
	for i := 1; i < len(pub.Terms); i++ {
		if pub.Terms[i][0] <= pub.Terms[i-1][0] || pub.Terms[i][1] <= pub.Terms[i-1][1] {
			return nil, fmt.Errorf("%w: terms out of order", ErrBadSnapshot)
		}
	}
	if last := pub.Terms[len(pub.Terms)-1]; last[0] != pub.Term || last[1] > s {
		return nil, fmt.Errorf("%w: terms do not end in term %d", ErrBadSnapshot, pub.Term)
	}
	if !slices.IsSorted(pub.Signatures) || pub.Signatures[0] == 0 {
		return nil, fmt.Errorf("%w: signature seqnos out of order", ErrBadSnapshot)
	}
	p, err := ledger.Parse(pub.SignatureTx)
	if err != nil || p.Kind != ledger.KindSignature {
		return nil, fmt.Errorf("%w: signature transaction: %v", ErrBadSnapshot, err)
	}
	if err := p.CheckNonce(ledger.TxID{View: pub.Term, Seqno: s}); err != nil {
		return nil, fmt.Errorf("%w: signature transaction: %v", ErrBadSnapshot, err)
	}
	if leaf := p.Leaf(); !bytes.Equal(leaf[:], pub.Leaves[(s-1)*32:]) {
		return nil, fmt.Errorf("%w: the last leaf is not the signature transaction's", ErrBadSnapshot)
	}
	var ws kv.WriteSet
	if err := ws.UnmarshalBinary(p.Public); err != nil {
		return nil, fmt.Errorf("%w: signature write set: %v", ErrBadSnapshot, err)
	}
	if len(ws.Maps) != 1 || ws.Maps[0].Map != ledger.SignaturesMap || len(ws.Maps[0].Writes) != 1 ||
		ws.Maps[0].Writes[0].Key != ledger.SignatureKey || ws.Maps[0].Writes[0].Deleted {
		return nil, fmt.Errorf("%w: signature transaction writes something other than one signature", ErrBadSnapshot)
	}
	sig, err := ledger.ParseSignature(ws.Maps[0].Writes[0].Value)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	if sig.Seqno != s || sig.View != pub.Term {
		return nil, fmt.Errorf("%w: signature claims %d.%d, the snapshot is at %d.%d", ErrBadSnapshot, sig.View, sig.Seqno, pub.Term, s)
	}
	var t merkle.Tree
	for i := range s - 1 {
		t.Append(merkle.Hash(pub.Leaves[i*32 : i*32+32]))
	}
	root := t.Root()
	if sig.Root != hex.EncodeToString(root[:]) {
		return nil, fmt.Errorf("%w: the leaves hash to %x, the signature signs %s", ErrBadSnapshot, root, sig.Root)
	}
	if err := receipt.VerifyRootSignature(root, sig.Sig, sig.Cert, sig.NodeID); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	return sig, nil
}

// startFrom sets the verifier at the end of the snapshot: its tree, its
// last term and its signature.
func (v *verifier) startFrom(snap *Snapshot) error {
	pub := &snap.Public
	for i := range pub.Seqno {
		v.tree.Append(merkle.Hash(pub.Leaves[i*32 : i*32+32]))
	}
	v.lastTerm = pub.Term
	v.lastKind = ledger.KindSignature
	s := snap.Signature
	if err := receipt.VerifyChain(s.Cert, v.opts.ServiceEndorsements, v.service); err == nil {
		v.endorsed[s.Cert] = true
	} else {
		v.pending[s.Cert] = pub.Seqno
	}
	v.report.LastSigned = ledger.TxID{View: pub.Term, Seqno: pub.Seqno}
	v.report.Root = s.Root
	v.report.SnapshotSeqno = pub.Seqno
	v.snapSeqno = pub.Seqno
	v.snapDigest = snap.digest
	return nil
}

// snapshotEntry checks an entry the snapshot covers against its leaf.
func (v *verifier) snapshotEntry(snap *Snapshot, e storage.Entry) error {
	p, err := ledger.Parse(e.Data)
	if err != nil {
		return err
	}
	leaf := p.Leaf()
	if !bytes.Equal(leaf[:], snap.Public.Leaves[(e.Index-1)*32:e.Index*32]) {
		return fmt.Errorf("entry differs from the snapshot at %d", snap.Public.Seqno)
	}
	v.lastKind = p.Kind
	return nil
}

// SnapshotFor returns the snapshot file a ledger directory needs: "" when
// its first chunk starts at seqno 1, else dir/snapshots/snapshot_<S>.committed
// for a first chunk starting at S+1 (where the engine keeps it).
func SnapshotFor(fsys vfs.FS, dir string) (string, error) {
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("list %s: %w", dir, err)
	}
	var first uint64
	for _, n := range names {
		rest, ok := strings.CutPrefix(n, "ledger_")
		if !ok {
			continue
		}
		digits := rest[:len(rest)-len(strings.TrimLeft(rest, "0123456789"))]
		start, err := strconv.ParseUint(digits, 10, 64)
		if err != nil {
			continue
		}
		if first == 0 || start < first {
			first = start
		}
	}
	if first <= 1 {
		return "", nil
	}
	return filepath.Join(dir, "snapshots", fmt.Sprintf("snapshot_%d.committed", first-1)), nil
}
