package cleanroom

import (
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/cleanroom/dataset"
	"github.com/parleyhq/parley/internal/cleanroom/runner"
	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/keyrelease"
	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
)

// memLedger commits straight into a kv.Store, keeping each transaction's
// claims digest and telling an observer, as the engine does.
type memLedger struct {
	mu       sync.Mutex
	store    *kv.Store
	claims   map[uint64][32]byte
	observer engine.Observer
}

func (m *memLedger) Begin() *kv.Tx { return m.store.Begin() }

func (m *memLedger) Commit(_ context.Context, tx *kv.Tx, opts engine.CommitOptions) (ledger.TxID, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.store.Version() + 1
	ws := tx.WriteSet()
	if err := m.store.Commit(tx, v); err != nil {
		return ledger.TxID{}, err
	}
	id := ledger.TxID{View: 1, Seqno: uint64(v)}
	if m.claims == nil {
		m.claims = map[uint64][32]byte{}
	}
	m.claims[id.Seqno] = opts.Claims
	if m.observer != nil {
		m.observer.Applied(id, ledger.KindTx, ws)
	}
	return id, nil
}

var now = time.Unix(1_800_000_000, 0)

type party struct {
	name    string
	key     *ecdsa.PrivateKey
	id, pem string
	counter uint64
}

func newParty(t *testing.T, name string) *party {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := PartyID(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := EncodePublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return &party{name: name, key: k, id: id, pem: pem}
}

func (p *party) sign(t *testing.T, typ, room string, body any) []byte {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	p.counter++
	jws, err := Sign(p.key, p.id, &Request{Type: typ, Room: room, CreatedAt: now.Unix(), Counter: p.counter, Body: b})
	if err != nil {
		t.Fatal(err)
	}
	return jws
}

func must[T any](t *testing.T) func(v T, _ ledger.TxID, err error) T {
	return func(v T, _ ledger.TxID, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func wantErr[T any](t *testing.T, target error) func(v T, _ ledger.TxID, err error) {
	return func(_ T, _ ledger.TxID, err error) {
		t.Helper()
		if !errors.Is(err, target) {
			t.Errorf("got error %v, want %v", err, target)
		}
	}
}

func TestRoomLifecycle(t *testing.T) {
	ctx := context.Background()
	s := New(&memLedger{store: kv.NewStore()}, func() time.Time { return now })
	bank1, bank2, reg, stranger := newParty(t, "bank1"), newParty(t, "bank2"), newParty(t, "regulator"), newParty(t, "stranger")
	const room = "aml"

	must[*Room](t)(s.CreateRoom(ctx, bank1.sign(t, TypeCreateRoom, room, CreateRoomBody{Name: "bank1", PublicKey: bank1.pem})))
	wantErr[*Room](t, ErrExists)(s.CreateRoom(ctx, bank1.sign(t, TypeCreateRoom, room, CreateRoomBody{Name: "bank1", PublicKey: bank1.pem})))
	// A create_room whose key is not the signer's is refused.
	wantErr[*Room](t, ErrMalformed)(s.CreateRoom(ctx, stranger.sign(t, TypeCreateRoom, "other", CreateRoomBody{Name: "x", PublicKey: bank1.pem})))

	for _, p := range []*party{bank2, reg} {
		must[*Party](t)(s.Invite(ctx, bank1.sign(t, TypeInvite, room, InviteBody{Name: p.name, PublicKey: p.pem})))
	}
	// Invited parties cannot act before joining; strangers cannot invite or join.
	wantErr[*Dataset](t, ErrForbidden)(s.RegisterDataset(ctx, bank2.sign(t, TypeRegisterDataset, room, Dataset{})))
	wantErr[*Party](t, ErrForbidden)(s.Invite(ctx, stranger.sign(t, TypeInvite, room, InviteBody{Name: "s", PublicKey: stranger.pem})))
	wantErr[*Party](t, ErrForbidden)(s.Join(ctx, stranger.sign(t, TypeJoin, room, struct{}{})))
	for _, p := range []*party{bank2, reg} {
		if got := must[*Party](t)(s.Join(ctx, p.sign(t, TypeJoin, room, struct{}{}))); got.State != PartyActive {
			t.Errorf("%s state %s after join, want Active", p.name, got.State)
		}
	}

	schema := dataset.Schema{Columns: []dataset.Column{{Name: "account", Type: dataset.Varchar}, {Name: "amount", Type: dataset.Bigint}}}
	rules := runner.Rules{JoinOnly: []string{"account"}, AggregateOnly: []string{"amount"}}
	digest1, digest2 := strings.Repeat("a", 64), strings.Repeat("b", 64)
	must[*Dataset](t)(s.RegisterDataset(ctx, bank1.sign(t, TypeRegisterDataset, room, Dataset{Name: "tx1", Digest: digest1, Size: 10, Schema: schema, Rules: rules})))
	must[*Dataset](t)(s.RegisterDataset(ctx, bank2.sign(t, TypeRegisterDataset, room, Dataset{Name: "tx2", Digest: digest2, Size: 10, Schema: schema, Rules: rules})))
	wantErr[*Dataset](t, ErrExists)(s.RegisterDataset(ctx, bank2.sign(t, TypeRegisterDataset, room, Dataset{Name: "tx1", Digest: digest2, Size: 10, Schema: schema})))
	wantErr[*Dataset](t, ErrMalformed)(s.RegisterDataset(ctx, bank2.sign(t, TypeRegisterDataset, room, Dataset{Name: "bad", Digest: digest2, Size: 10, Schema: schema, Rules: runner.Rules{Forbidden: []string{"nope"}}})))

	hpkeKey, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	meas := strings.Repeat("0f", 48)
	terms := ContractTerms{
		Name: "structuring", SQL: "SELECT count(*) FROM tx1 a JOIN tx2 b ON a.account = b.account",
		Datasets:     []string{"tx1", "tx2"},
		Recipients:   []Recipient{{Party: reg.id, Curve: "X25519", Key: hpkeKey.PublicKey().Bytes()}},
		Measurements: []string{meas},
	}
	c := must[*Contract](t)(s.ProposeContract(ctx, bank1.sign(t, TypeProposeContract, room, terms)))
	if c.State != ContractProposed {
		t.Fatalf("new contract is %s, want Proposed", c.State)
	}
	bad := terms
	bad.Datasets = []string{"tx1", "missing"}
	wantErr[*Contract](t, ErrNotFound)(s.ProposeContract(ctx, bank1.sign(t, TypeProposeContract, room, bad)))

	ref := ContractRef{Contract: c.ID}
	if _, _, err := s.Runnable(room, c.ID, meas); !errors.Is(err, ErrState) {
		t.Errorf("Runnable before approval: got %v, want ErrState", err)
	}
	c = must[*Contract](t)(s.Approve(ctx, bank1.sign(t, TypeApprove, room, ref)))
	if c.State != ContractProposed {
		t.Errorf("after one of two owners approved the contract is %s, want Proposed", c.State)
	}
	wantErr[*Contract](t, ErrExists)(s.Approve(ctx, bank1.sign(t, TypeApprove, room, ref)))
	wantErr[*Contract](t, ErrForbidden)(s.Approve(ctx, reg.sign(t, TypeApprove, room, ref)))
	if _, _, err := s.Runnable(room, c.ID, meas); !errors.Is(err, ErrState) {
		t.Errorf("Runnable with one approval missing: got %v, want ErrState", err)
	}
	c = must[*Contract](t)(s.Approve(ctx, bank2.sign(t, TypeApprove, room, ref)))
	if c.State != ContractApproved {
		t.Fatalf("after every owner approved the contract is %s, want Approved", c.State)
	}
	if _, _, err := s.Runnable(room, c.ID, strings.Repeat("ee", 48)); !errors.Is(err, ErrForbidden) {
		t.Errorf("Runnable with another measurement: got %v, want ErrForbidden", err)
	}
	_, ds, err := s.Runnable(room, c.ID, meas)
	if err != nil || len(ds) != 2 || ds[0].Digest != digest1 {
		t.Fatalf("Runnable = %v, %v; want the two datasets", ds, err)
	}

	out := strings.Repeat("c", 64)
	tok := strings.Repeat("7", 64)
	grantRelease(t, s, keyrelease.RoomRelease{Room: room, Contract: c.ID, Measurement: meas, Datasets: []string{"tx1", "tx2"}, RuntimeKey: tok})
	job := JobRecord{Contract: c.ID, Inputs: map[string]string{"tx1": digest1, "tx2": digest2}, Measurement: meas, Output: out, Rows: 3, RuntimeKey: tok}
	wrong := job
	wrong.Inputs = map[string]string{"tx1": digest1, "tx2": digest1}
	wantErr[*JobRecord](t, ErrForbidden)(s.RecordJob(ctx, room, wrong))
	wrong = job
	wrong.Inputs = map[string]string{"tx1": digest1}
	wantErr[*JobRecord](t, ErrMalformed)(s.RecordJob(ctx, room, wrong))
	rec := must[*JobRecord](t)(s.RecordJob(ctx, room, job))
	if len(rec.ID) != 64 {
		t.Errorf("job id %q, want 64 hex digits", rec.ID)
	}

	c = must[*Contract](t)(s.Suspend(ctx, reg.sign(t, TypeSuspend, room, ref)))
	if c.State != ContractSuspended || c.SuspendedBy != reg.id {
		t.Errorf("after suspend: state %s by %s, want Suspended by the regulator", c.State, c.SuspendedBy)
	}
	if _, _, err := s.Runnable(room, c.ID, meas); !errors.Is(err, ErrState) {
		t.Errorf("Runnable after suspension: got %v, want ErrState", err)
	}
	job.Rows = 4
	wantErr[*JobRecord](t, ErrState)(s.RecordJob(ctx, room, job))
}

// grantRelease records a granted key release, as the key broker does.
func grantRelease(t *testing.T, s *Service, r keyrelease.RoomRelease) {
	t.Helper()
	if _, err := s.run(context.Background(), func(tx *kv.Tx) ([32]byte, error) { return s.RecordRelease(tx, r) }); err != nil {
		t.Fatal(err)
	}
}

func TestRequestChecks(t *testing.T) {
	ctx := context.Background()
	s := New(&memLedger{store: kv.NewStore()}, func() time.Time { return now })
	p := newParty(t, "bank1")
	req := p.sign(t, TypeCreateRoom, "r", CreateRoomBody{Name: "bank1", PublicKey: p.pem})
	must[*Room](t)(s.CreateRoom(ctx, req))
	// Replayed into another room's creation: the counter is spent.
	p.counter--
	wantErr[*Room](t, ErrReplay)(s.CreateRoom(ctx, p.sign(t, TypeCreateRoom, "r2", CreateRoomBody{Name: "bank1", PublicKey: p.pem})))

	other := newParty(t, "other")
	stale := func() []byte {
		other.counter++
		jws, err := Sign(other.key, other.id, &Request{Type: TypeCreateRoom, Room: "r3", CreatedAt: now.Add(-time.Hour).Unix(), Counter: other.counter, Body: mustJSON(t, CreateRoomBody{Name: "o", PublicKey: other.pem})})
		if err != nil {
			t.Fatal(err)
		}
		return jws
	}()
	wantErr[*Room](t, ErrStale)(s.CreateRoom(ctx, stale))

	// Wrong type for the endpoint.
	wantErr[*Party](t, ErrMalformed)(s.Invite(ctx, p.sign(t, TypeJoin, "r", InviteBody{})))

	// A flipped signature byte.
	good := p.sign(t, TypeInvite, "r", InviteBody{Name: "x", PublicKey: other.pem})
	tampered := []byte(string(good))
	tampered[len(tampered)-2] ^= 1
	if _, _, err := s.Invite(ctx, tampered); !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrMalformed) {
		t.Errorf("tampered signature: got %v, want ErrBadSignature", err)
	}
	for _, b := range [][]byte{nil, []byte("not a jws"), []byte(strings.Repeat("a", MaxRequestBytes+1))} {
		wantErr[*Party](t, ErrMalformed)(s.Invite(ctx, b))
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
