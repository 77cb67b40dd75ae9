package gov

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

func BenchmarkVerifyBearer(b *testing.B) {
	f := newFixture(b, 1)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1"}}})
	args, _ := json.Marshal(map[string]any{"issuer": "https://i.test", "jwks": json.RawMessage(jwks)})
	m := f.members[0]
	p, _, err := f.gov.Propose(context.Background(), m.sign(b, TypeProposal, "", ProposalBody{Actions: []Action{{Name: "set_jwt_issuer", Args: args}}}, f.clock()))
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := f.gov.Vote(context.Background(), p.ProposalID, m.sign(b, TypeBallot, p.ProposalID, Ballot{BallotAccept}, f.clock())); err != nil {
		b.Fatal(err)
	}
	s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}}, nil)
	tok, _ := jwt.Signed(s).Claims(map[string]any{"iss": "https://i.test", "sub": "alice", "exp": f.clock().Add(time.Hour).Unix()}).Serialize()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.gov.VerifyBearer(tok); err != nil {
			b.Fatal(err)
		}
	}
}
