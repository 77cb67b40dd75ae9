package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRecoverClusterLedger: a three-node network (two nodes joined, so its
// ledger records raft membership changes) writes entries and loses every
// node. A new one-node service recovers node0's ledger: the old service's
// membership must not be carried over (the new service is one voter), so
// it commits; member0's share opens it; the old entries read back; new
// writes commit.
func TestRecoverClusterLedger(t *testing.T) {
	c := startCluster(t, 3)
	written := c.writeAll(c.nodes, 3, "old")
	c.waitCommitted(c.nodes, written)
	for _, nd := range c.nodes {
		c.kill(nd)
	}

	n := startRecoveredNode(t, filepath.Join(t.TempDir(), "recovered"), c.base,
		"--recover", "--previous-ledger", filepath.Join(c.nodes[0].Dir, "ledger"))
	if got := serviceStatus(t, n); got != "Recovering" {
		t.Fatalf("service status %q, want Recovering", got)
	}
	if out := submitShare(t, n, c.base, 0); out["serviceStatus"] != "Open" {
		t.Fatalf("after member0's share: %v, want the service Open", out)
	}
	for i, id := range written {
		want := fmt.Sprintf("old-%d", i%3)
		deadline := time.Now().Add(20 * time.Second)
		for {
			resp, body := n.do("GET", "/app/transactions/"+id+"?api-version=2022-05-13&collectionId=it", nil)
			if resp.StatusCode == 200 && strings.Contains(string(body), `"Ready"`) {
				if !strings.Contains(string(body), fmt.Sprintf("%q", want)) {
					t.Errorf("entry %s: %s, want contents %q", id, body, want)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("entry %s: %d %s", id, resp.StatusCode, body)
			}
			time.Sleep(20 * time.Millisecond) // polling: the entry loads
		}
	}
	appendEntry(t, n, "after recovery")
}
