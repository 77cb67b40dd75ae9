package cleanroom

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/cleanroom/dataset"
	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/keyrelease"
	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
)

// fakeKeys is a KeyStore that writes deposits to a private map, or fails.
type fakeKeys struct{ fail bool }

const fakeKeysMap = "test.keys"

func (f *fakeKeys) DepositDatasetKey(tx *kv.Tx, room, name string, key []byte, owner string) error {
	if f.fail {
		return errors.New("broker says no")
	}
	tx.Put(fakeKeysMap, room+"/"+name, key)
	return nil
}

// TestEventsReceiptsAndRelease walks a room through every kind of step and
// checks that each transaction wrote exactly one event, with the claims
// digest of that event, that the audit lists them in order with their
// transactions, and that the release policy says why it refuses.
func TestEventsReceiptsAndRelease(t *testing.T) {
	ctx := context.Background()
	idx := NewIndex(nil)
	ml := &memLedger{store: kv.NewStore(), observer: idx}
	s := New(ml, func() time.Time { return now })
	bank1, bank2, reg := newParty(t, "bank1"), newParty(t, "bank2"), newParty(t, "regulator")
	const room = "aml"
	must[*Room](t)(s.CreateRoom(ctx, bank1.sign(t, TypeCreateRoom, room, CreateRoomBody{Name: "bank1", PublicKey: bank1.pem})))
	for _, p := range []*party{bank2, reg} {
		must[*Party](t)(s.Invite(ctx, bank1.sign(t, TypeInvite, room, InviteBody{Name: p.name, PublicKey: p.pem})))
		must[*Party](t)(s.Join(ctx, p.sign(t, TypeJoin, room, struct{}{})))
	}
	schema := dataset.Schema{Columns: []dataset.Column{{Name: "account", Type: dataset.Varchar}, {Name: "amount", Type: dataset.Bigint}}}
	keys := &fakeKeys{}
	key1, key2 := []byte(strings.Repeat("k", 32)), []byte(strings.Repeat("K", 32))
	reg1 := func(p *party, name string, commitment string, key []byte, ks KeyStore) (*Dataset, ledger.TxID, error) {
		return s.RegisterDatasetWithKey(ctx, p.sign(t, TypeRegisterDataset, room, Dataset{Name: name, Digest: strings.Repeat("a", 64), Size: 1, Schema: schema, KeyCommitment: commitment}), key, ks)
	}
	// Nothing is registered when the key is not the committed one, the
	// broker refuses it, or there is a key and no broker.
	wantErr[*Dataset](t, ErrMalformed)(reg1(bank1, "tx1", KeyCommitment(key2), key1, keys))
	wantErr[*Dataset](t, ErrMalformed)(reg1(bank1, "tx1", KeyCommitment(key1), key1, &fakeKeys{fail: true}))
	wantErr[*Dataset](t, ErrMalformed)(reg1(bank1, "tx1", KeyCommitment(key1), key1, nil))
	wantErr[*Dataset](t, ErrMalformed)(reg1(bank1, "tx1", KeyCommitment(key1), nil, nil))
	if _, err := s.Dataset(room, "tx1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after failed registrations tx1 is %v, want ErrNotFound", err)
	}
	must[*Dataset](t)(reg1(bank1, "tx1", KeyCommitment(key1), key1, keys))
	must[*Dataset](t)(reg1(bank2, "tx2", KeyCommitment(key2), key2, keys))
	if got, ok := ml.Begin().Get(fakeKeysMap, room+"/tx2"); !ok || string(got) != string(key2) {
		t.Errorf("deposited key of tx2 %q, %v", got, ok)
	}

	hk, _ := ecdh.X25519().GenerateKey(rand.Reader)
	meas := strings.Repeat("0f", 32)
	c := must[*Contract](t)(s.ProposeContract(ctx, bank1.sign(t, TypeProposeContract, room, ContractTerms{
		Name: "c", SQL: "SELECT count(*) FROM tx1 a JOIN tx2 b ON a.account = b.account", Datasets: []string{"tx1", "tx2"},
		Recipients: []Recipient{{Party: reg.id, Curve: "X25519", Key: hk.PublicKey().Bytes()}}, Measurements: []string{meas},
	})))
	ref := ContractRef{Contract: c.ID}
	must[*Contract](t)(s.Approve(ctx, bank1.sign(t, TypeApprove, room, ref)))

	authorize := func(contract, m string) ([]string, error) {
		return s.AuthorizeRelease(ml.Begin(), room, contract, m)
	}
	record := func(r keyrelease.RoomRelease) {
		t.Helper()
		if _, err := engine.RetryClaims(ctx, ml, func(tx *kv.Tx) ([32]byte, error) { return s.RecordRelease(tx, r) }); err != nil {
			t.Fatal(err)
		}
	}
	_, err := authorize(c.ID, meas)
	if !errors.Is(err, keyrelease.ErrPolicyNotSatisfied) || !strings.Contains(err.Error(), "not approved by ["+bank2.id+"]") {
		t.Fatalf("release before bank2 approved: %v", err)
	}
	record(keyrelease.RoomRelease{Room: room, Contract: c.ID, Measurement: meas, Refused: err.Error()})
	if _, err := authorize(strings.Repeat("9", 64), meas); !errors.Is(err, ErrNotFound) || errors.Is(err, keyrelease.ErrPolicyNotSatisfied) {
		t.Errorf("release for an unknown contract: got %v, want ErrNotFound and no refusal", err)
	}
	must[*Contract](t)(s.Approve(ctx, bank2.sign(t, TypeApprove, room, ref)))
	if _, err := authorize(c.ID, strings.Repeat("ee", 32)); !errors.Is(err, keyrelease.ErrPolicyNotSatisfied) || !strings.Contains(err.Error(), "not allowed") {
		t.Errorf("release to another measurement: %v", err)
	}
	names, err := authorize(c.ID, meas)
	if err != nil || !slices.Equal(names, []string{"tx1", "tx2"}) {
		t.Fatalf("release after approval: %v, %v", names, err)
	}
	tok1, tok2, tok3 := strings.Repeat("1", 64), strings.Repeat("2", 64), strings.Repeat("3", 64)
	record(keyrelease.RoomRelease{Room: room, Contract: c.ID, Measurement: meas, Datasets: names, RuntimeKey: tok1})
	inputs := map[string]string{"tx1": strings.Repeat("a", 64), "tx2": strings.Repeat("a", 64)}
	job := func(token, refused, output string) JobRecord {
		return JobRecord{Contract: c.ID, Inputs: inputs, Measurement: meas, Refused: refused, Output: output, RuntimeKey: token}
	}
	wantErr[*JobRecord](t, ErrMalformed)(s.RecordJob(ctx, room, job(tok1, "x", strings.Repeat("c", 64))))
	// Only the token the keys went to records a job, and only once.
	wantErr[*JobRecord](t, ErrForbidden)(s.RecordJob(ctx, room, job(tok3, "", strings.Repeat("c", 64))))
	must[*JobRecord](t)(s.RecordJob(ctx, room, job(tok1, "rule join-only on tx1.account: …", "")))
	wantErr[*JobRecord](t, ErrExists)(s.RecordJob(ctx, room, job(tok1, "", strings.Repeat("c", 64))))
	record(keyrelease.RoomRelease{Room: room, Contract: c.ID, Measurement: meas, Datasets: names, RuntimeKey: tok2})
	must[*JobRecord](t)(s.RecordJob(ctx, room, job(tok2, "", strings.Repeat("c", 64))))
	must[*Contract](t)(s.Suspend(ctx, reg.sign(t, TypeSuspend, room, ref)))
	if _, err := authorize(c.ID, meas); !errors.Is(err, keyrelease.ErrPolicyNotSatisfied) || !strings.Contains(err.Error(), "Suspended") {
		t.Errorf("release after suspension: %v", err)
	}

	list, err := s.Audit(room, idx)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"create_room", "invite", "join", "invite", "join", "register_dataset", "register_dataset",
		"propose_contract", "approve", "key_refusal", "approve", "key_release", "job_refusal", "key_release", "job", "suspend"}
	var got []string
	seen := map[string]bool{}
	for i, e := range list {
		var ev Event
		if err := json.Unmarshal(e.Event, &ev); err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.Step)
		if ev.Seq != uint64(i+1) || ev.Room != room {
			t.Errorf("event %d: seq %d room %s", i+1, ev.Seq, ev.Room)
		}
		id, err := ledger.ParseTxID(e.TransactionID)
		if err != nil || seen[e.TransactionID] {
			t.Fatalf("event %d transaction %q: %v (or seen before)", i+1, e.TransactionID, err)
		}
		seen[e.TransactionID] = true
		if ml.claims[id.Seqno] != ClaimsDigest(e.Event) {
			t.Errorf("event %d (%s): transaction %s claims %x, want the event's digest", i+1, ev.Step, id, ml.claims[id.Seqno])
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("audit steps\n got %v\nwant %v", got, want)
	}

	// A rollback forgets the transactions of the events after it.
	cut, _ := ledger.ParseTxID(list[9].TransactionID)
	idx.RolledBack(cut.Seqno)
	list, _ = s.Audit(room, idx)
	if list[9].TransactionID == "" || list[10].TransactionID != "" {
		t.Errorf("after a rollback to %d: step 10 in %q, step 11 in %q", cut.Seqno, list[9].TransactionID, list[10].TransactionID)
	}
	if _, err := s.Audit("nosuchroom", idx); !errors.Is(err, ErrNotFound) {
		t.Errorf("audit of an unknown room: %v", err)
	}
}

func TestVerifySignedOffline(t *testing.T) {
	a, b := newParty(t, "a"), newParty(t, "b")
	create := a.sign(t, TypeCreateRoom, "r", CreateRoomBody{Name: "a", PublicKey: a.pem})
	r, pub, err := VerifyCreateRoom(create)
	if err != nil || r.Room != "r" || !pub.Equal(&a.key.PublicKey) {
		t.Fatalf("VerifyCreateRoom = %+v, %v", r, err)
	}
	// A create_room whose body carries another key than the signer's.
	if _, _, err := VerifyCreateRoom(a.sign(t, TypeCreateRoom, "r", CreateRoomBody{Name: "a", PublicKey: b.pem})); !errors.Is(err, ErrBadSignature) {
		t.Errorf("create_room carrying b's key, signed by a: %v", err)
	}
	if _, _, err := VerifyCreateRoom(a.sign(t, TypeJoin, "r", CreateRoomBody{Name: "a", PublicKey: a.pem})); !errors.Is(err, ErrMalformed) {
		t.Errorf("a join passed as create_room: %v", err)
	}
	join := b.sign(t, TypeJoin, "r", struct{}{})
	if kid, err := SignerOf(join); err != nil || kid != b.id {
		t.Errorf("SignerOf = %s, %v; want %s", kid, err, b.id)
	}
	if _, err := VerifySigned(join, &b.key.PublicKey); err != nil {
		t.Errorf("VerifySigned with the signer's key: %v", err)
	}
	if _, err := VerifySigned(join, &a.key.PublicKey); !errors.Is(err, ErrBadSignature) {
		t.Errorf("VerifySigned with another key: %v", err)
	}
}
