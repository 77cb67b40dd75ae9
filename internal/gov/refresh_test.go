package gov

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"github.com/parleyhq/parley/internal/ledger"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

func TestRefreshJWKS(t *testing.T) {
	f := newFixture(t, 1)
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	set := func(k *ecdsa.PrivateKey, kid string) []byte {
		b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: kid, Algorithm: "ES256", Use: "sig"}}})
		return b
	}
	var published atomic.Value
	published.Store(set(k2, "k2"))
	var srv *httptest.Server
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"issuer": srv.URL, "jwks_uri": srv.URL + "/keys"})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) { w.Write(published.Load().([]byte)) })
	srv = httptest.NewTLSServer(mux)
	defer srv.Close()

	args, _ := json.Marshal(map[string]any{"issuer": srv.URL, "jwks": json.RawMessage(set(k1, "k1")), "auto_refresh": true})
	p, err := f.propose(t, f.members[0], Action{Name: "set_jwt_issuer", Args: args})
	if err != nil {
		t.Fatal(err)
	}
	if p, err = f.vote(t, f.members[0], p.ProposalID, BallotAccept); err != nil || p.State != StateAccepted {
		t.Fatalf("vote: %v %v", p, err)
	}
	token := func(k *ecdsa.PrivateKey, kid string) string {
		s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: k, KeyID: kid}}, nil)
		tok, _ := jwt.Signed(s).Claims(map[string]any{"iss": srv.URL, "sub": "bob", "exp": f.clock().Add(time.Hour).Unix()}).Serialize()
		return tok
	}
	if _, err := f.gov.VerifyBearer(token(k1, "k1")); err != nil {
		t.Fatalf("k1 before refresh: %v", err)
	}
	if _, err := f.gov.VerifyBearer(token(k2, "k2")); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("k2 before refresh: %v, want ErrInvalidToken", err)
	}
	before := f.eng.Current()
	if err := f.gov.RefreshJWKS(context.Background(), srv.Client()); err != nil {
		t.Fatal(err)
	}
	if f.eng.Current() == before {
		t.Fatal("refresh wrote no transaction")
	}
	if id, err := f.gov.VerifyBearer(token(k2, "k2")); err != nil || id != "bob" {
		t.Errorf("k2 after refresh: %q, %v", id, err)
	}
	if _, err := f.gov.VerifyBearer(token(k1, "k1")); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("k1 after refresh: %v, want ErrInvalidToken", err)
	}
	// Unchanged keys write nothing; a bad key set is refused and kept out.
	cur := f.eng.Current()
	if err := f.gov.RefreshJWKS(context.Background(), srv.Client()); err != nil {
		t.Errorf("second refresh: %v", err)
	}
	// Only signature transactions (emitted on a timer) may follow.
	for now := f.eng.Current(); cur.Seqno < now.Seqno; {
		cur.Seqno++
		if rec, err := f.eng.Read(ledger.TxID{View: now.View, Seqno: cur.Seqno}); err == nil && rec.Kind != ledger.KindSignature {
			t.Errorf("second refresh wrote transaction %d", cur.Seqno)
		}
	}
	published.Store([]byte(`{"keys":[]}`))
	if err := f.gov.RefreshJWKS(context.Background(), srv.Client()); err == nil {
		t.Error("refresh with an empty key set: nil error")
	}
	if _, err := f.gov.VerifyBearer(token(k2, "k2")); err != nil {
		t.Errorf("k2 after a refused refresh: %v", err)
	}
}
