package keyrelease

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/parleyhq/parley/internal/attest"
	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/tee"
)

// fakeGate allows contract "ok" to the env's measurement, refuses the
// others, and records what it is asked to record in a public map.
type fakeGate struct {
	measurement string
	datasets    []string
}

const gateMap = "public:test.releases"

func (g *fakeGate) AuthorizeRelease(tx *kv.Tx, room, contract, measurement string) ([]string, error) {
	switch {
	case contract == "unknown":
		return nil, errors.New("contract unknown: not found")
	case contract != "ok":
		return nil, fmt.Errorf("%w: contract %s is Proposed", ErrPolicyNotSatisfied, contract)
	case measurement != g.measurement:
		return nil, fmt.Errorf("%w: measurement %s not allowed", ErrPolicyNotSatisfied, measurement)
	}
	return g.datasets, nil
}

func (g *fakeGate) RecordRelease(tx *kv.Tx, r RoomRelease) ([32]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return [32]byte{}, err
	}
	n := 0
	tx.Foreach(gateMap, func(string, []byte) bool { n++; return true })
	tx.Put(gateMap, fmt.Sprintf("%04d", n), b)
	return sha256.Sum256(b), nil
}

func (e *env) gateRecords() []RoomRelease {
	var out []RoomRelease
	e.eng.Begin().Foreach(gateMap, func(_ string, v []byte) bool {
		var r RoomRelease
		if err := json.Unmarshal(v, &r); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, r)
		return true
	})
	return out
}

func (e *env) deposit(room, dataset string, key []byte) error {
	tx := e.eng.Begin()
	if err := e.broker.DepositDatasetKey(tx, room, dataset, key, "owner"); err != nil {
		return err
	}
	_, err := e.eng.Commit(context.Background(), tx, engine.CommitOptions{})
	return err
}

func TestReleaseDatasetKeys(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	keys := map[string][]byte{"tx1": bytes.Repeat([]byte{1}, 32), "tx2": bytes.Repeat([]byte{2}, 32)}
	for name, k := range keys {
		if err := e.deposit("aml", name, k); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.deposit("aml", "tx1", keys["tx1"]); !errors.Is(err, ErrKeyExists) {
		t.Errorf("second deposit of tx1: got %v, want ErrKeyExists", err)
	}
	if err := e.deposit("aml", "short", []byte("short")); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("deposit of a 5-byte key: got %v, want ErrInvalidKey", err)
	}
	// Data keys are not keys of the generic routes.
	if _, err := e.broker.Show("aml-tx1"); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("Show of a data key: got %v, want ErrKeyNotFound", err)
	}

	gate := &fakeGate{measurement: hex.EncodeToString(e.measurement), datasets: []string{"tx1", "tx2"}}
	runtime, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwk := jose.JSONWebKey{Key: &runtime.PublicKey, KeyID: "runner-enc", Use: "enc"}
	tok := e.roomToken(e.measurement, "n1", "aml", "ok", jwk)
	req := func(contract, token, nonce string) RoomReleaseRequest {
		return RoomReleaseRequest{Room: "aml", Contract: contract, Token: token, Nonce: nonce}
	}

	// Not recorded: a bad token, a wrong nonce, an unknown contract.
	for name, tc := range map[string]struct {
		req  RoomReleaseRequest
		want error
	}{
		"bad token":   {req("ok", tok[:len(tok)-4]+"AAAA", "n1"), attest.ErrInvalidToken},
		"wrong nonce": {req("ok", tok, "n2"), ErrNonceMismatch},
		"no nonce":    {req("ok", tok, ""), ErrNonceMismatch},
	} {
		if _, _, err := e.broker.ReleaseDatasetKeys(ctx, gate, tc.req); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
	}
	unknownTok := e.roomToken(e.measurement, "n4", "aml", "unknown", jwk)
	if _, _, err := e.broker.ReleaseDatasetKeys(ctx, gate, req("unknown", unknownTok, "n4")); err == nil || errors.Is(err, ErrPolicyNotSatisfied) {
		t.Errorf("unknown contract: got %v, want a plain error", err)
	}
	// A token attested for contract "ok" serves no other contract.
	if _, _, err := e.broker.ReleaseDatasetKeys(ctx, gate, req("proposed", tok, "n1")); !errors.Is(err, ErrTokenBinding) {
		t.Errorf("token of another contract: got %v, want ErrTokenBinding", err)
	}
	if n := len(e.gateRecords()); n != 0 {
		t.Fatalf("%d records after unauthenticated or unknown requests, want 0", n)
	}

	// Refused and recorded: the contract is not approved.
	propTok := e.roomToken(e.measurement, "n5", "aml", "proposed", jwk)
	_, id, err := e.broker.ReleaseDatasetKeys(ctx, gate, req("proposed", propTok, "n5"))
	var re *RefusedError
	if !errors.As(err, &re) || !errors.Is(err, ErrPolicyNotSatisfied) || re.TxID != id || id.Seqno == 0 {
		t.Fatalf("unapproved contract: got %v (tx %v), want a recorded refusal", err, id)
	}
	recs := e.gateRecords()
	if len(recs) != 1 || !strings.Contains(recs[0].Refused, "is Proposed") || recs[0].Datasets != nil || recs[0].Measurement != gate.measurement {
		t.Fatalf("refusal record %+v", recs)
	}

	// Refused: another measurement.
	other := sha256.Sum256([]byte("another binary"))
	e.allowMeasurement(t, other[:])
	otherTok := e.roomToken(other[:], "n3", "aml", "ok", jwk)
	if _, _, err := e.broker.ReleaseDatasetKeys(ctx, gate, req("ok", otherTok, "n3")); !errors.As(err, &re) {
		t.Fatalf("measurement not allowed: got %v, want a recorded refusal", err)
	}

	// Granted: both keys wrapped to the runtime key, bound to their names.
	got, id, err := e.broker.ReleaseDatasetKeys(ctx, gate, req("ok", tok, "n1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Keys) != 2 || got.Kid != "runner-enc" || got.Measurement != gate.measurement {
		t.Fatalf("release %+v", got)
	}
	for _, wk := range got.Keys {
		pt, err := Unwrap(runtime, wk.Enc, "aml/"+wk.Dataset, wk.Ciphertext)
		if err != nil || !bytes.Equal(pt, keys[wk.Dataset]) {
			t.Errorf("unwrap %s: %x, %v", wk.Dataset, pt, err)
		}
		if _, err := Unwrap(runtime, wk.Enc, "aml/other", wk.Ciphertext); err == nil {
			t.Errorf("the key of %s unwrapped under another name", wk.Dataset)
		}
	}
	recs = e.gateRecords()
	last := recs[len(recs)-1]
	if last.Refused != "" || strings.Join(last.Datasets, ",") != "tx1,tx2" || last.RuntimeKey == "" || last.TokenSHA256 == "" {
		t.Errorf("release record %+v", last)
	}
	if r, err := e.eng.Receipt(id); err != nil || r.LeafComponents.ClaimsDigest == strings.Repeat("0", 64) {
		t.Errorf("release receipt %+v, %v: want the gate's claims digest", r, err)
	}

	// A dataset without a key refuses the whole release.
	gate.datasets = []string{"tx1", "nokey"}
	if _, _, err := e.broker.ReleaseDatasetKeys(ctx, gate, req("ok", tok, "n1")); !errors.As(err, &re) || !strings.Contains(err.Error(), "nokey has no data key") {
		t.Errorf("dataset without a key: got %v", err)
	}
}

// allowMeasurement adds m to the env's appraisal policy.
func (e *env) allowMeasurement(t *testing.T, m []byte) {
	t.Helper()
	p, _, err := attest.ReadPolicy(e.eng.Begin())
	if err != nil {
		t.Fatal(err)
	}
	p.Virtual.Measurements = append(p.Virtual.Measurements, hex.EncodeToString(m))
	if _, err := attest.WritePolicy(context.Background(), e.eng, p); err != nil {
		t.Fatal(err)
	}
}

// roomToken attests virtual evidence of measurement binding a runner's
// runtime data: its keys, the room and the contract.
func (e *env) roomToken(measurement []byte, nonce, room, contract string, pubs ...jose.JSONWebKey) string {
	e.t.Helper()
	rt, err := json.Marshal(map[string]any{"keys": pubs, "room": room, "contract": contract})
	if err != nil {
		e.t.Fatal(err)
	}
	vk, err := tee.NewVirtualKey()
	if err != nil {
		e.t.Fatal(err)
	}
	var rd [tee.ReportDataSize]byte
	sum := sha256.Sum256(rt)
	copy(rd[:], sum[:])
	ev, err := tee.VirtualEvidence(vk, measurement, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	tok, err := e.svc.Attest(context.Background(), attest.Request{Platform: tee.Virtual, Evidence: ev, RuntimeData: rt, Nonce: nonce})
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func TestMeasurement(t *testing.T) {
	for _, tc := range []struct {
		claims map[string]any
		want   string
	}{
		{map[string]any{"x-parley-measurement": "aa"}, "aa"},
		{map[string]any{"x-parley-virtual": true, "x-parley-virtual-measurement": "bb"}, "bb"},
		{map[string]any{"x-parley-virtual-measurement": "bb"}, ""},
		{map[string]any{}, ""},
	} {
		if got := Measurement(tc.claims); got != tc.want {
			t.Errorf("Measurement(%v) = %q, want %q", tc.claims, got, tc.want)
		}
	}
}
