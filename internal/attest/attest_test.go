package attest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	sevtestdata "github.com/google/go-sev-guest/verify/testdata"

	"github.com/parleyhq/parley/internal/identity"
	"github.com/parleyhq/parley/internal/tee"
)

const issuer = "https://parley.test"

var snpNow = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func newService(t testing.TB, p *tee.Policy, now time.Time) *Service {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{
		Issuer: issuer, Key: key,
		Policy: func() (*tee.Policy, []byte, error) { return p, []byte("digest"), nil },
		Now:    func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func verifier(s *Service, now time.Time) *Verifier {
	return &Verifier{Keys: s.JWKS(), Issuer: issuer, Audience: issuer, Now: func() time.Time { return now }}
}

// virtualEvidence returns virtual evidence of measurement binding runtime.
func virtualEvidence(t testing.TB, measurement []byte, runtime []byte) []byte {
	t.Helper()
	key, err := tee.NewVirtualKey()
	if err != nil {
		t.Fatal(err)
	}
	var rd [tee.ReportDataSize]byte
	sum := sha256.Sum256(runtime)
	copy(rd[:], sum[:])
	raw, err := tee.VirtualEvidence(key, measurement, rd)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

var virtualPolicy = &tee.Policy{AllowVirtual: true, AllowDebug: true, Virtual: &tee.VirtualPolicy{Measurements: []string{tee.AnyMeasurement}}}

func TestAttestVirtual(t *testing.T) {
	now := time.Now()
	s := newService(t, virtualPolicy, now)
	m := sha256.Sum256([]byte("binary"))
	runtime := []byte(`{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"a","y":"b"}],"client":"x"}`)
	tok, err := s.Attest(context.Background(), Request{Platform: tee.Virtual, Evidence: virtualEvidence(t, m[:], runtime), RuntimeData: runtime, Nonce: "n-1"})
	if err != nil {
		t.Fatalf("Attest = %v", err)
	}
	claims, err := verifier(s, now).Verify(tok)
	if err != nil {
		t.Fatalf("Verify = %v", err)
	}
	want := map[string]any{
		"x-ms-attestation-type":        "virtual",
		"x-parley-virtual":             true,
		"x-parley-virtual-measurement": hex.EncodeToString(m[:]),
		"nonce":                        "n-1",
		"iss":                          issuer,
		"aud":                          issuer,
		"x-ms-ver":                     Version,
	}
	for k, v := range want {
		if claims[k] != v {
			t.Errorf("claim %s = %v, want %v", k, claims[k], v)
		}
	}
	rt, _ := claims["x-ms-runtime"].(map[string]any)
	if rt["client"] != "x" {
		t.Errorf("x-ms-runtime = %v, want the runtime data", claims["x-ms-runtime"])
	}
	if exp, iat := claims["exp"].(float64), claims["iat"].(float64); exp-iat != DefaultLifetime.Seconds() {
		t.Errorf("exp - iat = %v, want %v", exp-iat, DefaultLifetime.Seconds())
	}
}

func TestAttestRefusals(t *testing.T) {
	m := sha256.Sum256([]byte("binary"))
	runtime := []byte(`{"keys":[]}`)
	ev := virtualEvidence(t, m[:], runtime)
	tests := []struct {
		name   string
		policy *tee.Policy
		req    Request
		want   error
	}{
		{"empty policy", &tee.Policy{}, Request{Platform: tee.Virtual, Evidence: ev, RuntimeData: runtime}, tee.ErrRefused},
		{"virtual not opted in", &tee.Policy{AllowDebug: true, Virtual: &tee.VirtualPolicy{Measurements: []string{"*"}}}, Request{Platform: tee.Virtual, Evidence: ev, RuntimeData: runtime}, tee.ErrRefused},
		{"runtime data not bound", virtualPolicy, Request{Platform: tee.Virtual, Evidence: ev, RuntimeData: []byte(`{"keys":[1]}`)}, ErrReportData},
		{"runtime data not an object", virtualPolicy, Request{Platform: tee.Virtual, Evidence: ev, RuntimeData: []byte(`[1]`)}, ErrInvalidRequest},
		{"wrong platform", virtualPolicy, Request{Platform: tee.TDX, Evidence: ev}, tee.ErrMalformed},
		{"long nonce", virtualPolicy, Request{Platform: tee.Virtual, Evidence: ev, Nonce: strings.Repeat("n", MaxNonceSize+1)}, ErrInvalidRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newService(t, tc.policy, time.Now())
			if _, err := s.Attest(context.Background(), tc.req); !errors.Is(err, tc.want) {
				t.Errorf("Attest = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestAttestSNPSample(t *testing.T) {
	r, err := tee.Verify(tee.Evidence{Platform: tee.SevSnp, Raw: sevtestdata.AttestationBytes, VCEK: sevtestdata.VcekBytes}, tee.VerifyOptions{Now: snpNow})
	if err != nil {
		t.Fatal(err)
	}
	m := hex.EncodeToString(r.Measurement)
	req := Request{Platform: tee.SevSnp, Evidence: sevtestdata.AttestationBytes, VCEK: sevtestdata.VcekBytes, Nonce: "abc"}

	noDebug := newService(t, &tee.Policy{SevSnp: &tee.SevSnpPolicy{Measurements: []string{m}}}, snpNow)
	if _, err := noDebug.Attest(context.Background(), req); !errors.Is(err, tee.ErrRefused) {
		t.Errorf("Attest(debug VM, no-debug policy) = %v, want ErrRefused", err)
	}
	s := newService(t, &tee.Policy{AllowDebug: true, SevSnp: &tee.SevSnpPolicy{Measurements: []string{m}}}, snpNow)
	tok, err := s.Attest(context.Background(), req)
	if err != nil {
		t.Fatalf("Attest(debug VM, debug policy) = %v", err)
	}
	claims, err := verifier(s, snpNow).Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range r.Claims {
		got, _ := json.Marshal(claims[k])
		want, _ := json.Marshal(v)
		if !bytes.Equal(got, want) {
			t.Errorf("claim %s = %s, want %s (from the evidence)", k, got, want)
		}
	}
	if claims["x-ms-attestation-type"] != "sevsnpvm" || claims["x-ms-sevsnpvm-is-debuggable"] != true || claims["x-ms-sevsnpvm-launchmeasurement"] != m {
		t.Errorf("claims = %v", claims)
	}
	// With runtime data, the sample's report data (01 02 03 …) binds nothing.
	req.RuntimeData = []byte(`{}`)
	if _, err := s.Attest(context.Background(), req); !errors.Is(err, ErrReportData) {
		t.Errorf("Attest(sample, runtime data) = %v, want ErrReportData", err)
	}
}

// TestVerifierRefuses covers the tokens a relying party must refuse.
func TestVerifierRefuses(t *testing.T) {
	now := time.Now()
	s := newService(t, virtualPolicy, now)
	m := sha256.Sum256(nil)
	good, err := s.Attest(context.Background(), Request{Platform: tee.Virtual, Evidence: virtualEvidence(t, m[:], []byte(`{}`)), RuntimeData: []byte(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	claims, err := ClaimsUnverified(good)
	if err != nil {
		t.Fatal(err)
	}
	kid := s.JWKS().Keys[0].KeyID
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sign := func(alg jose.SignatureAlgorithm, key any, c map[string]any) string {
		sig, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.Signed(sig).Claims(c).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	with := func(k string, v any) map[string]any {
		c := map[string]any{}
		for a, b := range claims {
			c[a] = b
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	parts := strings.Split(good, ".")
	unsigned := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"`+kid+`"}`)) + "." + parts[1] + "."
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(mustDecode(t, parts[1]), `"virtual"`, `"sevsnpvm"`, 1))) + "." + parts[2]
	tests := []struct {
		name  string
		token string
		v     *Verifier
	}{
		{"expired", good, verifier(s, now.Add(DefaultLifetime+time.Minute))},
		{"not yet valid", good, verifier(s, now.Add(-time.Minute))},
		{"wrong audience", good, &Verifier{Keys: s.JWKS(), Issuer: issuer, Audience: "https://elsewhere", Now: func() time.Time { return now }}},
		{"wrong issuer", good, &Verifier{Keys: s.JWKS(), Issuer: "https://elsewhere", Audience: issuer, Now: func() time.Time { return now }}},
		{"unsigned", unsigned, verifier(s, now)},
		{"forged", sign(jose.ES256, other, claims), verifier(s, now)},
		{"hmac with public key", sign(jose.HS256, []byte("secret-secret-secret-secret-1234"), claims), verifier(s, now)},
		{"tampered payload", tampered, verifier(s, now)},
		{"no exp", sign(jose.ES256, s.cfg.Key, with("exp", nil)), verifier(s, now)},
		{"no iat", sign(jose.ES256, s.cfg.Key, with("iat", nil)), verifier(s, now)},
		{"audience swapped", sign(jose.ES256, s.cfg.Key, with("aud", "https://elsewhere")), verifier(s, now)},
		{"unknown key", good, &Verifier{Keys: jose.JSONWebKeySet{}, Issuer: issuer, Audience: issuer}},
		{"garbage", "a.b.c", verifier(s, now)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.v.Verify(tc.token); !errors.Is(err, ErrInvalidToken) {
				t.Errorf("Verify = %v, want ErrInvalidToken", err)
			}
		})
	}
	if _, err := verifier(s, now).Verify(good); err != nil {
		t.Errorf("Verify(good) = %v, want nil", err)
	}
	if _, err := verifier(s, now).Verify(sign(jose.ES256, s.cfg.Key, claims)); err != nil {
		t.Errorf("Verify(re-signed good claims) = %v, want nil", err)
	}
}

func mustDecode(t *testing.T, s string) string {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDeriveSigningKey(t *testing.T) {
	svc, err := identity.NewService("", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a, err := DeriveSigningKey(svc.Key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := DeriveSigningKey(svc.Key)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Equal(b) {
		t.Error("two derivations from one service key differ")
	}
	svc2, _ := identity.NewService("", time.Hour)
	c, _ := DeriveSigningKey(svc2.Key)
	if a.Equal(c) {
		t.Error("two service keys derive the same signing key")
	}
	der, err := NewSigningCertificate(svc.Cert, svc.Key, &a.PublicKey, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	if err := cert.CheckSignatureFrom(svc.Cert); err != nil {
		t.Errorf("signing certificate does not chain to the service certificate: %v", err)
	}
	jwk, err := PublicJWK(&a.PublicKey, der)
	if err != nil || len(jwk.Certificates) != 1 || jwk.KeyID == "" {
		t.Errorf("PublicJWK = %+v, %v", jwk, err)
	}
}

func FuzzVerifyToken(f *testing.F) {
	now := time.Now()
	s := newService(f, virtualPolicy, now)
	m := sha256.Sum256(nil)
	good, err := s.Attest(context.Background(), Request{Platform: tee.Virtual, Evidence: virtualEvidence(f, m[:], nil)})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	v := verifier(s, now)
	f.Fuzz(func(t *testing.T, tok string) {
		claims, err := v.Verify(tok)
		if err == nil && claims["iss"] != issuer {
			t.Fatalf("accepted a token with iss %v", claims["iss"])
		}
		ClaimsUnverified(tok)
	})
}

func BenchmarkAttestVirtual(b *testing.B) {
	s := newService(b, virtualPolicy, time.Now())
	m := sha256.Sum256(nil)
	rt := []byte(`{"keys":[]}`)
	ev := virtualEvidence(b, m[:], rt)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Attest(context.Background(), Request{Platform: tee.Virtual, Evidence: ev, RuntimeData: rt, Nonce: "n"}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyToken(b *testing.B) {
	now := time.Now()
	s := newService(b, virtualPolicy, now)
	m := sha256.Sum256(nil)
	tok, err := s.Attest(context.Background(), Request{Platform: tee.Virtual, Evidence: virtualEvidence(b, m[:], nil)})
	if err != nil {
		b.Fatal(err)
	}
	v := verifier(s, now)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}
