package gov

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/shamir"
)

// Recovery maps; see the package documentation.
const (
	// RecoverySharesMap holds, by member id, the member's share of the
	// ledger secret wrapping key encrypted to its encryption key (JSON
	// RecoveryShare).
	RecoverySharesMap = "public:ccf.gov.recovery_shares"
	// WrappedSecretMap holds, under key "", the ledger secret wrapped by the
	// wrapping key and what the shares were made for (JSON WrappedSecret).
	WrappedSecretMap = "public:ccf.internal.recovery.wrapped_ledger_secret"
)

// wrapKeySize is the size of the ledger secret wrapping key (AES-256).
const wrapKeySize = 32

// wrapAAD binds a wrapped ledger secret to its purpose.
var wrapAAD = []byte("parley ledger secret wrap v1")

// ErrNoRecoveryShare is returned for a member without a recovery share.
var ErrNoRecoveryShare = errors.New("no recovery share")

// SecretSource gives the current ledger secret's raw bytes, to wrap them
// for recovery. Each call returns a fresh copy, which the caller clears.
type SecretSource interface {
	LedgerSecret() []byte
}

// RecoveryShare is the value of RecoverySharesMap: a member's share of the
// ledger secret wrapping key, encrypted with RSA-OAEP-256 (SHA-256, no
// label) to the member's encryption key. The plaintext is a Shamir share
// (package shamir): the share bytes followed by its x coordinate.
type RecoveryShare struct {
	EncryptedShare []byte `json:"encryptedShare"`
}

// WrappedSecret is the value of WrappedSecretMap: the ledger secret sealed
// with AES-256-GCM under the wrapping key (12-byte nonce, then ciphertext
// and tag; additional data "parley ledger secret wrap v1"), the threshold
// the wrapping key was split with, and the recovery members it was split
// among, each with the hex SHA-256 of the encryption key PEM its share is
// encrypted to.
type WrappedSecret struct {
	WrappedLedgerSecret []byte            `json:"wrappedLedgerSecret"`
	Threshold           int               `json:"threshold"`
	Members             map[string]string `json:"members"`
}

// recoveryMembers returns the members with an encryption key, each with
// its key PEM, and the recovery threshold: the configured one, or every
// recovery member when none is set.
func recoveryMembers(tx *kv.Tx) (map[string][]byte, int) {
	keys := map[string][]byte{}
	tx.Foreach(EncryptionKeysMap, func(k string, v []byte) bool {
		if _, ok := tx.Get(MembersMap, k); ok {
			keys[k] = bytes.Clone(v)
		}
		return true
	})
	t := recoveryThresholdOf(tx)
	if t == 0 {
		t = len(keys)
	}
	return keys, t
}

func keyDigests(keys map[string][]byte) map[string]string {
	out := make(map[string]string, len(keys))
	for id, pem := range keys {
		d := sha256.Sum256(pem)
		out[id] = hex.EncodeToString(d[:])
	}
	return out
}

func readWrapped(tx *kv.Tx) (*WrappedSecret, bool) {
	b, ok := tx.Get(WrappedSecretMap, "")
	if !ok {
		return nil, false
	}
	var w WrappedSecret
	if json.Unmarshal(b, &w) != nil {
		return nil, false
	}
	return &w, true
}

// sharesStale reports whether the recorded shares were made for another
// set of recovery members, keys or threshold than tx's.
func sharesStale(tx *kv.Tx) bool {
	keys, t := recoveryMembers(tx)
	w, ok := readWrapped(tx)
	if !ok {
		return len(keys) > 0
	}
	return w.Threshold != t || !maps.Equal(w.Members, keyDigests(keys))
}

// reshareIfStale re-shares the ledger secret in tx when the recovery
// members, their keys or the threshold changed. It does nothing without a
// SecretSource.
func (s *Service) reshareIfStale(tx *kv.Tx) error {
	if s.secrets == nil || !sharesStale(tx) {
		return nil
	}
	if !s.eng.PrivateOpen() {
		// The recorded shares are the only way back to the previous
		// ledger secret: they must stay until the restore.
		return applyErr("recovery members and threshold cannot change while the service is recovering")
	}
	return s.reshare(tx)
}

// reshare wraps the current ledger secret under a fresh wrapping key,
// splits the key among the recovery members and writes the wrapped secret
// and the encrypted shares in tx, replacing the previous ones.
func (s *Service) reshare(tx *kv.Tx) error {
	secret := s.secrets.LedgerSecret()
	defer clear(secret)
	return s.reshareWith(tx, secret)
}

// reshareWith is reshare for a given raw ledger secret.
func (s *Service) reshareWith(tx *kv.Tx, secret []byte) error {
	keys, t := recoveryMembers(tx)
	var stale []string
	tx.Foreach(RecoverySharesMap, func(k string, _ []byte) bool {
		if _, ok := keys[k]; !ok {
			stale = append(stale, k)
		}
		return true
	})
	for _, k := range stale {
		tx.Delete(RecoverySharesMap, k)
	}
	if len(keys) == 0 {
		tx.Delete(WrappedSecretMap, "")
		return nil
	}
	if t > len(keys) {
		return applyErr("recovery threshold %d over the %d recovery members", t, len(keys))
	}
	if len(secret) == 0 {
		return fmt.Errorf("reshare: no ledger secret")
	}
	wrapKey := make([]byte, wrapKeySize)
	defer clear(wrapKey)
	if _, err := rand.Read(wrapKey); err != nil {
		return fmt.Errorf("reshare: wrapping key: %w", err)
	}
	wrapped, err := seal(wrapKey, secret)
	if err != nil {
		return err
	}
	ids := make([]string, 0, len(keys))
	for id := range keys {
		ids = append(ids, id)
	}
	// Sorted ids give share i to the i-th member, for reproducible layout.
	slices.Sort(ids)
	shares, err := shamir.Split(wrapKey, len(ids), t)
	if err != nil {
		return fmt.Errorf("reshare: %w", err)
	}
	defer func() {
		for _, sh := range shares {
			clear(sh)
		}
	}()
	for i, id := range ids {
		pub, err := ParseEncryptionKey(keys[id])
		if err != nil {
			return applyErr("member %s encryption key: %v", id, err)
		}
		enc, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, shares[i], nil)
		if err != nil {
			return fmt.Errorf("reshare: encrypt share of member %s: %w", id, err)
		}
		tx.Put(RecoverySharesMap, id, mustJSON(RecoveryShare{EncryptedShare: enc}))
	}
	tx.Put(WrappedSecretMap, "", mustJSON(WrappedSecret{WrappedLedgerSecret: wrapped, Threshold: t, Members: keyDigests(keys)}))
	return nil
}

func seal(key, plaintext []byte) ([]byte, error) {
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("wrap ledger secret: nonce: %w", err)
	}
	return aead.Seal(nonce, nonce, plaintext, wrapAAD), nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("wrapping key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("wrapping key: %w", err)
	}
	return aead, nil
}

// EnsureRecoveryShares re-shares the ledger secret in a transaction of its
// own if the recorded shares are missing or were made for other recovery
// members or another threshold (at the first start after genesis, say). It
// reports whether it wrote anything.
func (s *Service) EnsureRecoveryShares(ctx context.Context) (bool, ledger.TxID, error) {
	if s.secrets == nil || !s.eng.PrivateOpen() {
		return false, ledger.TxID{}, nil
	}
	wrote := false
	id, err := s.run(ctx, func() (*kv.Tx, error) {
		tx := s.eng.Begin()
		wrote = sharesStale(tx)
		if !wrote {
			return nil, errNothingToDo
		}
		if err := s.reshare(tx); err != nil {
			return nil, err
		}
		return tx, nil
	})
	if errors.Is(err, errNothingToDo) {
		return false, ledger.TxID{}, nil
	}
	if err != nil {
		return false, ledger.TxID{}, fmt.Errorf("recovery shares: %w", err)
	}
	return true, id, nil
}

var errNothingToDo = errors.New("nothing to do")

// RecoveryShare returns member id's encrypted share, or an error wrapping
// ErrNoRecoveryShare.
func (s *Service) RecoveryShare(id string) (*RecoveryShare, error) {
	b, ok := s.eng.Begin().Get(RecoverySharesMap, id)
	if !ok {
		return nil, fmt.Errorf("member %.80s: %w", id, ErrNoRecoveryShare)
	}
	var r RecoveryShare
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("member %s share: %w", id, err)
	}
	return &r, nil
}

// WrappedLedgerSecret returns the recorded wrapped ledger secret, or an
// error wrapping ErrNoRecoveryShare when there is none.
func (s *Service) WrappedLedgerSecret() (*WrappedSecret, error) {
	w, ok := readWrapped(s.eng.Begin())
	if !ok {
		return nil, fmt.Errorf("wrapped ledger secret: %w", ErrNoRecoveryShare)
	}
	return w, nil
}

// DecryptShare decrypts a member's encrypted recovery share with its
// encryption private key (RSA-OAEP-256).
func DecryptShare(key *rsa.PrivateKey, encrypted []byte) ([]byte, error) {
	share, err := rsa.DecryptOAEP(sha256.New(), nil, key, encrypted, nil)
	if err != nil {
		return nil, fmt.Errorf("decrypt recovery share: %w", err)
	}
	return share, nil
}

// UnwrapLedgerSecret combines decrypted shares into the wrapping key and
// opens the wrapped ledger secret with it. Too few shares give a wrong key,
// which the authenticated decryption refuses.
func UnwrapLedgerSecret(wrapped []byte, shares [][]byte) ([]byte, error) {
	key, err := shamir.Combine(shares)
	if err != nil {
		return nil, fmt.Errorf("unwrap ledger secret: %w", err)
	}
	defer clear(key)
	if len(key) != wrapKeySize {
		return nil, fmt.Errorf("unwrap ledger secret: shares give a %d-byte key, want %d", len(key), wrapKeySize)
	}
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	if len(wrapped) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("unwrap ledger secret: %d bytes, too short", len(wrapped))
	}
	n := aead.NonceSize()
	secret, err := aead.Open(nil, wrapped[:n], wrapped[n:], wrapAAD)
	if err != nil {
		return nil, fmt.Errorf("unwrap ledger secret: wrong or too few shares: %w", err)
	}
	return secret, nil
}
