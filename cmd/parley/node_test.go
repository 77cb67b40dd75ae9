package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/parleyhq/parley/internal/server"
)

// TestInitClusterCLI makes a cluster's directories, checks what it wrote,
// and that it refuses to make them twice.
func TestInitClusterCLI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cl")
	out, _, err := runCLI(t, "", "node", "init-cluster", "--dir", dir, "--nodes", "2")
	if err != nil {
		t.Fatal(err)
	}
	var ms []server.ClusterMember
	if err := json.Unmarshal([]byte(out), &ms); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	if len(ms) != 2 {
		t.Fatalf("got %d nodes, want 2", len(ms))
	}
	for _, f := range []string{"service_cert.pem", "user0_cert.pem", "user0_privk.pem", ClusterFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	for i, m := range ms {
		cfg, err := server.LoadConfig(m.Config)
		if err != nil {
			t.Fatalf("node %d config: %v", i, err)
		}
		if cfg.Cluster == nil || cfg.Cluster.RaftID != m.RaftID || len(cfg.Cluster.Nodes) != 2 || cfg.ListenAddress != m.Endpoint {
			t.Errorf("node %d config = %+v, want raft id %d of 2 nodes on %s", i, cfg, m.RaftID, m.Endpoint)
		}
	}
	_, _, err = runCLI(t, "", "node", "init-cluster", "--dir", dir, "--nodes", "2")
	if got := exitCode(err); got != 2 {
		t.Errorf("init-cluster over an existing cluster: exit %d (%v), want 2", got, err)
	}
	_, _, err = runCLI(t, "", "node", "init-cluster")
	if got := exitCode(err); got != 2 {
		t.Errorf("init-cluster without --dir: exit %d (%v), want 2", got, err)
	}
}

// TestNodeRecoverFlags: the recovery flags go together, and a recovery
// into a directory that holds a service that is not a recovered one is
// refused before anything is changed.
func TestNodeRecoverFlags(t *testing.T) {
	cfgPath := filepath.Join(t.TempDir(), "config.json")
	dataDir := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(cfgPath, []byte(`{"dataDir":`+strconvQuote(dataDir)+`,"listenAddress":"127.0.0.1:0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
	}{
		{"previous ledger without --recover", []string{"node", "--config", cfgPath, "--previous-ledger", "x"}},
		{"previous cert without --recover", []string{"node", "--config", cfgPath, "--previous-service-cert", "x"}},
		{"--recover without a previous ledger", []string{"node", "--config", cfgPath, "--recover"}},
	}
	for _, c := range cases {
		_, _, err := runCLI(t, "", c.args...)
		if got := exitCode(err); got != 2 {
			t.Errorf("%s: exit %d (%v), want 2", c.name, got, err)
		}
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("refused invocations made %s: %v", dataDir, err)
	}
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestInitNetworkCLI writes a network's configurations: node0 starts a
// service, the others join it; no key or secret is written.
func TestInitNetworkCLI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "net")
	out, _, err := runCLI(t, "", "node", "init-network", "--dir", dir, "--nodes", "3", "--auto-trust")
	if err != nil {
		t.Fatal(err)
	}
	var ms []server.ClusterMember
	if err := json.Unmarshal([]byte(out), &ms); err != nil || len(ms) != 3 {
		t.Fatalf("output %q: %v", out, err)
	}
	for i, m := range ms {
		cfg, err := server.LoadConfig(m.Config)
		if err != nil {
			t.Fatalf("node %d config: %v", i, err)
		}
		switch {
		case i == 0 && (cfg.Network == nil || !cfg.Network.AutoTrustNodes || cfg.Join != nil):
			t.Errorf("node0 config %+v, want a network with auto-trust", cfg)
		case i > 0 && (cfg.Join == nil || cfg.Join.Target != ms[0].Endpoint || cfg.Network != nil):
			t.Errorf("node %d config %+v, want to join %s", i, cfg, ms[0].Endpoint)
		}
		entries, _ := os.ReadDir(m.Dir)
		if len(entries) != 1 {
			t.Errorf("node %d directory holds %d files, want only config.json", i, len(entries))
		}
	}
	if _, _, err := runCLI(t, "", "node", "init-network", "--dir", dir); exitCode(err) != 2 {
		t.Errorf("init-network over an existing network: %v, want exit 2", err)
	}
}
