package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// addNode configures a new node that joins the service through target
// (claiming measurement in its virtual evidence, the binary's when empty)
// and starts it.
func (c *testClusterProc) addNode(target *clusterNode, measurement string) *clusterNode {
	c.t.Helper()
	dir := filepath.Join(c.base, fmt.Sprintf("joiner%d", len(c.nodes)))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		c.t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(c.t))
	cfg := map[string]any{
		"dataDir":       dir,
		"listenAddress": addr,
		"join":          map[string]string{"target": target.Endpoint, "serviceCertificate": filepath.Join(c.base, "service_cert.pem"), "timeout": "60s"},
	}
	if measurement != "" {
		cfg["virtualMeasurement"] = measurement
	}
	b, _ := json.Marshal(cfg)
	path := filepath.Join(dir, "config.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		c.t.Fatal(err)
	}
	nd := &clusterNode{Endpoint: addr, Dir: dir, Config: path}
	c.nodes = append(c.nodes, nd)
	c.start(nd)
	return nd
}

// govAs runs a proposal of one action as member0 against node nd and
// accepts it.
func (c *testClusterProc) govAs(nd *clusterNode, name string, args any) {
	c.t.Helper()
	profile, _ := json.Marshal(map[string]string{"endpoint": "https://" + nd.Endpoint, "cacert": filepath.Join(c.base, "service_cert.pem"), "cert": filepath.Join(c.base, "user0_cert.pem"), "key": filepath.Join(c.base, "user0_privk.pem")})
	if err := os.WriteFile(filepath.Join(c.base, "profile.json"), profile, 0o600); err != nil {
		c.t.Fatal(err)
	}
	p := mustGov(c.t, c.base, 0, "propose", writeProposal(c.t, map[string]any{"name": name, "args": args}))
	if state(p) != "Accepted" {
		p = mustGov(c.t, c.base, 0, "vote", p["proposalId"].(string), "accept")
	}
	if state(p) != "Accepted" {
		c.t.Fatalf("%s: proposal %v, want Accepted", name, p)
	}
}

// pendingNode waits for a Pending node and returns its id.
func (c *testClusterProc) pendingNode() string {
	c.t.Helper()
	var id string
	c.waitNodes("a Pending node", func(n netNodes) bool {
		for _, x := range n.Nodes {
			if x.Status == "Pending" {
				id = x.NodeID
				return true
			}
		}
		return false
	})
	return id
}

// nodeID returns the node id of raft id rid.
func (c *testClusterProc) nodeID(rid uint64) string {
	c.t.Helper()
	var id string
	c.waitNodes(fmt.Sprintf("raft id %d", rid), func(n netNodes) bool {
		for _, x := range n.Nodes {
			if x.RaftID == rid {
				id = x.NodeID
				return true
			}
		}
		return false
	})
	return id
}

// live returns the running nodes.
func (c *testClusterProc) live() []*clusterNode {
	var out []*clusterNode
	for _, nd := range c.nodes {
		if nd.cmd != nil {
			out = append(out, nd)
		}
	}
	return out
}

// writeAll writes n entries through each of the nodes (backups forward to
// the primary), retrying through an election, and returns the ids.
func (c *testClusterProc) writeAll(on []*clusterNode, n int, prefix string) []string {
	c.t.Helper()
	var ids []string
	for _, nd := range on {
		for i := range n {
			deadline := time.Now().Add(30 * time.Second)
			for {
				txid, err := c.post(nd, fmt.Sprintf("%s-%d", prefix, i))
				if err == nil {
					ids = append(ids, txid)
					break
				}
				if time.Now().After(deadline) {
					c.t.Fatalf("write through %s: %v", nd.Endpoint, err)
				}
				time.Sleep(50 * time.Millisecond) // retrying through an election
			}
		}
	}
	return ids
}

// waitCommitted waits until every id is Committed on every node of on.
func (c *testClusterProc) waitCommitted(on []*clusterNode, ids []string) {
	c.t.Helper()
	for _, nd := range on {
		for _, id := range ids {
			deadline := time.Now().Add(30 * time.Second)
			for {
				st, err := c.status(nd, id)
				if err == nil && st == "Committed" {
					break
				}
				if time.Now().After(deadline) {
					c.t.Fatalf("node %d (%s): %s is %q, %v; want Committed", nd.ID, nd.Endpoint, id, st, err)
				}
				time.Sleep(20 * time.Millisecond) // polling a condition
			}
		}
	}
}

// wantContents checks that node nd serves the entry txid with contents.
func (c *testClusterProc) wantContents(nd *clusterNode, txid, contents string) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got struct {
			State string `json:"state"`
			Entry struct {
				Contents string `json:"contents"`
			} `json:"entry"`
		}
		err := c.get(nd, "/app/transactions/"+txid+"?api-version=2022-05-13&collectionId=it", &got)
		if err == nil && got.State == "Ready" {
			if got.Entry.Contents != contents {
				c.t.Fatalf("node %d: %s holds %q, want %q", nd.ID, txid, got.Entry.Contents, contents)
			}
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("node %d: entry %s: %+v, %v", nd.ID, txid, got, err)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition: the entry loads
	}
}

// without returns nodes without x.
func without(nodes []*clusterNode, x ...*clusterNode) []*clusterNode {
	return slices.DeleteFunc(slices.Clone(nodes), func(n *clusterNode) bool { return slices.Contains(x, n) })
}

// TestJoinTrustRefuseRetireReplace grows a one-node service by the
// attested join: two nodes join (one through a backup, which forwards the
// join to the primary), wait Pending, and become Trusted voters by a
// member's vote; a node claiming a measurement that is not allowed is
// refused and the refusal is on the ledger. Writes replicate to every
// node; the primary is SIGKILLed and a new one commits. A failed node is
// replaced (a new node joins, the dead one is retired) and a live backup
// is retired (it then refuses writes). Every transaction reported
// Committed is Committed on every node still in the service, and every
// ledger verifies against the one service certificate.
func TestJoinTrustRefuseRetireReplace(t *testing.T) {
	c := startNetwork(t, 1, false)
	n0 := c.nodes[0]

	// Two nodes join and are trusted by governance.
	a := c.addNode(n0, "")
	c.govAs(n0, "trust_node", map[string]string{"node_id": c.pendingNode()})
	c.waitMembers(2)
	c.setIDs(a)

	// The ledger secret rotates before the next node joins: it must read
	// the entries sealed under the old secret and the new one.
	sealedOld := c.writeAll([]*clusterNode{n0}, 3, "before-rotation")
	c.govAs(n0, "rotate_ledger_secret", map[string]any{})
	sealedNew := c.writeAll([]*clusterNode{n0}, 3, "after-rotation")
	c.waitCommitted([]*clusterNode{n0, a}, append(slices.Clone(sealedOld), sealedNew...))

	b := c.addNode(a, "") // through a backup
	c.govAs(n0, "trust_node", map[string]string{"node_id": c.pendingNode()})
	c.waitMembers(3)
	c.setIDs(b)

	// A node whose measurement is not allowed is refused, on the ledger.
	bad := strings.Repeat("0", 64)
	r := c.addNode(b, bad)
	select {
	case err := <-r.done:
		if err == nil || !strings.Contains(r.logs.String(), "join refused") {
			t.Fatalf("refused node exited with %v; output:\n%s", err, r.logs)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a node with a measurement that is not allowed is still running after 30s")
	}
	r.cmd = nil
	c.nodes = without(c.nodes, r)
	if _, err := os.Stat(filepath.Join(r.Dir, "service_cert.pem")); err == nil {
		t.Errorf("the refused node received the service's files")
	}
	c.waitNodes("the refusal on the ledger", func(n netNodes) bool {
		for _, x := range n.Refused {
			if x.Measurement == "virtual:"+bad && strings.Contains(x.Reason, "not allowed") {
				return true
			}
		}
		return false
	})

	// Writes through every node replicate to every node.
	written := c.writeAll(c.nodes, 10, "first")
	c.waitCommitted(c.nodes, written)
	for i, id := range sealedOld {
		c.wantContents(b, id, fmt.Sprintf("before-rotation-%d", i))
	}
	for i, id := range sealedNew {
		c.wantContents(b, id, fmt.Sprintf("after-rotation-%d", i))
	}

	// Kill the primary: a new one is elected and commits; the old one
	// restarts on its data (without joining again) and catches up.
	old, _ := c.waitPrimary(c.nodes, 0)
	oldNode := c.node(old)
	c.kill(oldNode)
	neu, _ := c.waitPrimary(c.live(), old)
	more := c.writeAll(c.live(), 10, "after-kill")
	c.waitCommitted(c.live(), more)
	c.start(oldNode)
	written = append(written, more...)
	c.waitCommitted(c.nodes, written)
	if strings.Count(oldNode.logs.String(), "joining the service") > 0 {
		t.Errorf("the restarted node %d joined again", old)
	}
	t.Logf("primary %d killed, %d took over", old, neu)

	// Replace a failed node: a backup dies, a new node joins, the dead one
	// is retired.
	primary, _ := c.waitPrimary(c.nodes, 0)
	var backups []*clusterNode
	for _, nd := range c.nodes {
		if nd.ID != primary {
			backups = append(backups, nd)
		}
	}
	failed := backups[0]
	c.kill(failed)
	d := c.addNode(c.node(primary), "")
	c.govAs(c.node(primary), "trust_node", map[string]string{"node_id": c.pendingNode()})
	c.waitMembers(4)
	c.setIDs(d)
	c.govAs(c.node(primary), "retire_node", map[string]string{"node_id": c.nodeID(failed.ID)})
	c.waitNodes("the failed node Retired and out of raft", func(n netNodes) bool {
		for _, x := range n.Nodes {
			if x.RaftID == failed.ID {
				return x.Status == "Retired" && x.InRaft == "no"
			}
		}
		return false
	})
	c.nodes = without(c.nodes, failed)
	replaced := c.writeAll(c.nodes, 5, "replaced")
	written = append(written, replaced...)
	c.waitCommitted(c.nodes, written)

	// Retire a live backup: it leaves raft and refuses writes.
	primary, _ = c.waitPrimary(c.nodes, 0)
	var retiree *clusterNode
	for _, nd := range c.nodes {
		if nd.ID != primary {
			retiree = nd
			break
		}
	}
	c.govAs(c.node(primary), "retire_node", map[string]string{"node_id": c.nodeID(retiree.ID)})
	c.waitNodes("the retired node Retired and out of raft", func(n netNodes) bool {
		for _, x := range n.Nodes {
			if x.RaftID == retiree.ID {
				return x.Status == "Retired" && x.InRaft == "no"
			}
		}
		return false
	})
	resp, err := c.client.Post("https://"+retiree.Endpoint+"/app/transactions?api-version=2022-05-13&collectionId=it", "application/json", strings.NewReader(`{"contents":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("write to a retired node: %d, want 503", resp.StatusCode)
	}
	remaining := without(c.nodes, retiree)
	last := c.writeAll(remaining, 5, "after-retire")
	written = append(written, last...)
	c.waitCommitted(remaining, written)

	// Retire the primary itself: it hands the primary role over first.
	oldPrimary := c.node(primary)
	c.govAs(oldPrimary, "retire_node", map[string]string{"node_id": c.nodeID(primary)})
	rest := without(remaining, oldPrimary)
	neu, _ = c.waitPrimary(rest, primary)
	c.waitNodes("the old primary Retired and out of raft", func(n netNodes) bool {
		for _, x := range n.Nodes {
			if x.RaftID == primary {
				return x.Status == "Retired" && x.InRaft == "no"
			}
		}
		return false
	})
	last = c.writeAll(rest, 5, "after-primary-retired")
	c.waitCommitted(rest, append(written, last...))
	t.Logf("primary %d retired, %d took over", primary, neu)

	// Every ledger verifies against the one service certificate.
	for _, nd := range c.nodes {
		if err := c.stop(nd); err != nil {
			t.Errorf("node %d: stop: %v", nd.ID, err)
		}
		out, err := exec.Command(parleyBin, "verify", "--quiet", "--ledger", filepath.Join(nd.Dir, "ledger"), "--service-cert", filepath.Join(c.base, "service_cert.pem")).CombinedOutput()
		if err != nil {
			t.Errorf("node %d: parley verify: %v\n%s", nd.ID, err, out)
		}
	}
}

// TestStartScript runs examples/cluster/start.sh and stop.sh: three nodes,
// two of them joined, all Trusted voters, and a restart of the whole
// network on its data that joins nothing again.
func TestStartScript(t *testing.T) {
	for _, tool := range []string{"bash", "jq", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found", tool)
		}
	}
	recordSourceInputs(t)
	dir := filepath.Join(t.TempDir(), "net")
	run := func(script string, args ...string) {
		t.Helper()
		cmd := exec.Command("bash", append([]string{filepath.Join("..", "examples", "cluster", script)}, args...)...)
		cmd.Env = append(os.Environ(), "PARLEY="+parleyBin)
		if out, err := cmd.CombinedOutput(); err != nil {
			logs, _ := exec.Command("bash", "-c", "tail -n 20 "+dir+"/node*/node.log").CombinedOutput()
			t.Fatalf("%s: %v\n%s\n%s", script, err, out, logs)
		}
	}
	stopped := false
	run("start.sh", dir, "3")
	t.Cleanup(func() {
		if !stopped {
			run("stop.sh", dir)
		}
	})
	var nodes []struct {
		ID       uint64 `json:"id"`
		Endpoint string `json:"endpoint"`
		PID      int    `json:"pid"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "nodes.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &nodes); err != nil || len(nodes) != 3 {
		t.Fatalf("nodes.json %s: %v", b, err)
	}
	ids := map[uint64]bool{}
	for _, n := range nodes {
		ids[n.ID] = true
	}
	if len(ids) != 3 || ids[0] {
		t.Errorf("nodes.json ids %v, want three raft ids", ids)
	}
	for _, f := range []string{"service_cert.pem", "user0_cert.pem", "user0_privk.pem", "profile.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	run("stop.sh", dir)
	run("start.sh", dir)
	for i := 1; i < 3; i++ {
		log, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("node%d", i), "node.log"))
		if n := strings.Count(string(log), "joining the service"); n != 1 {
			t.Errorf("node%d joined %d times, want once", i, n)
		}
	}
	run("stop.sh", dir)
	stopped = true
}
