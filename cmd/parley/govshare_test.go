package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/gov"
	"github.com/parleyhq/parley/internal/node"
	"github.com/parleyhq/parley/internal/server"
	"github.com/parleyhq/parley/internal/vfs"
)

// TestIntegrationGovShare runs a service with three members, sets the
// recovery threshold to two by proposal, and has each member fetch and
// decrypt its share with `parley gov share`: any two shares open the
// wrapped ledger secret on the ledger, which is the node's; one does not.
func TestIntegrationGovShare(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a service")
	}
	dir := t.TempDir()
	srv, err := server.Start(server.Config{DataDir: dir, ListenAddress: "127.0.0.1:0", Members: 3}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	stopped := false
	shutdown := func() {
		if stopped {
			return
		}
		stopped = true
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(shutdown)

	member := func(i int) []string {
		cert, key, _, _ := server.MemberFiles(dir, i)
		return []string{"--endpoint", "https://" + srv.Addr().String(), "--cacert", srv.Files().ServiceCert,
			"--member-cert", cert, "--member-key", key, "--timeout", "30s"}
	}
	asMember := func(i int, args ...string) string {
		t.Helper()
		out, errOut, err := runCLI(t, "", append(append([]string{"gov"}, args...), member(i)...)...)
		if err != nil {
			t.Fatalf("parley gov %s as member%d: %v\n%s", strings.Join(args, " "), i, err, errOut)
		}
		return out
	}

	proposal := filepath.Join(t.TempDir(), "threshold.json")
	if err := os.WriteFile(proposal, []byte(`{"actions":[{"name":"set_recovery_threshold","args":{"recovery_threshold":2}}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var p struct{ ProposalID, State string }
	if err := json.Unmarshal([]byte(asMember(0, "propose", proposal)), &p); err != nil {
		t.Fatal(err)
	}
	asMember(0, "vote", p.ProposalID, "accept")
	if err := json.Unmarshal([]byte(asMember(1, "vote", p.ProposalID, "accept")), &p); err != nil {
		t.Fatal(err)
	}
	if p.State != string(gov.StateAccepted) {
		t.Fatalf("set_recovery_threshold proposal: %s, want Accepted", p.State)
	}

	var shares [][]byte
	for i := range 3 {
		out := asMember(i, "share") // --member-enc-key defaults to member<i>_enc_privk.pem
		s, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out))
		if err != nil {
			t.Fatalf("member%d share %q: %v", i, out, err)
		}
		shares = append(shares, s)
	}
	// The wrong encryption key does not decrypt member1's share.
	_, _, encKey0, _ := server.MemberFiles(dir, 0)
	if _, _, err := runCLI(t, "", append([]string{"gov", "share", "--member-enc-key", encKey0}, member(1)...)...); err == nil {
		t.Errorf("member1's share decrypted with member0's key")
	}

	shutdown()
	id, err := node.Load(vfs.OS{}, dir)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.Open(engine.Config{Dir: filepath.Join(dir, node.LedgerDir), Secret: id.Secret, NodeKey: id.NodeKey, NodeCertPEM: id.NodeCertPEM})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	w, err := gov.New(gov.Config{Engine: eng}).WrappedLedgerSecret()
	if err != nil {
		t.Fatal(err)
	}
	if w.Threshold != 2 || len(w.Members) != 3 {
		t.Fatalf("wrapped secret: threshold %d over %d members, want 2 over 3", w.Threshold, len(w.Members))
	}
	want := id.LedgerSecret()
	for _, pair := range [][2]int{{0, 1}, {1, 2}, {0, 2}} {
		got, err := gov.UnwrapLedgerSecret(w.WrappedLedgerSecret, [][]byte{shares[pair[0]], shares[pair[1]]})
		if err != nil {
			t.Fatalf("shares of members %v: %v", pair, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("shares of members %v give another secret than the node's", pair)
		}
	}
	for i, s := range shares {
		if _, err := gov.UnwrapLedgerSecret(w.WrappedLedgerSecret, [][]byte{s}); err == nil {
			t.Errorf("member%d's share alone unwrapped the ledger secret", i)
		}
	}
}
