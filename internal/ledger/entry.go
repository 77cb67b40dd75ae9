package ledger

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"

	"github.com/parleyhq/parley/internal/receipt"
)

// Kind tells what a transaction is.
type Kind uint8

const (
	// KindNoop is raft's empty entry (an empty payload).
	KindNoop Kind = 0
	// KindTx is an ordinary transaction.
	KindTx Kind = 1
	// KindSignature is a signature transaction: it signs the Merkle root of
	// every entry before it.
	KindSignature Kind = 2
)

const (
	version       = 1
	headerSize    = 72 // version, kind, reserved, claims digest, evidence digest
	nonceSize     = 12
	publicLenSize = 8
	fixedSize     = headerSize + nonceSize + publicLenSize
	tagSize       = 16
	// SecretSize is the size of a ledger secret in bytes.
	SecretSize = 32
)

// ErrMalformed is returned (wrapped) by [Parse] and [Secret.Open] for a
// payload that is not a well-formed entry.
var ErrMalformed = errors.New("malformed ledger entry")

// TxID identifies a transaction: the raft term (view) in which it was written
// and its raft index (seqno).
type TxID struct {
	View  uint64
	Seqno uint64
}

// String formats the id as "<view>.<seqno>", as CCF and ACL do.
func (id TxID) String() string {
	return strconv.FormatUint(id.View, 10) + "." + strconv.FormatUint(id.Seqno, 10)
}

// ParseTxID parses "<view>.<seqno>". Both parts are decimal without sign or
// leading zeros, and seqno is at least 1.
func ParseTxID(s string) (TxID, error) {
	v, q, ok := strings.Cut(s, ".")
	if !ok {
		return TxID{}, fmt.Errorf("transaction id %q: want <view>.<seqno>", s)
	}
	view, err := parseDecimal(v)
	if err != nil {
		return TxID{}, fmt.Errorf("transaction id %q: view: %w", s, err)
	}
	seqno, err := parseDecimal(q)
	if err != nil {
		return TxID{}, fmt.Errorf("transaction id %q: seqno: %w", s, err)
	}
	if seqno == 0 {
		return TxID{}, fmt.Errorf("transaction id %q: seqno must be at least 1", s)
	}
	return TxID{View: view, Seqno: seqno}, nil
}

func parseDecimal(s string) (uint64, error) {
	if s == "" || len(s) > 20 || (len(s) > 1 && s[0] == '0') {
		return 0, errors.New("not a canonical decimal number")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("not a canonical decimal number")
		}
	}
	return strconv.ParseUint(s, 10, 64)
}

// MaxView is the largest view a nonce can carry (31 bits, as CCF).
const MaxView = 1<<31 - 1

// Nonce returns the AES-GCM nonce of the transaction id.
func Nonce(id TxID) [nonceSize]byte {
	var n [nonceSize]byte
	binary.LittleEndian.PutUint64(n[:8], id.Seqno)
	binary.LittleEndian.PutUint32(n[8:], uint32(id.View))
	return n
}

// Secret is a ledger secret with the keys derived from it. It is safe for
// concurrent use.
type Secret struct {
	raw  []byte // the 32 bytes the keys derive from; see Raw
	aead cipher.AEAD
	macs sync.Pool // of hash.Hash: HMAC-SHA256 under the commit key
}

// NewSecret derives the encryption and commit-evidence keys from a 32-byte
// ledger secret.
func NewSecret(raw []byte) (*Secret, error) {
	if len(raw) != SecretSize {
		return nil, fmt.Errorf("ledger secret is %d bytes, want %d", len(raw), SecretSize)
	}
	encKey, err := hkdf.Key(sha256.New, raw, nil, "parley ledger encryption v1", 32)
	if err != nil {
		return nil, fmt.Errorf("derive encryption key: %w", err)
	}
	commitKey, err := hkdf.Key(sha256.New, raw, nil, "parley commit evidence v1", 32)
	if err != nil {
		return nil, fmt.Errorf("derive commit key: %w", err)
	}
	block, err := aes.NewCipher(encKey)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("gcm: %w", err)
	}
	s := &Secret{raw: bytes.Clone(raw), aead: aead}
	s.macs.New = func() any { return hmac.New(sha256.New, commitKey) }
	return s, nil
}

// Raw returns a copy of the 32-byte ledger secret, to be wrapped for
// recovery or encrypted under a newer secret; the caller clears it after
// use and never logs it.
func (s *Secret) Raw() []byte { return bytes.Clone(s.raw) }

// CommitEvidence returns the commit evidence of a transaction,
// "ce:<view>.<seqno>:<64 hex>". It is secret until the transaction commits.
func (s *Secret) CommitEvidence(id TxID) string {
	var buf [3 + 41 + 1 + 64]byte
	return string(s.appendCommitEvidence(buf[:0], id))
}

func (s *Secret) appendCommitEvidence(b []byte, id TxID) []byte {
	b = append(b, "ce:"...)
	idStart := len(b)
	b = strconv.AppendUint(b, id.View, 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, id.Seqno, 10)
	m := s.macs.Get().(hash.Hash)
	m.Reset()
	m.Write(b[idStart:])
	var sum [sha256.Size]byte
	mac := m.Sum(sum[:0])
	s.macs.Put(m)
	b = append(b, ':')
	return hex.AppendEncode(b, mac)
}

func (s *Secret) commitEvidenceDigest(id TxID) [32]byte {
	var buf [3 + 41 + 1 + 64]byte
	return sha256.Sum256(s.appendCommitEvidence(buf[:0], id))
}

// Tx is what the sequencer seals into a payload.
type Tx struct {
	ID     TxID
	Kind   Kind
	Claims [32]byte // zero when the transaction has no application claims
	// Public and Private are encoded write sets (package kv); Private is
	// empty when the transaction wrote no private map.
	Public  []byte
	Private []byte
}

// Seal appends the payload of tx to dst and returns it with the Merkle leaf
// of the transaction. tx.ID must be the transaction's final id: the nonce
// and the commit evidence are derived from it.
func (s *Secret) Seal(dst []byte, tx *Tx) (payload []byte, leaf [32]byte, err error) {
	p, err := Prepare(tx.Kind, tx.Claims, len(tx.Public)+len(tx.Private),
		func(b []byte) ([]byte, error) { return append(b, tx.Public...), nil },
		func(b []byte) ([]byte, error) { return append(b, tx.Private...), nil })
	if err != nil {
		return nil, leaf, err
	}
	payload, leaf, err = s.SealPrepared(p, tx.ID)
	if err != nil {
		return nil, leaf, err
	}
	return append(dst, payload...), leaf, nil
}

// Prepared is a payload laid out before its transaction id is known: the
// write sets are encoded in place, the id-dependent parts are left blank.
// Preparing off the sequencer's path (in the submitting goroutine) leaves
// the sequencer only what needs the id: the nonce, the commit evidence, the
// encryption (in place) and the digests.
type Prepared struct {
	buf     []byte // the payload, with room for the tag
	kind    Kind
	claims  [32]byte
	private int // offset of the private write set
}

// Prepare lays out a payload: appendPublic and appendPrivate append the
// encoded public and private write sets (appendPrivate may append nothing);
// sizeHint is their expected total size.
func Prepare(kind Kind, claims [32]byte, sizeHint int, appendPublic, appendPrivate func([]byte) ([]byte, error)) (*Prepared, error) {
	if kind != KindTx && kind != KindSignature {
		return nil, fmt.Errorf("prepare: kind %d cannot be sealed", kind)
	}
	buf := make([]byte, fixedSize, fixedSize+sizeHint+tagSize)
	buf[0] = version
	buf[1] = byte(kind)
	copy(buf[8:40], claims[:])
	var err error
	if buf, err = appendPublic(buf); err != nil {
		return nil, fmt.Errorf("prepare: public write set: %w", err)
	}
	binary.LittleEndian.PutUint64(buf[84:92], uint64(len(buf)-fixedSize))
	private := len(buf)
	if buf, err = appendPrivate(buf); err != nil {
		return nil, fmt.Errorf("prepare: private write set: %w", err)
	}
	if cap(buf)-len(buf) < tagSize {
		buf = grow(buf, tagSize)
	}
	return &Prepared{buf: buf, kind: kind, claims: claims, private: private}, nil
}

// Size is the size of the write sets prepared.
func (p *Prepared) Size() int { return len(p.buf) - fixedSize }

// SealPrepared completes a prepared payload for the transaction id,
// encrypting the private write set in place, and returns it with the
// transaction's Merkle leaf. A Prepared is sealed at most once.
func (s *Secret) SealPrepared(p *Prepared, id TxID) (payload []byte, leaf [32]byte, err error) {
	if id.View > MaxView {
		return nil, leaf, fmt.Errorf("seal: view %d does not fit the nonce", id.View)
	}
	if p.buf == nil {
		return nil, leaf, errors.New("seal: payload already sealed")
	}
	b := p.buf
	p.buf = nil
	ce := s.commitEvidenceDigest(id)
	copy(b[40:72], ce[:])
	nonce := Nonce(id)
	copy(b[72:84], nonce[:])
	plain := b[p.private:]
	sealed := s.aead.Seal(plain[:0], nonce[:], plain, b[:p.private])
	payload = b[:p.private+len(sealed)]
	wsd := sha256.Sum256(payload[headerSize:])
	return payload, receipt.Leaf(wsd, ce, p.claims), nil
}

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	nb := make([]byte, len(b), len(b)+n)
	copy(nb, b)
	return nb
}

// Parsed is a payload split into its parts. Its slices alias the payload.
type Parsed struct {
	Kind                 Kind
	ClaimsDigest         [32]byte
	CommitEvidenceDigest [32]byte
	Nonce                [nonceSize]byte
	Public               []byte // encoded public write set
	Sealed               []byte // ciphertext of the private write set, then the tag
	payload              []byte
}

// Parse splits a payload without decrypting it. An empty payload parses as a
// [KindNoop] entry.
func Parse(payload []byte) (Parsed, error) {
	if len(payload) == 0 {
		return Parsed{Kind: KindNoop}, nil
	}
	if len(payload) < fixedSize+tagSize {
		return Parsed{}, fmt.Errorf("%w: %d bytes is shorter than the fixed part", ErrMalformed, len(payload))
	}
	if payload[0] != version {
		return Parsed{}, fmt.Errorf("%w: version %d", ErrMalformed, payload[0])
	}
	k := Kind(payload[1])
	if k != KindTx && k != KindSignature {
		return Parsed{}, fmt.Errorf("%w: kind %d", ErrMalformed, payload[1])
	}
	for _, b := range payload[2:8] {
		if b != 0 {
			return Parsed{}, fmt.Errorf("%w: reserved bytes are not zero", ErrMalformed)
		}
	}
	pub := binary.LittleEndian.Uint64(payload[84:92])
	if pub > uint64(len(payload)-fixedSize-tagSize) {
		return Parsed{}, fmt.Errorf("%w: public write set of %d bytes overruns the entry", ErrMalformed, pub)
	}
	end := fixedSize + int(pub)
	p := Parsed{
		Kind:    k,
		Public:  payload[fixedSize:end:end],
		Sealed:  payload[end:],
		payload: payload,
	}
	copy(p.ClaimsDigest[:], payload[8:40])
	copy(p.CommitEvidenceDigest[:], payload[40:72])
	copy(p.Nonce[:], payload[72:84])
	return p, nil
}

// WriteSetDigest is SHA-256 of the entry as stored from the nonce on.
func (p *Parsed) WriteSetDigest() [32]byte {
	if p.Kind == KindNoop {
		return sha256.Sum256(nil)
	}
	return sha256.Sum256(p.payload[headerSize:])
}

// Leaf is the entry's Merkle leaf, computed without the ledger secret.
func (p *Parsed) Leaf() [32]byte {
	return receipt.Leaf(p.WriteSetDigest(), p.CommitEvidenceDigest, p.ClaimsDigest)
}

// CheckNonce reports whether the entry's nonce is the one its position
// (view, seqno) prescribes; a moved or replayed entry fails it.
func (p *Parsed) CheckNonce(id TxID) error {
	if p.Kind == KindNoop {
		return nil
	}
	if want := Nonce(id); p.Nonce != want {
		return fmt.Errorf("%w: nonce %x belongs to another transaction than %s", ErrMalformed, p.Nonce, id)
	}
	return nil
}

// Open authenticates the entry and decrypts its private write set. It
// returns nil for an entry without private writes.
func (s *Secret) Open(p *Parsed, id TxID) ([]byte, error) {
	if p.Kind == KindNoop {
		return nil, nil
	}
	if err := p.CheckNonce(id); err != nil {
		return nil, err
	}
	aad := p.payload[:fixedSize+len(p.Public)]
	plain, err := s.aead.Open(nil, p.Nonce[:], p.Sealed, aad)
	if err != nil {
		return nil, fmt.Errorf("%w: transaction %s does not authenticate under this ledger secret", ErrMalformed, id)
	}
	want := s.commitEvidenceDigest(id)
	if !hmac.Equal(want[:], p.CommitEvidenceDigest[:]) {
		return nil, fmt.Errorf("%w: transaction %s commit evidence digest does not match", ErrMalformed, id)
	}
	if len(plain) == 0 {
		return nil, nil
	}
	return plain, nil
}
