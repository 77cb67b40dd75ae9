package integration

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// debianPython is the interpreter Debian's python3-azure package installs
// into; the conformance test runs the Azure client exactly as packaged.
const debianPython = "/usr/bin/python3"

// conformancePassed is the last line testdata/acl_conformance.py prints
// when every check passed.
const conformancePassed = "acl conformance: all checks passed"

// requireAzurePython skips the test unless Debian's python3 can import the
// Azure Confidential Ledger client (.ci/run installs python3-azure and
// python3-cryptography).
func requireAzurePython(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(debianPython); err != nil {
		t.Skipf("no %s (%v): install python3-azure and python3-cryptography to run the Azure conformance test", debianPython, err)
	}
	cmd := exec.Command(debianPython, "-c", "import azure.confidentialledger")
	cmd.Env = pythonEnv(os.Environ())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Skipf("%s cannot import azure.confidentialledger (%v: %s): apt-get install -y python3-azure python3-cryptography",
			debianPython, err, bytes.TrimSpace(out))
	}
}

// TestAzurePythonConformance drives a real `parley dev` with the Azure
// Python client (azure.confidentialledger 1.0.1 from Debian's python3-azure):
// every SDK operation, paging, users, errors as azure-core maps them, and
// verification of every receipt with the ACL algorithm. The checks are in
// testdata/acl_conformance.py.
func TestAzurePythonConformance(t *testing.T) {
	requireAzurePython(t)
	script, err := filepath.Abs(filepath.Join("testdata", "acl_conformance.py"))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "dev")
	n := startDev(t, dir)

	// ConfidentialLedgerCertificateCredential wants one PEM holding the
	// certificate and its key.
	var clientPEM []byte
	for _, f := range []string{"user0_cert.pem", "user0_privk.pem"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		clientPEM = append(clientPEM, b...)
	}
	clientPath := filepath.Join(t.TempDir(), "user0.pem")
	if err := os.WriteFile(clientPath, clientPEM, 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, debianPython, script, n.url, filepath.Join(dir, "service_cert.pem"), clientPath)
	cmd.Env = pythonEnv(os.Environ())
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("acl_conformance.py: %v after %v\n%s", err, time.Since(start).Round(time.Millisecond), out)
	}
	if got := strings.TrimSpace(string(out)); !strings.HasSuffix(got, conformancePassed) {
		t.Fatalf("acl_conformance.py exited 0 without %q:\n%s", conformancePassed, out)
	}
	t.Logf("acl_conformance.py passed in %v:\n%s", time.Since(start).Round(time.Millisecond), out)
}

// pythonEnv is env without what would send the client elsewhere than the
// pinned loopback ledger (proxies, CA bundle overrides) and without
// bytecode caches written into testdata.
func pythonEnv(env []string) []string {
	drop := map[string]bool{
		"HTTP_PROXY": true, "HTTPS_PROXY": true, "ALL_PROXY": true, "NO_PROXY": true,
		"REQUESTS_CA_BUNDLE": true, "CURL_CA_BUNDLE": true, "PYTHONPATH": true, "PYTHONHOME": true,
	}
	out := make([]string, 0, len(env)+2)
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if !drop[strings.ToUpper(k)] {
			out = append(out, kv)
		}
	}
	return append(out, "NO_PROXY=127.0.0.1,localhost", "PYTHONDONTWRITEBYTECODE=1")
}
