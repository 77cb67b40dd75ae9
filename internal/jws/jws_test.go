package jws

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

func key(t *testing.T, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSignParseVerify(t *testing.T) {
	k := key(t, elliptic.P384())
	b, err := Sign(k, "member-1", "parley-test+jws", []byte(`{"x":1}`))
	if err != nil {
		t.Fatal(err)
	}
	o, err := Parse(b, 1<<10)
	if err != nil {
		t.Fatal(err)
	}
	if o.KeyID != "member-1" || o.Type != "parley-test+jws" || o.Raw != string(b) {
		t.Errorf("Parse = kid %q typ %q, want member-1 parley-test+jws", o.KeyID, o.Type)
	}
	if got, err := o.Verify(&k.PublicKey); err != nil || string(got) != `{"x":1}` {
		t.Errorf("Verify = %q, %v", got, err)
	}
	if _, err := o.Verify(&key(t, elliptic.P384()).PublicKey); !errors.Is(err, ErrBadSignature) {
		t.Errorf("Verify with another key: err = %v, want ErrBadSignature", err)
	}
	if _, err := Parse(b, len(b)-1); !errors.Is(err, ErrMalformed) {
		t.Errorf("Parse over the bound: err = %v, want ErrMalformed", err)
	}
	if _, err := Parse(nil, 10); !errors.Is(err, ErrMalformed) {
		t.Errorf("Parse of nothing: err = %v, want ErrMalformed", err)
	}
}

func TestSignRefusesOtherCurves(t *testing.T) {
	if _, err := Sign(key(t, elliptic.P256()), "m", "t", []byte("{}")); err == nil {
		t.Errorf("Sign with a P-256 key succeeded")
	}
}

func TestParseRefusesEmbeddedKeyAndOtherAlgorithms(t *testing.T) {
	k := key(t, elliptic.P384())
	opts := (&jose.SignerOptions{}).WithType("t")
	opts.EmbedJWK = true
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES384, Key: k}, opts)
	if err != nil {
		t.Fatal(err)
	}
	obj, _ := s.Sign([]byte("{}"))
	compact, _ := obj.CompactSerialize()
	if _, err := Parse([]byte(compact), 1<<12); !errors.Is(err, ErrMalformed) {
		t.Errorf("embedded key: err = %v, want ErrMalformed", err)
	}
	k256 := key(t, elliptic.P256())
	s256, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: k256, KeyID: "m"}}, nil)
	obj, _ = s256.Sign([]byte("{}"))
	compact, _ = obj.CompactSerialize()
	if _, err := Parse([]byte(compact), 1<<12); !errors.Is(err, ErrMalformed) {
		t.Errorf("ES256: err = %v, want ErrMalformed", err)
	}
}

func FuzzParse(f *testing.F) {
	k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	b, _ := Sign(k, "m", "t", []byte(`{"a":"b"}`))
	f.Add(b)
	f.Add([]byte("a.b.c"))
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := Parse(b, 1<<16)
		if err != nil {
			if o != nil {
				t.Fatalf("Parse returned an object with error %v", err)
			}
			return
		}
		o.Verify(&k.PublicKey)
	})
}
