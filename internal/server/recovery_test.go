package server

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/gov"
	"github.com/parleyhq/parley/internal/identity"
	"github.com/parleyhq/parley/internal/node"

	"github.com/parleyhq/parley/internal/vfs"
)

func TestNeedsPrivate(t *testing.T) {
	cases := []struct {
		path string
		want bool
	}{
		{"/app/transactions", true},
		{"/app/transactions/2.5", true},
		{"/app/users", true},
		{"/app/keys/k/release", true},
		{"/cleanroom/rooms/r/datasets/d", true},
		{"/attest/virtual", true},
		{"/app/governance/constitution", false},
		{"/gov/recovery/share", false},
		{"/gov/proposals", false},
		{"/node/network", false},
		{"/health", false},
	}
	for _, c := range cases {
		if got := needsPrivate(c.path); got != c.want {
			t.Errorf("needsPrivate(%q) = %v, want %v", c.path, got, c.want)
		}
	}
}

func TestLoadRecoveryState(t *testing.T) {
	dir := t.TempDir()
	if rs, err := loadRecoveryState(vfs.OS{}, dir); rs != nil || err != nil {
		t.Fatalf("no file: %v, %v; want nil, nil", rs, err)
	}
	for _, bad := range []string{"", "{", `{"previousLastSeqno":0}`, `[]`} {
		os.WriteFile(filepath.Join(dir, RecoveryFile), []byte(bad), 0o644)
		if _, err := loadRecoveryState(vfs.OS{}, dir); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	os.WriteFile(filepath.Join(dir, RecoveryFile), []byte(`{"previousLastSeqno":42}`), 0o644)
	if rs, err := loadRecoveryState(vfs.OS{}, dir); err != nil || rs.PreviousLastSeqno != 42 {
		t.Errorf("good file: %+v, %v", rs, err)
	}
}

// TestRecoverRefusesAnOrdinaryNode: --recover into a directory that holds
// a service that was not recovered is refused.
func TestRecoverRefusesAnOrdinaryNode(t *testing.T) {
	dir := t.TempDir()
	srv, err := Start(Config{DataDir: dir, ListenAddress: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := srv.Run(ctx); err != nil {
		t.Fatal(err)
	}
	err = prepareRecovery(vfs.OS{}, dir, &RecoveryConfig{PreviousLedgerDir: t.TempDir()}, nil, slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("recovery into an ordinary node's directory accepted")
	}
}

// runStopped runs srv with a cancelled context: it serves nothing and
// closes cleanly.
func runStopped(t *testing.T, srv *Server) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := srv.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestRecoverChecksThePreviousCertificate: a previous service certificate
// that did not endorse the old ledger's signing node is refused; given
// again, the right one (or none: the ledger records it) recovers, and the
// node is Recovering.
func TestRecoverChecksThePreviousCertificate(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	old := t.TempDir()
	srv, err := Start(Config{DataDir: old, ListenAddress: "127.0.0.1:0"}, logger)
	if err != nil {
		t.Fatal(err)
	}
	runStopped(t, srv)
	other, err := identity.NewService("Other Service", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wrong := filepath.Join(t.TempDir(), "wrong.pem")
	if err := os.WriteFile(wrong, identity.EncodeCertPEM(other.CertDER), 0o644); err != nil {
		t.Fatal(err)
	}
	newDir := filepath.Join(t.TempDir(), "new")
	rc := &RecoveryConfig{PreviousLedgerDir: filepath.Join(old, node.LedgerDir), PreviousServiceCert: wrong}
	if _, err := Start(Config{DataDir: newDir, ListenAddress: "127.0.0.1:0", Recovery: rc}, logger); err == nil || !strings.Contains(err.Error(), "did not endorse") {
		t.Fatalf("recovery with a wrong previous certificate: err = %v", err)
	}
	rc.PreviousServiceCert = filepath.Join(old, node.ServiceCertFile)
	srv, err = Start(Config{DataDir: newDir, ListenAddress: "127.0.0.1:0", Recovery: rc}, logger)
	if err != nil {
		t.Fatalf("recovery with the right certificate given again: %v", err)
	}
	if got := srv.serviceStatus(); got != gov.ServiceRecovering {
		t.Errorf("status %q, want Recovering", got)
	}
	prev := srv.gov.PreviousIdentities()
	oldCert, _ := os.ReadFile(filepath.Join(old, node.ServiceCertFile))
	if len(prev) != 1 || prev[0].Cert != string(oldCert) {
		t.Fatalf("previous identities = %+v, want the old service certificate", prev)
	}
	runStopped(t, srv)

	// Without a certificate, the one the old ledger records is endorsed.
	third := filepath.Join(t.TempDir(), "third")
	srv, err = Start(Config{DataDir: third, ListenAddress: "127.0.0.1:0", Recovery: &RecoveryConfig{PreviousLedgerDir: filepath.Join(old, node.LedgerDir)}}, logger)
	if err != nil {
		t.Fatal(err)
	}
	if prev := srv.gov.PreviousIdentities(); len(prev) != 1 || prev[0].Cert != string(oldCert) {
		t.Errorf("previous identities = %+v, want the recorded certificate", prev)
	}
	runStopped(t, srv)
}
