package cleanroom

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/cleanroom/blob"
	"github.com/parleyhq/parley/internal/cleanroom/dataset"
	"github.com/parleyhq/parley/internal/cleanroom/runner"
	"github.com/parleyhq/parley/internal/keyrelease"
	"github.com/parleyhq/parley/internal/kv"
)

// TestFlowInProcess runs the whole clean-room flow in one process: owners
// encrypt and upload datasets and register their digests, a contract is
// approved by both owners, a runner (here: the test, with the data keys in
// hand, standing in for key release) fetches and checks the ciphertexts,
// runs the query and seals the result, the job is recorded, and only the
// recipient can open the result.
func TestFlowInProcess(t *testing.T) {
	ctx := context.Background()
	s := New(&memLedger{store: kv.NewStore()}, func() time.Time { return now })
	store, err := blob.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bank1, bank2, reg := newParty(t, "bank1"), newParty(t, "bank2"), newParty(t, "regulator")
	const room = "aml"
	must[*Room](t)(s.CreateRoom(ctx, bank1.sign(t, TypeCreateRoom, room, CreateRoomBody{Name: "bank1", PublicKey: bank1.pem})))
	for _, p := range []*party{bank2, reg} {
		must[*Party](t)(s.Invite(ctx, bank1.sign(t, TypeInvite, room, InviteBody{Name: p.name, PublicKey: p.pem})))
		must[*Party](t)(s.Join(ctx, p.sign(t, TypeJoin, room, struct{}{})))
	}

	schema := dataset.Schema{Columns: []dataset.Column{
		{Name: "account", Type: dataset.Varchar}, {Name: "customer", Type: dataset.Varchar}, {Name: "amount", Type: dataset.Bigint},
	}}
	rules := runner.Rules{JoinOnly: []string{"account", "customer"}, AggregateOnly: []string{"amount"}, Entity: "customer", MinEntities: 2}
	csvs := map[string]string{
		"tx1": "account,customer,amount\nx1,c1,9000\nx2,c2,9500\nx3,c3,100\n",
		"tx2": "account,customer,amount\nx1,d1,9100\nx2,d2,9400\nx9,d9,5\n",
	}
	keys := map[string]dataset.Key{}
	for name, owner := range map[string]*party{"tx1": bank1, "tx2": bank2} {
		key, err := dataset.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		id, err := dataset.NewID()
		if err != nil {
			t.Fatal(err)
		}
		keys[name] = key
		var ct bytes.Buffer
		info, err := dataset.EncryptCSV(&ct, strings.NewReader(csvs[name]), key, id, schema, 0)
		if err != nil {
			t.Fatal(err)
		}
		bi, err := store.Put(ctx, "aml/"+name, &ct)
		if err != nil {
			t.Fatal(err)
		}
		if bi.Digest != info.Digest {
			t.Fatalf("blob digest %x, dataset digest %x", bi.Digest, info.Digest)
		}
		must[*Dataset](t)(s.RegisterDataset(ctx, owner.sign(t, TypeRegisterDataset, room, Dataset{
			Name: name, Digest: hex.EncodeToString(info.Digest[:]), Size: info.Size, Schema: schema, Rules: rules,
		})))
	}

	hk, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	meas := strings.Repeat("5a", 48)
	terms := ContractTerms{
		Name: "structuring",
		SQL: `SELECT count(*) AS pairs, sum(a.amount) + sum(b.amount) AS total
		      FROM tx1 a JOIN tx2 b ON a.account = b.account`,
		Datasets:     []string{"tx1", "tx2"},
		Recipients:   []Recipient{{Party: reg.id, Curve: "X25519", Key: hk.PublicKey().Bytes()}},
		Measurements: []string{meas},
	}
	c := must[*Contract](t)(s.ProposeContract(ctx, bank1.sign(t, TypeProposeContract, room, terms)))
	ref := ContractRef{Contract: c.ID}
	must[*Contract](t)(s.Approve(ctx, bank1.sign(t, TypeApprove, room, ref)))
	if _, _, err := s.Runnable(room, c.ID, meas); !errors.Is(err, ErrState) {
		t.Fatalf("runnable with bank2's approval missing: got %v, want ErrState", err)
	}
	must[*Contract](t)(s.Approve(ctx, bank2.sign(t, TypeApprove, room, ref)))

	// The runner.
	c, ds, err := s.Runnable(room, c.ID, meas)
	if err != nil {
		t.Fatal(err)
	}
	job := runner.Job{SQL: c.Terms.SQL, Context: []byte(c.ID)}
	inputs := map[string]string{}
	for _, d := range ds {
		rc, err := store.Get(ctx, "aml/"+d.Name)
		if err != nil {
			t.Fatal(err)
		}
		ct, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		_, plain, digest, err := dataset.Open(ct, keys[d.Name])
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(digest[:]) != d.Digest {
			t.Fatalf("dataset %s digest %x, ledger says %s", d.Name, digest, d.Digest)
		}
		inputs[d.Name] = d.Digest
		job.Tables = append(job.Tables, runner.Table{Name: d.Name, Schema: d.Schema, CSV: plain, Rules: d.Rules})
	}
	for _, r := range c.Terms.Recipients {
		pk, err := r.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		job.Recipients = append(job.Recipients, runner.Recipient{ID: r.Party, Key: pk})
	}
	res, err := runner.Run(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	out, err := store.Put(ctx, "aml/results/"+c.ID[:16], bytes.NewReader(res.Sealed[0].Ciphertext))
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.Repeat("7", 64)
	grantRelease(t, s, keyrelease.RoomRelease{Room: room, Contract: c.ID, Measurement: meas, Datasets: c.Terms.Datasets, RuntimeKey: tok})
	rec := must[*JobRecord](t)(s.RecordJob(ctx, room, JobRecord{
		Contract: c.ID, Inputs: inputs, Measurement: meas, Output: hex.EncodeToString(out.Digest[:]), Rows: res.Rows, Suppressed: res.Suppressed, RuntimeKey: tok,
	}))

	// The regulator fetches the result named by the job record and opens it.
	rc, err := store.Get(ctx, "aml/results/"+c.ID[:16])
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ := io.ReadAll(rc)
	rc.Close()
	if d := sha256.Sum256(sealed); hex.EncodeToString(d[:]) != rec.Output {
		t.Fatalf("stored result digest %x, job record says %s", d, rec.Output)
	}
	got, err := runner.Open(hk, []byte(c.ID), sealed)
	if err != nil {
		t.Fatal(err)
	}
	if want := "pairs,total\n2,37000\n"; string(got) != want {
		t.Errorf("result %q, want %q", got, want)
	}
	other, _ := ecdh.X25519().GenerateKey(rand.Reader)
	if _, err := runner.Open(other, []byte(c.ID), sealed); err == nil {
		t.Error("a key other than the recipient's opened the result")
	}
}
