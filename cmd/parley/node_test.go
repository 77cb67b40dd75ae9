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
