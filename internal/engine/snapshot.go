package engine

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/verify"
	"github.com/parleyhq/parley/internal/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
)

// Snapshots (see docs/ledger-format.md, "Snapshots").
//
// A snapshot is the state at a committed signature transaction S: the kv
// maps, every Merkle leaf up to S, and what the engine needs to go on from
// S+1 (terms, signature seqnos, membership). A node that starts from it
// replays only the ledger after S. The file is
//
//	magic "PARLEYSNAP1\n"
//	u32 BE length ‖ public part (JSON SnapshotPublic)
//	u32 BE length ‖ sealed part (AES-256-GCM of JSON snapshotPrivate)
//	SHA-256 of everything before it
//
// The public part holds no secret: parley verify checks it against the
// signature transaction it carries without the ledger secret. The sealed
// part holds the private maps and the ledger secrets up to S, under a key
// derived from the ledger secret of S with HKDF-SHA256 (info "parley
// snapshot v1 seqno=<S>"), a zero nonce (the key is used once: for the
// state at S, which is the same on every node) and the SHA-256 of the
// public part as additional data. Sealing is deterministic, so every node
// writes the same bytes for the same S, and the SHA-256 of the file (the
// digest the primary records in SnapshotEvidenceMap) names it.

// SnapshotEvidenceMap is the public map in which the primary records, under
// key "", the digest of each snapshot it writes (JSON SnapshotEvidence).
const SnapshotEvidenceMap = verify.SnapshotEvidenceMap

// SnapshotEvidence is the value of SnapshotEvidenceMap.
type SnapshotEvidence struct {
	Seqno  uint64 `json:"seqno"`
	Digest string `json:"digest"` // hex SHA-256 of the snapshot file
}

// DefaultSnapshotTxInterval is Config.SnapshotTxInterval's default.
const DefaultSnapshotTxInterval = 10000

// maxSnapshotMessage is the largest snapshot raft is given to send: the
// consensus transport carries messages of at most 64 MiB
// (consensus.MaxMessageSize). While the newest snapshot is larger, raft's
// log is not compacted and a lagging node gets every entry instead.
const maxSnapshotMessage = 60 << 20

// snapshotsKept is how many snapshot files a node keeps.
const snapshotsKept = 2

// ErrNotOnThisNode is returned for an entry, receipt or signature at or
// below the snapshot this node's ledger starts from: the node joined (or
// caught up) from a snapshot and never held it. Another node, or the
// primary, may.
var ErrNotOnThisNode = errors.New("transaction is before the snapshot this node started from")

// ErrBadSnapshot is wrapped by the errors for a snapshot that does not
// check out (torn, tampered, or not matching its signature).
var ErrBadSnapshot = verify.ErrBadSnapshot

// SnapshotPublic is the public part of a snapshot file.
type SnapshotPublic = verify.SnapshotPublic

const snapshotMagic = verify.SnapshotMagic

type snapshotPrivate struct {
	PrivateState []byte          `json:"private_state"`
	Secrets      []snapshotEpoch `json:"secrets"`
}

type snapshotEpoch struct {
	From   uint64 `json:"from"`
	Secret []byte `json:"secret"`
}

// snapshot is a decoded, checked snapshot.
type snapshot struct {
	pub     SnapshotPublic
	sig     *ledger.Signature
	state   *kv.WriteSet // public and private maps
	secrets []Epoch
	data    []byte // the file
}

func (s *snapshot) meta() snapMeta {
	return snapMeta{index: s.pub.Seqno, term: s.pub.Term, cs: pb.ConfState{Voters: s.pub.Voters, Learners: s.pub.Learners}, size: len(s.data)}
}

// capturedSnap is the state at a signature, captured when the signature
// entered the log and written once it commits.
type capturedSnap struct {
	pub     SnapshotPublic
	state   *kv.WriteSet
	secrets []Epoch
	sealer  *ledger.Secret
}

// snapshotName is the file name of the snapshot at seqno.
func snapshotName(seqno uint64) string {
	return fmt.Sprintf("snapshot_%d.committed", seqno)
}

// parseSnapshotName returns the seqno of a snapshot file name.
func parseSnapshotName(name string) (uint64, bool) {
	rest, ok := strings.CutPrefix(name, "snapshot_")
	if !ok {
		return 0, false
	}
	rest, ok = strings.CutSuffix(rest, ".committed")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(rest, 10, 64)
	if err != nil || n == 0 || strconv.FormatUint(n, 10) != rest {
		return 0, false
	}
	return n, true
}

// snapshotKey is the key of the sealed part of the snapshot at seqno,
// derived from the ledger secret that seals seqno.
func snapshotKey(sec *ledger.Secret, seqno uint64) ([]byte, error) {
	key, err := hkdf.Key(sha256.New, sec.Raw(), nil, fmt.Sprintf("parley snapshot v1 seqno=%d", seqno), 32)
	if err != nil {
		return nil, fmt.Errorf("derive snapshot key: %w", err)
	}
	return key, nil
}

// wrapAEAD is the AEAD that wraps the snapshot key at seqno under the
// ledger secret of the epoch from.
func wrapAEAD(sec *ledger.Secret, seqno, from uint64) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, sec.Raw(), nil, fmt.Sprintf("parley snapshot key wrap v1 seqno=%d from=%d", seqno, from), 32)
	if err != nil {
		return nil, fmt.Errorf("derive snapshot wrapping key: %w", err)
	}
	return gcm(key)
}

func gcm(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// openSnapshotKey finds the sealed part's key with the secrets the node
// knows: the secret of the snapshot's epoch, or an older one that wraps it.
func openSnapshotKey(pub *SnapshotPublic, epochs []Epoch) ([]byte, error) {
	for _, ep := range epochs {
		if ep.From == pub.SecretFrom {
			return snapshotKey(ep.Secret, pub.Seqno)
		}
	}
	for _, w := range pub.KeyWraps {
		for _, ep := range epochs {
			if ep.From != w.From {
				continue
			}
			aead, err := wrapAEAD(ep.Secret, pub.Seqno, w.From)
			if err != nil {
				return nil, err
			}
			if key, err := aead.Open(nil, make([]byte, aead.NonceSize()), w.Wrapped, nil); err == nil && len(key) == 32 {
				return key, nil
			}
		}
	}
	return nil, fmt.Errorf("snapshot %d: sealed under the ledger secret from %d, which this node does not hold: %w", pub.Seqno, pub.SecretFrom, ErrPrivateClosed)
}

// encodeSnapshot lays out and seals a captured snapshot.
func encodeSnapshot(c *capturedSnap) ([]byte, error) {
	pub, priv := c.state.Split()
	var err error
	if c.pub.PublicState, err = pub.MarshalBinary(); err != nil {
		return nil, fmt.Errorf("encode public state: %w", err)
	}
	key, err := snapshotKey(c.sealer, c.pub.Seqno)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	c.pub.KeyWraps = nil
	for _, ep := range c.secrets {
		w, err := wrapAEAD(ep.Secret, c.pub.Seqno, ep.From)
		if err != nil {
			return nil, err
		}
		c.pub.KeyWraps = append(c.pub.KeyWraps, verify.SnapshotKeyWrap{From: ep.From, Wrapped: w.Seal(nil, make([]byte, w.NonceSize()), key, nil)})
	}
	pubJSON, err := json.Marshal(&c.pub)
	if err != nil {
		return nil, fmt.Errorf("encode snapshot: %w", err)
	}
	sp := snapshotPrivate{}
	if sp.PrivateState, err = priv.MarshalBinary(); err != nil {
		return nil, fmt.Errorf("encode private state: %w", err)
	}
	for _, ep := range c.secrets {
		sp.Secrets = append(sp.Secrets, snapshotEpoch{From: ep.From, Secret: ep.Secret.Raw()})
	}
	plain, err := json.Marshal(&sp)
	if err != nil {
		return nil, fmt.Errorf("encode snapshot: %w", err)
	}
	aead, err := gcm(key)
	if err != nil {
		return nil, err
	}
	ad := sha256.Sum256(pubJSON)
	sealed := aead.Seal(nil, make([]byte, aead.NonceSize()), plain, ad[:])
	clear(plain)
	out := make([]byte, 0, len(snapshotMagic)+8+len(pubJSON)+len(sealed)+sha256.Size)
	out = append(out, snapshotMagic...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(pubJSON)))
	out = append(out, pubJSON...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(sealed)))
	out = append(out, sealed...)
	sum := sha256.Sum256(out)
	return append(out, sum[:]...), nil
}

// decodeSnapshot checks a whole snapshot and opens its sealed part with
// the ledger secrets the node knows.
func decodeSnapshot(data []byte, epochs []Epoch) (*snapshot, error) {
	vs, err := verify.ParseSnapshot(data)
	if err != nil {
		return nil, err
	}
	pub, sig, pubJSON, sealed := &vs.Public, vs.Signature, vs.PublicJSON, vs.Sealed
	key, err := openSnapshotKey(pub, epochs)
	if err != nil {
		return nil, err
	}
	aead, err := gcm(key)
	clear(key)
	if err != nil {
		return nil, err
	}
	ad := sha256.Sum256(pubJSON)
	plain, err := aead.Open(nil, make([]byte, aead.NonceSize()), sealed, ad[:])
	if err != nil {
		return nil, fmt.Errorf("%w: sealed part does not open under the ledger secret of %d", ErrBadSnapshot, pub.Seqno)
	}
	var sp snapshotPrivate
	err = json.Unmarshal(plain, &sp)
	clear(plain)
	if err != nil {
		return nil, fmt.Errorf("%w: sealed part: %v", ErrBadSnapshot, err)
	}
	var pubWS, privWS kv.WriteSet
	if err := pubWS.UnmarshalBinary(pub.PublicState); err != nil {
		return nil, fmt.Errorf("%w: public state: %v", ErrBadSnapshot, err)
	}
	if err := privWS.UnmarshalBinary(sp.PrivateState); err != nil {
		return nil, fmt.Errorf("%w: private state: %v", ErrBadSnapshot, err)
	}
	if p, _ := pubWS.Split(); len(p.Maps) != len(pubWS.Maps) {
		return nil, fmt.Errorf("%w: private maps in the public part", ErrBadSnapshot)
	}
	if _, q := privWS.Split(); len(q.Maps) != len(privWS.Maps) {
		return nil, fmt.Errorf("%w: public maps in the sealed part", ErrBadSnapshot)
	}
	snap := &snapshot{pub: *pub, sig: sig, state: kv.Merge(&pubWS, &privWS), data: data}
	for i, se := range sp.Secrets {
		s, err := ledger.NewSecret(se.Secret)
		clear(se.Secret)
		if err != nil || se.From == 0 || (i > 0 && se.From <= sp.Secrets[i-1].From) {
			return nil, fmt.Errorf("%w: ledger secret %d", ErrBadSnapshot, i)
		}
		snap.secrets = append(snap.secrets, Epoch{From: se.From, Secret: s})
	}
	return snap, nil
}

// snapshotFiles lists the snapshot files of dir, newest first.
func snapshotFiles(fsys vfs.FS, dir string) ([]uint64, error) {
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, nil // no directory: no snapshots
	}
	var seqnos []uint64
	for _, n := range names {
		if s, ok := parseSnapshotName(n); ok {
			seqnos = append(seqnos, s)
		}
	}
	slices.Sort(seqnos)
	slices.Reverse(seqnos)
	return seqnos, nil
}

// ReadSnapshotPublic reads the snapshot file at path and checks its public
// part (see verify.ParseSnapshot).
func ReadSnapshotPublic(fsys vfs.FS, path string) (*SnapshotPublic, *ledger.Signature, error) {
	data, err := fsys.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read snapshot: %w", err)
	}
	s, err := verify.ParseSnapshot(data)
	if err != nil {
		return nil, nil, err
	}
	return &s.Public, s.Signature, nil
}

// FindSnapshot returns the path of the snapshot file at seqno in the
// snapshot directory of a ledger directory, as the engine writes it.
func FindSnapshot(ledgerDir string, seqno uint64) string {
	return filepath.Join(ledgerDir, SnapshotDirName, snapshotName(seqno))
}

// SnapshotDirName is the subdirectory of the ledger directory holding the
// snapshot files, unless Config.SnapshotDir says otherwise.
const SnapshotDirName = "snapshots"
