package server

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

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
