package keyrelease

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/parleyhq/parley/internal/attest"
	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/node"
	"github.com/parleyhq/parley/internal/receipt"
	"github.com/parleyhq/parley/internal/tee"
	"github.com/parleyhq/parley/internal/vfs"
)

// env is a real engine, an attestation service trusting virtual evidence
// of one measurement, and a broker accepting its tokens.
type env struct {
	t           *testing.T
	eng         *engine.Engine
	serviceCert *x509.Certificate
	svc         *attest.Service
	broker      *Broker
	now         time.Time
	measurement []byte
	dir         string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	id, err := node.Init(vfs.OS{}, dir, node.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.Open(engine.Config{Dir: filepath.Join(dir, node.LedgerDir), Secret: id.Secret, NodeKey: id.NodeKey,
		NodeCertPEM: id.NodeCertPEM, SignatureInterval: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	e := &env{t: t, eng: eng, serviceCert: id.Service.Cert, now: time.Now(), dir: dir}
	m := sha256.Sum256([]byte("runner binary"))
	e.measurement = m[:]
	if _, err := attest.WritePolicy(context.Background(), eng, &tee.Policy{AllowVirtual: true, AllowDebug: true,
		Virtual: &tee.VirtualPolicy{Measurements: []string{hex.EncodeToString(m[:])}}}); err != nil {
		t.Fatal(err)
	}
	key, err := attest.DeriveSigningKey(id.Service.Key)
	if err != nil {
		t.Fatal(err)
	}
	e.svc, err = attest.New(attest.Config{Issuer: iss, Key: key, Policy: attest.LedgerPolicy(eng), Now: func() time.Time { return e.now }})
	if err != nil {
		t.Fatal(err)
	}
	e.broker = New(eng, &attest.Verifier{Keys: e.svc.JWKS(), Issuer: iss, Audience: iss, Now: func() time.Time { return e.now }})
	return e
}

// token attests virtual evidence of measurement binding runtime keys.
func (e *env) token(measurement []byte, nonce, audience string, pubs ...jose.JSONWebKey) string {
	e.t.Helper()
	rt, err := json.Marshal(map[string]any{"keys": pubs})
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
	tok, err := e.svc.Attest(context.Background(), attest.Request{Platform: tee.Virtual, Evidence: ev, RuntimeData: rt, Nonce: nonce, Audience: audience})
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func (e *env) releases() int {
	n := 0
	e.eng.Begin().Foreach(ReleasesMap, func(string, []byte) bool { n++; return true })
	return n
}

func releasePolicy(measurement []byte) []byte {
	return []byte(`{"version":"1.0.0","anyOf":[{"authority":"` + iss + `","allOf":[
		{"claim":"x-ms-attestation-type","equals":"virtual"},
		{"claim":"x-parley-virtual-measurement","equals":"` + hex.EncodeToString(measurement) + `"}]}]}`)
}

func TestReleaseWrapsToTheAttestedKey(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	material := bytes.Repeat([]byte{0x42}, 32)
	k, _, err := e.broker.Create(ctx, "dataset-1", CreateRequest{Policy: releasePolicy(e.measurement), Material: material}, "alice")
	if err != nil {
		t.Fatalf("Create = %v", err)
	}
	if k.Name != "dataset-1" || k.Kty != "oct" || k.Size != 32 || k.CreatedBy != "alice" {
		t.Errorf("Create returned %+v", k)
	}
	if _, _, err := e.broker.Create(ctx, "dataset-1", CreateRequest{Policy: releasePolicy(e.measurement)}, "alice"); !errors.Is(err, ErrKeyExists) {
		t.Errorf("Create(again) = %v, want ErrKeyExists", err)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	tests := []struct {
		name string
		priv any
		pub  any
		enc  string
	}{
		{"ec p-256", ecKey, &ecKey.PublicKey, EncHPKEP256},
		{"ec p-384", ec384, &ec384.PublicKey, EncHPKEP384},
		{"rsa", rsaKey, &rsaKey.PublicKey, EncRSAOAEP256},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok := e.token(e.measurement, "nonce-"+tc.name, "", jose.JSONWebKey{Key: tc.pub, KeyID: "runtime"})
			rel, id, err := e.broker.Release(ctx, "dataset-1", ReleaseRequest{Token: tok, Nonce: "nonce-" + tc.name}, "runner")
			if err != nil {
				t.Fatalf("Release = %v", err)
			}
			if rel.Enc != tc.enc || rel.Kid != "runtime" {
				t.Errorf("enc, kid = %s, %s, want %s, runtime", rel.Enc, rel.Kid, tc.enc)
			}
			got, err := Unwrap(tc.priv, rel.Enc, "dataset-1", rel.Ciphertext)
			if err != nil || !bytes.Equal(got, material) {
				t.Fatalf("Unwrap = %x, %v, want %x", got, err, material)
			}
			// Only the attested private key unwraps it.
			var other any
			switch tc.priv.(type) {
			case *rsa.PrivateKey:
				other, _ = rsa.GenerateKey(rand.Reader, 2048)
			case *ecdsa.PrivateKey:
				other, _ = ecdsa.GenerateKey(tc.priv.(*ecdsa.PrivateKey).Curve, rand.Reader)
			}
			if _, err := Unwrap(other, rel.Enc, "dataset-1", rel.Ciphertext); err == nil {
				t.Error("Unwrap with another private key succeeded")
			}
			if _, err := Unwrap(tc.priv, rel.Enc, "dataset-2", rel.Ciphertext); err == nil {
				t.Error("Unwrap under another key name succeeded")
			}
			// The release is on the ledger, with a receipt that verifies.
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := e.eng.WaitCommitted(wctx, id); err != nil {
				t.Fatal(err)
			}
			r, err := e.eng.Receipt(id)
			if err != nil {
				t.Fatalf("Receipt = %v", err)
			}
			if err := receipt.Verify(r, e.serviceCert); err != nil {
				t.Errorf("receipt.Verify = %v", err)
			}
			rec, err := e.eng.Read(id)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, mw := range rec.WriteSet.Maps {
				for _, w := range mw.Writes {
					if mw.Map == ReleasesMap && w.Key == rel.ReleaseID {
						found = true
						var rr releaseRecord
						if err := json.Unmarshal(w.Value, &rr); err != nil || rr.User != "runner" || rr.Key != "dataset-1" || rr.Enc != tc.enc {
							t.Errorf("release record = %+v, %v", rr, err)
						}
					}
				}
			}
			if !found {
				t.Errorf("transaction %v holds no release record %s", id, rel.ReleaseID)
			}
		})
	}
	if got := e.releases(); got != len(tests) {
		t.Errorf("%d release records, want %d", got, len(tests))
	}
}

func TestReleaseRefuses(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, _, err := e.broker.Create(ctx, "k", CreateRequest{Policy: releasePolicy(e.measurement)}, "alice"); err != nil {
		t.Fatal(err)
	}
	strictPolicy := []byte(`{"version":"1.0.0","anyOf":[{"authority":"` + iss + `","allOf":[{"claim":"x-ms-attestation-type","equals":"sevsnpvm"}]}]}`)
	if _, _, err := e.broker.Create(ctx, "snp-only", CreateRequest{Policy: strictPolicy}, "alice"); err != nil {
		t.Fatal(err)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub := jose.JSONWebKey{Key: &ecKey.PublicKey}
	good := e.token(e.measurement, "n", "", pub)
	// A service with another key, as a forger would run.
	forgerKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	forger, err := attest.New(attest.Config{Issuer: iss, Key: forgerKey, Policy: attest.LedgerPolicy(e.eng)})
	if err != nil {
		t.Fatal(err)
	}
	fe := *e
	fe.svc = forger
	forged := fe.token(e.measurement, "n", "", pub)
	smallRSA, _ := rsa.GenerateKey(rand.Reader, 1024)

	tests := []struct {
		name  string
		key   string
		req   ReleaseRequest
		want  error
		setup func()
	}{
		{"nonce mismatch", "k", ReleaseRequest{Token: good, Nonce: "m"}, ErrNonceMismatch, nil},
		{"no nonce", "k", ReleaseRequest{Token: good}, ErrNonceMismatch, nil},
		{"wrong audience", "k", ReleaseRequest{Token: e.token(e.measurement, "n", "https://elsewhere", pub), Nonce: "n"}, attest.ErrInvalidToken, nil},
		{"forged", "k", ReleaseRequest{Token: forged, Nonce: "n"}, attest.ErrInvalidToken, nil},
		{"unsigned", "k", ReleaseRequest{Token: "eyJhbGciOiJub25lIn0.eyJub25jZSI6Im4ifQ.", Nonce: "n"}, attest.ErrInvalidToken, nil},
		{"policy not satisfied", "snp-only", ReleaseRequest{Token: good, Nonce: "n"}, ErrPolicyNotSatisfied, nil},
		{"no runtime key", "k", ReleaseRequest{Token: e.token(e.measurement, "n", ""), Nonce: "n"}, ErrNoRuntimeKey, nil},
		{"runtime RSA key too small", "k", ReleaseRequest{Token: e.token(e.measurement, "n", "", jose.JSONWebKey{Key: &smallRSA.PublicKey}), Nonce: "n"}, ErrNoRuntimeKey, nil},
		{"unknown kid", "k", ReleaseRequest{Token: good, Nonce: "n", KeyID: "nope"}, ErrNoRuntimeKey, nil},
		{"unknown key", "nope", ReleaseRequest{Token: good, Nonce: "n"}, ErrKeyNotFound, nil},
		{"bad key name", "a/b", ReleaseRequest{Token: good, Nonce: "n"}, ErrInvalidName, nil},
		{"expired", "k", ReleaseRequest{Token: good, Nonce: "n"}, attest.ErrInvalidToken, func() { e.now = e.now.Add(attest.DefaultLifetime + time.Minute) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
			}
			if _, _, err := e.broker.Release(ctx, tc.key, tc.req, "runner"); !errors.Is(err, tc.want) {
				t.Errorf("Release = %v, want %v", err, tc.want)
			}
		})
	}
	if n := e.releases(); n != 0 {
		t.Errorf("%d release records after refusals, want 0", n)
	}
}

func TestReleaseOtherMeasurementRefused(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	other := sha256.Sum256([]byte("other binary"))
	// The attestation policy accepts both; the key's release policy only one.
	if _, err := attest.WritePolicy(ctx, e.eng, &tee.Policy{AllowVirtual: true, AllowDebug: true, Virtual: &tee.VirtualPolicy{Measurements: []string{tee.AnyMeasurement}}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.broker.Create(ctx, "k", CreateRequest{Policy: releasePolicy(e.measurement)}, "alice"); err != nil {
		t.Fatal(err)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tok := e.token(other[:], "n", "", jose.JSONWebKey{Key: &ecKey.PublicKey})
	if _, _, err := e.broker.Release(ctx, "k", ReleaseRequest{Token: tok, Nonce: "n"}, "runner"); !errors.Is(err, ErrPolicyNotSatisfied) {
		t.Errorf("Release(other measurement) = %v, want ErrPolicyNotSatisfied", err)
	}
	if _, _, err := e.broker.Release(ctx, "k", ReleaseRequest{Token: e.token(e.measurement, "n", "", jose.JSONWebKey{Key: &ecKey.PublicKey}), Nonce: "n"}, "runner"); err != nil {
		t.Errorf("Release(allowed measurement) = %v", err)
	}
}

func TestCreateRefuses(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tests := []struct {
		name string
		key  string
		req  CreateRequest
		want error
	}{
		{"bad name", "a b", CreateRequest{Policy: releasePolicy(e.measurement)}, ErrInvalidName},
		{"bad policy", "k", CreateRequest{Policy: []byte(`{}`)}, ErrInvalidPolicy},
		{"short key", "k", CreateRequest{Policy: releasePolicy(e.measurement), Material: make([]byte, 8)}, ErrInvalidKey},
		{"long key", "k", CreateRequest{Policy: releasePolicy(e.measurement), Material: make([]byte, 65)}, ErrInvalidKey},
	}
	for _, tc := range tests {
		if _, _, err := e.broker.Create(ctx, tc.key, tc.req, "alice"); !errors.Is(err, tc.want) {
			t.Errorf("%s: Create = %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := e.broker.Show("k"); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("Show after refusals = %v, want ErrKeyNotFound", err)
	}
}

// TestKeyMaterialNotInClear checks that a key's bytes never reach the
// ledger files in clear: KeysMap is private, so sealed.
func TestKeyMaterialNotInClear(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	material := []byte("0123456789abcdef-DISTINCTIVE-KEY")
	_, id, err := e.broker.Create(ctx, "secret", CreateRequest{Policy: releasePolicy(e.measurement), Material: material}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := e.eng.WaitCommitted(wctx, id); err != nil {
		t.Fatal(err)
	}
	files := 0
	filepath.WalkDir(e.dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		if bytes.Contains(b, material) || bytes.Contains(b, []byte(base64.StdEncoding.EncodeToString(material))) {
			t.Errorf("%s holds the key material in clear", p)
		}
		return nil
	})
	if files == 0 {
		t.Fatal("no ledger files to scan")
	}
	rec, err := e.eng.Read(id)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(fmt.Sprint(rec.WriteSet), KeysMap) {
		t.Errorf("transaction %v does not write %s", id, KeysMap)
	}
}
