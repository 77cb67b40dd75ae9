package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/client"
	"github.com/parleyhq/parley/internal/loadgen"
	"github.com/parleyhq/parley/internal/receipt"
)

func TestConnFlagsResolve(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	write := func(path, endpoint string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		b := fmt.Sprintf(`{"endpoint":%q,"cacert":"ca.pem","cert":"c.pem","key":"k.pem"}`, endpoint)
		if err := os.WriteFile(path, []byte(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	envProfile := filepath.Join(dir, "env", "profile.json")
	flagProfile := filepath.Join(dir, "flag", "profile.json")
	write(envProfile, "https://env")
	write(flagProfile, "https://flag")

	for _, tt := range []struct {
		name         string
		devDir       bool
		env          string
		args         []string
		wantEndpoint string
		wantCACert   string
		wantErr      bool
	}{
		{name: "nothing", wantErr: true},
		{name: "default dir", devDir: true, wantEndpoint: "https://dev", wantCACert: filepath.Join("parley-dev", "ca.pem")},
		{name: "env beats default", devDir: true, env: envProfile, wantEndpoint: "https://env", wantCACert: filepath.Join(dir, "env", "ca.pem")},
		{name: "flag beats env", devDir: true, env: envProfile, args: []string{"--profile", flagProfile}, wantEndpoint: "https://flag", wantCACert: filepath.Join(dir, "flag", "ca.pem")},
		{name: "fields override", env: envProfile, args: []string{"--endpoint", "https://x", "--cacert", "/my/ca.pem"}, wantEndpoint: "https://x", wantCACert: "/my/ca.pem"},
		{name: "flags only", args: []string{"--endpoint", "https://x", "--cacert", "a", "--cert", "b", "--key", "c"}, wantEndpoint: "https://x", wantCACert: "a"},
		{name: "flags missing key", args: []string{"--endpoint", "https://x", "--cacert", "a", "--cert", "b"}, wantErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			os.RemoveAll("parley-dev")
			if tt.devDir {
				write(filepath.Join("parley-dev", "profile.json"), "https://dev")
			}
			t.Setenv(ProfileEnv, tt.env)
			cf := &connFlags{}
			cmd := newLedgerCmd()
			cf.register(cmd.Flags())
			if err := cmd.Flags().Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			p, err := cf.resolve()
			if tt.wantErr {
				var ee *exitError
				if !errors.As(err, &ee) || ee.code != 2 {
					t.Errorf("resolve() = %+v, %v, want exit code 2", p, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Endpoint != tt.wantEndpoint || p.CACert != tt.wantCACert {
				t.Errorf("resolve() = %s %s, want %s %s", p.Endpoint, p.CACert, tt.wantEndpoint, tt.wantCACert)
			}
		})
	}
}

func TestCheckTargets(t *testing.T) {
	ok := &loadgen.Result{Wait: loadgen.WaitExtension,
		Writes:    loadgen.Stats{Count: 10},
		Committed: loadgen.Stats{Count: 10, P99: 20 * time.Millisecond}}
	none := &loadgen.Result{Wait: loadgen.WaitNone, Writes: loadgen.Stats{Count: 10, P99: 30 * time.Millisecond}}
	for _, tt := range []struct {
		name     string
		rep      *loadgen.Report
		minRatio float64
		maxP99   time.Duration
		wantFail bool
	}{
		{"no targets", &loadgen.Report{Ledger: ok}, 0, 0, false},
		{"met", &loadgen.Report{Ledger: ok, Ratio: 0.8}, 0.7, 25 * time.Millisecond, false},
		{"ratio missed", &loadgen.Report{Ledger: ok, Ratio: 0.6}, 0.7, 0, true},
		{"p99 missed", &loadgen.Report{Ledger: ok}, 0, 10 * time.Millisecond, true},
		{"p99 of writes with wait none", &loadgen.Report{Ledger: none}, 0, 25 * time.Millisecond, true},
		{"nothing done", &loadgen.Report{Ledger: &loadgen.Result{}}, 0, 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := checkTargets(tt.rep, tt.minRatio, tt.maxP99)
			var ee *exitError
			if got := errors.As(err, &ee) && ee.code == 1; got != tt.wantFail {
				t.Errorf("checkTargets() = %v, want failure %v", err, tt.wantFail)
			}
		})
	}
}

// Integration: the real binary on loopback.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// parleyBinary builds cmd/parley once per test run.
func parleyBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "parley-cmd-test")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "parley")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// syncBuffer is a bytes.Buffer safe for a process's output and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startDev runs `parley dev` on a port the kernel picks and returns the
// profile it wrote, once it has printed its banner (after it is listening).
func startDev(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(parleyBinary(t), "dev", "--dir", dir, "--addr", "127.0.0.1:0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logs := &syncBuffer{}
	cmd.Stderr = logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Errorf("parley dev did not stop within 15s of SIGINT")
		}
		if t.Failed() {
			t.Logf("parley dev logs:\n%s", logs.String())
		}
	})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		found := false
		for sc.Scan() {
			if !found && strings.HasPrefix(sc.Text(), "Parley dev service at ") {
				found = true
				ready <- true
			}
		}
		if !found {
			ready <- false
		}
		io.Copy(io.Discard, stdout)
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("parley dev exited before its banner:\n%s", logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no banner from parley dev within 30s:\n%s", logs.String())
	}
	return filepath.Join(dir, ProfileFile)
}

// runCLI runs the CLI in-process and returns its stdout and stderr.
func runCLI(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func TestIntegrationDev(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the real binary")
	}
	profile := startDev(t)
	p, err := client.LoadProfile(profile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.New()
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	svc := c.ServiceCertificate()

	// A write that waits returns a receipt that verifies.
	res, err := c.AppendAndWait(ctx, "", "hello, ledger", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Receipt == nil {
		t.Fatal("AppendAndWait: no receipt from parley dev, want the wait=committed extension")
	}
	if err := receipt.VerifyTransactionReceipt(res.Receipt, svc); err != nil {
		t.Errorf("receipt from the write: %v", err)
	}
	if ok, _ := c.WaitExtension(); !ok {
		t.Error("WaitExtension() = false, want true")
	}

	// A plain write, then status, entry, receipt, current.
	id, err := c.Append(ctx, "audit", "in audit", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitCommitted(ctx, id); err != nil {
		t.Fatal(err)
	}
	if s, err := c.Status(ctx, id); err != nil || s.State != api.TxCommitted {
		t.Errorf("Status(%s) = %+v, %v, want Committed", id, s, err)
	}
	e, err := c.Entry(ctx, id, "audit")
	if err != nil {
		t.Fatal(err)
	}
	if e.Contents != "in audit" {
		t.Errorf("Entry(%s) = %q, want %q", id, e.Contents, "in audit")
	}
	tr, err := c.Receipt(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := receipt.VerifyTransactionReceipt(tr, svc); err != nil {
		t.Errorf("receipt of %s: %v", id, err)
	}
	if cur, err := c.Current(ctx, "audit"); err != nil || cur.TransactionID != id {
		t.Errorf("Current(audit) = %+v, %v, want %s", cur, err, id)
	}

	// More than one page: a batch of 150 in a fresh collection.
	batch := make([]api.BatchEntry, 150)
	for i := range batch {
		batch[i].Contents = fmt.Sprintf("b%03d", i)
	}
	results, err := c.AppendBatch(ctx, "paged", batch, true)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range results {
		if r.Error != nil || r.TransactionID == "" {
			t.Fatalf("batch result %d = %+v", i, r)
		}
	}
	seen := map[string]bool{}
	for e, err := range c.List(ctx, client.ListOptions{CollectionID: "paged"}) {
		if err != nil {
			t.Fatal(err)
		}
		seen[e.Contents] = true
	}
	if len(seen) != 150 {
		t.Errorf("List(paged) returned %d distinct entries, want 150", len(seen))
	}

	// Users, with the colon form.
	hexID := strings.Repeat("ab", 31) + "cd"
	var parts []string
	for i := 0; i < 64; i += 2 {
		parts = append(parts, strings.ToUpper(hexID[i:i+2]))
	}
	colonID := strings.Join(parts, ":")
	if u, err := c.SetUser(ctx, colonID, api.RoleReader); err != nil || u.UserID != colonID {
		t.Errorf("SetUser(colon) = %+v, %v", u, err)
	}
	if u, err := c.GetUser(ctx, hexID); err != nil || u.AssignedRole != api.RoleReader {
		t.Errorf("GetUser(hex) = %+v, %v, want Reader", u, err)
	}
	if err := c.DeleteUser(ctx, hexID); err != nil {
		t.Error(err)
	}
	var ce *client.Error
	if _, err := c.GetUser(ctx, colonID); !errors.As(err, &ce) || ce.StatusCode != 404 {
		t.Errorf("GetUser after delete: %v, want 404", err)
	}
	if _, err := c.Entry(ctx, "not-an-id", ""); !errors.As(err, &ce) || ce.StatusCode != 400 || ce.Code == "" {
		t.Errorf("Entry(not-an-id): %v, want 400 with a code", err)
	}

	// The CLI, in-process.
	out, _, err := runCLI(t, "", "ledger", "--profile", profile, "append", "from the CLI", "--wait", "--quiet")
	if err != nil {
		t.Fatal(err)
	}
	cliID := strings.TrimSpace(out)
	if _, err := c.Entry(ctx, cliID, ""); err != nil {
		t.Errorf("entry %q written by the CLI: %v", cliID, err)
	}
	out, errOut, err := runCLI(t, "", "ledger", "--profile", profile, "receipt", cliID)
	if err != nil {
		t.Fatal(err)
	}
	var cliReceipt api.TransactionReceipt
	if err := json.Unmarshal([]byte(out), &cliReceipt); err != nil || cliReceipt.Receipt == nil {
		t.Errorf("ledger receipt output %q: %v", out, err)
	}
	if !strings.HasPrefix(errOut, "receipt OK: transaction "+cliID+" verified against service certificate ") {
		t.Errorf("ledger receipt verdict = %q", errOut)
	}
	out, _, err = runCLI(t, "piped contents", "ledger", "--profile", profile, "append", "-", "-q")
	if err != nil {
		t.Fatal(err)
	}
	out, _, err = runCLI(t, "", "ledger", "--profile", profile, "get", strings.TrimSpace(out), "-q")
	if err != nil || out != "piped contents\n" {
		t.Errorf("ledger get -q = %q, %v, want the piped contents", out, err)
	}
	out, _, err = runCLI(t, "", "ledger", "--profile", profile, "list", "--collection", "paged", "-q")
	if err != nil || strings.Count(out, "\n") != 150 {
		t.Errorf("ledger list -q: %d lines, %v, want 150", strings.Count(out, "\n"), err)
	}
	out, _, err = runCLI(t, "", "ledger", "--profile", profile, "users", "list", "-q")
	if err != nil || !strings.Contains(out, " Administrator") {
		t.Errorf("ledger users list -q = %q, %v, want user0 as Administrator", out, err)
	}
	_, _, err = runCLI(t, "", "ledger", "--profile", profile, "status", "1.999999")
	if !errors.As(err, &ce) || ce.StatusCode != 404 {
		t.Errorf("ledger status of an unknown transaction: %v, want 404", err)
	}

	// parley bench, the real binary, against the same service.
	bench := exec.CommandContext(ctx, parleyBinary(t), "bench", "--profile", profile,
		"--duration", "2s", "--warmup", "200ms", "--clients", "8", "--baseline", "--json")
	var stderr bytes.Buffer
	bench.Stderr = &stderr
	b, err := bench.Output()
	if err != nil {
		t.Fatalf("parley bench: %v\n%s", err, stderr.String())
	}
	var rep loadgen.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("bench --json output %q: %v", b, err)
	}
	if rep.Ledger == nil || rep.Baseline == nil {
		t.Fatalf("bench report %s: want ledger and baseline", b)
	}
	if rep.Ledger.Wait != loadgen.WaitExtension || rep.Ledger.Committed.Count == 0 || rep.Ledger.Errors != 0 {
		t.Errorf("bench ledger = %s", b)
	}
	if rep.Baseline.Writes.Count == 0 || rep.Ratio <= 0 {
		t.Errorf("bench baseline, ratio = %+v, %v", rep.Baseline.Writes, rep.Ratio)
	}
	t.Logf("bench: %.0f committed appends/s, p99 %v; no-op %.0f req/s; ratio %.3f",
		rep.Ledger.Committed.PerSec, rep.Ledger.Committed.P99, rep.Baseline.Writes.PerSec, rep.Ratio)
}
