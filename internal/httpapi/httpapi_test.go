package httpapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"github.com/parleyhq/parley/internal/cleanroom"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/internal/app"
	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/gov"
	"github.com/parleyhq/parley/internal/identity"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/node"
	"github.com/parleyhq/parley/internal/receipt"
	"github.com/parleyhq/parley/internal/vfs"
)

// fixture is a real engine in a temporary directory behind the API on an
// httptest TLS server, with clients for users of every role and for a
// stranger.
type fixture struct {
	t           *testing.T
	eng         *engine.Engine
	app         *app.App
	url         string
	serviceCert *x509.Certificate
	ids         map[string]string       // client name → user id
	clients     map[string]*http.Client // admin, contributor, reader, stranger, anonymous
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	return newFixtureSig(t, cfg, 2*time.Millisecond)
}

// newFixtureSig is newFixture with the engine's signature interval; with an
// interval over a second it does not wait for the genesis to commit.
func newFixtureSig(t *testing.T, cfg Config, sigInterval time.Duration) *fixture {
	t.Helper()
	dir := t.TempDir()
	id, err := node.Init(vfs.OS{}, dir, node.InitOptions{SANs: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	idx := app.NewIndex()
	eng, err := engine.Open(engine.Config{
		Dir: filepath.Join(dir, node.LedgerDir), Secret: id.Secret, NodeKey: id.NodeKey,
		NodeCertPEM: id.NodeCertPEM, Observer: idx, SignatureInterval: sigInterval,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	f := &fixture{t: t, eng: eng, app: app.New(eng, idx, app.Limits{}), serviceCert: id.Service.Cert,
		ids: map[string]string{}, clients: map[string]*http.Client{}}
	certs := map[string]tls.Certificate{}
	for _, name := range []string{"admin", "contributor", "reader", "stranger", "member"} {
		der, key, err := identity.NewClientCert(name, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		certs[name] = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
		f.ids[name] = identity.Fingerprint(der)
	}
	ctx := context.Background()
	memberPEM := string(identity.EncodeCertPEM(certs["member"].Certificate[0]))
	if _, err := f.app.WriteGenesis(ctx, app.Genesis{
		Users: map[string][]app.Role{
			f.ids["admin"]:       {app.RoleAdministrator},
			f.ids["contributor"]: {app.RoleContributor},
			f.ids["reader"]:      {app.RoleReader},
		},
		Members: map[string]string{f.ids["member"]: memberPEM},
	}); err != nil {
		t.Fatal(err)
	}
	cfg.App, cfg.Engine, cfg.ServiceCertPEM = f.app, eng, identity.EncodeCertPEM(id.Service.CertDER)
	if cfg.Gov == withGov {
		cfg.Gov = gov.New(gov.Config{Engine: eng})
	}
	if cfg.CleanRoom == withCleanRoom {
		cfg.CleanRoom = cleanroom.New(eng, nil)
	}
	srv := httptest.NewUnstartedServer(New(cfg))
	nodeCert, err := identity.ParseCertPEM(id.NodeCertPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{nodeCert.Raw}, PrivateKey: id.NodeKey}},
		ClientAuth:   tls.RequestClientCert,
		MinVersion:   tls.VersionTLS12,
	}
	srv.Config.ConnContext = ConnContext
	srv.StartTLS()
	t.Cleanup(srv.Close)
	f.url = srv.URL
	pool := x509.NewCertPool()
	pool.AddCert(id.Service.Cert)
	for _, name := range []string{"admin", "contributor", "reader", "stranger", "anonymous"} {
		tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		if c, ok := certs[name]; ok {
			tc.Certificates = []tls.Certificate{c}
		}
		f.clients[name] = &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	}
	if sigInterval <= time.Second {
		f.quiesce()
	}
	return f
}

// quiesce waits until everything in the log is committed, so that no
// signature transaction is still to come.
func (f *fixture) quiesce() {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.eng.WaitCommitted(ctx, f.eng.Current()); err != nil {
		f.t.Fatal(err)
	}
	if c := f.eng.Current(); f.eng.CommittedID() != c {
		// The last entry was a transaction; its signature follows.
		if err := f.eng.WaitCommitted(ctx, ledger.TxID{View: c.View, Seqno: c.Seqno + 1}); err != nil {
			f.t.Fatal(err)
		}
	}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r *response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (r *response) code(t *testing.T) string {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("decode error body %s: %v", r.body, err)
	}
	return e.Error.Code
}

func (f *fixture) do(who, method, path string, body []byte, hdr ...string) *response {
	f.t.Helper()
	req, err := http.NewRequest(method, f.url+path, bytes.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := f.clients[who].Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	if resp.Header.Get(TxIDHeader) == "" {
		f.t.Errorf("%s %s: no %s header", method, path, TxIDHeader)
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: b}
}

func (f *fixture) mustStatus(r *response, want int) {
	f.t.Helper()
	if r.status != want {
		f.t.Fatalf("status %d (%s), want %d", r.status, r.body, want)
	}
}

// append writes an entry and waits for it to commit.
func (f *fixture) append(query, contents string) ledger.TxID {
	f.t.Helper()
	b, _ := json.Marshal(map[string]string{"contents": contents})
	r := f.do("contributor", "POST", "/app/transactions?api-version=2026-02-23"+query, b)
	f.mustStatus(r, 200)
	id, err := ledger.ParseTxID(r.header.Get(TxIDHeader))
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.eng.WaitCommitted(ctx, id); err != nil {
		f.t.Fatal(err)
	}
	return id
}

func TestWriteReadReceipt(t *testing.T) {
	f := newFixture(t, Config{})
	b := []byte(`{"contents":"hello, ledger"}`)
	r := f.do("contributor", "POST", "/app/transactions?api-version=2022-05-13&collectionId=audit", b)
	f.mustStatus(r, 200)
	var wr struct{ CollectionID string }
	r.decode(t, &wr)
	if wr.CollectionID != "audit" {
		t.Errorf("collectionId = %q, want audit", wr.CollectionID)
	}
	id := r.header.Get(TxIDHeader)
	txid, err := ledger.ParseTxID(id)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.eng.WaitCommitted(context.Background(), txid); err != nil {
		t.Fatal(err)
	}

	r = f.do("reader", "GET", "/app/transactions/"+id+"/status?api-version=2022-05-13", nil)
	f.mustStatus(r, 200)
	var st struct{ State, TransactionID string }
	r.decode(t, &st)
	if st.State != "Committed" || st.TransactionID != id {
		t.Errorf("status = %+v, want Committed %s", st, id)
	}

	r = f.do("reader", "GET", "/app/transactions/"+id+"?api-version=2022-05-13", nil)
	f.mustStatus(r, 200)
	var got struct {
		State string
		Entry ledgerEntry
	}
	r.decode(t, &got)
	if want := (ledgerEntry{"hello, ledger", "audit", id}); got.State != "Ready" || got.Entry != want {
		t.Errorf("entry = %+v, want Ready %+v", got, want)
	}
	if r := f.do("reader", "GET", "/app/transactions/"+id+"?api-version=2022-05-13&collectionId=other", nil); r.status != 404 || r.code(t) != CodeLedgerEntryNotFound {
		t.Errorf("entry of another collection: %d %s, want 404 %s", r.status, r.body, CodeLedgerEntryNotFound)
	}

	for _, v := range []string{Version20220513, Version20260223} {
		r = f.do("reader", "GET", "/app/transactions/"+id+"/receipt?api-version="+v, nil)
		f.mustStatus(r, 200)
		var tr api.TransactionReceipt
		r.decode(t, &tr)
		if tr.State != api.StateReady || tr.TransactionID != id {
			t.Fatalf("%s: receipt state %q id %q, want Ready %s", v, tr.State, tr.TransactionID, id)
		}
		if err := receipt.VerifyTransactionReceipt(&tr, f.serviceCert); err != nil {
			t.Errorf("%s: verify receipt: %v", v, err)
		}
		wantClaims := 0
		if v == Version20260223 {
			wantClaims = 1
		}
		if len(tr.ApplicationClaims) != wantClaims {
			t.Fatalf("%s: %d application claims, want %d", v, len(tr.ApplicationClaims), wantClaims)
		}
		if wantClaims == 1 {
			le := tr.ApplicationClaims[0].LedgerEntry
			if le == nil || le.Contents != "hello, ledger" || le.CollectionID != "audit" {
				t.Errorf("claim = %+v, want the entry", le)
			}
		}
	}

	r = f.do("reader", "GET", "/app/transactions/current?api-version=2022-05-13&collectionId=audit", nil)
	f.mustStatus(r, 200)
	var cur ledgerEntry
	r.decode(t, &cur)
	if cur.TransactionID != id || cur.Contents != "hello, ledger" {
		t.Errorf("current = %+v, want %s", cur, id)
	}
}

func TestWaitCommitted(t *testing.T) {
	f := newFixture(t, Config{})
	for _, hdr := range [][]string{nil, {WaitHeader, "committed"}} {
		path := "/app/transactions?api-version=2026-02-23&tags=a,b"
		if hdr == nil {
			path += "&wait=committed"
		}
		r := f.do("contributor", "POST", path, []byte(`{"contents":"x"}`), hdr...)
		f.mustStatus(r, 200)
		var wr writeResult
		r.decode(t, &wr)
		if wr.State != "Committed" || wr.Receipt == nil || wr.TransactionID != r.header.Get(TxIDHeader) {
			t.Fatalf("write result %s, want Committed with a receipt", r.body)
		}
		if err := receipt.VerifyTransactionReceipt(wr.Receipt, f.serviceCert); err != nil {
			t.Errorf("verify: %v", err)
		}
	}
}

func TestBadInput(t *testing.T) {
	f := newFixture(t, Config{MaxRequestBytes: 64 << 10, MaxBatch: 2})
	big := strings.Repeat("a", 8193)
	tests := []struct {
		name, who, method, path string
		body                    string
		status                  int
		code                    string
	}{
		{"oversized entry", "contributor", "POST", "/app/transactions?api-version=2022-05-13", `{"contents":"` + big + `"}`, 400, CodeEntryTooLarge},
		{"escaped oversized entry", "contributor", "POST", "/app/transactions?api-version=2022-05-13", `{"contents":"` + strings.Repeat(`\u00e9`, 4097) + `"}`, 400, CodeEntryTooLarge},
		{"malformed JSON", "contributor", "POST", "/app/transactions?api-version=2022-05-13", `{"contents":`, 400, CodeInvalidInput},
		{"trailing data", "contributor", "POST", "/app/transactions?api-version=2022-05-13", `{"contents":"x"} {}`, 400, CodeInvalidInput},
		{"no contents", "contributor", "POST", "/app/transactions?api-version=2022-05-13", `{"content":"x"}`, 400, CodeInvalidInput},
		{"contents not a string", "contributor", "POST", "/app/transactions?api-version=2022-05-13", `{"contents":5}`, 400, CodeInvalidInput},
		{"hooks", "contributor", "POST", "/app/transactions?api-version=2026-02-23", `{"contents":"x","preHooks":[{"functionId":"f"}]}`, 400, CodeInvalidInput},
		{"too-long collection id", "contributor", "POST", "/app/transactions?api-version=2022-05-13&collectionId=" + strings.Repeat("c", 257), `{"contents":"x"}`, 400, CodeCollectionIDTooLong},
		{"tags on 2022-05-13", "contributor", "POST", "/app/transactions?api-version=2022-05-13&tags=a", `{"contents":"x"}`, 400, CodeInvalidQueryParameter},
		{"empty tag", "contributor", "POST", "/app/transactions?api-version=2026-02-23&tags=a,,b", `{"contents":"x"}`, 400, CodeInvalidTag},
		{"too many tags", "contributor", "POST", "/app/transactions?api-version=2026-02-23&tags=" + strings.Repeat("t,", 32) + "t33", `{"contents":"x"}`, 400, CodeInvalidTag},
		{"missing api-version", "contributor", "POST", "/app/transactions", `{"contents":"x"}`, 400, CodeMissingAPIVersion},
		{"unknown api-version", "contributor", "POST", "/app/transactions?api-version=2024-01-26-preview", `{"contents":"x"}`, 400, CodeUnsupportedAPIVersion},
		{"role too weak to write", "reader", "POST", "/app/transactions?api-version=2022-05-13", `{"contents":"x"}`, 403, CodeAuthorizationFailed},
		{"role too weak for users", "contributor", "PATCH", "/app/users/" + f.ids["stranger"] + "?api-version=2022-05-13", `{"assignedRole":"Reader"}`, 403, CodeAuthorizationFailed},
		{"unknown client certificate", "stranger", "POST", "/app/transactions?api-version=2022-05-13", `{"contents":"x"}`, 401, CodeInvalidAuthentication},
		{"no client certificate", "anonymous", "POST", "/app/transactions?api-version=2022-05-13", `{"contents":"x"}`, 401, CodeInvalidAuthentication},
		{"body over the limit", "contributor", "POST", "/app/transactions?api-version=2022-05-13", `{"contents":"` + strings.Repeat("a", 65<<10) + `"}`, 413, CodeRequestBodyTooLarge},
		{"bad transaction id", "reader", "GET", "/app/transactions/1.x/status?api-version=2022-05-13", "", 400, CodeInvalidTransactionID},
		{"zero seqno", "reader", "GET", "/app/transactions/2.0?api-version=2022-05-13", "", 400, CodeInvalidTransactionID},
		{"bad fromTransactionId", "reader", "GET", "/app/transactions?api-version=2022-05-13&fromTransactionId=01.2", "", 400, CodeInvalidTransactionID},
		{"unknown transaction", "reader", "GET", "/app/transactions/1.999999/status?api-version=2022-05-13", "", 404, CodeTransactionNotFound},
		{"bad user id", "admin", "PATCH", "/app/users/not-a-fingerprint?api-version=2022-05-13", `{"assignedRole":"Reader"}`, 400, CodeInvalidUserID},
		{"unknown role", "admin", "PATCH", "/app/users/" + f.ids["stranger"] + "?api-version=2022-05-13", `{"assignedRole":"Owner"}`, 400, CodeInvalidInput},
		{"new user without role", "admin", "PATCH", "/app/users/" + f.ids["stranger"] + "?api-version=2022-05-13", `{}`, 400, CodeInvalidInput},
		{"null role", "admin", "PATCH", "/app/users/" + f.ids["reader"] + "?api-version=2022-05-13", `{"assignedRole":null}`, 400, CodeInvalidInput},
		{"2026 path on 2022", "admin", "GET", "/app/ledgerUsers?api-version=2022-05-13", "", 400, CodeUnsupportedAPIVersion},
		{"demote last admin", "admin", "PATCH", "/app/users/" + f.ids["admin"] + "?api-version=2022-05-13", `{"assignedRole":"Reader"}`, 409, CodeLastAdministrator},
		{"delete last admin", "admin", "DELETE", "/app/users/" + f.ids["admin"] + "?api-version=2022-05-13", "", 409, CodeLastAdministrator},
		{"delete unknown user", "admin", "DELETE", "/app/users/" + f.ids["stranger"] + "?api-version=2022-05-13", "", 404, CodeUserNotFound},
		{"batch too large", "contributor", "POST", "/app/transactions:batch?api-version=2022-05-13", `{"entries":[{"contents":"a"},{"contents":"b"},{"contents":"c"}]}`, 400, CodeInvalidInput},
		{"batch with oversized entry", "contributor", "POST", "/app/transactions:batch?api-version=2022-05-13", `{"entries":[{"contents":"a"},{"contents":"` + big + `"}]}`, 400, CodeEntryTooLarge},
		{"no such path", "reader", "GET", "/app/nothing?api-version=2022-05-13", "", 404, CodeResourceNotFound},
		{"wrong method", "reader", "PUT", "/app/collections?api-version=2022-05-13", "", 405, CodeMethodNotAllowed},
	}
	f.quiesce()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.eng.Current()
			var body []byte
			if tt.body != "" {
				body = []byte(tt.body)
			}
			r := f.do(tt.who, tt.method, tt.path, body)
			if r.status != tt.status {
				t.Errorf("status %d, want %d (%s)", r.status, tt.status, truncate(string(r.body), 200))
			}
			if got := r.code(t); got != tt.code {
				t.Errorf("code %q, want %q", got, tt.code)
			}
			if after := f.eng.Current(); after != before {
				t.Errorf("Current() = %s after the request, want %s unchanged", after, before)
			}
		})
	}
}

func TestBatch(t *testing.T) {
	f := newFixture(t, Config{})
	r := f.do("contributor", "POST", "/app/transactions:batch?api-version=2026-02-23&collectionId=logs&wait=committed",
		[]byte(`{"entries":[{"contents":"a"},{"contents":"b","collectionId":"other"},{"contents":"c","tags":["t"]}]}`))
	f.mustStatus(r, 200)
	var resp struct {
		Results []batchResult
		State   string
	}
	r.decode(t, &resp)
	if resp.State != "Committed" || len(resp.Results) != 3 {
		t.Fatalf("batch = %s, want 3 committed results", r.body)
	}
	wantColl := []string{"logs", "other", "logs"}
	seen := map[string]bool{}
	for i, res := range resp.Results {
		if res.Error != nil || res.CollectionID != wantColl[i] || seen[res.TransactionID] {
			t.Errorf("result %d = %+v, want collection %s and a new id", i, res, wantColl[i])
		}
		seen[res.TransactionID] = true
		g := f.do("reader", "GET", "/app/transactions/"+res.TransactionID+"?api-version=2022-05-13", nil)
		f.mustStatus(g, 200)
	}
	r = f.do("reader", "GET", "/app/transactions?api-version=2026-02-23&collectionId=logs&tag=t", nil)
	var page pagedEntries
	r.decode(t, &page)
	if len(page.Entries) != 1 || page.Entries[0].Contents != "c" {
		t.Errorf("tag t = %s, want entry c", r.body)
	}
}

func TestListPaging(t *testing.T) {
	f := newFixture(t, Config{PageSize: 3})
	var ids []string
	for i := range 7 {
		ids = append(ids, f.append("&collectionId=c", string(rune('a'+i))).String())
	}
	f.append("", "default collection")
	var got []string
	next := "/app/transactions?api-version=2022-05-13&collectionId=c"
	pages := 0
	for next != "" {
		r := f.do("reader", "GET", next, nil)
		f.mustStatus(r, 200)
		var p pagedEntries
		r.decode(t, &p)
		if len(p.Entries) > 3 {
			t.Fatalf("page of %d entries, want at most 3", len(p.Entries))
		}
		for _, e := range p.Entries {
			got = append(got, e.TransactionID)
		}
		next = p.NextLink
		if pages++; pages > 10 {
			t.Fatal("paging does not end")
		}
	}
	if strings.Join(got, " ") != strings.Join(ids, " ") || pages != 3 {
		t.Errorf("listed %v in %d pages, want %v in 3", got, pages, ids)
	}
	r := f.do("reader", "GET", "/app/transactions?api-version=2022-05-13&collectionId=c&fromTransactionId="+ids[2]+"&toTransactionId="+ids[4], nil)
	var p pagedEntries
	r.decode(t, &p)
	if len(p.Entries) != 3 || p.Entries[0].TransactionID != ids[2] || p.Entries[2].TransactionID != ids[4] || p.NextLink != "" {
		t.Errorf("range = %s, want %s..%s", r.body, ids[2], ids[4])
	}
	r = f.do("reader", "GET", "/app/collections?api-version=2022-05-13", nil)
	var cs struct {
		Collections []struct{ CollectionID string }
	}
	r.decode(t, &cs)
	if len(cs.Collections) != 2 || cs.Collections[0].CollectionID != "c" || cs.Collections[1].CollectionID != app.DefaultCollection {
		t.Errorf("collections = %s, want c and %s", r.body, app.DefaultCollection)
	}
}

func TestUsers(t *testing.T) {
	f := newFixture(t, Config{})
	lower := f.ids["stranger"]
	var colon strings.Builder
	for i := 0; i < len(lower); i += 2 {
		if i > 0 {
			colon.WriteByte(':')
		}
		colon.WriteString(strings.ToUpper(lower[i : i+2]))
	}
	r := f.do("admin", "PATCH", "/app/users/"+colon.String()+"?api-version=2022-05-13", []byte(`{"assignedRole":"Contributor"}`), "Content-Type", "application/merge-patch+json")
	f.mustStatus(r, 200)
	var u ledgerUser
	r.decode(t, &u)
	if u.UserID != colon.String() || u.AssignedRole != "Contributor" {
		t.Errorf("patch = %+v, want the colon form and Contributor", u)
	}
	r = f.do("admin", "GET", "/app/users/"+lower+"?api-version=2022-05-13", nil)
	f.mustStatus(r, 200)
	r.decode(t, &u)
	if u.UserID != lower || u.AssignedRole != "Contributor" {
		t.Errorf("get = %+v, want the lowercase form and Contributor", u)
	}
	// The new user can now write.
	if r := f.do("stranger", "POST", "/app/transactions?api-version=2022-05-13", []byte(`{"contents":"x"}`)); r.status != 200 {
		t.Errorf("new contributor's write: %d %s", r.status, r.body)
	}
	r = f.do("admin", "PATCH", "/app/ledgerUsers/"+lower+"?api-version=2026-02-23", []byte(`{"assignedRoles":["Reader","Administrator"]}`), "Content-Type", "application/merge-patch+json")
	f.mustStatus(r, 200)
	var mu ledgerUserRoles
	r.decode(t, &mu)
	if strings.Join(mu.AssignedRoles, ",") != "Administrator,Reader" {
		t.Errorf("roles = %v, want Administrator,Reader", mu.AssignedRoles)
	}
	r = f.do("admin", "GET", "/app/ledgerUsers?api-version=2026-02-23", nil)
	f.mustStatus(r, 200)
	var list struct{ LedgerUsers []ledgerUserRoles }
	r.decode(t, &list)
	if len(list.LedgerUsers) != 4 {
		t.Errorf("%d users, want 4", len(list.LedgerUsers))
	}
	r = f.do("admin", "DELETE", "/app/users/"+colon.String()+"?api-version=2022-05-13", nil)
	f.mustStatus(r, 204)
	if r := f.do("admin", "GET", "/app/users/"+lower+"?api-version=2022-05-13", nil); r.status != 404 || r.code(t) != CodeUserNotFound {
		t.Errorf("deleted user: %d %s, want 404", r.status, r.body)
	}
	if r := f.do("stranger", "GET", "/app/collections?api-version=2022-05-13", nil); r.status != 401 {
		t.Errorf("deleted user's read: %d, want 401", r.status)
	}
}

func TestReceiptRefusals(t *testing.T) {
	f := newFixture(t, Config{})
	id := f.append("", "x")
	f.quiesce()
	sig := ledger.TxID{View: id.View, Seqno: id.Seqno + 1}
	if st := f.eng.Status(sig); st != engine.StatusCommitted {
		t.Fatalf("status of %s = %s, want the committed signature", sig, st)
	}
	r := f.do("reader", "GET", "/app/transactions/"+sig.String()+"/receipt?api-version=2022-05-13", nil)
	if r.status != 400 || r.code(t) != CodeSignatureTransaction {
		t.Errorf("signature receipt: %d %s, want 400 %s", r.status, r.body, CodeSignatureTransaction)
	}
	// The genesis transaction wrote users, not an entry.
	r = f.do("reader", "GET", "/app/transactions/1.2/receipt?api-version=2022-05-13", nil)
	if r.status != 404 || r.code(t) != CodeLedgerEntryNotFound {
		t.Errorf("non-entry receipt: %d %s, want 404 %s", r.status, r.body, CodeLedgerEntryNotFound)
	}
}

func TestConsistency(t *testing.T) {
	f := newFixture(t, Config{})
	first := f.append("", "a")
	f.append("", "b")
	last := f.append("", "c")
	f.quiesce()
	r := f.do("reader", "GET", "/app/consistency?api-version=2022-05-13&from="+first.String()+"&to="+last.String(), nil)
	f.mustStatus(r, 200)
	var p api.ConsistencyProof
	r.decode(t, &p)
	if err := receipt.VerifyConsistency(&p, f.serviceCert); err != nil {
		t.Errorf("verify: %v", err)
	}
	if p.From.TreeSize < first.Seqno || p.To.TreeSize < last.Seqno {
		t.Errorf("proof from %d to %d leaves, want covering %s and %s", p.From.TreeSize, p.To.TreeSize, first, last)
	}
}

func TestServiceEndpoints(t *testing.T) {
	f := newFixture(t, Config{})
	r := f.do("anonymous", "GET", "/ledgerIdentity/myledger?api-version=2022-05-13", nil)
	f.mustStatus(r, 200)
	var li struct{ LedgerID, LedgerTLSCertificate string }
	r.decode(t, &li)
	if c, err := identity.ParseCertPEM([]byte(li.LedgerTLSCertificate)); err != nil || !c.Equal(f.serviceCert) || li.LedgerID != "myledger" {
		t.Errorf("ledger identity = %+v, want the service certificate", li)
	}
	r = f.do("reader", "GET", "/app/governance/members?api-version=2022-05-13", nil)
	f.mustStatus(r, 200)
	var ms struct {
		Members []struct{ Certificate, ID string }
	}
	r.decode(t, &ms)
	if len(ms.Members) != 1 || ms.Members[0].ID != f.ids["member"] {
		t.Errorf("members = %s, want member", r.body)
	}
	r = f.do("reader", "GET", "/app/governance/constitution?api-version=2022-05-13", nil)
	f.mustStatus(r, 200)
	r = f.do("reader", "GET", "/app/enclaveQuotes?api-version=2022-05-13", nil)
	f.mustStatus(r, 200)
	var q struct {
		CurrentNodeID string
		EnclaveQuotes map[string]struct{ NodeID, QuoteVersion, Raw string }
	}
	r.decode(t, &q)
	if q.EnclaveQuotes[q.CurrentNodeID].QuoteVersion != QuoteVersionVirtual {
		t.Errorf("quotes = %s, want virtual evidence for %s", r.body, q.CurrentNodeID)
	}
	r = f.do("anonymous", "GET", "/health", nil)
	f.mustStatus(r, 200)
	r = f.do("anonymous", "GET", "/metrics", nil)
	f.mustStatus(r, 200)
	for _, want := range []string{
		`parley_http_requests_total{route="GET /health",code="200"} 1`,
		`parley_http_request_duration_seconds_bucket{route="GET /app/enclaveQuotes",le="+Inf"} 1`,
		"# TYPE parley_engine_transactions_total counter",
	} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("metrics lack %q:\n%s", want, r.body)
		}
	}
}

func TestPendingIsLoading(t *testing.T) {
	// A signature interval longer than the test keeps every write Pending.
	f := newFixtureSig(t, Config{}, time.Hour)
	r := f.do("contributor", "POST", "/app/transactions?api-version=2022-05-13", []byte(`{"contents":"p"}`))
	f.mustStatus(r, 200)
	id := r.header.Get(TxIDHeader)
	r = f.do("reader", "GET", "/app/transactions/"+id+"/status?api-version=2022-05-13", nil)
	f.mustStatus(r, 200)
	if !strings.Contains(string(r.body), `"state":"Pending"`) {
		t.Errorf("status = %s, want Pending", r.body)
	}
	for _, path := range []string{"/app/transactions/" + id, "/app/transactions/" + id + "/receipt"} {
		r = f.do("reader", "GET", path+"?api-version=2022-05-13", nil)
		f.mustStatus(r, 200)
		var got struct {
			State   string
			Receipt json.RawMessage
			Entry   json.RawMessage
		}
		r.decode(t, &got)
		if got.State != api.StateLoading || got.Receipt != nil || got.Entry != nil {
			t.Errorf("%s = %s, want Loading and nothing else", path, r.body)
		}
	}
	// Nothing Pending is listed.
	r = f.do("reader", "GET", "/app/transactions?api-version=2022-05-13", nil)
	var p pagedEntries
	r.decode(t, &p)
	if len(p.Entries) != 0 {
		t.Errorf("list = %s, want no entries while Pending", r.body)
	}
}
