package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/gov"
)

// TestClusterNodes starts a three-node static cluster in-process: one
// primary is elected and every node names it; the genesis is written once
// and replicated; a write at a backup is forwarded to the primary with the
// caller's identity, and a forged forwarding is refused.
func TestClusterNodes(t *testing.T) {
	base := t.TempDir()
	ms, err := InitCluster(base, InitClusterOptions{Nodes: 3})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var done []chan error
	var servers []*Server
	t.Cleanup(func() {
		cancel()
		for _, d := range done {
			if err := <-d; err != nil {
				t.Errorf("run: %v", err)
			}
		}
	})
	for _, m := range ms {
		cfg, err := LoadConfig(m.Config)
		if err != nil {
			t.Fatal(err)
		}
		cfg.SignatureInterval = Duration(5 * time.Millisecond)
		srv, err := Start(cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		d := make(chan error, 1)
		done = append(done, d)
		servers = append(servers, srv)
		go func() { d <- srv.Run(ctx) }()
	}
	caPEM, err := os.ReadFile(filepath.Join(base, "service_cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	hc := &http.Client{
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
	defer hc.CloseIdleConnections()
	getJSON := func(ep, path string, v any) {
		t.Helper()
		resp, err := hc.Get("https://" + ep + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: status %d", path, resp.StatusCode)
		}
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	type network struct {
		PrimaryID     *string `json:"primary_id"`
		ServiceStatus string  `json:"service_status"`
		CurrentView   uint64  `json:"current_view"`
	}
	// Wait until every node names the same primary and the service is open.
	var primaryID string
	deadline := time.Now().Add(20 * time.Second)
	for {
		ids := map[string]bool{}
		open := true
		for _, m := range ms {
			var n network
			getJSON(m.Endpoint, "/node/network", &n)
			if n.PrimaryID != nil {
				ids[*n.PrimaryID] = true
			}
			open = open && n.PrimaryID != nil && n.ServiceStatus == "Open"
		}
		if open && len(ids) == 1 {
			for id := range ids {
				primaryID = id
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no agreed primary and open service: %v", ids)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition
	}
	// The primary records the static nodes as Trusted in the public nodes
	// map, and every node gets that through replication.
	for _, srv := range servers {
		deadline := time.Now().Add(20 * time.Second)
		for {
			all := true
			for _, n := range srv.cfg.Cluster.Nodes {
				b, ok := srv.eng.Begin().Get(gov.NodesInfoMap, n.NodeID)
				all = all && ok && strings.Contains(string(b), `"Trusted"`)
			}
			if all {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d: the nodes map lacks the cluster's nodes", srv.cfg.Cluster.RaftID)
			}
			time.Sleep(10 * time.Millisecond) // polling a condition
		}
	}
	var nodes struct {
		Nodes []nodeInfo `json:"nodes"`
	}
	getJSON(ms[0].Endpoint, "/node/network/nodes", &nodes)
	if len(nodes.Nodes) != 3 {
		t.Fatalf("got %d nodes, want 3", len(nodes.Nodes))
	}
	var primaryAddr, backupAddr string
	for _, n := range nodes.Nodes {
		if n.Primary != (n.NodeID == primaryID) {
			t.Errorf("node %s: primary = %v, want %v", n.NodeID, n.Primary, n.NodeID == primaryID)
		}
		if n.Status != "Trusted" {
			t.Errorf("node %s: status %q, want Trusted", n.NodeID, n.Status)
		}
		if n.Primary {
			primaryAddr = n.Address
		} else {
			backupAddr = n.Address
		}
	}
	var state struct {
		NodeID  string `json:"node_id"`
		Primary bool   `json:"primary"`
		State   string `json:"state"`
	}
	getJSON(backupAddr, "/node/state", &state)
	if state.Primary || state.State != "PartOfNetwork" || state.NodeID == primaryID {
		t.Errorf("backup /node/state = %+v", state)
	}
	// A write at a backup is forwarded to the primary with the caller's
	// identity, and answered.
	user, err := tls.LoadX509KeyPair(filepath.Join(base, User0CertFile), filepath.Join(base, User0KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	uc := &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{user}}},
		Timeout:   10 * time.Second,
	}
	defer uc.CloseIdleConnections()
	post := func(c *http.Client, addr string, hdr map[string]string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest("POST", "https://"+addr+"/app/transactions?api-version=2022-05-13", strings.NewReader(`{"contents":"x"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}
	resp, body := post(uc, backupAddr, nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("x-ms-ccf-transaction-id") == "" {
		t.Fatalf("POST at a backup: %d %s, want 200 with a transaction id", resp.StatusCode, body)
	}
	// Without a user certificate the forwarded write is refused as the
	// caller's, not accepted as the backup's.
	resp, body = post(hc, backupAddr, nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST at a backup without a certificate: %d %s, want 401", resp.StatusCode, body)
	}
	// A client that is not a node cannot claim to forward for another.
	userDER := base64.StdEncoding.EncodeToString(user.Certificate[0])
	for _, addr := range []string{primaryAddr, backupAddr} {
		resp, body = post(hc, addr, map[string]string{ForwardedCertHeader: userDER})
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "InvalidForwarding") {
			t.Errorf("POST to %s with a forged %s: %d %s, want 403 InvalidForwarding", addr, ForwardedCertHeader, resp.StatusCode, body)
		}
	}
}

func TestClusterConfigValidate(t *testing.T) {
	const nid = "1af37ec4bbc2b9e3bd6189966ebb4c2f4f40f44a113efb8d48f2f605466d550d"
	good := []ClusterNode{{1, "127.0.0.1:1", nid}, {2, "127.0.0.1:2", nid}}
	tests := []struct {
		name string
		cc   ClusterConfig
		ok   bool
	}{
		{"good", ClusterConfig{RaftID: 2, Nodes: good}, true},
		{"no nodes", ClusterConfig{RaftID: 1}, false},
		{"self missing", ClusterConfig{RaftID: 3, Nodes: good}, false},
		{"duplicate id", ClusterConfig{RaftID: 1, Nodes: []ClusterNode{{1, "127.0.0.1:1", nid}, {1, "127.0.0.1:2", nid}}}, false},
		{"zero id", ClusterConfig{RaftID: 1, Nodes: []ClusterNode{{0, "127.0.0.1:1", nid}, {1, "127.0.0.1:2", nid}}}, false},
		{"bad address", ClusterConfig{RaftID: 1, Nodes: []ClusterNode{{1, "nowhere", nid}}}, false},
		{"bad node id", ClusterConfig{RaftID: 1, Nodes: []ClusterNode{{1, "127.0.0.1:1", "xyz"}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cc.validate()
			if (err == nil) != tt.ok {
				t.Errorf("validate() = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

// TestSingleNodeNetwork checks the /node endpoints of a one-node service:
// the node is the primary of an open service, and Trusted.
func TestSingleNodeNetwork(t *testing.T) {
	dir := t.TempDir()
	srv, err := Start(Config{DataDir: dir, ListenAddress: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	caPEM, err := os.ReadFile(srv.Files().ServiceCert)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	get := func(path string, v any) {
		t.Helper()
		resp, err := hc.Get("https://" + srv.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: status %d", path, resp.StatusCode)
		}
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	var state struct {
		NodeID  string `json:"node_id"`
		Primary bool   `json:"primary"`
	}
	get("/node/state", &state)
	if !state.Primary || state.NodeID == "" {
		t.Errorf("/node/state = %+v, want the primary with a node id", state)
	}
	var network struct {
		PrimaryID     string `json:"primary_id"`
		ServiceStatus string `json:"service_status"`
	}
	get("/node/network", &network)
	if network.PrimaryID != state.NodeID || network.ServiceStatus != "Open" {
		t.Errorf("/node/network = %+v, want primary %s and Open", network, state.NodeID)
	}
	var nodes struct {
		Nodes []nodeInfo `json:"nodes"`
	}
	get("/node/network/nodes", &nodes)
	if len(nodes.Nodes) != 1 || !nodes.Nodes[0].Primary || nodes.Nodes[0].NodeID != state.NodeID || nodes.Nodes[0].Status != "Trusted" {
		t.Errorf("/node/network/nodes = %+v, want this node alone, primary and Trusted", nodes.Nodes)
	}
}
