package gov

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/app"
	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/node"
	"github.com/parleyhq/parley/internal/vfs"
)

// recoveryFixture is a fixture whose members each have their own
// encryption key, with governance keeping recovery shares.
type recoveryFixture struct {
	*fixture
	id      *node.Identity
	encKeys []*rsa.PrivateKey
	dir     string // the data directory
}

func newRSAKey(t testing.TB) (*rsa.PrivateKey, string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return k, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func newRecoveryFixture(t *testing.T, n int) *recoveryFixture {
	t.Helper()
	dir := t.TempDir()
	id, err := node.Init(vfs.OS{}, dir, node.InitOptions{SANs: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	idx := app.NewIndex()
	eng, err := engine.Open(engine.Config{Dir: filepath.Join(dir, node.LedgerDir), Secret: id.Secret, NodeKey: id.NodeKey,
		NodeCertPEM: id.NodeCertPEM, Observer: idx, SignatureInterval: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	f := &recoveryFixture{fixture: &fixture{eng: eng, app: app.New(eng, idx, app.Limits{}), now: time.Unix(1_800_000_000, 0)}, id: id, dir: dir}
	f.gov = New(Config{Engine: eng, Now: f.clock, Secrets: eng})
	g := app.Genesis{Members: map[string]string{}, MemberEncryptionKeys: map[string]string{},
		Users: map[string][]app.Role{strings.Repeat("ab", 32): {app.RoleAdministrator}}}
	for i := range n {
		m := newTestMember(t, fmt.Sprintf("member%d", i))
		k, pub := newRSAKey(t)
		f.members = append(f.members, m)
		f.encKeys = append(f.encKeys, k)
		g.Members[m.id] = m.certPEM
		g.MemberEncryptionKeys[m.id] = pub
	}
	if _, err := f.app.WriteGenesis(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	wrote, _, err := f.gov.EnsureRecoveryShares(context.Background())
	if err != nil || !wrote {
		t.Fatalf("EnsureRecoveryShares after genesis = %v, %v; want true, nil", wrote, err)
	}
	return f
}

// accept proposes acts as member0 and has members accept, in order, until
// the proposal is decided.
func (f *recoveryFixture) accept(t *testing.T, acts ...Action) *Proposal {
	t.Helper()
	p, err := f.propose(t, f.members[0], acts...)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range f.members {
		if p.State != StateOpen {
			break
		}
		if p, err = f.vote(t, m, p.ProposalID, BallotAccept); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func thresholdAction(n int) Action {
	return Action{Name: "set_recovery_threshold", Args: json.RawMessage(fmt.Sprintf(`{"recovery_threshold":%d}`, n))}
}

// share decrypts member i's share.
func (f *recoveryFixture) share(t *testing.T, i int) []byte {
	t.Helper()
	r, err := f.gov.RecoveryShare(f.members[i].id)
	if err != nil {
		t.Fatal(err)
	}
	s, err := DecryptShare(f.encKeys[i], r.EncryptedShare)
	if err != nil {
		t.Fatalf("member %d: %v", i, err)
	}
	return s
}

func (f *recoveryFixture) wrapped(t *testing.T) *WrappedSecret {
	t.Helper()
	w, err := f.gov.WrappedLedgerSecret()
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestRecoverySharesTwoOfThree(t *testing.T) {
	f := newRecoveryFixture(t, 3)
	if w := f.wrapped(t); w.Threshold != 3 || len(w.Members) != 3 {
		t.Fatalf("after genesis: threshold %d over %d members, want 3 over 3", w.Threshold, len(w.Members))
	}
	if p := f.accept(t, thresholdAction(2)); p.State != StateAccepted {
		t.Fatalf("set_recovery_threshold 2: %s %s", p.State, p.FailureReason)
	}
	w := f.wrapped(t)
	if w.Threshold != 2 {
		t.Fatalf("threshold after the proposal = %d, want 2", w.Threshold)
	}
	want := f.id.LedgerSecret()
	shares := [][]byte{f.share(t, 0), f.share(t, 1), f.share(t, 2)}
	for _, pair := range [][2]int{{0, 1}, {0, 2}, {1, 2}, {2, 0}} {
		got, err := UnwrapLedgerSecret(w.WrappedLedgerSecret, [][]byte{shares[pair[0]], shares[pair[1]]})
		if err != nil {
			t.Fatalf("shares %v: %v", pair, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("shares %v unwrap %x, want the node's ledger secret", pair, got)
		}
	}
	for i, s := range shares {
		if _, err := UnwrapLedgerSecret(w.WrappedLedgerSecret, [][]byte{s}); err == nil {
			t.Errorf("share %d alone unwrapped the ledger secret", i)
		}
	}
	// A member cannot decrypt another's share.
	r, _ := f.gov.RecoveryShare(f.members[1].id)
	if _, err := DecryptShare(f.encKeys[0], r.EncryptedShare); err == nil {
		t.Errorf("member 0 decrypted member 1's share")
	}
	if _, err := f.gov.RecoveryShare(strings.Repeat("00", 32)); !errors.Is(err, ErrNoRecoveryShare) {
		t.Errorf("share of a non-member: %v, want ErrNoRecoveryShare", err)
	}
}

func TestRecoveryReshareOnMembership(t *testing.T) {
	f := newRecoveryFixture(t, 3)
	f.accept(t, thresholdAction(2))
	before := f.wrapped(t)
	oldShare0 := f.share(t, 0)

	// A fourth recovery member: shares for four, threshold unchanged.
	m := newTestMember(t, "member3")
	k, pub := newRSAKey(t)
	args, _ := json.Marshal(map[string]string{"cert": m.certPEM, "encryption_pub_key": pub})
	if p := f.accept(t, Action{Name: "set_member", Args: args}); p.State != StateAccepted {
		t.Fatalf("set_member: %s %s", p.State, p.FailureReason)
	}
	f.members = append(f.members, m)
	f.encKeys = append(f.encKeys, k)
	w := f.wrapped(t)
	if w.Threshold != 2 || len(w.Members) != 4 || bytes.Equal(w.WrappedLedgerSecret, before.WrappedLedgerSecret) {
		t.Fatalf("after set_member: threshold %d, %d members, rewrapped %v; want 2, 4, true",
			w.Threshold, len(w.Members), !bytes.Equal(w.WrappedLedgerSecret, before.WrappedLedgerSecret))
	}
	got, err := UnwrapLedgerSecret(w.WrappedLedgerSecret, [][]byte{f.share(t, 3), f.share(t, 1)})
	if err != nil || !bytes.Equal(got, f.id.LedgerSecret()) {
		t.Fatalf("new member's share with member 1's: %x, %v; want the ledger secret", got, err)
	}
	// Old shares do not open the new wrapping.
	if _, err := UnwrapLedgerSecret(w.WrappedLedgerSecret, [][]byte{oldShare0, f.share(t, 1)}); err == nil {
		t.Errorf("a share from before the re-share unwrapped the new wrapping")
	}

	// Removing member 3 deletes its share.
	rm, _ := json.Marshal(map[string]string{"member_id": m.id})
	if p := f.accept(t, Action{Name: "remove_member", Args: rm}); p.State != StateAccepted {
		t.Fatalf("remove_member: %s %s", p.State, p.FailureReason)
	}
	if _, err := f.gov.RecoveryShare(m.id); !errors.Is(err, ErrNoRecoveryShare) {
		t.Errorf("removed member's share: %v, want ErrNoRecoveryShare", err)
	}
	if w := f.wrapped(t); len(w.Members) != 3 {
		t.Errorf("after remove_member: %d recovery members, want 3", len(w.Members))
	}

	// Dropping member 2's encryption key leaves two: fine. Dropping member
	// 1's too would leave one, under the threshold: the proposal fails and
	// the shares stay.
	drop := func(i int) *Proposal {
		a, _ := json.Marshal(map[string]string{"cert": f.members[i].certPEM})
		return f.accept(t, Action{Name: "set_member", Args: a})
	}
	if p := drop(2); p.State != StateAccepted {
		t.Fatalf("drop member 2's key: %s %s", p.State, p.FailureReason)
	}
	before = f.wrapped(t)
	if p := drop(1); p.State != StateFailed || !strings.Contains(p.FailureReason, "recovery threshold") {
		t.Fatalf("drop member 1's key: %s %q, want Failed naming the recovery threshold", p.State, p.FailureReason)
	}
	w = f.wrapped(t)
	if len(w.Members) != 2 || !bytes.Equal(w.WrappedLedgerSecret, before.WrappedLedgerSecret) {
		t.Errorf("a failed proposal changed the shares")
	}
	got, err = UnwrapLedgerSecret(w.WrappedLedgerSecret, [][]byte{f.share(t, 0), f.share(t, 1)})
	if err != nil || !bytes.Equal(got, f.id.LedgerSecret()) {
		t.Errorf("remaining shares: %x, %v; want the ledger secret", got, err)
	}
}

func TestEnsureRecoverySharesIdempotent(t *testing.T) {
	f := newRecoveryFixture(t, 2)
	before := f.wrapped(t)
	wrote, _, err := f.gov.EnsureRecoveryShares(context.Background())
	if err != nil || wrote {
		t.Fatalf("second EnsureRecoveryShares = %v, %v; want false, nil", wrote, err)
	}
	if !bytes.Equal(f.wrapped(t).WrappedLedgerSecret, before.WrappedLedgerSecret) {
		t.Errorf("EnsureRecoveryShares re-shared unchanged shares")
	}
	// Without a SecretSource nothing is kept.
	g := New(Config{Engine: f.eng})
	if wrote, _, err := g.EnsureRecoveryShares(context.Background()); err != nil || wrote {
		t.Errorf("EnsureRecoveryShares without secrets = %v, %v; want false, nil", wrote, err)
	}
}

func TestUnwrapBadInput(t *testing.T) {
	for _, c := range []struct {
		name    string
		wrapped []byte
		shares  [][]byte
	}{
		{"no shares", make([]byte, 60), nil},
		{"short key", make([]byte, 60), [][]byte{{1, 2, 1}}},
		{"short wrapped", []byte{1}, [][]byte{append(make([]byte, 32), 1)}},
		{"wrong key", make([]byte, 60), [][]byte{append(make([]byte, 32), 1)}},
	} {
		if _, err := UnwrapLedgerSecret(c.wrapped, c.shares); err == nil {
			t.Errorf("%s: UnwrapLedgerSecret succeeded", c.name)
		}
	}
}

// FuzzUnwrapLedgerSecret feeds arbitrary wrapped secrets and shares: no
// panic, and nothing opens without the right key.
func FuzzUnwrapLedgerSecret(f *testing.F) {
	f.Add(make([]byte, 60), append(make([]byte, 32), 1), append(make([]byte, 32), 2))
	f.Add([]byte{}, []byte{}, []byte{1, 1})
	f.Fuzz(func(t *testing.T, wrapped, s1, s2 []byte) {
		if _, err := UnwrapLedgerSecret(wrapped, [][]byte{s1, s2}); err == nil {
			t.Fatalf("arbitrary input unwrapped: %x, %x, %x", wrapped, s1, s2)
		}
	})
}

// TestRotationReshares: an accepted rotate_ledger_secret rotates the
// engine's secret in the accepting transaction and wraps the new secret
// for recovery in that same transaction; the history it records opens
// with the new secret to the genesis secret.
func TestRotationReshares(t *testing.T) {
	f := newRecoveryFixture(t, 3)
	if p := f.accept(t, thresholdAction(2)); p.State != StateAccepted {
		t.Fatalf("set_recovery_threshold 2: %s %s", p.State, p.FailureReason)
	}
	before := f.wrapped(t)
	p := f.accept(t, Action{Name: "rotate_ledger_secret"})
	if p.State != StateAccepted {
		t.Fatalf("rotate_ledger_secret: %s %s", p.State, p.FailureReason)
	}
	eps := f.eng.Epochs()
	if len(eps) != 2 {
		t.Fatalf("%d ledger secrets after the rotation, want 2", len(eps))
	}
	latest := f.eng.LedgerSecret()
	if bytes.Equal(latest, f.id.LedgerSecret()) {
		t.Fatal("the latest ledger secret is still the genesis secret")
	}
	w := f.wrapped(t)
	if bytes.Equal(w.WrappedLedgerSecret, before.WrappedLedgerSecret) {
		t.Fatal("the wrapped secret did not change with the rotation")
	}
	got, err := UnwrapLedgerSecret(w.WrappedLedgerSecret, [][]byte{f.share(t, 2), f.share(t, 0)})
	if err != nil || !bytes.Equal(got, latest) {
		t.Fatalf("two shares after rotation unwrap to the latest secret: %v, %v", bytes.Equal(got, latest), err)
	}
	hist, _ := f.eng.Begin().Get(engine.HistoricalSecretsMap, "")
	old, err := engine.DecryptHistory(latest, hist)
	if err != nil || len(old) != 1 || old[0].From != 1 || !bytes.Equal(old[0].Secret.Raw(), f.id.LedgerSecret()) {
		t.Fatalf("history under the new secret: %d secrets, %v; want the genesis secret from 1", len(old), err)
	}
	if rk, _ := f.eng.Begin().Get(RekeysMap, p.ProposalID); string(rk) != `{"status":"Applied"}` {
		t.Errorf("rekeys record = %s", rk)
	}
}
