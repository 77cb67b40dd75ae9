package engine

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"

	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
)

// Maps the engine itself interprets (see docs/ledger-format.md).
const (
	// NextSecretMap is the private map a ledger secret rotation writes its
	// new 32-byte secret to, under NextSecretKey. The rotation transaction
	// at seqno N is sealed under the old secret, so whoever can open it
	// learns the new one, which seals every entry from N+1 on.
	NextSecretMap = "ccf.internal.ledger_secret_next"
	NextSecretKey = "0"
	// HistoricalSecretsMap is the public map in which a rotation records,
	// under key "", every earlier ledger secret encrypted under the new
	// one (JSON HistoricalSecrets), so that the latest secret alone opens
	// the whole ledger.
	HistoricalSecretsMap = "public:ccf.internal.historical_ledger_secrets"
)

// ErrPrivateClosed is returned for what needs the private state or a
// ledger secret this node does not have: the private domain of a ledger
// being recovered, before its secrets are restored.
var ErrPrivateClosed = errors.New("private state is closed until the ledger secrets are recovered")

// Epoch is a ledger secret and the first seqno it seals.
type Epoch struct {
	From   uint64
	Secret *ledger.Secret
}

// HistoricalSecrets is the value of HistoricalSecretsMap: the ledger
// secrets in use before the transaction that writes it, oldest first,
// each with the first seqno it sealed, encrypted under the secret that
// transaction introduces.
type HistoricalSecrets struct {
	Secrets []HistoricalSecret `json:"secrets"`
}

// HistoricalSecret is one earlier ledger secret: AES-256-GCM under a key
// derived from the newer secret (HKDF-SHA256, info "parley historical
// ledger secrets v1"), 12-byte random nonce first, additional data
// "parley historical ledger secret v1 from=<From>".
type HistoricalSecret struct {
	From            uint64 `json:"from"`
	EncryptedSecret []byte `json:"encryptedSecret"`
}

// secretState is the engine's ledger secrets by seqno, guarded by e.mu.
type secretState struct {
	// epochs, ascending by From. Entries before epochs[0].From are in the
	// closed private domain of a ledger being recovered: their public
	// write sets are applied, their private ones are not.
	epochs []Epoch
	// lastClosedRotation is the seqno of the last entry in the closed
	// domain that wrote HistoricalSecretsMap: the latest closed secret
	// seals from the entry after it.
	lastClosedRotation uint64
	// endorsements by earlier service identities, ascending by LastSeqno.
	endorsements []ServiceEndorsement
}

// initSecrets sets the epochs from cfg: cfg.Secrets, else cfg.Secret from
// seqno 1.
func (e *Engine) initSecrets(cfg *Config) error {
	eps := cfg.Secrets
	if len(eps) == 0 {
		if cfg.Secret == nil {
			return errors.New("engine: Secret or Secrets is required")
		}
		eps = []Epoch{{From: 1, Secret: cfg.Secret}}
	}
	for i, ep := range eps {
		if ep.Secret == nil || ep.From == 0 || (i > 0 && ep.From <= eps[i-1].From) {
			return fmt.Errorf("engine: ledger secret %d: want a secret and seqnos ascending from 1", i)
		}
	}
	e.keys.epochs = append([]Epoch(nil), eps...)
	return nil
}

// secretForLocked is the secret that seals seqno, nil in the closed
// domain. Called with e.mu held.
func (e *Engine) secretForLocked(seqno uint64) *ledger.Secret {
	eps := e.keys.epochs
	i := sort.Search(len(eps), func(i int) bool { return eps[i].From > seqno })
	if i == 0 {
		return nil
	}
	return eps[i-1].Secret
}

func (e *Engine) secretFor(seqno uint64) *ledger.Secret {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.secretForLocked(seqno)
}

// PrivateOpen reports whether every entry's private write set is readable:
// false while a recovered ledger's secrets are not restored.
func (e *Engine) PrivateOpen() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.keys.epochs[0].From == 1
}

// LedgerSecret returns a copy of the latest ledger secret, to be wrapped
// for recovery; the caller clears it after use.
func (e *Engine) LedgerSecret() []byte {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.keys.epochs[len(e.keys.epochs)-1].Secret.Raw()
}

// Epochs returns the ledger secrets this node knows, by first seqno.
func (e *Engine) Epochs() []Epoch {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return append([]Epoch(nil), e.keys.epochs...)
}

// PrepareRotation writes a ledger secret rotation into tx: a fresh random
// secret in NextSecretMap and every secret in use so far, encrypted under
// it, in HistoricalSecretsMap. When tx commits at seqno N, the new secret
// seals every entry from N+1 on. It returns a copy of the new secret (to
// wrap for recovery in the same transaction); the caller clears it.
// Concurrent rotations conflict (each reads HistoricalSecretsMap).
func (e *Engine) PrepareRotation(tx *kv.Tx) ([]byte, error) {
	if !e.PrivateOpen() {
		return nil, fmt.Errorf("rotate ledger secret: %w", ErrPrivateClosed)
	}
	tx.Get(HistoricalSecretsMap, "") // a read, so that rotations conflict
	return e.writeRotation(tx, e.Epochs())
}

// writeRotation writes a fresh secret and the encrypted history of eps
// into tx.
func (e *Engine) writeRotation(tx *kv.Tx, eps []Epoch) ([]byte, error) {
	raw := make([]byte, ledger.SecretSize)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("rotate ledger secret: %w", err)
	}
	hist, err := encryptHistory(raw, eps)
	if err != nil {
		clear(raw)
		return nil, err
	}
	tx.Put(NextSecretMap, NextSecretKey, raw)
	tx.Put(HistoricalSecretsMap, "", hist)
	return raw, nil
}

func historyAEAD(newer []byte) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, newer, nil, "parley historical ledger secrets v1", 32)
	if err != nil {
		return nil, fmt.Errorf("historical secrets key: %w", err)
	}
	defer clear(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("historical secrets key: %w", err)
	}
	return cipher.NewGCM(block)
}

func historyAAD(from uint64) []byte {
	return strconv.AppendUint([]byte("parley historical ledger secret v1 from="), from, 10)
}

func encryptHistory(newer []byte, eps []Epoch) ([]byte, error) {
	aead, err := historyAEAD(newer)
	if err != nil {
		return nil, err
	}
	var h HistoricalSecrets
	for _, ep := range eps {
		raw := ep.Secret.Raw()
		nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(raw)+aead.Overhead())
		if _, err := rand.Read(nonce); err != nil {
			clear(raw)
			return nil, fmt.Errorf("historical secrets: %w", err)
		}
		h.Secrets = append(h.Secrets, HistoricalSecret{From: ep.From, EncryptedSecret: aead.Seal(nonce, nonce, raw, historyAAD(ep.From))})
		clear(raw)
	}
	return json.Marshal(h)
}

// DecryptHistory opens a HistoricalSecretsMap value with the secret that
// followed it and returns the earlier secrets, oldest first.
func DecryptHistory(newer, value []byte) ([]Epoch, error) {
	var h HistoricalSecrets
	if err := json.Unmarshal(value, &h); err != nil {
		return nil, fmt.Errorf("historical secrets: %w", err)
	}
	aead, err := historyAEAD(newer)
	if err != nil {
		return nil, err
	}
	out := make([]Epoch, 0, len(h.Secrets))
	for i, hs := range h.Secrets {
		n := aead.NonceSize()
		if len(hs.EncryptedSecret) < n+aead.Overhead() || hs.From == 0 || (i > 0 && hs.From <= h.Secrets[i-1].From) {
			return nil, fmt.Errorf("historical secret %d: malformed", i)
		}
		raw, err := aead.Open(nil, hs.EncryptedSecret[:n], hs.EncryptedSecret[n:], historyAAD(hs.From))
		if err != nil {
			return nil, fmt.Errorf("historical secret %d (from %d) does not open under the newer secret", i, hs.From)
		}
		s, err := ledger.NewSecret(raw)
		clear(raw)
		if err != nil {
			return nil, fmt.Errorf("historical secret %d: %w", i, err)
		}
		out = append(out, Epoch{From: hs.From, Secret: s})
	}
	return out, nil
}

// rotationIn returns the new secret a transaction's private write set
// introduces, nil if it is not a rotation.
func rotationIn(ws *kv.WriteSet) (*ledger.Secret, error) {
	for _, m := range ws.Maps {
		if m.Map != NextSecretMap {
			continue
		}
		for _, w := range m.Writes {
			if w.Key == NextSecretKey && !w.Deleted {
				s, err := ledger.NewSecret(w.Value)
				if err != nil {
					return nil, fmt.Errorf("rotation: %w", err)
				}
				return s, nil
			}
		}
	}
	return nil, nil
}

func writes(ws *kv.WriteSet, m string) bool {
	for _, mw := range ws.Maps {
		if mw.Map == m {
			return true
		}
	}
	return false
}

// noteSecretsLocked follows the log's rotations for the entry at seqno:
// an opened rotation adds an epoch from seqno+1; a closed one is
// remembered for recovery. Called with e.mu held.
func (e *Engine) noteSecretsLocked(seqno uint64, rotation *ledger.Secret, ws *kv.WriteSet, opened bool) {
	switch {
	case rotation != nil:
		from := seqno + 1
		i := sort.Search(len(e.keys.epochs), func(i int) bool { return e.keys.epochs[i].From >= from })
		if i < len(e.keys.epochs) && e.keys.epochs[i].From == from {
			// Known already: a node that joined was given the secrets of
			// the rotations it now replays.
			return
		}
		e.keys.epochs = slices.Insert(e.keys.epochs, i, Epoch{From: from, Secret: rotation})
	case !opened && ws != nil && writes(ws, HistoricalSecretsMap):
		e.keys.lastClosedRotation = seqno
	}
}

// trimSecretsLocked forgets the rotations of entries after index (rolled
// back). Called with e.mu held.
func (e *Engine) trimSecretsLocked(index uint64) {
	eps := e.keys.epochs
	for len(eps) > 1 && eps[len(eps)-1].From > index+1 {
		eps = eps[:len(eps)-1]
	}
	e.keys.epochs = eps
}

// checkPrivate is Commit's check of a transaction's private writes: none
// while the private state is closed (they would be overwritten by the
// restored state), and the new secret of a rotation.
func (e *Engine) checkPrivate(priv *kv.WriteSet, restoring bool) (*ledger.Secret, error) {
	if priv.Empty() {
		return nil, nil
	}
	if !restoring && !e.PrivateOpen() {
		return nil, ErrPrivateClosed
	}
	return rotationIn(priv)
}
