package httpapi

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/parleyhq/parley/internal/attest"
	"github.com/parleyhq/parley/internal/cleanroom"
	"github.com/parleyhq/parley/internal/cleanroom/dataset"
	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/keyrelease"
	"github.com/parleyhq/parley/internal/tee"
)

// TestCleanRoomKeyReleaseOverHTTP drives the routes a data owner and a
// runner use: registration with the data key, the release of a contract's
// keys to an attested runner (refused before approval and to a token made
// for another contract), the job record, and the audit.
func TestCleanRoomKeyReleaseOverHTTP(t *testing.T) {
	var eng *engine.Engine
	l := lateLedger{&eng}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := attest.New(attest.Config{Issuer: testIssuer, Key: key, Policy: attest.LedgerPolicy(l)})
	if err != nil {
		t.Fatal(err)
	}
	broker := keyrelease.New(l, &attest.Verifier{Keys: svc.JWKS(), Issuer: testIssuer, Audience: testIssuer})
	f := newFixture(t, Config{Attestation: svc, Keys: broker, CleanRoom: withCleanRoom})
	eng = f.eng
	ctx := context.Background()
	if _, err := attest.WritePolicy(ctx, f.eng, &tee.Policy{AllowVirtual: true, AllowDebug: true, Virtual: &tee.VirtualPolicy{Measurements: []string{tee.AnyMeasurement}}}); err != nil {
		t.Fatal(err)
	}
	do := func(who, method, path string, body []byte, want int) *response {
		t.Helper()
		r := f.do(who, method, path, body)
		if r.status != want {
			t.Fatalf("%s %s: status %d (%s), want %d", method, path, r.status, r.body, want)
		}
		return r
	}
	owner, reg := newCRParty(t), newCRParty(t)
	do("reader", "POST", "/cleanroom/create_room", owner.sign(t, cleanroom.TypeCreateRoom, cleanroom.CreateRoomBody{Name: "bank1", PublicKey: owner.pem}), http.StatusOK)
	do("reader", "POST", "/cleanroom/invite", owner.sign(t, cleanroom.TypeInvite, cleanroom.InviteBody{Name: "regulator", PublicKey: reg.pem}), http.StatusOK)
	do("reader", "POST", "/cleanroom/join", reg.sign(t, cleanroom.TypeJoin, struct{}{}), http.StatusOK)

	dataKey := bytes.Repeat([]byte{0x5c}, 32)
	schema := dataset.Schema{Columns: []dataset.Column{{Name: "account", Type: dataset.Varchar}}}
	register := func(name string, commitment []byte) []byte {
		d := cleanroom.Dataset{Name: name, Digest: strings.Repeat("a", 64), Size: 1, Schema: schema, KeyCommitment: cleanroom.KeyCommitment(commitment)}
		b, _ := json.Marshal(map[string]any{"request": string(owner.sign(t, cleanroom.TypeRegisterDataset, d)), "dataKey": dataKey})
		return b
	}
	do("reader", "POST", "/cleanroom/register_dataset", register("tx1", []byte("another key")), http.StatusBadRequest)
	do("reader", "POST", "/cleanroom/register_dataset", register("tx1", dataKey), http.StatusOK)

	hk, _ := ecdh.X25519().GenerateKey(rand.Reader)
	meas := strings.Repeat("ab", 32)
	c := do("reader", "POST", "/cleanroom/propose_contract", owner.sign(t, cleanroom.TypeProposeContract, cleanroom.ContractTerms{
		Name: "count", SQL: "SELECT count(*) FROM tx1", Datasets: []string{"tx1"},
		Recipients: []cleanroom.Recipient{{Party: reg.id, Curve: "X25519", Key: hk.PublicKey().Bytes()}}, Measurements: []string{meas},
	}), http.StatusOK)
	var contract cleanroom.Contract
	c.decode(t, &contract)

	runtime, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	token := func(contract, nonce string) string {
		rt, _ := json.Marshal(map[string]any{"keys": []jose.JSONWebKey{{Key: &runtime.PublicKey, KeyID: "runner-enc"}}, "room": "aml", "contract": contract})
		vk, _ := tee.NewVirtualKey()
		var rd [tee.ReportDataSize]byte
		sum := sha256.Sum256(rt)
		copy(rd[:], sum[:])
		m, _ := hex.DecodeString(meas)
		ev, err := tee.VirtualEvidence(vk, m, rd)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := svc.Attest(ctx, attest.Request{Platform: tee.Virtual, Evidence: ev, RuntimeData: rt, Nonce: nonce})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tok := token(contract.ID, "n1")
	keysPath := "/cleanroom/rooms/aml/contracts/" + contract.ID + "/keys"
	ask := func(tok, nonce string) []byte {
		b, _ := json.Marshal(map[string]string{"token": tok, "nonce": nonce, "kid": "runner-enc"})
		return b
	}
	// Not approved: refused, and the refusal is a transaction.
	r := do("anonymous", "POST", keysPath, ask(tok, "n1"), http.StatusForbidden)
	if !strings.Contains(string(r.body), CodeKeyReleaseDenied) || !strings.Contains(string(r.body), "not approved by") {
		t.Errorf("release before approval: %s", r.body)
	}
	do("anonymous", "POST", keysPath, ask(tok, "n2"), http.StatusForbidden)
	do("anonymous", "POST", keysPath, ask(token("other", "n3"), "n3"), http.StatusForbidden)
	do("reader", "POST", "/cleanroom/approve", owner.sign(t, cleanroom.TypeApprove, cleanroom.ContractRef{Contract: contract.ID}), http.StatusOK)

	r = do("anonymous", "POST", keysPath, ask(tok, "n1"), http.StatusOK)
	var rel ReleasedDatasetKeys
	r.decode(t, &rel)
	if len(rel.Keys) != 1 || rel.Terms.SQL != "SELECT count(*) FROM tx1" || len(rel.Datasets) != 1 || rel.Receipt == nil || rel.TransactionID == "" {
		t.Fatalf("release %+v", rel)
	}
	got, err := keyrelease.Unwrap(runtime, rel.Keys[0].Enc, "aml/tx1", rel.Keys[0].Ciphertext)
	if err != nil || !bytes.Equal(got, dataKey) {
		t.Fatalf("unwrapped %x, %v; want the deposited key", got, err)
	}

	job := func(tok, nonce string) []byte {
		b, _ := json.Marshal(map[string]any{"token": tok, "nonce": nonce, "job": cleanroom.JobRecord{
			Contract: contract.ID, Inputs: map[string]string{"tx1": strings.Repeat("a", 64)}, Output: strings.Repeat("c", 64), Rows: 1,
			Measurement: strings.Repeat("ff", 32), // ignored: the token's is recorded
		}})
		return b
	}
	do("anonymous", "POST", "/cleanroom/rooms/aml/jobs", job("garbage", "n1"), http.StatusForbidden)
	// A fresh token for the same runtime key records the job; one for
	// another key does not: no keys were released to it.
	other := runtime
	runtime, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	do("anonymous", "POST", "/cleanroom/rooms/aml/jobs", job(token(contract.ID, "n4"), "n4"), http.StatusForbidden)
	runtime = other
	r = do("anonymous", "POST", "/cleanroom/rooms/aml/jobs", job(token(contract.ID, "n5"), "n5"), http.StatusOK)
	var rec cleanroom.JobRecord
	r.decode(t, &rec)
	if rec.Measurement != meas || rec.ID == "" {
		t.Errorf("job record %+v, want the token's measurement", rec)
	}
	do("anonymous", "POST", "/cleanroom/rooms/aml/jobs", job(tok, "n1"), http.StatusConflict)
	do("reader", "GET", "/cleanroom/rooms/aml/jobs/"+rec.ID, nil, http.StatusOK)

	f.quiesce()
	r = do("reader", "GET", "/cleanroom/rooms/aml/audit", nil, http.StatusOK)
	var audit CleanRoomAudit
	r.decode(t, &audit)
	var steps []string
	for _, s := range audit.Steps {
		var ev cleanroom.Event
		if err := json.Unmarshal(s.Event, &ev); err != nil {
			t.Fatal(err)
		}
		steps = append(steps, ev.Step)
	}
	if want := "create_room invite join register_dataset propose_contract key_refusal approve key_release job"; strings.Join(steps, " ") != want {
		t.Errorf("audit steps %v, want %s", steps, want)
	}
	do("anonymous", "GET", "/cleanroom/rooms/aml/audit", nil, http.StatusUnauthorized)
}
