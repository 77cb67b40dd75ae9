package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/gov"
	"github.com/parleyhq/parley/internal/identity"
	"github.com/parleyhq/parley/internal/tee"
)

func TestJoinSecretsSealing(t *testing.T) {
	_, key, err := identity.NewClientCert("n", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, other, err := identity.NewClientCert("o", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	in := &JoinSecrets{ServiceKey: "k", LedgerSecrets: []JoinLedgerSecret{{FromSeqno: 1, Secret: []byte("secret")}}}
	sealed, err := sealJoinSecrets(&key.PublicKey, in)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed.Ciphertext, []byte("secret")) {
		t.Fatal("the ciphertext holds the secret in the clear")
	}
	out, err := openJoinSecrets(key, sealed)
	if err != nil || out.ServiceKey != "k" || string(out.LedgerSecrets[0].Secret) != "secret" {
		t.Fatalf("open = %+v, %v", out, err)
	}
	if _, err := openJoinSecrets(other, sealed); err == nil {
		t.Error("another key opened the secrets")
	}
	sealed.Ciphertext[0] ^= 1
	if _, err := openJoinSecrets(key, sealed); err == nil {
		t.Error("a tampered ciphertext opened")
	}
	a, _ := JoinReportData(&key.PublicKey)
	b, _ := JoinReportData(&other.PublicKey)
	if a == b {
		t.Error("two keys have the same join report data")
	}
}

func TestNetworkConfigValidation(t *testing.T) {
	tests := []struct {
		name, json string
		ok         bool
	}{
		{"network", `{"dataDir":"d","listenAddress":"127.0.0.1:9","network":{"autoTrustNodes":true}}`, true},
		{"join", `{"dataDir":"d","listenAddress":"127.0.0.1:9","join":{"target":"127.0.0.1:8","serviceCertificate":"c.pem"}}`, true},
		{"both", `{"dataDir":"d","listenAddress":"127.0.0.1:9","network":{},"join":{"target":"127.0.0.1:8","serviceCertificate":"c.pem"}}`, false},
		{"join without target", `{"dataDir":"d","listenAddress":"127.0.0.1:9","join":{"serviceCertificate":"c.pem"}}`, false},
		{"join without certificate", `{"dataDir":"d","listenAddress":"127.0.0.1:9","join":{"target":"127.0.0.1:8"}}`, false},
		{"port 0", `{"dataDir":"d","listenAddress":"127.0.0.1:0","network":{}}`, false},
		{"default address", `{"dataDir":"d","network":{}}`, false},
		{"short measurement", `{"dataDir":"d","virtualMeasurement":"abcd"}`, false},
		{"measurement", `{"dataDir":"d","virtualMeasurement":"` + strings.Repeat("ab", 32) + `"}`, true},
	}
	for _, tt := range tests {
		_, err := ParseConfig([]byte(tt.json))
		if (err == nil) != tt.ok {
			t.Errorf("%s: err = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}

// TestJoinEndpoint checks POST /node/join at its edges on a one-node
// network service: a caller without a client certificate, malformed or
// oversized bodies and forged evidence get 4xx and change nothing;
// evidence that does not bind the caller's key, or whose measurement is
// not allowed, is refused with 403 and the refusal recorded; a good join
// is recorded Pending, answered the same when repeated, and GET gives no
// secrets until the node is trusted and in raft.
func TestJoinEndpoint(t *testing.T) {
	dir := t.TempDir()
	addrs, err := freeAddresses(1)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{DataDir: dir, ListenAddress: addrs[0], Network: &NetworkConfig{}, SignatureInterval: Duration(5 * time.Millisecond)}
	srv, err := Start(cfg.withDefaults(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for srv.selfStatus() != gov.NodeTrusted {
		if time.Now().After(deadline) {
			t.Fatal("the first node did not record itself")
		}
		time.Sleep(10 * time.Millisecond) // polling a condition
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "service_cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	client := func(certDER []byte, key *ecdsa.PrivateKey) *http.Client {
		c := &tls.Config{RootCAs: roots}
		if key != nil {
			c.Certificates = []tls.Certificate{{Certificate: [][]byte{certDER}, PrivateKey: key}}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: c}, Timeout: 30 * time.Second}
	}
	certDER, key, err := identity.NewClientCert("joiner", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	m, err := tee.MeasureExecutable() // what the first node allowed
	if err != nil {
		t.Fatal(err)
	}
	evidence := func(k *ecdsa.PrivateKey, measurement []byte) []byte {
		rd, err := JoinReportData(&k.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := tee.VirtualEvidence(k, measurement, rd)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(JoinRequest{Evidence: JoinEvidence{Platform: "virtual", Raw: raw}, Address: "127.0.0.1:1"})
		return b
	}
	_, otherKey, _ := identity.NewClientCert("other", time.Hour)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p256Cert := selfSigned(t, p256)
	url := "https://" + addrs[0] + "/node/join"
	post := func(c *http.Client, body []byte) (int, string) {
		t.Helper()
		resp, err := c.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	joiner := client(certDER, key)
	tests := []struct {
		name   string
		c      *http.Client
		body   []byte
		status int
	}{
		{"no client certificate", client(nil, nil), evidence(key, m), http.StatusUnauthorized},
		{"P-256 key", client(p256Cert, p256), evidence(key, m), http.StatusUnauthorized},
		{"not JSON", joiner, []byte("{"), http.StatusBadRequest},
		{"unknown field", joiner, []byte(`{"x":1}`), http.StatusBadRequest},
		{"oversized", joiner, bytes.Repeat([]byte(" "), maxJoinBody+1), http.StatusRequestEntityTooLarge},
		{"bad address", joiner, bytes.Replace(evidence(key, m), []byte("127.0.0.1:1"), []byte("nowhere"), 1), http.StatusBadRequest},
		{"forged evidence", joiner, bytes.Replace(evidence(key, m), []byte(`"raw":"`), []byte(`"raw":"AAAA`), 1), http.StatusBadRequest},
		{"evidence for another key", joiner, evidence(otherKey, m), http.StatusForbidden},
		{"measurement not allowed", joiner, evidence(key, make([]byte, 32)), http.StatusForbidden},
	}
	for _, tt := range tests {
		got, body := post(tt.c, tt.body)
		if got != tt.status {
			t.Errorf("%s: status %d (%s), want %d", tt.name, got, body, tt.status)
		}
	}
	nodes, refused := srv.networkNodes()
	if len(nodes) != 1 {
		t.Errorf("after refused joins the service has %d nodes, want 1", len(nodes))
	}
	nodeID, _ := identity.NodeID(&key.PublicKey)
	var reasons []string
	for _, r := range refused {
		if r.NodeID == nodeID {
			reasons = append(reasons, r.Reason)
		}
	}
	if len(reasons) != 1 || !strings.Contains(reasons[0], "not allowed") {
		// One record per node id: the later refusal replaces the earlier.
		t.Errorf("refusals of %s: %q, want the measurement's", nodeID[:8], reasons)
	}

	// A good join: Pending, the same answer again, no secrets yet.
	// (The earlier refusal of the same key stays on the ledger.)
	for i := range 2 {
		got, body := post(joiner, evidence(key, m))
		var st JoinStatus
		json.Unmarshal([]byte(body), &st)
		if got != http.StatusOK || st.Status != gov.NodePending || st.RaftID != 2 || st.NodeID != nodeID {
			t.Fatalf("join %d: %d %s, want Pending with raft id 2", i, got, body)
		}
	}
	resp, err := joiner.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	var st JoinStatus
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if st.Status != gov.NodePending || st.Secrets != nil || st.Certificate != "" {
		t.Errorf("GET while Pending: %+v, want Pending without secrets", st)
	}
	resp, err = client(p256Cert, p256).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET by an unknown key: %d, want 401", resp.StatusCode)
	}
}

// selfSigned makes a self-signed client certificate for key.
func selfSigned(t *testing.T, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
