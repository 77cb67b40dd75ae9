package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// postBatch writes n entries in one request through nd and returns the
// highest transaction id.
func (c *testClusterProc) postBatch(nd *clusterNode, n int, prefix string) string {
	c.t.Helper()
	type entry struct {
		Contents string `json:"contents"`
	}
	var body struct {
		Entries []entry `json:"entries"`
	}
	for i := range n {
		body.Entries = append(body.Entries, entry{Contents: fmt.Sprintf("%s-%d", prefix, i)})
	}
	b, _ := json.Marshal(body)
	resp, err := c.client.Post("https://"+nd.Endpoint+"/app/transactions:batch?api-version=2022-05-13&collectionId=it", "application/json", strings.NewReader(string(b)))
	if err != nil {
		c.t.Fatalf("batch: %v", err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("batch: %d %s", resp.StatusCode, out)
	}
	return resp.Header.Get("x-ms-ccf-transaction-id")
}

// setConfig changes one field of nd's configuration file.
func (c *testClusterProc) setConfig(nd *clusterNode, key string, value any) {
	c.t.Helper()
	b, err := os.ReadFile(nd.Config)
	if err != nil {
		c.t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		c.t.Fatal(err)
	}
	cfg[key] = value
	b, _ = json.Marshal(cfg)
	if err := os.WriteFile(nd.Config, b, 0o600); err != nil {
		c.t.Fatal(err)
	}
}

// firstChunkStart is the first seqno of a ledger directory's chunks.
func firstChunkStart(t *testing.T, dir string) uint64 {
	t.Helper()
	names, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var first uint64
	for _, n := range names {
		rest, ok := strings.CutPrefix(n.Name(), "ledger_")
		if !ok {
			continue
		}
		digits, _, _ := strings.Cut(rest, "-")
		digits = strings.TrimSuffix(strings.TrimSuffix(digits, ".committed"), ".committed")
		s, err := strconv.ParseUint(digits, 10, 64)
		if err == nil && (first == 0 || s < first) {
			first = s
		}
	}
	return first
}

// joinAfter runs a one-node service with the given snapshot interval,
// writes entries in batches of 1000, and has a node join through the
// attested join; it returns the new node and how long it took from its
// trust to serving the last write committed.
func joinAfter(t *testing.T, interval, entries int) (*testClusterProc, *clusterNode, time.Duration) {
	c := startNetwork(t, 1, false)
	n0 := c.nodes[0]
	if err := c.stop(n0); err != nil {
		t.Fatal(err)
	}
	c.setConfig(n0, "snapshotTxInterval", interval)
	c.start(n0)
	c.waitPrimary(c.nodes, 0)
	var last string
	for i := 0; i < entries; i += 1000 {
		last = c.postBatch(n0, min(1000, entries-i), fmt.Sprintf("b%d", i))
	}
	c.waitCommitted([]*clusterNode{n0}, []string{last})
	if interval > 0 {
		deadline := time.Now().Add(30 * time.Second)
		for {
			names, _ := os.ReadDir(filepath.Join(n0.Dir, "ledger", "snapshots"))
			if len(names) > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("node0 wrote no snapshot")
			}
			time.Sleep(50 * time.Millisecond) // polling a condition
		}
	}
	a := c.addNode(n0, "")
	c.govAs(n0, "trust_node", map[string]string{"node_id": c.pendingNode()})
	start := time.Now()
	c.waitMembers(2)
	c.setIDs(a)
	c.waitCommitted([]*clusterNode{a}, []string{last})
	return c, a, time.Since(start)
}

// TestSnapshotJoin: a node that joins a service with a few thousand
// entries catches up from a snapshot (its ledger directory starts after
// seqno 1), writes go on committing on both nodes, and parley verify
// checks its ledger from the snapshot.
func TestSnapshotJoin(t *testing.T) {
	c, a, took := joinAfter(t, 500, 3000)
	t.Logf("join catch-up with snapshots: %v", took)
	n0 := c.nodes[0]
	ids := c.writeAll([]*clusterNode{n0, a}, 10, "after")
	c.waitCommitted([]*clusterNode{n0, a}, ids)
	c.wantContents(a, ids[len(ids)-1], "after-9")
	if s := firstChunkStart(t, filepath.Join(a.Dir, "ledger")); s <= 1 {
		t.Fatalf("the joined node's ledger starts at %d: it replayed the ledger instead of starting from a snapshot", s)
	}
	// An entry from before the snapshot is not on the joined node: it
	// forwards the read to the primary (node0, with the whole ledger).
	var early string
	for view := 1; view <= 5 && early == ""; view++ {
		if st, _ := c.status(n0, fmt.Sprintf("%d.20", view)); st == "Committed" {
			early = fmt.Sprintf("%d.20", view)
		}
	}
	if early == "" {
		t.Fatal("node0 has no committed transaction at seqno 20 in views 1 to 5")
	}
	if st, err := c.status(a, early); st != "Committed" {
		t.Errorf("status of %s on the joined node: %q, %v; want Committed (its snapshot knows the views)", early, st, err)
	}
	for _, path := range []string{"/app/transactions/" + early + "/receipt", "/app/transactions/" + early} {
		resp, err := c.client.Get("https://" + a.Endpoint + path + "?api-version=2022-05-13")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// Seqno 20 is a ledger entry or another transaction: either way
		// the primary's answer, not the joined node's NotOnThisNode.
		if strings.Contains(string(body), "TransactionNotOnThisNode") || resp.StatusCode == http.StatusInternalServerError {
			t.Errorf("GET %s on the joined node: %d %s, want the primary's answer", path, resp.StatusCode, body)
		}
		t.Logf("GET %s on the joined node: %d %.120s", path, resp.StatusCode, body)
	}
	for _, nd := range []*clusterNode{a, n0} {
		if err := c.stop(nd); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(parleyBin, "verify", "--quiet", "--ledger", filepath.Join(nd.Dir, "ledger"), "--service-cert", filepath.Join(c.base, "service_cert.pem")).CombinedOutput()
		if err != nil {
			t.Fatalf("parley verify on %s: %v\n%s", nd.Dir, err, out)
		}
		if nd == a && (!strings.Contains(string(out), "checked from the snapshot") || !strings.Contains(string(out), "digest, and it matches")) {
			t.Errorf("parley verify on the joined node did not start from its snapshot, checked against its evidence:\n%s", out)
		}
	}
}

// TestSnapshotJoinMeasure measures the join catch-up with and without
// snapshots (PARLEY_MEASURE_SNAPSHOT=entries to run it; figures in
// docs/performance.md).
func TestSnapshotJoinMeasure(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("PARLEY_MEASURE_SNAPSHOT"))
	if n <= 0 {
		t.Skip("set PARLEY_MEASURE_SNAPSHOT=entries to measure")
	}
	for _, interval := range []int{-1, n / 4} {
		t.Run(fmt.Sprint(interval), func(t *testing.T) {
			_, _, took := joinAfter(t, interval, n)
			t.Logf("entries %d, snapshot interval %d: join catch-up %v", n, interval, took)
		})
	}
}
