package httpapi

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/go-jose/go-jose/v4"
	sevtestdata "github.com/google/go-sev-guest/verify/testdata"

	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/internal/attest"
	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/keyrelease"
	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/receipt"
	"github.com/parleyhq/parley/internal/tee"
)

const testIssuer = "https://parley.test"

// lateLedger delegates to an engine that exists only once the fixture is
// built.
type lateLedger struct{ eng **engine.Engine }

func (l lateLedger) Begin() *kv.Tx { return (*l.eng).Begin() }
func (l lateLedger) Commit(ctx context.Context, tx *kv.Tx, o engine.CommitOptions) (ledger.TxID, error) {
	return (*l.eng).Commit(ctx, tx, o)
}
func (l lateLedger) WaitCommitted(ctx context.Context, id ledger.TxID) error {
	return (*l.eng).WaitCommitted(ctx, id)
}

func newAttestFixture(t *testing.T) *fixture {
	t.Helper()
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
	f := newFixture(t, Config{Attestation: svc, Keys: broker})
	eng = f.eng
	return f
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func TestAttestAndReleaseOverHTTP(t *testing.T) {
	f := newAttestFixture(t)

	// Discovery is anonymous.
	r := f.do("anonymous", "GET", "/.well-known/openid-configuration", nil)
	f.mustStatus(r, 200)
	var oidc attest.OpenIDConfiguration
	r.decode(t, &oidc)
	if oidc.Issuer != testIssuer || oidc.JWKSURI != testIssuer+"/certs" {
		t.Errorf("openid configuration = %+v", oidc)
	}
	r = f.do("anonymous", "GET", "/certs", nil)
	f.mustStatus(r, 200)
	var jwks jose.JSONWebKeySet
	r.decode(t, &jwks)
	if len(jwks.Keys) != 1 {
		t.Fatalf("JWKS has %d keys, want 1", len(jwks.Keys))
	}

	// Only an Administrator sets the appraisal policy.
	measurement := sha256.Sum256([]byte("runner"))
	policy := []byte(`{"allowVirtual":true,"allowDebug":true,"virtual":{"measurements":["*"]}}`)
	f.mustStatus(f.do("reader", "PUT", "/app/attestation/policy", policy), 403)
	f.mustStatus(f.do("admin", "PUT", "/app/attestation/policy", []byte(`{"sevSnp":{"measurements":["00"]}}`)), 400)
	f.mustStatus(f.do("admin", "PUT", "/app/attestation/policy", policy), 200)
	r = f.do("reader", "GET", "/app/attestation/policy", nil)
	f.mustStatus(r, 200)
	if !bytes.Contains(r.body, []byte(`"allowVirtual":true`)) {
		t.Errorf("GET policy = %s", r.body)
	}

	// A runner attests with virtual evidence binding its runtime key.
	runtimeKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rt, _ := json.Marshal(map[string]any{"keys": []jose.JSONWebKey{{Key: &runtimeKey.PublicKey, KeyID: "rk"}}})
	vk, _ := tee.NewVirtualKey()
	var rd [tee.ReportDataSize]byte
	sum := sha256.Sum256(rt)
	copy(rd[:], sum[:])
	ev, err := tee.VirtualEvidence(vk, measurement[:], rd)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{"report": b64(ev), "runtimeData": map[string]string{"data": b64(rt), "dataType": "JSON"}, "nonce": "n1"})
	r = f.do("anonymous", "POST", "/attest/Virtual", body)
	f.mustStatus(r, 200)
	var tr struct{ Token string }
	r.decode(t, &tr)
	claims, err := (&attest.Verifier{Keys: jwks, Issuer: testIssuer, Audience: testIssuer}).Verify(tr.Token)
	if err != nil {
		t.Fatalf("the token does not verify with the served JWKS: %v", err)
	}
	if claims["x-ms-attestation-type"] != "virtual" || claims["x-parley-virtual"] != true || claims["nonce"] != "n1" {
		t.Errorf("claims = %v", claims)
	}

	// Keys: a Contributor creates, a Reader shows and releases.
	kp := []byte(`{"version":"1.0.0","anyOf":[{"authority":"parley.test","allOf":[{"claim":"x-ms-attestation-type","equals":"virtual"}]}]}`)
	material := bytes.Repeat([]byte{7}, 32)
	create, _ := json.Marshal(map[string]any{"release_policy": map[string]string{"contentType": "application/json; charset=utf-8", "data": b64(kp)}, "key": b64(material)})
	f.mustStatus(f.do("reader", "PUT", "/app/keys/k1", create), 403)
	f.mustStatus(f.do("contributor", "PUT", "/app/keys/k1", create), 201)
	r = f.do("contributor", "PUT", "/app/keys/k1", create)
	f.mustStatus(r, 409)
	if got := r.code(t); got != CodeKeyAlreadyExists {
		t.Errorf("code = %s, want %s", got, CodeKeyAlreadyExists)
	}
	r = f.do("reader", "GET", "/app/keys/k1", nil)
	f.mustStatus(r, 200)
	if bytes.Contains(r.body, []byte("material")) || !bytes.Contains(r.body, []byte(`"kty":"oct"`)) {
		t.Errorf("GET key = %s", r.body)
	}
	f.mustStatus(f.do("stranger", "POST", "/app/keys/k1/release", nil), 401)
	bad, _ := json.Marshal(map[string]string{"target": tr.Token, "nonce": "other"})
	r = f.do("reader", "POST", "/app/keys/k1/release", bad)
	f.mustStatus(r, 403)
	rel, _ := json.Marshal(map[string]string{"target": tr.Token, "nonce": "n1"})
	r = f.do("reader", "POST", "/app/keys/k1/release", rel)
	f.mustStatus(r, 200)
	var out struct {
		keyrelease.Released
		TransactionID string       `json:"transactionId"`
		Receipt       *api.Receipt `json:"receipt"`
	}
	r.decode(t, &out)
	got, err := keyrelease.Unwrap(runtimeKey, out.Enc, "k1", out.Ciphertext)
	if err != nil || !bytes.Equal(got, material) {
		t.Errorf("Unwrap = %x, %v, want %x", got, err, material)
	}
	if err := receipt.Verify(out.Receipt, f.serviceCert); err != nil {
		t.Errorf("release receipt does not verify: %v", err)
	}
	f.mustStatus(f.do("reader", "POST", "/app/keys/nope/release", rel), 404)

	// The debug SNP sample is refused by this policy (no sevSnp section).
	snp, _ := json.Marshal(map[string]string{"SnpReport": b64(sevtestdata.AttestationBytes), "VcekCertChain": b64(sevtestdata.VcekBytes)})
	body, _ = json.Marshal(map[string]any{"report": b64(snp)})
	r = f.do("anonymous", "POST", "/attest/SevSnpVm", body)
	f.mustStatus(r, 400)
	if got := r.code(t); got != CodeEvidenceRefused {
		t.Errorf("SNP sample: code %s, want %s", got, CodeEvidenceRefused)
	}
	f.mustStatus(f.do("anonymous", "POST", "/attest/SgxEnclave", body), 404)
	f.mustStatus(f.do("anonymous", "POST", "/attest/Virtual", []byte(`{"report":"!!"}`)), 400)
}

func FuzzDecodeAttest(f *testing.F) {
	snp, _ := json.Marshal(map[string]string{"SnpReport": b64([]byte{1, 2}), "VcekCertChain": b64([]byte{3})})
	f.Add("SevSnpVm", []byte(`{"report":"`+b64(snp)+`","runtimeData":{"data":"e30","dataType":"JSON"},"nonce":"n"}`))
	f.Add("Virtual", []byte(`{"report":"e30","audience":"a"}`))
	f.Add("TdxVm", []byte(`{"quote":"AAAA"}`))
	f.Fuzz(func(t *testing.T, platform string, body []byte) {
		p, err := tee.ParsePlatform(platform)
		if err != nil {
			return
		}
		req, err := decodeAttest(p, body)
		if err == nil && req.Platform != p {
			t.Fatalf("platform %s, want %s", req.Platform, p)
		}
		decodeKey(body)
	})
}
