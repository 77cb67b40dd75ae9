package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	sevtestdata "github.com/google/go-sev-guest/verify/testdata"
	tdxtestdata "github.com/google/go-tdx-guest/testing/testdata"
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
