package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
)

// conflicting is a Committer whose first commits conflict.
type conflicting struct {
	store     *kv.Store
	conflicts int
	claims    [][32]byte // the claims of every commit attempt
}

func (c *conflicting) Begin() *kv.Tx { return c.store.Begin() }

func (c *conflicting) Commit(_ context.Context, _ *kv.Tx, opts CommitOptions) (ledger.TxID, error) {
	c.claims = append(c.claims, opts.Claims)
	if c.conflicts > 0 {
		c.conflicts--
		return ledger.TxID{}, fmt.Errorf("apply: %w", kv.ErrConflict)
	}
	return ledger.TxID{View: 2, Seqno: uint64(len(c.claims))}, nil
}

func TestRetryClaims(t *testing.T) {
	c := &conflicting{store: kv.NewStore(), conflicts: 2}
	runs := 0
	id, err := RetryClaims(context.Background(), c, func(tx *kv.Tx) ([32]byte, error) {
		runs++
		tx.Put("public:m", "k", []byte("v"))
		return [32]byte{byte(runs)}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if runs != 3 || id.Seqno != 3 {
		t.Fatalf("got %d runs and id %s, want 3 runs and seqno 3", runs, id)
	}
	for i, cl := range c.claims {
		if cl[0] != byte(i+1) {
			t.Fatalf("attempt %d committed claims of run %d, want its own", i+1, cl[0])
		}
	}

	c = &conflicting{store: kv.NewStore(), conflicts: MaxConflictRetries}
	if _, err := Retry(context.Background(), c, CommitOptions{}, func(*kv.Tx) error { return nil }); !errors.Is(err, ErrTooManyConflicts) {
		t.Fatalf("got %v, want ErrTooManyConflicts", err)
	}
	bad := errors.New("bad input")
	c = &conflicting{store: kv.NewStore()}
	if _, err := Retry(context.Background(), c, CommitOptions{}, func(*kv.Tx) error { return bad }); !errors.Is(err, bad) || len(c.claims) != 0 {
		t.Fatalf("got %v after %d commits, want the build error and no commit", err, len(c.claims))
	}
}
