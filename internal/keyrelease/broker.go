// Package keyrelease is Parley's key broker, with Azure Key Vault's secure
// key release (SKR) semantics: a key is created with a release policy in
// the SKR JSON grammar ([Policy]); a release presents an attestation token
// (package attest) and gets the key wrapped to a public key from the
// token's x-ms-runtime.keys claim, only if the token verifies and its
// claims satisfy the policy.
//
// Keys live in the private map KeysMap, encrypted in the ledger under the
// ledger secret. Every creation and every release is a ledger transaction;
// a release writes a record (who, which token, to which runtime key) to the
// private map ReleasesMap, so its receipt proves the release happened.
//
// Clean-room data keys are a second kind: deposited with a dataset's
// registration ([Broker.DepositDatasetKey]) into DatasetKeysMap under a
// [RoomPolicy], and released only by [Broker.ReleaseDatasetKeys], which
// asks a [RoomGate] (the clean-room service) whether the contract may run
// and has it record the release or the refusal in the same transaction.
//
// # Wrapping
//
// An RSA runtime key (2048 bits or more, what Azure's SKR uses) gets
// RSA-OAEP-256 of the key bytes, the key's name bound as the OAEP label;
// an EC P-256 or P-384 runtime key gets HPKE (RFC 9180, Go's crypto/hpke)
// with AES-256-GCM, the key's name bound as info. Keys are symmetric and at
// most 64 bytes, so RSA-OAEP alone fits, and Azure's extra AES key-wrap
// layer (CKM_RSA_AES_KEY_WRAP, needed to wrap RSA private keys) is not used.
package keyrelease

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/parleyhq/parley/internal/attest"
	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
)

// Maps of the broker; both private.
const (
	// KeysMap maps a key name to its JSON record, key material included.
	KeysMap = "parley.keys"
	// ReleasesMap maps "name/id" to the JSON record of one release.
	ReleasesMap = "parley.keys.releases"
)

// Key sizes.
const (
	DefaultKeySize = 32
	MinKeySize     = 16
	MaxKeySize     = 64
)

// Errors of the broker.
var (
	// ErrKeyExists is returned by Create for a name already taken.
	ErrKeyExists = errors.New("key already exists")
	// ErrKeyNotFound is returned by Show and Release for an unknown name.
	ErrKeyNotFound = errors.New("key not found")
	// ErrInvalidName is returned for a key name outside [A-Za-z0-9-]{1,127}.
	ErrInvalidName = errors.New("invalid key name")
	// ErrInvalidKey is returned by Create for imported key bytes of a bad size.
	ErrInvalidKey = errors.New("invalid key material")
	// ErrNonceMismatch is returned by Release when the request's nonce is
	// missing or is not the token's nonce claim.
	ErrNonceMismatch = errors.New("nonce does not match the token")
)

// Key names follow Key Vault's.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9-]{1,127}$`)

// Ledger is what the broker needs of the engine.
type Ledger interface {
	Begin() *kv.Tx
	Commit(ctx context.Context, tx *kv.Tx, opts engine.CommitOptions) (ledger.TxID, error)
	WaitCommitted(ctx context.Context, id ledger.TxID) error
}

// TokenVerifier checks an attestation token and returns its claims;
// *attest.Verifier is one. Errors wrap attest.ErrInvalidToken.
type TokenVerifier interface {
	Verify(token string) (map[string]any, error)
}

// Broker creates and releases keys. It is safe for concurrent use.
type Broker struct {
	led    Ledger
	tokens TokenVerifier
	now    func() time.Time
}

// New returns a broker over l that accepts tokens tokens verifies.
func New(l Ledger, tokens TokenVerifier) *Broker {
	return &Broker{led: l, tokens: tokens, now: time.Now}
}

// Key is a key's public description: never its material.
type Key struct {
	Name          string          `json:"name"`
	Kty           string          `json:"kty"`
	Size          int             `json:"size"`
	ReleasePolicy json.RawMessage `json:"release_policy"`
	CreatedBy     string          `json:"createdBy"`
	Created       int64           `json:"created"`
}

// record is a key as stored in KeysMap.
type record struct {
	Key
	Material []byte `json:"material"`
}

// CreateRequest creates a key.
type CreateRequest struct {
	// Policy is the release policy, JSON in the SKR grammar.
	Policy []byte
	// Material, when set, is imported (MinKeySize to MaxKeySize bytes);
	// otherwise DefaultKeySize random bytes are made.
	Material []byte
}

// Create makes key name with a release policy, as one transaction by user.
func (b *Broker) Create(ctx context.Context, name string, req CreateRequest, user string) (*Key, ledger.TxID, error) {
	if !nameRE.MatchString(name) {
		return nil, ledger.TxID{}, fmt.Errorf("%w: %q", ErrInvalidName, truncate(name, 64))
	}
	if _, err := ParsePolicy(req.Policy); err != nil {
		return nil, ledger.TxID{}, err
	}
	material := req.Material
	if material == nil {
		material = make([]byte, DefaultKeySize)
		if _, err := rand.Read(material); err != nil {
			return nil, ledger.TxID{}, fmt.Errorf("create key: %w", err)
		}
	} else if len(material) < MinKeySize || len(material) > MaxKeySize {
		return nil, ledger.TxID{}, fmt.Errorf("%w: %d bytes, want %d to %d", ErrInvalidKey, len(material), MinKeySize, MaxKeySize)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, req.Policy); err != nil {
		return nil, ledger.TxID{}, fmt.Errorf("%w: %w", ErrInvalidPolicy, err)
	}
	rec := record{Key: Key{Name: name, Kty: "oct", Size: len(material), ReleasePolicy: json.RawMessage(compact.Bytes()), CreatedBy: user, Created: b.now().Unix()}, Material: material}
	enc, err := json.Marshal(rec)
	if err != nil {
		return nil, ledger.TxID{}, fmt.Errorf("create key: %w", err)
	}
	tx := b.led.Begin()
	if _, ok := tx.Get(KeysMap, name); ok {
		return nil, ledger.TxID{}, fmt.Errorf("%w: %s", ErrKeyExists, name)
	}
	tx.Put(KeysMap, name, enc)
	id, err := b.led.Commit(ctx, tx, engine.CommitOptions{})
	if errors.Is(err, kv.ErrConflict) {
		return nil, ledger.TxID{}, fmt.Errorf("%w: %s (created concurrently)", ErrKeyExists, name)
	}
	if err != nil {
		return nil, ledger.TxID{}, fmt.Errorf("create key: %w", err)
	}
	k := rec.Key
	return &k, id, nil
}

func (b *Broker) read(tx *kv.Tx, name string) (*record, error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("%w: %q", ErrInvalidName, truncate(name, 64))
	}
	v, ok := tx.Get(KeysMap, name)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrKeyNotFound, name)
	}
	var rec record
	if err := json.Unmarshal(v, &rec); err != nil {
		return nil, fmt.Errorf("stored key %s: %w", name, err)
	}
	return &rec, nil
}

// Show describes key name, without its material.
func (b *Broker) Show(name string) (*Key, error) {
	rec, err := b.read(b.led.Begin(), name)
	if err != nil {
		return nil, err
	}
	return &rec.Key, nil
}

// ReleaseRequest asks for a key.
type ReleaseRequest struct {
	// Token is the attestation token (the "target" of Key Vault's
	// release).
	Token string
	// Nonce must equal the token's nonce claim.
	Nonce string
	// KeyID, when set, picks the runtime key by kid.
	KeyID string
}

// Released is a released key, wrapped to the attested runtime key.
type Released struct {
	Name       string `json:"name"`
	Kty        string `json:"kty"`
	Enc        string `json:"enc"`
	Kid        string `json:"kid,omitempty"`
	Ciphertext []byte `json:"ciphertext"`
	// ReleaseID names the release's record in ReleasesMap.
	ReleaseID string `json:"releaseId"`
}

// releaseRecord is what the ledger keeps of a release.
type releaseRecord struct {
	Key         string `json:"key"`
	User        string `json:"user"`
	At          int64  `json:"at"`
	TokenSHA256 string `json:"tokenSha256"`
	TokenID     string `json:"jti,omitempty"`
	Issuer      string `json:"iss"`
	Nonce       string `json:"nonce"`
	Enc         string `json:"enc"`
	RuntimeKey  string `json:"runtimeKeyThumbprint"`
	Measurement string `json:"measurement,omitempty"`
	Type        string `json:"attestationType,omitempty"`
}

// Release verifies the token, checks the nonce and the key's release
// policy, and returns the key wrapped to the token's runtime key, recording
// the release in the same transaction as it reads the key. Errors wrap
// attest.ErrInvalidToken, ErrNonceMismatch, ErrKeyNotFound,
// ErrPolicyNotSatisfied or ErrNoRuntimeKey.
func (b *Broker) Release(ctx context.Context, name string, req ReleaseRequest, user string) (*Released, ledger.TxID, error) {
	claims, err := b.tokens.Verify(req.Token)
	if err != nil {
		return nil, ledger.TxID{}, err
	}
	nonce, _ := claims["nonce"].(string)
	if req.Nonce == "" || subtle.ConstantTimeCompare([]byte(nonce), []byte(req.Nonce)) != 1 {
		return nil, ledger.TxID{}, ErrNonceMismatch
	}
	tx := b.led.Begin()
	rec, err := b.read(tx, name)
	if err != nil {
		return nil, ledger.TxID{}, err
	}
	policy, err := ParsePolicy(rec.ReleasePolicy)
	if err != nil {
		return nil, ledger.TxID{}, fmt.Errorf("stored key %s: %w", name, err)
	}
	if err := policy.Evaluate(claims); err != nil {
		return nil, ledger.TxID{}, err
	}
	jwk, err := runtimeKey(claims, req.KeyID)
	if err != nil {
		return nil, ledger.TxID{}, err
	}
	enc, ct, err := wrap(jwk, name, rec.Material)
	if err != nil {
		return nil, ledger.TxID{}, err
	}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, ledger.TxID{}, fmt.Errorf("runtime key thumbprint: %w", err)
	}
	rid := make([]byte, 16)
	if _, err := rand.Read(rid); err != nil {
		return nil, ledger.TxID{}, fmt.Errorf("release id: %w", err)
	}
	tokSum := sha256.Sum256([]byte(req.Token))
	jti, _ := claims["jti"].(string)
	iss, _ := claims["iss"].(string)
	typ, _ := claims["x-ms-attestation-type"].(string)
	meas, _ := claims["x-parley-measurement"].(string)
	rr, err := json.Marshal(releaseRecord{
		Key: name, User: user, At: b.now().Unix(), TokenSHA256: hex.EncodeToString(tokSum[:]), TokenID: truncate(jti, 128),
		Issuer: truncate(iss, 256), Nonce: truncate(nonce, attest.MaxNonceSize), Enc: enc, RuntimeKey: hex.EncodeToString(tp),
		Measurement: truncate(meas, 256), Type: truncate(typ, 64),
	})
	if err != nil {
		return nil, ledger.TxID{}, fmt.Errorf("release record: %w", err)
	}
	releaseID := name + "/" + hex.EncodeToString(rid)
	tx.Put(ReleasesMap, releaseID, rr)
	id, err := b.led.Commit(ctx, tx, engine.CommitOptions{})
	if err != nil {
		// A conflict means the key changed under us; the caller may retry.
		return nil, ledger.TxID{}, fmt.Errorf("record release: %w", err)
	}
	// The key leaves only once its release record is committed, so that
	// no key is ever out without its record on the ledger.
	if err := b.led.WaitCommitted(ctx, id); err != nil {
		return nil, ledger.TxID{}, fmt.Errorf("wait for the release %v to commit: %w", id, err)
	}
	return &Released{Name: name, Kty: rec.Kty, Enc: enc, Kid: jwk.KeyID, Ciphertext: ct, ReleaseID: releaseID}, id, nil
}
