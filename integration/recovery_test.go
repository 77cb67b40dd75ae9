package integration

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
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

// appendEntry writes contents as user0 and waits until it is committed; it
// returns the transaction id.
func appendEntry(t *testing.T, n *devNode, contents string) string {
	t.Helper()
	resp, body := n.do("POST", "/app/transactions?api-version=2022-05-13&collectionId=dr", []byte(fmt.Sprintf(`{"contents":%q}`, contents)))
	if resp.StatusCode != 200 {
		t.Fatalf("append %q: %d %s", contents, resp.StatusCode, body)
	}
	id := resp.Header.Get("x-ms-ccf-transaction-id")
	waitStatus(t, n, id)
	return id
}

func waitStatus(t *testing.T, n *devNode, id string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, body := n.do("GET", "/app/transactions/"+id+"/status?api-version=2022-05-13", nil)
		if resp.StatusCode == 200 && strings.Contains(string(body), `"Committed"`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not committed after 20s: %d %s", id, resp.StatusCode, body)
		}
		time.Sleep(5 * time.Millisecond) // polling a real process
	}
}

// acceptProposal proposes actions as member 0 and has members 0 and 1
// accept it.
func acceptProposal(t *testing.T, dir string, actions ...any) {
	t.Helper()
	p := mustGov(t, dir, 0, "propose", writeProposal(t, actions...))
	id, _ := p["proposalId"].(string)
	mustGov(t, dir, 0, "vote", id, "accept")
	if p = mustGov(t, dir, 1, "vote", id, "accept"); state(p) != "Accepted" {
		t.Fatalf("proposal %v: %s, want Accepted", actions, state(p))
	}
}

// copyFiles copies the named files of src into dst.
func copyFiles(t *testing.T, src, dst string, names ...string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// startRecoveredNode runs `parley node --config CFG ARGS` for a node whose
// data directory is dataDir and waits until /node/network answers. Its
// client presents keys/user0's certificate and trusts the new service
// certificate.
func startRecoveredNode(t *testing.T, dataDir, keys string, args ...string) *devNode {
	t.Helper()
	recordSourceInputs(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := filepath.Join(t.TempDir(), "config.json")
	b, _ := json.Marshal(map[string]any{"dataDir": dataDir, "listenAddress": addr, "subjectAltNames": []string{"127.0.0.1"}})
	if err := os.WriteFile(cfg, b, 0o644); err != nil {
		t.Fatal(err)
	}
	n := launch(t, dataDir, addr, append([]string{"node", "--config", cfg}, args...)...)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if ca, err := os.ReadFile(filepath.Join(dataDir, "service_cert.pem")); err == nil {
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(ca)
			cert, err := tls.LoadX509KeyPair(filepath.Join(keys, "user0_cert.pem"), filepath.Join(keys, "user0_privk.pem"))
			if err != nil {
				t.Fatal(err)
			}
			c := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
			if resp, err := c.Get(n.url + "/node/network"); err == nil {
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
			t.Fatalf("parley node exited: %v\n%s", err, n.logs)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("parley node not serving after 60s")
		}
	}
}

func serviceStatus(t *testing.T, n *devNode) string {
	t.Helper()
	resp, body := n.do("GET", "/node/network", nil)
	var v struct {
		ServiceStatus string `json:"service_status"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &v) != nil {
		t.Fatalf("/node/network: %d %s", resp.StatusCode, body)
	}
	return v.ServiceStatus
}

// submitShare runs `parley gov share --submit` as member i with the keys
// in keys, against n.
func submitShare(t *testing.T, n *devNode, keys string, i int) map[string]any {
	t.Helper()
	cmd := exec.Command(parleyBin, "gov", "share", "--submit",
		"--endpoint", n.url, "--cacert", filepath.Join(n.dir, "service_cert.pem"),
		"--member-cert", filepath.Join(keys, fmt.Sprintf("member%d_cert.pem", i)),
		"--member-key", filepath.Join(keys, fmt.Sprintf("member%d_privk.pem", i)),
		"--timeout", "60s")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("parley gov share --submit as member%d: %v: %s", i, err, stderr.String())
	}
	var out map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("share --submit printed %q: %v", stdout.String(), err)
	}
	return out
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := identity.ParseCertPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func runParley(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(parleyBin, args...).CombinedOutput()
	return string(out), err
}

// TestDisasterRecovery: a three-member dev service with recovery
// threshold 2 writes private entries (with a ledger secret rotation
// among them) and is killed; everything but its ledger directory is
// deleted. A new service recovers the ledger: one share leaves the private
// state closed (503), a second opens it; every entry reads back; the
// receipts saved before the disaster verify against the new service
// certificate through the endorsement; new writes and their receipts work;
// the whole ledger verifies; and a restart needs no shares.
func TestDisasterRecovery(t *testing.T) {
	base := t.TempDir()
	oldDir, keys := filepath.Join(base, "old"), filepath.Join(base, "keys")
	n := startDev(t, oldDir, "--members", "3")
	acceptProposal(t, oldDir, map[string]any{"name": "set_recovery_threshold", "args": map[string]int{"recovery_threshold": 2}})

	type entry struct{ id, contents string }
	var entries []entry
	for i := range 3 {
		c := fmt.Sprintf("before rotation %d", i)
		entries = append(entries, entry{appendEntry(t, n, c), c})
	}
	acceptProposal(t, oldDir, map[string]any{"name": "rotate_ledger_secret"})
	for i := range 3 {
		c := fmt.Sprintf("after rotation %d", i)
		entries = append(entries, entry{appendEntry(t, n, c), c})
	}
	receipts := map[string][]byte{}
	for _, e := range entries {
		resp, body := n.do("GET", "/app/transactions/"+e.id+"/receipt?api-version=2022-05-13", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("receipt of %s: %d %s", e.id, resp.StatusCode, body)
		}
		receipts[e.id] = body
	}
	// What members and users keep themselves; the node's directory is lost.
	copyFiles(t, oldDir, keys, "user0_cert.pem", "user0_privk.pem", "service_cert.pem")
	for i := range 3 {
		copyFiles(t, oldDir, keys, fmt.Sprintf("member%d_cert.pem", i), fmt.Sprintf("member%d_privk.pem", i), fmt.Sprintf("member%d_enc_privk.pem", i))
	}
	n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.done
	n.done <- errors.New("killed")
	oldLedger := filepath.Join(base, "old-ledger")
	if err := os.Rename(filepath.Join(oldDir, "ledger"), oldLedger); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(oldDir); err != nil {
		t.Fatal(err)
	}

	newDir := filepath.Join(base, "new")
	r := startRecoveredNode(t, newDir, keys, "--recover", "--previous-ledger", oldLedger)
	if got := serviceStatus(t, r); got != "Recovering" {
		t.Fatalf("service_status = %q, want Recovering", got)
	}
	assertClosed := func(when string) {
		t.Helper()
		resp, body := r.do("GET", "/app/transactions/"+entries[0].id+"?api-version=2022-05-13", nil)
		if resp.StatusCode != 503 || !strings.Contains(string(body), "ServiceRecovering") {
			t.Fatalf("%s: GET an entry = %d %s, want 503 ServiceRecovering", when, resp.StatusCode, body)
		}
		resp, body = r.do("POST", "/app/transactions?api-version=2022-05-13", []byte(`{"contents":"too early"}`))
		if resp.StatusCode != 503 {
			t.Fatalf("%s: POST an entry = %d %s, want 503", when, resp.StatusCode, body)
		}
	}
	assertClosed("before any share")
	if got := submitShare(t, r, keys, 0); got["submittedShares"] != float64(1) || got["serviceStatus"] != "Recovering" {
		t.Fatalf("first share: %v", got)
	}
	assertClosed("after one share")
	if got := serviceStatus(t, r); got != "Recovering" {
		t.Fatalf("after one share: service_status = %q, want Recovering", got)
	}
	if got := submitShare(t, r, keys, 2); got["serviceStatus"] != "Open" {
		t.Fatalf("second share: %v, want serviceStatus Open", got)
	}
	if got := serviceStatus(t, r); got != "Open" {
		t.Fatalf("after two shares: service_status = %q, want Open", got)
	}

	checkEntries := func(n *devNode, when string) {
		t.Helper()
		for _, e := range entries {
			resp, body := n.do("GET", "/app/transactions/"+e.id+"?api-version=2022-05-13", nil)
			if resp.StatusCode != 200 || !strings.Contains(string(body), fmt.Sprintf(`"contents":%q`, e.contents)) {
				t.Fatalf("%s: GET %s = %d %s, want %q", when, e.id, resp.StatusCode, body, e.contents)
			}
		}
		// The collection index holds the restored entries too.
		resp, body := n.do("GET", "/app/transactions?api-version=2022-05-13&collectionId=dr", nil)
		for _, e := range entries {
			if resp.StatusCode != 200 || !strings.Contains(string(body), `"`+e.id+`"`) {
				t.Fatalf("%s: list of collection dr = %d %s, want %s in it", when, resp.StatusCode, body, e.id)
			}
		}
	}
	checkEntries(r, "after recovery")
	resp, body := r.do("GET", "/gov/service/previous_identities", nil)
	var prev struct {
		PreviousIdentities []struct {
			Cert, Endorsement string
			LastSeqno         uint64
		} `json:"previousIdentities"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &prev) != nil || len(prev.PreviousIdentities) != 1 {
		t.Fatalf("GET /gov/service/previous_identities: %d %s", resp.StatusCode, body)
	}
	if oldPEM, _ := os.ReadFile(filepath.Join(keys, "service_cert.pem")); prev.PreviousIdentities[0].Cert != string(oldPEM) {
		t.Errorf("previous identity = %s, want the old service certificate", prev.PreviousIdentities[0].Cert)
	}

	newCert := readCert(t, filepath.Join(newDir, "service_cert.pem"))
	copyFiles(t, newDir, base, "service_cert.pem")
	if err := os.Rename(filepath.Join(base, "service_cert.pem"), filepath.Join(base, "first-recovered-cert.pem")); err != nil {
		t.Fatal(err)
	}
	oldCert := readCert(t, filepath.Join(keys, "service_cert.pem"))
	endorsementsFile := filepath.Join(base, "endorsements.pem")
	for i, e := range entries {
		var saved api.TransactionReceipt
		if err := json.Unmarshal(receipts[e.id], &saved); err != nil {
			t.Fatal(err)
		}
		if err := receipt.VerifyTransactionReceipt(&saved, oldCert); err != nil {
			t.Fatalf("saved receipt of %s against the old certificate: %v", e.id, err)
		}
		if err := receipt.VerifyTransactionReceipt(&saved, newCert); err == nil {
			t.Fatalf("saved receipt of %s verifies against the new certificate without endorsement", e.id)
		}
		resp, body := r.do("GET", "/app/transactions/"+e.id+"/receipt?api-version=2022-05-13", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("receipt of %s from the recovered service: %d %s", e.id, resp.StatusCode, body)
		}
		var fresh api.TransactionReceipt
		if err := json.Unmarshal(body, &fresh); err != nil {
			t.Fatal(err)
		}
		if len(fresh.Receipt.ServiceEndorsements) != 1 {
			t.Fatalf("receipt of %s from the recovered service has %d endorsements, want 1", e.id, len(fresh.Receipt.ServiceEndorsements))
		}
		if err := receipt.VerifyTransactionReceipt(&fresh, newCert); err != nil {
			t.Fatalf("receipt of %s from the recovered service: %v", e.id, err)
		}
		if i == 0 {
			if err := os.WriteFile(endorsementsFile, []byte(strings.Join(fresh.Receipt.ServiceEndorsements, "")), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		savedPath := filepath.Join(base, "receipt-"+e.id+".json")
		if err := os.WriteFile(savedPath, receipts[e.id], 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := runParley(t, "receipt", "verify", savedPath, "--service-cert", filepath.Join(newDir, "service_cert.pem"), "--service-endorsements", endorsementsFile)
		if err != nil || !strings.HasPrefix(out, "receipt OK") {
			t.Fatalf("parley receipt verify of the saved receipt of %s against the new certificate: %v: %s", e.id, err, out)
		}
	}

	// New writes work, and their receipts verify against the new
	// certificate without endorsements.
	newID := appendEntry(t, r, "after recovery")
	entries = append(entries, entry{newID, "after recovery"})
	resp, body = r.do("GET", "/app/transactions/"+newID+"/receipt?api-version=2022-05-13", nil)
	var tr api.TransactionReceipt
	if resp.StatusCode != 200 || json.Unmarshal(body, &tr) != nil {
		t.Fatalf("receipt of the new entry: %d %s", resp.StatusCode, body)
	}
	if len(tr.Receipt.ServiceEndorsements) != 0 {
		t.Errorf("receipt of a new entry carries %d endorsements, want 0", len(tr.Receipt.ServiceEndorsements))
	}
	if err := receipt.VerifyTransactionReceipt(&tr, newCert); err != nil {
		t.Fatalf("receipt of the new entry: %v", err)
	}
	if err := r.stop(); err != nil {
		t.Fatalf("stop the recovered node: %v", err)
	}
	out, err := runParley(t, "verify", "--ledger", filepath.Join(newDir, "ledger"), "--service-cert", filepath.Join(newDir, "service_cert.pem"), "-q")
	if err != nil || !strings.HasPrefix(out, "ledger OK") {
		t.Fatalf("parley verify of the recovered ledger: %v: %s", err, out)
	}

	// A restart of the recovered node opens with no shares.
	r2 := startRecoveredNode(t, newDir, keys)
	if got := serviceStatus(t, r2); got != "Open" {
		t.Fatalf("after restart: service_status = %q, want Open", got)
	}
	checkEntries(r2, "after restart")
	entries = append(entries, entry{appendEntry(t, r2, "after restart"), "after restart"})

	// A second disaster: the recovered service is lost in turn and
	// recovered with the shares it reissued. Receipts of the first
	// service's transactions now chain through two endorsements.
	r2.cmd.Process.Signal(syscall.SIGKILL)
	<-r2.done
	r2.done <- errors.New("killed")
	secondLedger := filepath.Join(base, "second-ledger")
	if err := os.Rename(filepath.Join(newDir, "ledger"), secondLedger); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(newDir); err != nil {
		t.Fatal(err)
	}
	thirdDir := filepath.Join(base, "third")
	r3 := startRecoveredNode(t, thirdDir, keys, "--recover", "--previous-ledger", secondLedger)
	assertClosedOn := func(n *devNode) {
		t.Helper()
		if resp, body := n.do("GET", "/app/transactions/"+entries[0].id+"?api-version=2022-05-13", nil); resp.StatusCode != 503 {
			t.Fatalf("second recovery before shares: GET = %d %s, want 503", resp.StatusCode, body)
		}
	}
	assertClosedOn(r3)
	submitShare(t, r3, keys, 1)
	assertClosedOn(r3)
	if got := submitShare(t, r3, keys, 0); got["serviceStatus"] != "Open" {
		t.Fatalf("second recovery, second share: %v", got)
	}
	checkEntries(r3, "after the second recovery")
	thirdCert := readCert(t, filepath.Join(thirdDir, "service_cert.pem"))
	for i, e := range entries {
		resp, body := r3.do("GET", "/app/transactions/"+e.id+"/receipt?api-version=2022-05-13", nil)
		var fresh api.TransactionReceipt
		if resp.StatusCode != 200 || json.Unmarshal(body, &fresh) != nil {
			t.Fatalf("receipt of %s after the second recovery: %d %s", e.id, resp.StatusCode, body)
		}
		want := 1 // signed by the first recovered service
		if i < 6 {
			want = 2 // signed by the original service
		}
		if got := len(fresh.Receipt.ServiceEndorsements); got != want {
			t.Fatalf("receipt of %s after the second recovery: %d endorsements, want %d", e.id, got, want)
		}
		if err := receipt.VerifyTransactionReceipt(&fresh, thirdCert); err != nil {
			t.Fatalf("receipt of %s after the second recovery: %v", e.id, err)
		}
		if i == 0 {
			var saved api.TransactionReceipt
			json.Unmarshal(receipts[e.id], &saved)
			saved.Receipt.ServiceEndorsements = fresh.Receipt.ServiceEndorsements
			if err := receipt.VerifyTransactionReceipt(&saved, thirdCert); err != nil {
				t.Fatalf("the receipt saved before the first disaster, through both endorsements: %v", err)
			}
		}
	}
	if err := r3.stop(); err != nil {
		t.Fatalf("stop the twice-recovered node: %v", err)
	}
	out, err = runParley(t, "verify", "--ledger", filepath.Join(thirdDir, "ledger"), "--service-cert", filepath.Join(thirdDir, "service_cert.pem"), "-q")
	if err != nil || !strings.HasPrefix(out, "ledger OK") || !strings.Contains(out, "note: 2 signing node certificates of previous service identities") {
		t.Fatalf("parley verify of the twice-recovered ledger: %v: %s", err, out)
	}
	// The same ledger does not verify against the first recovered
	// service's certificate alone: the third service's nodes are not its.
	if out, err := runParley(t, "verify", "--ledger", filepath.Join(thirdDir, "ledger"), "--service-cert", filepath.Join(base, "first-recovered-cert.pem"), "-q"); err == nil {
		t.Fatalf("the twice-recovered ledger verifies against the first recovered service's certificate: %s", out)
	}
}

// TestRotationOverHTTP rotates the ledger secret by proposal on a dev
// service, writes more, restarts, reads every entry and verifies the
// ledger.
func TestRotationOverHTTP(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	n := startDev(t, dir, "--members", "2")
	var ids []string
	ids = append(ids, appendEntry(t, n, "entry 0"))
	acceptProposal(t, dir, map[string]any{"name": "rotate_ledger_secret"})
	ids = append(ids, appendEntry(t, n, "entry 1"))
	acceptProposal(t, dir, map[string]any{"name": "rotate_ledger_secret"})
	ids = append(ids, appendEntry(t, n, "entry 2"))
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	n2 := startDev(t, dir)
	for i, id := range ids {
		resp, body := n2.do("GET", "/app/transactions/"+id+"?api-version=2022-05-13", nil)
		if resp.StatusCode != 200 || !strings.Contains(string(body), fmt.Sprintf(`"contents":"entry %d"`, i)) {
			t.Fatalf("after restart: GET %s = %d %s", id, resp.StatusCode, body)
		}
		resp, body = n2.do("GET", "/app/transactions/"+id+"/receipt?api-version=2022-05-13", nil)
		var tr api.TransactionReceipt
		if resp.StatusCode != 200 || json.Unmarshal(body, &tr) != nil {
			t.Fatalf("receipt of %s: %d %s", id, resp.StatusCode, body)
		}
		if err := receipt.VerifyTransactionReceipt(&tr, readCert(t, filepath.Join(dir, "service_cert.pem"))); err != nil {
			t.Fatalf("receipt of %s: %v", id, err)
		}
	}
	if err := n2.stop(); err != nil {
		t.Fatal(err)
	}
	out, err := runParley(t, "verify", "--ledger", filepath.Join(dir, "ledger"), "--service-cert", filepath.Join(dir, "service_cert.pem"), "-q")
	if err != nil || !strings.HasPrefix(out, "ledger OK") {
		t.Fatalf("parley verify: %v: %s", err, out)
	}
}
