// Package integration runs the real parley binary on loopback ports.
package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/internal/identity"
	"github.com/parleyhq/parley/internal/receipt"
)

var parleyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "parley-integration")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	parleyBin = filepath.Join(dir, "parley")
	build := exec.Command("go", "build", "-o", parleyBin, "github.com/parleyhq/parley/cmd/parley")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build parley:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// recordSourceInputs reads the module's Go sources, go.mod and go.sum, and
// every file under integration/testdata, so that `go test` keys its cached
// result on them. The parley binary is built by TestMain and the Python
// checks run in a subprocess, both outside what the test cache sees: without
// this a result cached before a server change would be replayed after it.
func recordSourceInputs(t *testing.T) {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	testdata := filepath.Join(root, "integration", "testdata")
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed while we walk: not an input
		}
		if err != nil {
			return err
		}
		name := d.Name()
		inTestdata := p == testdata || strings.HasPrefix(p, testdata+string(filepath.Separator))
		switch {
		case d.IsDir():
			// Skip what the go command ignores, except our testdata.
			if p != root && !inTestdata && (name == "testdata" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		case inTestdata && !strings.HasSuffix(name, ".pyc"),
			name == "go.mod", name == "go.sum",
			strings.HasSuffix(name, ".go") && !strings.HasSuffix(name, "_test.go"):
			if _, err := os.ReadFile(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("record test inputs: %v", err)
	}
}

// devNode is a running `parley dev`.
type devNode struct {
	t      *testing.T
	cmd    *exec.Cmd
	dir    string
	url    string
	logs   *bytes.Buffer
	done   chan error
	client *http.Client
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// launch starts `parley ARGS…` serving on addr with its data in dir, in a
// process group of its own; the test's cleanup stops it and, if the test
// failed, logs its output.
func launch(t *testing.T, dir, addr string, args ...string) *devNode {
	t.Helper()
	n := &devNode{t: t, dir: dir, url: "https://" + addr, logs: &bytes.Buffer{}, done: make(chan error, 1)}
	n.cmd = exec.Command(parleyBin, args...)
	n.cmd.Stdout, n.cmd.Stderr = n.logs, n.logs
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { n.done <- n.cmd.Wait() }()
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			t.Logf("parley %s output:\n%s", args[0], n.logs)
		}
	})
	return n
}

// startDev starts `parley dev` on dir, with extra flags, and waits for
// /health.
func startDev(t *testing.T, dir string, extra ...string) *devNode {
	t.Helper()
	recordSourceInputs(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	n := launch(t, dir, addr, append([]string{"dev", "--dir", dir, "--addr", addr}, extra...)...)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := n.loadClient(); err == nil {
			if resp, err := c.Get(n.url + "/health"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					n.client = c
					return n
				}
			}
		}
		select {
		case err := <-n.done:
			n.done <- err
			t.Fatalf("parley dev exited: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("parley dev not healthy after 30s")
		}
	}
}

// loadClient builds a client from the profile parley dev wrote.
func (n *devNode) loadClient() (*http.Client, error) {
	b, err := os.ReadFile(filepath.Join(n.dir, "profile.json"))
	if err != nil {
		return nil, err
	}
	var p struct{ Endpoint, CACert, Cert, Key string }
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, err
	}
	if p.Endpoint != n.url || !filepath.IsAbs(p.CACert) {
		return nil, fmt.Errorf("profile %+v: want endpoint %s and absolute paths", p, n.url)
	}
	ca, err := os.ReadFile(p.CACert)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, errors.New("no CA")
	}
	cert, err := tls.LoadX509KeyPair(p.Cert, p.Key)
	if err != nil {
		return nil, err
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}, nil
}

// stop sends SIGINT and waits for a clean exit.
func (n *devNode) stop() error {
	if n.cmd.ProcessState != nil {
		return nil
	}
	n.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-n.done:
		n.done <- err
		return err
	case <-time.After(20 * time.Second):
		n.cmd.Process.Kill()
		return errors.New("no exit 20s after SIGINT")
	}
}

func (n *devNode) do(method, path string, body []byte) (*http.Response, []byte) {
	n.t.Helper()
	req, err := http.NewRequest(method, n.url+path, bytes.NewReader(body))
	if err != nil {
		n.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.client.Do(req)
	if err != nil {
		n.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		n.t.Fatal(err)
	}
	return resp, b
}

func TestDevWriteCommitReceiptRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	n := startDev(t, dir)
	for _, f := range []string{"service_cert.pem", "user0_cert.pem", "user0_privk.pem", "member0_cert.pem", "member0_privk.pem", "profile.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("data dir lacks %s: %v", f, err)
		}
	}
	resp, body := n.do("POST", "/app/transactions?api-version=2022-05-13&collectionId=it", []byte(`{"contents":"integration entry"}`))
	if resp.StatusCode != 200 {
		t.Fatalf("append: %d %s", resp.StatusCode, body)
	}
	id := resp.Header.Get("x-ms-ccf-transaction-id")

	// Poll the status as the Azure client does, without sleeping for
	// longer than the signature interval needs.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		resp, body := n.do("GET", "/app/transactions/"+id+"/status?api-version=2022-05-13", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("status: %d %s", resp.StatusCode, body)
		}
		if strings.Contains(string(body), `"Committed"`) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("not committed after 20s")
		case <-time.After(5 * time.Millisecond):
		}
	}

	resp, body = n.do("GET", "/app/transactions/"+id+"/receipt?api-version=2026-02-23", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("receipt: %d %s", resp.StatusCode, body)
	}
	var tr api.TransactionReceipt
	if err := json.Unmarshal(body, &tr); err != nil {
		t.Fatal(err)
	}
	pemBytes, err := os.ReadFile(filepath.Join(dir, "service_cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	serviceCert, err := identity.ParseCertPEM(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := receipt.VerifyTransactionReceipt(&tr, serviceCert); err != nil {
		t.Fatalf("verify receipt: %v", err)
	}
	if len(tr.ApplicationClaims) != 1 || tr.ApplicationClaims[0].LedgerEntry.Contents != "integration entry" {
		t.Errorf("claims = %+v, want the entry", tr.ApplicationClaims)
	}

	if err := n.stop(); err != nil {
		t.Fatalf("SIGINT: %v, want a clean exit", err)
	}
	if !strings.Contains(n.logs.String(), "stopped") {
		t.Errorf("no clean shutdown in the log:\n%s", n.logs)
	}

	n2 := startDev(t, dir)
	resp, body = n2.do("GET", "/app/transactions/"+id+"?api-version=2022-05-13", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"contents":"integration entry"`) {
		t.Fatalf("after restart: %d %s, want the entry", resp.StatusCode, body)
	}
	resp, body = n2.do("GET", "/app/transactions?api-version=2022-05-13&collectionId=it", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), id) {
		t.Errorf("list after restart: %d %s, want %s", resp.StatusCode, body, id)
	}
	resp, body = n2.do("POST", "/app/transactions?api-version=2022-05-13&collectionId=it", []byte(`{"contents":"after restart"}`))
	if resp.StatusCode != 200 {
		t.Errorf("append after restart: %d %s", resp.StatusCode, body)
	}
}
