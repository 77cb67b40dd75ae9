package keyrelease

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/go-jose/go-jose/v4"

	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
)

// DatasetKeysMap holds clean-room data keys: "room/dataset" to the JSON
// record of the key, material included. It is private, so encrypted in the
// ledger under the ledger secret. These keys are never served by the
// generic /app/keys routes: only ReleaseDatasetKeys releases them.
const DatasetKeysMap = "parley.keys.datasets"

// PolicyKindCleanRoom is the kind of a data key's release policy.
const PolicyKindCleanRoom = "parley-cleanroom"

// RoomPolicy is the release policy of a clean-room data key. It is not an
// SKR claim policy: it names the room and dataset, and a release is
// allowed only when all of these hold, checked in the release
// transaction:
//
//   - the caller presents an attestation token of this service (signature,
//     issuer, audience, lifetime) and its nonce;
//   - the runner's measurement (the token's x-parley-measurement claim, or
//     x-parley-virtual-measurement for virtual evidence) is one the
//     contract allows;
//   - the contract is approved by every owner of every dataset it reads
//     and not suspended (the RoomGate decides);
//   - the dataset is one the contract reads.
//
// The key is then wrapped to the public key in the token's
// x-ms-runtime.keys, which the evidence's report data binds, so only the
// attested runner holding that key's private half can unwrap it.
type RoomPolicy struct {
	Version string `json:"version"`
	Kind    string `json:"kind"`
	Room    string `json:"room"`
	Dataset string `json:"dataset"`
}

// datasetKey is a data key as stored in DatasetKeysMap.
type datasetKey struct {
	Policy   RoomPolicy `json:"release_policy"`
	Owner    string     `json:"owner"`
	Created  int64      `json:"created"`
	Material []byte     `json:"material"`
}

// DepositDatasetKey stores a dataset's data key (MinKeySize to MaxKeySize
// bytes), writing into the caller's transaction tx so that the key and the
// dataset's registration commit together. It fails if the dataset already
// has a key.
func (b *Broker) DepositDatasetKey(tx *kv.Tx, room, dataset string, key []byte, owner string) error {
	if len(key) < MinKeySize || len(key) > MaxKeySize {
		return fmt.Errorf("%w: %d bytes, want %d to %d", ErrInvalidKey, len(key), MinKeySize, MaxKeySize)
	}
	k := room + "/" + dataset
	if _, ok := tx.Get(DatasetKeysMap, k); ok {
		return fmt.Errorf("%w: data key of %s", ErrKeyExists, k)
	}
	rec := datasetKey{
		Policy:   RoomPolicy{Version: "1.0.0", Kind: PolicyKindCleanRoom, Room: room, Dataset: dataset},
		Owner:    owner,
		Created:  b.now().Unix(),
		Material: key,
	}
	enc, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode data key: %w", err)
	}
	tx.Put(DatasetKeysMap, k, enc)
	return nil
}

// RoomGate is the clean-room side of a data key release;
// *cleanroom.Service is one. Both methods read and write through the
// release's transaction, so the decision and its record commit together.
type RoomGate interface {
	// AuthorizeRelease returns the datasets whose keys a runner with
	// measurement may have to run contract of room. A refusal wraps
	// ErrPolicyNotSatisfied and says why; any other error (an unknown room
	// or contract) is not recorded.
	AuthorizeRelease(tx *kv.Tx, room, contract, measurement string) ([]string, error)
	// RecordRelease writes the record of a release or refusal into tx
	// and returns the claims digest to commit the transaction with.
	RecordRelease(tx *kv.Tx, r RoomRelease) ([32]byte, error)
}

// RoomRelease is what the ledger records of a data key release or refusal.
type RoomRelease struct {
	Room, Contract  string
	Measurement     string
	AttestationType string
	// RuntimeKey is the hex RFC 7638 SHA-256 thumbprint of the runtime
	// key the data keys were (or would have been) wrapped to.
	RuntimeKey  string
	TokenSHA256 string
	// Datasets are the datasets whose keys were released.
	Datasets []string
	// Refused, when set, is why the release was refused.
	Refused string
}

// RoomReleaseRequest asks for the data keys of a contract.
type RoomReleaseRequest struct {
	Room, Contract string
	Token          string
	Nonce          string
	// KeyID, when set, picks the runtime key by kid.
	KeyID string
}

// WrappedKey is one dataset's data key wrapped to the runtime key, with
// WrapInfo(room+"/"+dataset) as the HPKE info or OAEP label.
type WrappedKey struct {
	Dataset    string `json:"dataset"`
	Enc        string `json:"enc"`
	Ciphertext []byte `json:"ciphertext"`
}

// DatasetKeys is the answer to a granted request.
type DatasetKeys struct {
	Room        string       `json:"room"`
	Contract    string       `json:"contract"`
	Measurement string       `json:"measurement"`
	Kid         string       `json:"kid,omitempty"`
	Keys        []WrappedKey `json:"keys"`
}

// RefusedError is returned by ReleaseDatasetKeys when the release was
// refused and the refusal recorded: TxID is the refusal's transaction. It
// wraps ErrPolicyNotSatisfied.
type RefusedError struct {
	TxID ledger.TxID
	Err  error
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%v (refusal recorded in transaction %s)", e.Err, e.TxID)
}
func (e *RefusedError) Unwrap() error { return e.Err }

// Measurement returns the runner measurement claims carry: x-parley-
// measurement, or for virtual evidence x-parley-virtual-measurement.
func Measurement(claims map[string]any) string {
	if m, ok := claims["x-parley-measurement"].(string); ok && m != "" {
		return m
	}
	if v, _ := claims["x-parley-virtual"].(bool); v {
		m, _ := claims["x-parley-virtual-measurement"].(string)
		return m
	}
	return ""
}

// RuntimeKeyThumbprint returns the hex RFC 7638 SHA-256 thumbprint of the
// runtime key in claims (the one with kid, when kid is set), the key a
// release wraps to. Errors wrap ErrNoRuntimeKey.
func RuntimeKeyThumbprint(claims map[string]any, kid string) (string, error) {
	jwk, err := runtimeKey(claims, kid)
	if err != nil {
		return "", err
	}
	return thumbprint(jwk)
}

func thumbprint(jwk *jose.JSONWebKey) (string, error) {
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("runtime key thumbprint: %w", err)
	}
	return hex.EncodeToString(tp), nil
}

// VerifyToken checks an attestation token and its nonce and returns its
// claims. Errors wrap attest.ErrInvalidToken or ErrNonceMismatch.
func (b *Broker) VerifyToken(token, nonce string) (map[string]any, error) {
	claims, err := b.tokens.Verify(token)
	if err != nil {
		return nil, err
	}
	got, _ := claims["nonce"].(string)
	if nonce == "" || subtle.ConstantTimeCompare([]byte(got), []byte(nonce)) != 1 {
		return nil, ErrNonceMismatch
	}
	return claims, nil
}

// ErrTokenBinding is returned by ReleaseDatasetKeys and BoundTo when the
// token's runtime data does not name the room and contract asked for.
var ErrTokenBinding = errors.New("the token is not bound to this room and contract")

// BoundTo checks that a runner's token claims were attested for room and
// contract: its runtime data (x-ms-runtime, bound by the evidence's report
// data) holds "room" and "contract" with those values, so a token made
// for one contract serves no other.
func BoundTo(claims map[string]any, room, contract string) error {
	return boundTo(claims, room, contract)
}

func boundTo(claims map[string]any, room, contract string) error {
	rt, _ := claims["x-ms-runtime"].(map[string]any)
	r, _ := rt["room"].(string)
	c, _ := rt["contract"].(string)
	if r != room || c != contract {
		return fmt.Errorf("%w: runtime data names room %.80q contract %.80q", ErrTokenBinding, r, c)
	}
	return nil
}

// ReleaseDatasetKeys releases the data keys of every dataset a contract
// reads to an attested runner, under the clean-room policy (see
// RoomPolicy). The token's runtime data must name the room and contract
// (ErrTokenBinding otherwise). The release, or the refusal with its reason, is one ledger
// transaction whose record gate writes; keys leave only once the release
// is committed. An invalid token or nonce (attest.ErrInvalidToken,
// ErrNonceMismatch), a token without a runtime key (ErrNoRuntimeKey) or an
// unknown contract is refused without a record, so that requests nobody
// attested cannot write to the ledger. A recorded refusal is a
// *RefusedError.
func (b *Broker) ReleaseDatasetKeys(ctx context.Context, gate RoomGate, req RoomReleaseRequest) (*DatasetKeys, ledger.TxID, error) {
	claims, err := b.VerifyToken(req.Token, req.Nonce)
	if err != nil {
		return nil, ledger.TxID{}, err
	}
	if err := boundTo(claims, req.Room, req.Contract); err != nil {
		return nil, ledger.TxID{}, err
	}
	jwk, err := runtimeKey(claims, req.KeyID)
	if err != nil {
		return nil, ledger.TxID{}, err
	}
	tp, err := thumbprint(jwk)
	if err != nil {
		return nil, ledger.TxID{}, err
	}
	tokSum := sha256.Sum256([]byte(req.Token))
	typ, _ := claims["x-ms-attestation-type"].(string)
	rec := RoomRelease{
		Room: req.Room, Contract: req.Contract, Measurement: truncate(Measurement(claims), 256), AttestationType: truncate(typ, 64),
		RuntimeKey: tp, TokenSHA256: hex.EncodeToString(tokSum[:]),
	}
	var out *DatasetKeys
	var refusal error
	id, err := engine.RetryClaims(ctx, b.led, func(tx *kv.Tx) ([32]byte, error) {
		out, refusal = nil, nil
		names, err := gate.AuthorizeRelease(tx, req.Room, req.Contract, rec.Measurement)
		if errors.Is(err, ErrPolicyNotSatisfied) {
			refusal = err
		} else if err != nil {
			return [32]byte{}, err
		}
		r := rec
		if refusal == nil {
			out = &DatasetKeys{Room: req.Room, Contract: req.Contract, Measurement: rec.Measurement, Kid: jwk.KeyID}
			for _, name := range names {
				v, ok := tx.Get(DatasetKeysMap, req.Room+"/"+name)
				if !ok {
					refusal = fmt.Errorf("%w: dataset %s has no data key", ErrPolicyNotSatisfied, name)
					break
				}
				var dk datasetKey
				if err := json.Unmarshal(v, &dk); err != nil {
					return [32]byte{}, fmt.Errorf("stored data key %s/%s: %w", req.Room, name, err)
				}
				if dk.Policy.Kind != PolicyKindCleanRoom || dk.Policy.Room != req.Room || dk.Policy.Dataset != name {
					refusal = fmt.Errorf("%w: the data key of %s is not bound to room %s", ErrPolicyNotSatisfied, name, req.Room)
					break
				}
				enc, ct, err := wrap(jwk, req.Room+"/"+name, dk.Material)
				if err != nil {
					return [32]byte{}, err
				}
				out.Keys = append(out.Keys, WrappedKey{Dataset: name, Enc: enc, Ciphertext: ct})
			}
			r.Datasets = names
		}
		if refusal != nil {
			out = nil
			r.Datasets = nil
			r.Refused = truncate(refusal.Error(), 1024)
		}
		// The refusal is recorded in the transaction that read what it
		// was decided on, so it commits only if that still holds.
		return gate.RecordRelease(tx, r)
	})
	if err != nil {
		return nil, ledger.TxID{}, fmt.Errorf("record release: %w", err)
	}
	if err := b.led.WaitCommitted(ctx, id); err != nil {
		return nil, ledger.TxID{}, fmt.Errorf("wait for the release %v to commit: %w", id, err)
	}
	if refusal != nil {
		return nil, id, &RefusedError{TxID: id, Err: refusal}
	}
	return out, id, nil
}
