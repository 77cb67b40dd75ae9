package integration

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/parleyhq/parley/internal/gov"
	"github.com/parleyhq/parley/internal/identity"
)

// govCLI runs `parley gov ARGS` as member i of the dev service in dir and
// returns the proposal or listing it prints.
func govCLI(t *testing.T, dir string, member int, args ...string) (map[string]any, error) {
	t.Helper()
	full := append([]string{"gov"}, args...)
	full = append(full, "--profile", filepath.Join(dir, "profile.json"),
		"--member-cert", filepath.Join(dir, fmt.Sprintf("member%d_cert.pem", member)),
		"--member-key", filepath.Join(dir, fmt.Sprintf("member%d_privk.pem", member)))
	cmd := exec.Command(parleyBin, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("parley %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	var out map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return nil, fmt.Errorf("parley %s printed %q: %v", strings.Join(args, " "), stdout.String(), err)
	}
	return out, nil
}

func mustGov(t *testing.T, dir string, member int, args ...string) map[string]any {
	t.Helper()
	out, err := govCLI(t, dir, member, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func writeProposal(t *testing.T, actions ...any) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{"actions": actions})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "proposal.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// newUser makes a client certificate and an HTTP client presenting it to n.
func newUser(t *testing.T, n *devNode) (certPEM string, c *http.Client) {
	t.Helper()
	der, key, err := identity.NewClientCert("user", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tr := n.client.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}
	return string(identity.EncodeCertPEM(der)), &http.Client{Timeout: 30 * time.Second, Transport: tr}
}

// appendAs writes an entry with c and returns the status.
func appendAs(t *testing.T, n *devNode, c *http.Client, header http.Header) int {
	t.Helper()
	req, _ := http.NewRequest("POST", n.url+"/app/transactions?api-version=2022-05-13", strings.NewReader(`{"contents":"by governance"}`))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// postGov posts a raw governance request and returns the status and the
// error code.
func postGov(t *testing.T, n *devNode, path string, body []byte) (int, string) {
	t.Helper()
	resp, b := n.do("POST", path, body)
	var e struct{ Error struct{ Code string } }
	json.Unmarshal(b, &e)
	return resp.StatusCode, e.Error.Code
}

func state(p map[string]any) string { s, _ := p["state"].(string); return s }

// TestGovernanceThreeMembers runs `parley dev --members 3` and drives
// governance through `parley gov`.
func TestGovernanceThreeMembers(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	n := startDev(t, dir, "--members", "3")

	for i := range 3 {
		for _, f := range []string{"_cert.pem", "_privk.pem", "_enc_privk.pem"} {
			if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("member%d%s", i, f))); err != nil {
				t.Fatal(err)
			}
		}
	}
	if ms := mustGov(t, dir, 0, "members")["members"].([]any); len(ms) != 3 {
		t.Fatalf("members = %d, want 3", len(ms))
	}

	// A user is added only once two of three members accept.
	certPEM, userClient := newUser(t, n)
	prop := writeProposal(t, map[string]any{"name": "set_user", "args": map[string]string{"cert": certPEM, "role": "Contributor"}})
	p := mustGov(t, dir, 0, "propose", prop)
	id, _ := p["proposalId"].(string)
	if state(p) != "Open" || len(id) != 64 {
		t.Fatalf("proposal = %v, want Open with an id", p)
	}
	if got := appendAs(t, n, userClient, nil); got != http.StatusUnauthorized {
		t.Fatalf("write before acceptance: %d, want 401", got)
	}
	if p := mustGov(t, dir, 0, "vote", id, "accept"); state(p) != "Open" {
		t.Fatalf("after one accept: %s, want Open", state(p))
	}
	if got := appendAs(t, n, userClient, nil); got != http.StatusUnauthorized {
		t.Fatalf("write after one accept: %d, want 401", got)
	}
	if p := mustGov(t, dir, 1, "vote", id, "accept"); state(p) != "Accepted" {
		t.Fatalf("after two accepts: %s, want Accepted", state(p))
	}
	if got := appendAs(t, n, userClient, nil); got != http.StatusOK {
		t.Fatalf("write by the new user: %d, want 200", got)
	}
	if _, err := govCLI(t, dir, 2, "vote", id, "reject"); err == nil || !strings.Contains(err.Error(), "ProposalNotOpen") {
		t.Errorf("ballot on an accepted proposal: %v, want ProposalNotOpen", err)
	}

	// Rejected and withdrawn proposals change nothing.
	rejectedPEM, rejectedClient := newUser(t, n)
	rp := mustGov(t, dir, 2, "propose", writeProposal(t, map[string]any{"name": "set_user", "args": map[string]string{"cert": rejectedPEM, "role": "Administrator"}}))
	mustGov(t, dir, 0, "vote", rp["proposalId"].(string), "reject")
	if p := mustGov(t, dir, 1, "vote", rp["proposalId"].(string), "reject"); state(p) != "Rejected" {
		t.Fatalf("after two rejects: %s, want Rejected", state(p))
	}
	if got := appendAs(t, n, rejectedClient, nil); got != http.StatusUnauthorized {
		t.Errorf("write by a rejected user: %d, want 401", got)
	}
	wp := mustGov(t, dir, 1, "propose", writeProposal(t, map[string]any{"name": "set_user", "args": map[string]string{"cert": rejectedPEM, "role": "Reader"}}))
	wid := wp["proposalId"].(string)
	mustGov(t, dir, 0, "vote", wid, "accept")
	if _, err := govCLI(t, dir, 0, "withdraw", wid); err == nil || !strings.Contains(err.Error(), "AuthorizationFailed") {
		t.Errorf("withdrawal by another member: %v, want AuthorizationFailed", err)
	}
	if p := mustGov(t, dir, 1, "withdraw", wid); state(p) != "Withdrawn" {
		t.Fatalf("withdrawn: %s", state(p))
	}
	if _, err := govCLI(t, dir, 2, "vote", wid, "accept"); err == nil || !strings.Contains(err.Error(), "ProposalNotOpen") {
		t.Errorf("ballot on a withdrawn proposal: %v, want ProposalNotOpen", err)
	}
	if got := appendAs(t, n, rejectedClient, nil); got != http.StatusUnauthorized {
		t.Errorf("write by a withdrawn user: %d, want 401", got)
	}

	// Refused requests: replayed, forged, unsigned, malformed, unknown action.
	m2cert, err := os.ReadFile(filepath.Join(dir, "member2_cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	m2key, err := os.ReadFile(filepath.Join(dir, "member2_privk.pem"))
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := identity.ParseCertPEM(m2cert)
	k2, _ := identity.ParseKeyPEM(m2key)
	m2 := identity.Fingerprint(c2.Raw)
	counter := uint64(time.Now().UnixNano())
	sign := func(key *ecdsa.PrivateKey, body string, created time.Time) []byte {
		counter++
		b, err := gov.Sign(key, m2, &gov.Request{Type: gov.TypeProposal, CreatedAt: created.Unix(), Counter: counter, Body: json.RawMessage(body)})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	valid := `{"actions":[{"name":"rotate_ledger_secret"}]}`
	once := sign(k2, valid, time.Now())
	if code, c := postGov(t, n, "/gov/proposals", once); code != http.StatusOK {
		t.Fatalf("signed proposal: %d %s", code, c)
	}
	otherKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	before := len(mustGov(t, dir, 0, "list")["proposals"].([]any))
	for _, tt := range []struct {
		name   string
		body   []byte
		status int
		code   string
	}{
		{"replayed", once, http.StatusConflict, "RequestReplayed"},
		{"forged", sign(otherKey, valid, time.Now()), http.StatusUnauthorized, "InvalidAuthenticationInfo"},
		{"expired", sign(k2, valid, time.Now().Add(-time.Hour)), http.StatusUnauthorized, "RequestExpired"},
		{"unsigned", []byte(valid), http.StatusBadRequest, "InvalidGovernanceRequest"},
		{"malformed", []byte("a.b.c"), http.StatusBadRequest, "InvalidGovernanceRequest"},
		{"unknown action", sign(k2, `{"actions":[{"name":"make_coffee"}]}`, time.Now()), http.StatusBadRequest, "ProposalFailedToValidate"},
	} {
		if status, code := postGov(t, n, "/gov/proposals", tt.body); status != tt.status || code != tt.code {
			t.Errorf("%s request: %d %s, want %d %s", tt.name, status, code, tt.status, tt.code)
		}
	}
	if after := len(mustGov(t, dir, 0, "list")["proposals"].([]any)); after != before {
		t.Errorf("refused requests left proposals: %d, was %d", after, before)
	}

	// A JWT issuer set by governance authenticates its users.
	issuerKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwks := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &issuerKey.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}}
	jp := mustGov(t, dir, 0, "propose", writeProposal(t,
		map[string]any{"name": "set_jwt_issuer", "args": map[string]any{"issuer": "https://login.test", "jwks": jwks, "user_id_claim": "oid"}},
		map[string]any{"name": "set_user", "args": map[string]string{"user_id": "alice-oid", "role": "Contributor"}}))
	mustGov(t, dir, 1, "vote", jp["proposalId"].(string), "accept")
	if p := mustGov(t, dir, 2, "vote", jp["proposalId"].(string), "accept"); state(p) != "Accepted" {
		t.Fatalf("issuer proposal: %s", state(p))
	}
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: issuerKey, KeyID: "k1"}}, nil)
	tok, _ := jwt.Signed(signer).Claims(map[string]any{"iss": "https://login.test", "oid": "alice-oid", "exp": time.Now().Add(time.Hour).Unix()}).Serialize()
	anon := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: n.client.Transport.(*http.Transport).TLSClientConfig.RootCAs}}}
	if got := appendAs(t, n, anon, http.Header{"Authorization": {"Bearer " + tok}}); got != http.StatusOK {
		t.Errorf("write with a JWT: %d, want 200", got)
	}
	if got := appendAs(t, n, anon, http.Header{"Authorization": {"Bearer " + tok + "x"}}); got != http.StatusUnauthorized {
		t.Errorf("write with a damaged JWT: %d, want 401", got)
	}

	// The history is on the ledger: it verifies offline, and a restart
	// serves the same proposals.
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(parleyBin, "verify", "--ledger", filepath.Join(dir, "ledger"), "--service-cert", filepath.Join(dir, "service_cert.pem")).CombinedOutput()
	if err != nil {
		t.Fatalf("parley verify: %v\n%s", err, out)
	}
	startDev(t, dir)
	got := map[string]string{}
	for _, p := range mustGov(t, dir, 0, "list")["proposals"].([]any) {
		pm := p.(map[string]any)
		got[pm["proposalId"].(string)] = state(pm)
	}
	want := map[string]string{id: "Accepted", rp["proposalId"].(string): "Rejected", wid: "Withdrawn", jp["proposalId"].(string): "Accepted"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("after restart proposal %s is %q, want %q", k, got[k], v)
		}
	}
}
