package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/internal/storage"
)

// clusterNode is one `parley node` process of a network.
type clusterNode struct {
	ID       uint64 `json:"id"` // its raft id, once it has joined
	Endpoint string `json:"endpoint"`
	Dir      string `json:"dir"`
	Config   string `json:"config"`

	cmd  *exec.Cmd
	logs *syncBuffer
	done chan error
}

// syncBuffer is a bytes.Buffer safe for a process's output and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type testClusterProc struct {
	t      *testing.T
	base   string
	nodes  []*clusterNode
	client *http.Client
}

// startCluster starts a network of n nodes as examples/cluster/start.sh
// does: node0 makes a new service with auto-trust, the others join it
// through the attested join.
func startCluster(t *testing.T, n int) *testClusterProc {
	return startNetwork(t, n, true)
}

// startNetwork writes the configurations with parley node init-network,
// starts node0 (a new service), copies the client files out of its
// directory, starts the other nodes (which join node0) and, with
// autoTrust, waits until every node is Trusted and a voter. Without
// autoTrust only node0 is started.
func startNetwork(t *testing.T, n int, autoTrust bool) *testClusterProc {
	t.Helper()
	recordSourceInputs(t)
	base := filepath.Join(t.TempDir(), "cluster")
	args := []string{"node", "init-network", "--dir", base, "--nodes", fmt.Sprint(n)}
	if autoTrust {
		args = append(args, "--auto-trust")
	}
	out, err := exec.Command(parleyBin, args...).Output()
	if err != nil {
		t.Fatalf("init-network: %v", err)
	}
	c := &testClusterProc{t: t, base: base}
	var nodes []*clusterNode
	if err := json.Unmarshal(out, &nodes); err != nil {
		t.Fatalf("init-network output: %v", err)
	}
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			c.stop(nd)
			if t.Failed() {
				t.Logf("node %s output:\n%s", nd.Endpoint, nd.logs)
			}
		}
		if c.client != nil {
			c.client.CloseIdleConnections()
		}
	})
	c.nodes = append(c.nodes, nodes[0])
	c.start(nodes[0])
	// node0 is open once its genesis (which needs the client files) is
	// written; its certificate is checked below, once it is on disk.
	insecure := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer insecure.CloseIdleConnections()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n networkInfo
		if resp, err := insecure.Get("https://" + nodes[0].Endpoint + "/node/network"); err == nil {
			json.NewDecoder(resp.Body).Decode(&n)
			resp.Body.Close()
		}
		if n.ServiceStatus == "Open" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node0 did not open in 30s")
		}
		time.Sleep(20 * time.Millisecond) // polling a condition
	}
	for _, f := range []string{"service_cert.pem", "user0_cert.pem", "user0_privk.pem", "member0_cert.pem", "member0_privk.pem", "member0_enc_privk.pem"} {
		b, err := os.ReadFile(filepath.Join(nodes[0].Dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(base, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ca, err := os.ReadFile(filepath.Join(base, "service_cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatal("no service certificate")
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(base, "user0_cert.pem"), filepath.Join(base, "user0_privk.pem"))
	if err != nil {
		t.Fatal(err)
	}
	c.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	profile, _ := json.Marshal(map[string]string{"endpoint": "https://" + nodes[0].Endpoint, "cacert": filepath.Join(base, "service_cert.pem"), "cert": filepath.Join(base, "user0_cert.pem"), "key": filepath.Join(base, "user0_privk.pem")})
	if err := os.WriteFile(filepath.Join(base, "profile.json"), profile, 0o600); err != nil {
		t.Fatal(err)
	}
	c.waitPrimary(c.nodes, 0)
	c.setIDs(nodes[0])
	if !autoTrust {
		return c
	}
	for _, nd := range nodes[1:] {
		c.nodes = append(c.nodes, nd)
		c.start(nd)
	}
	c.waitMembers(len(c.nodes))
	for _, nd := range nodes[1:] {
		c.setIDs(nd)
	}
	return c
}

// setIDs reads nd's raft id from its /node/state.
func (c *testClusterProc) setIDs(nd *clusterNode) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var st struct {
			RaftID uint64 `json:"raft_id"`
		}
		err := c.get(nd, "/node/state", &st)
		if err == nil && st.RaftID != 0 {
			nd.ID = st.RaftID
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("node %s: no raft id: %v", nd.Endpoint, err)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition
	}
}

// netNode is one node of GET /node/network/nodes.
type netNode struct {
	NodeID      string `json:"node_id"`
	RaftID      uint64 `json:"raft_id"`
	Status      string `json:"status"`
	Primary     bool   `json:"primary"`
	Address     string `json:"address"`
	Measurement string `json:"measurement"`
	InRaft      string `json:"in_raft"`
}

type netNodes struct {
	Nodes   []netNode `json:"nodes"`
	Refused []struct {
		NodeID      string `json:"node_id"`
		Reason      string `json:"reason"`
		Measurement string `json:"measurement"`
	} `json:"refused"`
}

// waitNodes polls the first live node's /node/network/nodes until ok
// holds.
func (c *testClusterProc) waitNodes(what string, ok func(netNodes) bool) netNodes {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var got netNodes
	var err error
	for time.Now().Before(deadline) {
		for _, nd := range c.nodes {
			if nd.cmd == nil {
				continue
			}
			if err = c.get(nd, "/node/network/nodes", &got); err == nil && ok(got) {
				return got
			}
		}
		time.Sleep(50 * time.Millisecond) // polling a condition
	}
	c.t.Fatalf("%s: nodes %+v (%v)", what, got, err)
	return got
}

// waitMembers waits until want nodes are Trusted voters.
func (c *testClusterProc) waitMembers(want int) {
	c.t.Helper()
	c.waitNodes(fmt.Sprintf("%d Trusted voters", want), func(n netNodes) bool {
		k := 0
		for _, x := range n.Nodes {
			if x.Status == "Trusted" && x.InRaft == "voter" {
				k++
			}
		}
		return k == want
	})
}

func (c *testClusterProc) start(nd *clusterNode) {
	c.t.Helper()
	nd.logs, nd.done = &syncBuffer{}, make(chan error, 1)
	nd.cmd = exec.Command(parleyBin, "node", "--config", nd.Config)
	nd.cmd.Stdout, nd.cmd.Stderr = nd.logs, nd.logs
	nd.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := nd.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	cmd, done := nd.cmd, nd.done
	go func() { done <- cmd.Wait() }()
}

// stop sends SIGINT and waits for a clean exit.
func (c *testClusterProc) stop(nd *clusterNode) error {
	if nd.cmd == nil {
		return nil
	}
	defer func() { nd.cmd = nil }()
	nd.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-nd.done:
		return err
	case <-time.After(20 * time.Second):
		nd.cmd.Process.Kill()
		<-nd.done
		return errors.New("no exit 20s after SIGINT")
	}
}

// kill sends SIGKILL and reaps the process.
func (c *testClusterProc) kill(nd *clusterNode) {
	nd.cmd.Process.Signal(syscall.SIGKILL)
	<-nd.done
	nd.cmd = nil
}

func (c *testClusterProc) get(nd *clusterNode, path string, v any) error {
	resp, err := c.client.Get("https://" + nd.Endpoint + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s on node %d: %d %s", path, nd.ID, resp.StatusCode, b)
	}
	return json.Unmarshal(b, v)
}

type networkInfo struct {
	PrimaryID     *string `json:"primary_id"`
	PrimaryRaftID uint64  `json:"primary_raft_id"`
	ServiceStatus string  `json:"service_status"`
	CurrentView   uint64  `json:"current_view"`
}

// waitPrimary waits until every node in among names the same primary, not
// excluded, and the service is open; it returns the primary's raft id and
// the view.
func (c *testClusterProc) waitPrimary(among []*clusterNode, excluded uint64) (uint64, uint64) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ids := map[uint64]bool{}
		var view uint64
		ok := true
		for _, nd := range among {
			var n networkInfo
			if err := c.get(nd, "/node/network", &n); err != nil || n.PrimaryID == nil || n.ServiceStatus != "Open" || n.PrimaryRaftID == excluded {
				ok = false
				break
			}
			ids[n.PrimaryRaftID] = true
			view = max(view, n.CurrentView)
		}
		if ok && len(ids) == 1 {
			for id := range ids {
				return id, view
			}
		}
		time.Sleep(20 * time.Millisecond) // polling a condition
	}
	c.t.Fatalf("no agreed primary (other than %d) among %d nodes", excluded, len(among))
	return 0, 0
}

func (c *testClusterProc) node(id uint64) *clusterNode {
	for _, nd := range c.nodes {
		if nd.ID == id {
			return nd
		}
	}
	c.t.Fatalf("no node %d", id)
	return nil
}

// post writes one entry through node nd (a backup redirects to the
// primary, which the client follows) and returns its transaction id.
func (c *testClusterProc) post(nd *clusterNode, contents string) (string, error) {
	resp, err := c.client.Post("https://"+nd.Endpoint+"/app/transactions?api-version=2022-05-13&collectionId=it", "application/json", strings.NewReader(fmt.Sprintf(`{"contents":%q}`, contents)))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("post: %d %s", resp.StatusCode, b)
	}
	return resp.Header.Get("x-ms-ccf-transaction-id"), nil
}

func (c *testClusterProc) status(nd *clusterNode, txid string) (string, error) {
	var st struct {
		State string `json:"state"`
	}
	if err := c.get(nd, "/app/transactions/"+txid+"/status?api-version=2022-05-13", &st); err != nil {
		return "", err
	}
	return st.State, nil
}

// TestClusterFailover runs three parley node processes, SIGKILLs the
// primary under write load, and checks that a new primary is elected, that
// every transaction reported Committed before the kill is committed (with
// its contents) on the survivors and on the restarted node, that every
// node's ledger verifies, and that their committed prefixes are
// byte-identical.
func TestClusterFailover(t *testing.T) {
	c := startCluster(t, 3)
	old, view := c.waitPrimary(c.nodes, 0)

	// Write load through every node (backups redirect to the primary);
	// a poller records what was reported Committed, and when.
	type written struct {
		txid, contents string
		at             time.Time // when the write was answered
	}
	var (
		mu        sync.Mutex
		pending   []written
		committed []written
		beforeK   []written // reported Committed before the kill
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w, nd := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				contents := fmt.Sprintf("w%d-%d", w, i)
				txid, err := c.post(nd, contents)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					continue // the node may be down or electing
				}
				mu.Lock()
				pending = append(pending, written{txid, contents, time.Now()})
				mu.Unlock()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			mu.Lock()
			ps := pending
			pending = nil
			mu.Unlock()
			var still []written
			for _, p := range ps {
				var st string
				var err error
				for _, nd := range c.nodes {
					if st, err = c.status(nd, p.txid); err == nil {
						break
					}
				}
				mu.Lock()
				switch {
				case err == nil && st == "Committed":
					committed = append(committed, p)
				default:
					still = append(still, p)
				}
				mu.Unlock()
			}
			mu.Lock()
			pending = append(still, pending...)
			mu.Unlock()
			time.Sleep(10 * time.Millisecond) // pacing the poller
		}
	}()

	// Let some transactions commit, then kill the primary.
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(committed)
		mu.Unlock()
		if n >= 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d transactions committed in 30s", n)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition
	}
	mu.Lock()
	beforeK = append([]written(nil), committed...)
	mu.Unlock()
	oldNode := c.node(old)
	killedAt := time.Now()
	c.kill(oldNode)

	var survivors []*clusterNode
	for _, nd := range c.nodes {
		if nd.ID != old {
			survivors = append(survivors, nd)
		}
	}
	neu, newView := c.waitPrimary(survivors, old)
	if newView <= view {
		t.Errorf("new primary %d in view %d, not after view %d", neu, newView, view)
	}
	// The service keeps committing under the new primary.
	mu.Lock()
	atFailover := len(committed)
	mu.Unlock()
	deadline = time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(committed)
		mu.Unlock()
		if n >= atFailover+20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d transactions committed after the failover in 30s", n-atFailover)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition
	}
	cancel()
	wg.Wait()
	// Write unavailability: from the kill to the first write answered
	// after it that committed.
	var firstAfter time.Time
	mu.Lock()
	for _, w := range committed {
		if w.at.After(killedAt) && (firstAfter.IsZero() || w.at.Before(firstAfter)) {
			firstAfter = w.at
		}
	}
	mu.Unlock()
	if firstAfter.IsZero() {
		t.Logf("no write answered after the kill had committed yet: unavailability not measured")
	} else {
		t.Logf("write unavailability after SIGKILL of the primary: %v", firstAfter.Sub(killedAt).Round(time.Millisecond))
	}

	// Restart the old primary on its data; it catches up.
	c.start(oldNode)
	mu.Lock()
	all := append([]written(nil), committed...)
	mu.Unlock()
	last := all[len(all)-1].txid
	for _, nd := range c.nodes {
		deadline := time.Now().Add(30 * time.Second)
		for {
			st, err := c.status(nd, last)
			if err == nil && st == "Committed" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d: %s not committed after 30s: %q %v", nd.ID, last, st, err)
			}
			time.Sleep(20 * time.Millisecond) // polling a condition
		}
	}
	t.Logf("%d committed before the kill, %d in all; primary %d (view %d) then %d (view %d)", len(beforeK), len(all), old, view, neu, newView)
	for _, nd := range c.nodes {
		for _, w := range beforeK {
			st, err := c.status(nd, w.txid)
			if err != nil || st != "Committed" {
				t.Fatalf("node %d: %s (committed before the kill) is %q, %v", nd.ID, w.txid, st, err)
			}
		}
		for _, w := range []written{beforeK[0], beforeK[len(beforeK)-1]} {
			var got api.LedgerQueryResult
			deadline := time.Now().Add(10 * time.Second)
			for {
				if err := c.get(nd, "/app/transactions/"+w.txid+"?api-version=2022-05-13&collectionId=it", &got); err != nil {
					t.Fatalf("node %d: read %s: %v", nd.ID, w.txid, err)
				}
				if got.State == api.StateReady || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond) // polling a condition
			}
			if got.State != api.StateReady || got.Entry == nil || got.Entry.Contents != w.contents {
				t.Errorf("node %d: %s is %+v, want Ready with %q", nd.ID, w.txid, got, w.contents)
			}
		}
	}
	var committedSeqno []uint64
	for _, nd := range c.nodes {
		var st struct {
			LastSignedSeqno uint64 `json:"last_signed_seqno"`
		}
		if err := c.get(nd, "/node/state", &st); err != nil {
			t.Fatal(err)
		}
		committedSeqno = append(committedSeqno, st.LastSignedSeqno)
	}
	for _, nd := range c.nodes {
		if err := c.stop(nd); err != nil {
			t.Errorf("node %d: stop: %v", nd.ID, err)
		}
	}

	// Every ledger verifies offline, and the committed prefixes (up to the
	// lowest committed seqno) are byte-identical.
	prefix := committedSeqno[0]
	for _, s := range committedSeqno {
		prefix = min(prefix, s)
	}
	var want []storage.Entry
	for i, nd := range c.nodes {
		out, err := exec.Command(parleyBin, "verify", "--quiet", "--ledger", filepath.Join(nd.Dir, "ledger"), "--service-cert", filepath.Join(c.base, "service_cert.pem")).CombinedOutput()
		if err != nil {
			t.Errorf("node %d: parley verify: %v\n%s", nd.ID, err, out)
		}
		log, err := storage.Open(filepath.Join(nd.Dir, "ledger"), storage.Options{})
		if err != nil {
			t.Fatalf("node %d: open ledger: %v", nd.ID, err)
		}
		ents, err := log.Entries(1, prefix+1, 1<<40)
		log.Close()
		if err != nil {
			t.Fatalf("node %d: entries: %v", nd.ID, err)
		}
		if uint64(len(ents)) != prefix {
			t.Fatalf("node %d: %d entries up to %d", nd.ID, len(ents), prefix)
		}
		if i == 0 {
			want = ents
			continue
		}
		for k := range ents {
			if ents[k].Index != want[k].Index || ents[k].Term != want[k].Term || !bytes.Equal(ents[k].Data, want[k].Data) {
				t.Fatalf("node %d: entry %d differs from node %d's", nd.ID, ents[k].Index, c.nodes[0].ID)
			}
		}
	}
	if prefix < uint64(len(all)) {
		t.Errorf("committed prefix %d is shorter than the %d committed transactions", prefix, len(all))
	}
}
