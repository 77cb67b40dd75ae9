package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
	sevtestdata "github.com/google/go-sev-guest/verify/testdata"
	tdxtestdata "github.com/google/go-tdx-guest/testing/testdata"

	"github.com/parleyhq/parley/client"
	"github.com/parleyhq/parley/internal/identity"
)

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

func TestAttestVerifyCLI(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	report := write("report.bin", sevtestdata.AttestationBytes)
	vcek := write("vcek.der", sevtestdata.VcekBytes)
	quote := write("quote.dat", bytes.TrimSuffix(tdxtestdata.RawQuote, []byte("\nextra bytes(only for testing purpose)\n")))
	flipped := append([]byte{}, sevtestdata.AttestationBytes...)
	flipped[0x90] ^= 1
	badReport := write("flipped.bin", flipped)
	const measurement = "b07af962"
	noDebug := write("nodebug.json", []byte(`{"sevSnp":{"measurements":["*"]}}`))
	debug := write("debug.json", []byte(`{"allowDebug":true,"sevSnp":{"measurements":["*"]}}`))
	const now = "2025-01-01T00:00:00Z"
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"snp", []string{"--platform", "sev-snp", "--evidence", report, "--vcek", vcek, "--now", now}, 0},
		{"snp debug allowed", []string{"--platform", "sev-snp", "--evidence", report, "--vcek", vcek, "--now", now, "--policy", debug}, 0},
		{"snp debug refused", []string{"--platform", "sev-snp", "--evidence", report, "--vcek", vcek, "--now", now, "--policy", noDebug}, 1},
		{"snp flipped byte", []string{"--platform", "sev-snp", "--evidence", badReport, "--vcek", vcek, "--now", now}, 1},
		{"snp no vcek", []string{"--platform", "sev-snp", "--evidence", report, "--now", now}, 1},
		{"tdx", []string{"--platform", "tdx", "--evidence", quote, "--now", "2023-07-01T00:00:00Z"}, 0},
		{"tdx as snp", []string{"--platform", "sev-snp", "--evidence", quote, "--vcek", vcek}, 1},
		{"bad platform", []string{"--platform", "sgx", "--evidence", report}, 2},
		{"missing file", []string{"--platform", "tdx", "--evidence", filepath.Join(dir, "nope")}, 2},
		{"bad now", []string{"--platform", "tdx", "--evidence", quote, "--now", "yesterday"}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := runCLI(t, "", append([]string{"attest", "verify"}, tc.args...)...)
			if got := exitCode(err); got != tc.code {
				t.Fatalf("exit code %d (%v), want %d", got, err, tc.code)
			}
			if tc.code != 0 {
				return
			}
			var claims map[string]any
			if err := json.Unmarshal([]byte(out), &claims); err != nil {
				t.Fatalf("output %q is not JSON: %v", out, err)
			}
			if tc.args[1] == "sev-snp" {
				m, _ := claims["x-ms-sevsnpvm-launchmeasurement"].(string)
				if len(m) != 96 || m[:8] != measurement || claims["x-ms-sevsnpvm-is-debuggable"] != true {
					t.Errorf("claims = %v", claims)
				}
			} else if m, _ := claims["tdx_mrtd"].(string); len(m) != 96 {
				t.Errorf("tdx_mrtd = %q", m)
			}
		})
	}
}

func TestAttestEvidenceVirtualCLI(t *testing.T) {
	dir := t.TempDir()
	ev := filepath.Join(dir, "ev.json")
	prefix := filepath.Join(dir, "rk")
	m := hex.EncodeToString(bytes.Repeat([]byte{0xab}, 32))
	_, stderr, err := runCLI(t, "", "attest", "evidence", "--platform", "virtual", "--new-runtime-key", prefix, "--measurement", m, "--key", filepath.Join(dir, "vk.pem"), "-o", ev)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains([]byte(stderr), []byte("VIRTUAL TEE")) {
		t.Errorf("stderr %q has no warning", stderr)
	}
	pol := filepath.Join(dir, "p.json")
	os.WriteFile(pol, []byte(`{"allowVirtual":true,"allowDebug":true,"virtual":{"measurements":["`+m+`"]}}`), 0o600)
	out, _, err := runCLI(t, "", "attest", "verify", "--platform", "virtual", "--evidence", ev, "--policy", pol)
	if err != nil {
		t.Fatalf("verify = %v", err)
	}
	var claims map[string]any
	json.Unmarshal([]byte(out), &claims)
	if claims["x-parley-virtual"] != true || claims["x-parley-virtual-measurement"] != m {
		t.Errorf("claims = %v", claims)
	}
	for _, f := range []string{prefix + ".key.pem", prefix + ".runtime.json"} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	// Not opted in: refused.
	os.WriteFile(pol, []byte(`{"allowDebug":true,"virtual":{"measurements":["*"]}}`), 0o600)
	if _, _, err := runCLI(t, "", "attest", "verify", "--platform", "virtual", "--evidence", ev, "--policy", pol); exitCode(err) != 1 {
		t.Errorf("verify without allowVirtual: exit %d, want 1", exitCode(err))
	}
}

// TestIntegrationAttestRelease runs the whole round against `parley dev`:
// appraisal policy, virtual evidence with a runtime key, a token, a key, a
// release whose receipt the CLI verifies, and a refused release.
func TestIntegrationAttestRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the real binary")
	}
	profile := startDev(t)
	dir := t.TempDir()
	path := func(n string) string { return filepath.Join(dir, n) }
	run := func(wantCode int, args ...string) string {
		t.Helper()
		out, stderr, err := runCLI(t, "", append(args, "--profile", profile)...)
		if got := exitCode(err); got != wantCode {
			t.Fatalf("parley %v: exit %d (%v, %s), want %d", args, got, err, stderr, wantCode)
		}
		return out
	}
	os.WriteFile(path("appraisal.json"), []byte(`{"allowVirtual":true,"allowDebug":true,"virtual":{"measurements":["*"]}}`), 0o600)
	run(0, "attest", "policy", "set", path("appraisal.json"))
	if _, _, err := runCLI(t, "", "attest", "evidence", "--platform", "virtual", "--new-runtime-key", path("rk"), "-o", path("ev.json")); err != nil {
		t.Fatal(err)
	}
	tok := run(0, "attest", "token", "--platform", "virtual", "--evidence", path("ev.json"), "--runtime-data", path("rk.runtime.json"), "--nonce", "n1")
	os.WriteFile(path("token.txt"), []byte(tok), 0o600)
	claimsOut := run(0, "attest", "token", "--platform", "virtual", "--evidence", path("ev.json"), "--runtime-data", path("rk.runtime.json"), "--nonce", "n1", "--claims")
	var claims map[string]any
	if err := json.Unmarshal([]byte(claimsOut), &claims); err != nil {
		t.Fatal(err)
	}
	if claims["x-parley-virtual"] != true || claims["nonce"] != "n1" {
		t.Fatalf("claims = %v", claims)
	}
	policy := `{"version":"1.0.0","anyOf":[{"authority":"` + claims["iss"].(string) + `","allOf":[{"claim":"x-ms-attestation-type","equals":"virtual"}]}]}`
	os.WriteFile(path("release.json"), []byte(policy), 0o600)
	material := bytes.Repeat([]byte{0x5a}, 32)
	os.WriteFile(path("material"), material, 0o600)
	run(0, "keys", "create", "k1", "--policy", path("release.json"), "--import", path("material"))
	run(0, "keys", "show", "k1")
	out := run(0, "keys", "release", "k1", "--token", path("token.txt"), "--nonce", "n1", "--runtime-key", path("rk.key.pem"))
	if got := strings.TrimSpace(out); got != hex.EncodeToString(material) {
		t.Errorf("released key %s, want %x", got, material)
	}
	run(1, "keys", "release", "k1", "--token", path("token.txt"), "--nonce", "other", "--runtime-key", path("rk.key.pem"))
	// Another runtime key cannot unwrap what was released to rk.
	if _, _, err := runCLI(t, "", "attest", "evidence", "--platform", "virtual", "--new-runtime-key", path("other"), "-o", path("ev2.json")); err != nil {
		t.Fatal(err)
	}
	run(1, "keys", "release", "k1", "--token", path("token.txt"), "--nonce", "n1", "--runtime-key", path("other.key.pem"))

	// The JWKS's x5c chains the token key to the service certificate.
	prof, err := client.LoadProfile(profile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := prof.New()
	if err != nil {
		t.Fatal(err)
	}
	var jwks jose.JSONWebKeySet
	if err := c.Call(context.Background(), "GET", "/certs", nil, &jwks); err != nil {
		t.Fatal(err)
	}
	o, _ := prof.Options()
	svc, err := identity.ParseCertPEM(o.CACertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if len(jwks.Keys) != 1 || len(jwks.Keys[0].Certificates) != 1 {
		t.Fatalf("JWKS = %+v, want one key with one certificate", jwks)
	}
	if err := jwks.Keys[0].Certificates[0].CheckSignatureFrom(svc); err != nil {
		t.Errorf("the token key's certificate is not signed by the service: %v", err)
	}
}
