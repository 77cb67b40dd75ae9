package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parleyhq/parley/internal/receipt"
)

// writeAzureReceipts writes the real Azure receipts of
// internal/receipt/testdata into dir and returns, per receipt, the receipt
// object, the path of its file and the path of its service certificate.
func writeAzureReceipts(t *testing.T, dir string) (receipts []map[string]any, receiptPaths, certPaths []string) {
	t.Helper()
	b, err := os.ReadFile("../../internal/receipt/testdata/azure-receipts.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Vectors []struct {
			ServiceCertificate string         `json:"serviceCertificate"`
			Receipt            map[string]any `json:"receipt"`
		}
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	for i, v := range f.Vectors {
		rp := filepath.Join(dir, "receipt"+string(rune('1'+i))+".json")
		cp := filepath.Join(dir, "service"+string(rune('1'+i))+".pem")
		writeJSON(t, rp, v.Receipt)
		if err := os.WriteFile(cp, []byte(v.ServiceCertificate), 0o600); err != nil {
			t.Fatal(err)
		}
		receipts = append(receipts, v.Receipt)
		receiptPaths = append(receiptPaths, rp)
		certPaths = append(certPaths, cp)
	}
	return receipts, receiptPaths, certPaths
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// runReceiptCmd runs `receipt args...` and returns its output and exit code.
func runReceiptCmd(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := newReceiptCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	if err == nil {
		return out.String(), 0
	}
	var ee *exitError
	if !errors.As(err, &ee) {
		t.Fatalf("receipt %v returned %v, want an exitError", args, err)
	}
	return out.String(), ee.code
}

func TestReceiptVerify(t *testing.T) {
	dir := t.TempDir()
	receipts, rps, cps := writeAzureReceipts(t, dir)

	// The same receipt wrapped in a transaction receipt, with a matching
	// and a mismatching transaction id.
	wrapped := filepath.Join(dir, "wrapped.json")
	writeJSON(t, wrapped, map[string]any{"receipt": receipts[1], "state": "Ready", "transactionId": "16.7415"})
	wrongID := filepath.Join(dir, "wrong-id.json")
	writeJSON(t, wrongID, map[string]any{"receipt": receipts[1], "state": "Ready", "transactionId": "16.7416"})

	// Receipt 2 with one byte of its signature changed.
	corrupt := map[string]any{}
	for k, v := range receipts[1] {
		corrupt[k] = v
	}
	sig, err := base64.StdEncoding.DecodeString(corrupt["signature"].(string))
	if err != nil {
		t.Fatal(err)
	}
	sig[len(sig)/2] ^= 1
	corrupt["signature"] = base64.StdEncoding.EncodeToString(sig)
	corrupted := filepath.Join(dir, "corrupted.json")
	writeJSON(t, corrupted, corrupt)

	notJSON := filepath.Join(dir, "not.json")
	if err := os.WriteFile(notJSON, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"azure1-snake-case", []string{"verify", rps[0], "--service-cert", cps[0]}, 0,
			"receipt OK: transaction 2.35, node 708c2e71b2533e5eb38e05cc344390d133c8fb336cb80481ab4e5e902e6131a5\n"},
		{"azure2", []string{"verify", "--service-cert", cps[1], rps[1]}, 0,
			"receipt OK: transaction 16.7415, node a16d14661618d220365594fc4986f4401ff74785b70818b00e6590bb3c1a1a5d\n"},
		{"wrapped", []string{"verify", wrapped, "--service-cert", cps[1]}, 0, "receipt OK: transaction 16.7415"},
		{"wrong-transaction-id", []string{"verify", wrongID, "--service-cert", cps[1]}, 1,
			`receipt INVALID: transaction id "16.7416" does not match the commit evidence's 16.7415`},
		{"corrupted", []string{"verify", corrupted, "--service-cert", cps[1]}, 1, "receipt INVALID: signature does not verify\n"},
		{"wrong-service", []string{"verify", rps[0], "--service-cert", cps[1]}, 1,
			"receipt INVALID: node certificate not endorsed by the service certificate"},
		{"not-json", []string{"verify", notJSON, "--service-cert", cps[0]}, 1, "receipt INVALID: not a JSON object"},
		{"no-service-cert", []string{"verify", rps[0]}, 2, ""},
		{"service-cert-not-pem", []string{"verify", rps[0], "--service-cert", rps[1]}, 2, ""},
		{"missing-receipt", []string{"verify", filepath.Join(dir, "missing.json"), "--service-cert", cps[0]}, 2, ""},
		{"missing-service-cert", []string{"verify", rps[0], "--service-cert", filepath.Join(dir, "missing.pem")}, 2, ""},
		{"two-receipts", []string{"verify", rps[0], rps[1], "--service-cert", cps[0]}, 2, ""},
		{"unknown-flag", []string{"verify", rps[0], "--service-cert", cps[0], "--bogus"}, 2, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, code := runReceiptCmd(t, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d (output %q)", code, tt.wantCode, out)
			}
			if !strings.HasPrefix(out, tt.wantOut) {
				t.Errorf("output = %q, want prefix %q", out, tt.wantOut)
			}
			if tt.wantCode != 0 && strings.Contains(out, "receipt OK") {
				t.Errorf("output = %q for a failure", out)
			}
		})
	}
}

func TestReceiptVerifyIsRegistered(t *testing.T) {
	cmd, _, err := newRootCmd().Find([]string{"receipt", "verify"})
	if err != nil || cmd.Name() != "verify" {
		t.Errorf("parley receipt verify: got %v, %v", cmd, err)
	}
}

// TestReceiptVerifyInvalidIsQuiet checks that an invalid receipt's exit
// error prints nothing more in main: the verdict is already on stdout.
func TestReceiptVerifyInvalidIsQuiet(t *testing.T) {
	dir := t.TempDir()
	_, rps, cps := writeAzureReceipts(t, dir)
	cmd := newReceiptCmd()
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetArgs([]string{"verify", rps[0], "--service-cert", cps[1]})
	err := cmd.Execute()
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("Execute = %v, want exit code 1", err)
	}
	if ee.err.Error() != "" {
		t.Errorf("exit error text = %q, want empty", ee.err.Error())
	}
	if !errors.Is(err, receipt.ErrInvalidReceipt) {
		t.Errorf("Execute = %v, want it to wrap receipt.ErrInvalidReceipt", err)
	}
}
