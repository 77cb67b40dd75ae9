package attest

import (
	"context"
	"crypto/sha256"
	"fmt"

	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/tee"
)

// PoliciesMap holds the appraisal policy, in clear: who may attest is
// public. Key PolicyKey holds the policy's JSON.
//
// Until governance proposals exist (issue 5), an Administrator sets it
// through a temporary endpoint; see docs/attestation.md.
const (
	PoliciesMap = "public:parley.attestation.policies"
	PolicyKey   = "default"
)

// Ledger is what the policy store needs of the engine.
type Ledger interface {
	Begin() *kv.Tx
	Commit(ctx context.Context, tx *kv.Tx, opts engine.CommitOptions) (ledger.TxID, error)
}

// LedgerPolicy returns a PolicySource reading the policy from the ledger.
// With no policy set it returns the empty policy, which refuses every
// platform.
func LedgerPolicy(l Ledger) PolicySource {
	return func() (*tee.Policy, []byte, error) {
		p, enc, err := ReadPolicy(l.Begin())
		if err != nil {
			return nil, nil, err
		}
		sum := sha256.Sum256(enc)
		return p, sum[:], nil
	}
}

// ReadPolicy reads the policy in tx, returning the empty policy (which
// refuses everything) when none is set, and its encoding.
func ReadPolicy(tx *kv.Tx) (*tee.Policy, []byte, error) {
	b, ok := tx.Get(PoliciesMap, PolicyKey)
	if !ok {
		return &tee.Policy{}, []byte("{}"), nil
	}
	p, err := tee.ParsePolicy(b)
	if err != nil {
		return nil, nil, fmt.Errorf("stored %w", err)
	}
	return p, b, nil
}

// WritePolicy checks p and records it in the ledger as one transaction.
func WritePolicy(ctx context.Context, l Ledger, p *tee.Policy) (ledger.TxID, error) {
	if err := p.Validate(); err != nil {
		return ledger.TxID{}, err
	}
	enc, err := p.Encode()
	if err != nil {
		return ledger.TxID{}, fmt.Errorf("encode policy: %w", err)
	}
	id, err := engine.Retry(ctx, l, engine.CommitOptions{}, func(tx *kv.Tx) error {
		tx.Put(PoliciesMap, PolicyKey, enc)
		return nil
	})
	if err != nil {
		return ledger.TxID{}, fmt.Errorf("write policy: %w", err)
	}
	return id, nil
}
