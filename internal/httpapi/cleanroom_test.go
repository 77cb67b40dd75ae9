package httpapi

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/cleanroom"
	"github.com/parleyhq/parley/internal/cleanroom/dataset"
)

type crParty struct {
	key     *ecdsa.PrivateKey
	id, pem string
	counter uint64
}

func newCRParty(t *testing.T) *crParty {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := cleanroom.PartyID(&k.PublicKey)
	pem, _ := cleanroom.EncodePublicKey(&k.PublicKey)
	return &crParty{key: k, id: id, pem: pem}
}

// withCleanRoom asks newFixture for a clean-room service over its engine.
var withCleanRoom = &CleanRoomService{}

func (p *crParty) sign(t *testing.T, typ string, body any) []byte {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	p.counter++
	jws, err := cleanroom.Sign(p.key, p.id, &cleanroom.Request{Type: typ, Room: "aml", CreatedAt: time.Now().Unix(), Counter: p.counter, Body: b})
	if err != nil {
		t.Fatal(err)
	}
	return jws
}

func TestCleanRoomRoutes(t *testing.T) {
	f := newFixture(t, Config{CleanRoom: withCleanRoom})
	do := func(method, path string, body []byte, want int) map[string]any {
		t.Helper()
		r := f.do("reader", method, path, body)
		if r.status != want {
			t.Fatalf("%s %s: status %d (%s), want %d", method, path, r.status, r.body, want)
		}
		var out map[string]any
		json.Unmarshal(r.body, &out)
		return out
	}
	if r := f.do("anonymous", "GET", "/cleanroom/rooms/aml/datasets/tx1", nil); r.status != http.StatusUnauthorized {
		t.Errorf("room read without a client certificate: status %d, want 401", r.status)
	}
	owner, reg := newCRParty(t), newCRParty(t)
	create := owner.sign(t, cleanroom.TypeCreateRoom, cleanroom.CreateRoomBody{Name: "bank1", PublicKey: owner.pem})
	do("POST", "/cleanroom/create_room", create, http.StatusOK)
	if got := do("POST", "/cleanroom/create_room", create, http.StatusBadRequest); got["error"] == nil {
		t.Errorf("replay answered %v, want an error body", got)
	}
	do("POST", "/cleanroom/invite", owner.sign(t, cleanroom.TypeInvite, cleanroom.InviteBody{Name: "regulator", PublicKey: reg.pem}), http.StatusOK)
	do("POST", "/cleanroom/join", reg.sign(t, cleanroom.TypeJoin, struct{}{}), http.StatusOK)
	do("POST", "/cleanroom/nonsense", nil, http.StatusNotFound)
	// The path's action must match the signed type.
	do("POST", "/cleanroom/invite", owner.sign(t, cleanroom.TypeJoin, struct{}{}), http.StatusBadRequest)

	schema := dataset.Schema{Columns: []dataset.Column{{Name: "account", Type: dataset.Varchar}}}
	do("POST", "/cleanroom/register_dataset", owner.sign(t, cleanroom.TypeRegisterDataset, cleanroom.Dataset{Name: "tx1", Digest: strings.Repeat("a", 64), Size: 1, Schema: schema}), http.StatusOK)
	do("GET", "/cleanroom/rooms/aml/datasets/tx1", nil, http.StatusOK)
	do("GET", "/cleanroom/rooms/aml/datasets/nope", nil, http.StatusNotFound)

	hk, _ := ecdh.X25519().GenerateKey(rand.Reader)
	c := do("POST", "/cleanroom/propose_contract", owner.sign(t, cleanroom.TypeProposeContract, cleanroom.ContractTerms{
		Name: "count", SQL: "SELECT count(*) FROM tx1", Datasets: []string{"tx1"},
		Recipients:   []cleanroom.Recipient{{Party: reg.id, Curve: "X25519", Key: hk.PublicKey().Bytes()}},
		Measurements: []string{strings.Repeat("ab", 48)},
	}), http.StatusOK)
	cid, _ := c["id"].(string)
	do("POST", "/cleanroom/approve", reg.sign(t, cleanroom.TypeApprove, cleanroom.ContractRef{Contract: cid}), http.StatusForbidden)
	if got := do("POST", "/cleanroom/approve", owner.sign(t, cleanroom.TypeApprove, cleanroom.ContractRef{Contract: cid}), http.StatusOK); got["state"] != cleanroom.ContractApproved {
		t.Errorf("contract state %v after the only owner approved, want Approved", got["state"])
	}
	do("POST", "/cleanroom/suspend", reg.sign(t, cleanroom.TypeSuspend, cleanroom.ContractRef{Contract: cid}), http.StatusOK)
	do("POST", "/cleanroom/approve", owner.sign(t, cleanroom.TypeApprove, cleanroom.ContractRef{Contract: cid}), http.StatusConflict)
	if got := do("GET", "/cleanroom/rooms/aml/contracts/"+cid, nil, http.StatusOK); got["state"] != cleanroom.ContractSuspended {
		t.Errorf("contract state %v, want Suspended", got["state"])
	}
}
