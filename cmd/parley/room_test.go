package main

import (
	"context"
	"crypto/ecdsa"
	"database/sql"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/parleyhq/parley/client"
	"github.com/parleyhq/parley/internal/cleanroom"
	"github.com/parleyhq/parley/internal/httpapi"
	"github.com/parleyhq/parley/internal/server"
)

// TestRoomCLIAndAudit drives `parley room` against an in-process service up
// to an approved contract, checks that `room audit` verifies every step, and
// that the audit check fails for a step whose event or receipt does not
// match.
func TestRoomCLIAndAudit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a service")
	}
	dir := t.TempDir()
	srv, err := server.Start(server.Config{DataDir: filepath.Join(dir, "svc"), ListenAddress: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	f := srv.Files()
	conn := []string{"--endpoint", "https://" + srv.Addr().String(), "--cacert", f.ServiceCert, "--cert", f.User0Cert, "--key", f.User0Key, "--timeout", "30s"}
	room := func(args ...string) string {
		t.Helper()
		out, errOut, err := runCLI(t, "", append(append([]string{"room"}, args...), conn...)...)
		if err != nil {
			t.Fatalf("parley room %s: %v\n%s", strings.Join(args, " "), err, errOut)
		}
		return out
	}
	ids := map[string]string{}
	for _, p := range []string{"a", "b"} {
		var k struct{ Party string }
		if err := json.Unmarshal([]byte(room("keys", "new", filepath.Join(dir, p))), &k); err != nil {
			t.Fatal(err)
		}
		ids[p] = k.Party
	}
	key := func(p string) string { return filepath.Join(dir, p+".party.pem") }
	if _, errOut, err := runCLI(t, "", "room", "keys", "new", filepath.Join(dir, "a")); err == nil || !strings.Contains(err.Error()+errOut, "not overwriting") {
		t.Errorf("keys new over existing keys: %v %s", err, errOut)
	}
	room("create", "r", "--name", "a", "--party-key", key("a"))
	room("invite", "r", "b", "--public-key", filepath.Join(dir, "b.party.pub.pem"), "--party-key", key("a"))
	room("join", "r", "--party-key", key("b"))
	csv := filepath.Join(dir, "a.csv")
	if err := os.WriteFile(csv, []byte("account,amount\nx,1\ny,2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rules := filepath.Join(dir, "rules.json")
	if err := os.WriteFile(rules, []byte(`{"aggregate_only":["amount"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	blobs := filepath.Join(dir, "blobs")
	var d struct {
		Digest string
		Schema struct{ Columns []struct{ Name, Type string } }
	}
	if err := json.Unmarshal([]byte(room("dataset", "upload", "r", "ta", csv, "--rules", rules, "--blob-dir", blobs, "--party-key", key("a"))), &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Schema.Columns) != 2 || d.Schema.Columns[1].Type != "BIGINT" {
		t.Errorf("inferred schema %+v, want account VARCHAR, amount BIGINT", d.Schema)
	}
	if _, err := os.Stat(filepath.Join(blobs, "r", "ta")); err != nil {
		t.Errorf("the ciphertext is not in the blob store: %v", err)
	}
	if out := room("rules", "r", "ta"); !strings.Contains(out, `"aggregate_only"`) {
		t.Errorf("rules: %s", out)
	}
	// Parquet is converted on this machine and encrypted the same way.
	pq := filepath.Join(dir, "b.parquet")
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`COPY (SELECT * FROM (VALUES ('x', 3), ('z', 4)) AS t(account, amount)) TO '` + pq + `' (FORMAT parquet)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	var pd struct {
		Owner  string
		Schema struct{ Columns []struct{ Name, Type string } }
	}
	if err := json.Unmarshal([]byte(room("dataset", "upload", "r", "tb", pq, "--blob-dir", blobs, "--party-key", key("b"))), &pd); err != nil {
		t.Fatal(err)
	}
	if pd.Owner != ids["b"] || len(pd.Schema.Columns) != 2 || pd.Schema.Columns[1].Type != "BIGINT" {
		t.Errorf("parquet dataset %+v", pd)
	}
	var c struct{ ID, State string }
	if err := json.Unmarshal([]byte(room("contract", "propose", "r", "--name", "sum", "--sql", "SELECT sum(amount) AS s FROM ta",
		"--dataset", "ta", "--recipient", ids["b"]+"="+filepath.Join(dir, "b.hpke.pub.pem"), "--measurement", strings.Repeat("ab", 32),
		"--party-key", key("b"))), &c); err != nil {
		t.Fatal(err)
	}
	if _, errOut, err := runCLI(t, "", append([]string{"room", "approve", "r", c.ID, "--party-key", key("b")}, conn...)...); err == nil || !strings.Contains(errOut+err.Error(), "owns no dataset") {
		t.Errorf("approval by a party owning no dataset: %v %s", err, errOut)
	}
	if err := json.Unmarshal([]byte(room("approve", "r", c.ID, "--party-key", key("a"))), &c); err != nil || c.State != "Approved" {
		t.Fatalf("after approval: %+v, %v", c, err)
	}
	out := room("audit", "r")
	if !strings.Contains(out, "7 steps, 7 receipts verified, 0 failed") {
		t.Fatalf("audit:\n%s", out)
	}

	// The audit check itself: a step whose event or receipt is not the
	// one the ledger recorded fails.
	p := &client.Profile{Endpoint: "https://" + srv.Addr().String(), CACert: f.ServiceCert, Cert: f.User0Cert, Key: f.User0Key}
	cl, err := p.New()
	if err != nil {
		t.Fatal(err)
	}
	var list httpapi.CleanRoomAudit
	if err := cl.Call(context.Background(), "GET", "/cleanroom/rooms/r/audit", nil, &list); err != nil {
		t.Fatal(err)
	}
	cert := cl.ServiceCertificate()
	var l auditLine
	if err := verifyStep(cert, list.Steps[3], &l); err != nil {
		t.Fatalf("step 4 as served: %v", err)
	}
	tampered := list.Steps[3]
	tampered.Event = json.RawMessage(strings.Replace(string(tampered.Event), `"seq":4`, `"seq":5`, 1))
	if err := verifyStep(cert, tampered, &l); err == nil || !strings.Contains(err.Error(), "claims digest") {
		t.Errorf("step with an altered event: %v", err)
	}
	swapped := list.Steps[3]
	swapped.Receipt = list.Steps[4].Receipt
	if err := verifyStep(cert, swapped, &l); err == nil || !strings.Contains(err.Error(), "receipt is of transaction") {
		t.Errorf("step with another step's receipt: %v", err)
	}
	unsigned := list.Steps[3]
	unsigned.Receipt = nil
	if err := verifyStep(cert, unsigned, &l); err == nil {
		t.Error("step without a receipt verified")
	}
	// Signed requests: each step's request is its party's, and the party
	// keys come from the room's own steps.
	keys := map[string]*ecdsa.PublicKey{}
	events := make([]cleanroom.Event, len(list.Steps))
	for i, st := range list.Steps {
		if err := json.Unmarshal(st.Event, &events[i]); err != nil {
			t.Fatal(err)
		}
		if err := verifySigner(keys, st.Request, events[i]); err != nil {
			t.Fatalf("step %d (%s): %v", i+1, events[i].Step, err)
		}
	}
	if len(keys) != 2 {
		t.Errorf("the steps introduced %d party keys, want 2", len(keys))
	}
	if err := verifySigner(keys, list.Steps[1].Request, events[2]); err == nil || !strings.Contains(err.Error(), "not the one the step names") {
		t.Errorf("join step with the invite's request: %v", err)
	}
	if err := verifySigner(map[string]*ecdsa.PublicKey{}, list.Steps[1].Request, events[1]); err == nil || !strings.Contains(err.Error(), "never invited") {
		t.Errorf("invite by a party no step introduced: %v", err)
	}
	other := events[3]
	other.By = ids["b"]
	if err := verifySigner(keys, list.Steps[3].Request, other); err == nil || !strings.Contains(err.Error(), "the step says") {
		t.Errorf("a's request listed as b's step: %v", err)
	}
	if err := verifySigner(keys, "", events[3]); err == nil {
		t.Error("a party's step without its request verified")
	}

	forged := list.Steps[3]
	r := *forged.Receipt
	r.Signature = list.Steps[0].Receipt.Signature
	forged.Receipt = &r
	if err := verifyStep(cert, forged, &l); err == nil {
		t.Error("step with a receipt signed over another root verified")
	}
}
