package client_test

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/client"
	"github.com/parleyhq/parley/internal/identity"
)

// fakeLedger is a tiny in-memory fake of the ACL data plane. Every
// historical query answers Loading on its first call, as CCF does while it
// fetches ledger chunks; every transaction is Pending on its first status
// query.
type fakeLedger struct {
	t        *testing.T
	pageSize int
	maxEntry int
	waitExt  bool // honour wait=committed

	mu       sync.Mutex
	entries  []api.LedgerEntry // entries[i] has seqno i+1
	tags     [][]string
	seen     map[string]int // path+query -> times asked
	users    map[string]string
	requests []*http.Request
	protos   map[int]int
}

func newFakeLedger(t *testing.T) *fakeLedger {
	return &fakeLedger{
		t:        t,
		pageSize: 3,
		maxEntry: 8192,
		seen:     map[string]int{},
		users:    map[string]string{},
		protos:   map[int]int{},
	}
}

// normUserID accepts the lowercase hex and the colon-separated uppercase
// forms of a fingerprint and returns the lowercase hex.
func normUserID(id string) (string, bool) {
	h := strings.ToLower(strings.ReplaceAll(id, ":", ""))
	if b, err := hex.DecodeString(h); err != nil || len(b) != 32 {
		return "", false
	}
	if strings.Contains(id, ":") && (len(id) != 95 || id != strings.ToUpper(id)) {
		return "", false
	}
	return h, true
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(api.ConfidentialLedgerError{Error: api.ConfidentialLedgerErrorBody{Code: code, Message: msg}})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// firstTime reports whether this exact request is asked for the first time.
func (f *fakeLedger) firstTime(r *http.Request) bool {
	k := r.Method + " " + r.URL.RequestURI()
	f.seen[k]++
	return f.seen[k] == 1
}

func seqno(txID string) (int, bool) {
	v, s, ok := strings.Cut(txID, ".")
	if !ok || v != "2" {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n > 0
}

func (f *fakeLedger) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, r)
	f.protos[r.ProtoMajor]++
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		writeErr(w, http.StatusUnauthorized, "Unauthorized", "no client certificate")
		return
	}
	if v := r.URL.Query().Get("api-version"); v != api.APIVersion2022 {
		writeErr(w, http.StatusBadRequest, "MissingApiVersionParameter", "api-version is "+strconv.Quote(v))
		return
	}
	w.Header().Set(api.TransactionIDHeader, "2."+strconv.Itoa(len(f.entries)))
	q := r.URL.Query()
	coll := q.Get("collectionId")
	if coll == "" {
		coll = "subledger:0"
	}
	path := r.URL.EscapedPath()
	switch {
	case r.Method == http.MethodPost && path == "/app/transactions":
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			writeErr(w, http.StatusUnsupportedMediaType, "UnsupportedMediaType", ct)
			return
		}
		var e api.LedgerEntry
		if err := json.NewDecoder(r.Body).Decode(&e); err != nil {
			writeErr(w, http.StatusBadRequest, "InvalidInput", err.Error())
			return
		}
		if len(e.Contents) > f.maxEntry {
			writeErr(w, http.StatusBadRequest, "EntrySizeCapacityExceeded",
				fmt.Sprintf("Entry contents of %d bytes exceed the limit of %d bytes.", len(e.Contents), f.maxEntry))
			return
		}
		var tags []string
		if t := q.Get("tags"); t != "" {
			tags = strings.Split(t, ",")
		}
		f.entries = append(f.entries, api.LedgerEntry{Contents: e.Contents, CollectionID: coll})
		f.tags = append(f.tags, tags)
		id := "2." + strconv.Itoa(len(f.entries))
		f.entries[len(f.entries)-1].TransactionID = id
		w.Header().Set(api.TransactionIDHeader, id)
		if f.waitExt && q.Get("wait") == "committed" {
			writeJSON(w, api.WriteResult{
				CollectionID: coll, TransactionID: id, State: api.TxCommitted,
				Receipt: &api.TransactionReceipt{State: api.StateReady, TransactionID: id,
					Receipt: &api.Receipt{NodeID: "ab", Signature: "c2ln"}},
			})
			return
		}
		writeJSON(w, api.LedgerWriteResult{CollectionID: coll})
	case r.Method == http.MethodPost && path == "/app/transactions:batch":
		var br api.BatchRequest
		if err := json.NewDecoder(r.Body).Decode(&br); err != nil || len(br.Entries) == 0 {
			writeErr(w, http.StatusBadRequest, "InvalidInput", "bad batch")
			return
		}
		resp := api.BatchResponse{}
		for _, e := range br.Entries {
			c := e.CollectionID
			if c == "" {
				c = coll
			}
			if len(e.Contents) > f.maxEntry {
				resp.Results = append(resp.Results, api.BatchResult{CollectionID: c,
					Error: &api.ConfidentialLedgerErrorBody{Code: "EntrySizeCapacityExceeded", Message: "too big"}})
				continue
			}
			id := "2." + strconv.Itoa(len(f.entries)+1)
			f.entries = append(f.entries, api.LedgerEntry{Contents: e.Contents, CollectionID: c, TransactionID: id})
			f.tags = append(f.tags, e.Tags)
			resp.Results = append(resp.Results, api.BatchResult{CollectionID: c, TransactionID: id})
		}
		if f.waitExt && q.Get("wait") == "committed" {
			resp.State = api.TxCommitted
		}
		writeJSON(w, resp)
	case r.Method == http.MethodGet && path == "/app/transactions":
		if f.firstTime(r) {
			writeJSON(w, api.PagedLedgerEntries{State: api.StateLoading, Entries: []api.LedgerEntry{}})
			return
		}
		from, to := 1, len(f.entries)
		if s := q.Get("fromTransactionId"); s != "" {
			n, ok := seqno(s)
			if !ok {
				writeErr(w, http.StatusBadRequest, "InvalidTransactionId", s)
				return
			}
			from = n
		}
		if s := q.Get("toTransactionId"); s != "" {
			n, ok := seqno(s)
			if !ok {
				writeErr(w, http.StatusBadRequest, "InvalidTransactionId", s)
				return
			}
			to = min(n, to)
		}
		page := api.PagedLedgerEntries{State: api.StateReady, Entries: []api.LedgerEntry{}}
		n := from
		for ; n <= to && len(page.Entries) < f.pageSize; n++ {
			e := f.entries[n-1]
			if e.CollectionID == coll && (q.Get("tag") == "" || contains(f.tags[n-1], q.Get("tag"))) {
				page.Entries = append(page.Entries, e)
			}
		}
		if n <= to {
			next := fmt.Sprintf("/app/transactions?fromTransactionId=2.%d&toTransactionId=2.%d", n, to)
			if c := q.Get("collectionId"); c != "" {
				next += "&collectionId=" + c
			}
			if t := q.Get("tag"); t != "" {
				next += "&tag=" + t
			}
			page.NextLink = next
		}
		writeJSON(w, page)
	case r.Method == http.MethodGet && path == "/app/transactions/current":
		for i := len(f.entries) - 1; i >= 0; i-- {
			if f.entries[i].CollectionID == coll {
				writeJSON(w, f.entries[i])
				return
			}
		}
		writeErr(w, http.StatusNotFound, "NoEntries", "collection is empty")
	case r.Method == http.MethodGet && strings.HasPrefix(path, "/app/transactions/"):
		rest := strings.TrimPrefix(path, "/app/transactions/")
		id, suffix, _ := strings.Cut(rest, "/")
		n, ok := seqno(id)
		if !ok {
			writeErr(w, http.StatusBadRequest, "InvalidTransactionId", "bad transaction id "+id)
			return
		}
		if n > len(f.entries) {
			writeErr(w, http.StatusNotFound, "TransactionNotFound", "no transaction "+id)
			return
		}
		first := f.firstTime(r)
		switch suffix {
		case "":
			if first {
				writeJSON(w, api.LedgerQueryResult{State: api.StateLoading})
				return
			}
			e := f.entries[n-1]
			if e.CollectionID != coll {
				writeErr(w, http.StatusBadRequest, "InvalidCollectionId", "wrong collection")
				return
			}
			writeJSON(w, api.LedgerQueryResult{State: api.StateReady, Entry: &e})
		case "status":
			st := api.TxCommitted
			if first {
				st = api.TxPending
			}
			writeJSON(w, api.TransactionStatus{State: st, TransactionID: id})
		case "receipt":
			if first {
				writeJSON(w, api.TransactionReceipt{State: api.StateLoading, TransactionID: id})
				return
			}
			writeJSON(w, api.TransactionReceipt{State: api.StateReady, TransactionID: id,
				Receipt: &api.Receipt{NodeID: "ab", Signature: "c2ln"}})
		default:
			writeErr(w, http.StatusNotFound, "NotFound", path)
		}
	case path == "/app/users":
		var ids []string
		for id := range f.users {
			ids = append(ids, id)
		}
		// Two users per page, pages named by index.
		start, _ := strconv.Atoi(q.Get("skip"))
		sortStrings(ids)
		p := api.PagedUsers{LedgerUsers: []api.LedgerUser{}}
		for i := start; i < len(ids) && i < start+2; i++ {
			p.LedgerUsers = append(p.LedgerUsers, api.LedgerUser{UserID: ids[i], AssignedRole: f.users[ids[i]]})
		}
		if start+2 < len(ids) {
			p.NextLink = "/app/users?skip=" + strconv.Itoa(start+2)
		}
		writeJSON(w, p)
	case strings.HasPrefix(path, "/app/users/"):
		given := strings.TrimPrefix(path, "/app/users/")
		id, ok := normUserID(given)
		if !ok {
			writeErr(w, http.StatusBadRequest, "InvalidUserId", "bad user id "+given)
			return
		}
		switch r.Method {
		case http.MethodGet:
			role, ok := f.users[id]
			if !ok {
				writeErr(w, http.StatusNotFound, "UserNotFound", "no user "+given)
				return
			}
			writeJSON(w, api.LedgerUser{UserID: given, AssignedRole: role})
		case http.MethodPatch:
			if ct := r.Header.Get("Content-Type"); ct != "application/merge-patch+json" {
				writeErr(w, http.StatusUnsupportedMediaType, "UnsupportedMediaType", ct)
				return
			}
			var u api.LedgerUser
			if err := json.NewDecoder(r.Body).Decode(&u); err != nil {
				writeErr(w, http.StatusBadRequest, "InvalidInput", err.Error())
				return
			}
			switch u.AssignedRole {
			case api.RoleAdministrator, api.RoleContributor, api.RoleReader:
			default:
				writeErr(w, http.StatusBadRequest, "InvalidRole", u.AssignedRole)
				return
			}
			f.users[id] = u.AssignedRole
			writeJSON(w, api.LedgerUser{UserID: given, AssignedRole: u.AssignedRole})
		case http.MethodDelete:
			if _, ok := f.users[id]; !ok {
				writeErr(w, http.StatusNotFound, "UserNotFound", "no user "+given)
				return
			}
			delete(f.users, id)
			w.WriteHeader(http.StatusNoContent)
		}
	case path == "/app/collections":
		seen := map[string]bool{}
		p := api.PagedCollections{Collections: []api.Collection{}}
		for _, e := range f.entries {
			if !seen[e.CollectionID] {
				seen[e.CollectionID] = true
				p.Collections = append(p.Collections, api.Collection{CollectionID: e.CollectionID})
			}
		}
		writeJSON(w, p)
	case strings.HasPrefix(path, "/ledgerIdentity/"):
		writeJSON(w, api.LedgerIdentityInformation{LedgerID: strings.TrimPrefix(path, "/ledgerIdentity/"), LedgerTLSCertificate: "PEM"})
	default:
		writeErr(w, http.StatusNotFound, "NotFound", path)
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// testEnv is a fake ledger behind a TLS server with a Parley-style service
// identity, and the PEM files a client needs.
type testEnv struct {
	fake    *fakeLedger
	srv     *httptest.Server
	opts    client.Options
	newConn atomic.Int64
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	svc, err := identity.NewService("", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	nodeCertDER, nodeKey, err := identity.NewClientCert("node", time.Hour) // only for its key
	if err != nil {
		t.Fatal(err)
	}
	_ = nodeCertDER
	nodeDER, err := svc.EndorseNode(&nodeKey.PublicKey, []string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	userDER, userKey, err := identity.NewClientCert("user0", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	userKeyPEM, err := identity.EncodeKeyPEM(userKey)
	if err != nil {
		t.Fatal(err)
	}
	env := &testEnv{fake: newFakeLedger(t)}
	env.srv = httptest.NewUnstartedServer(env.fake)
	env.srv.EnableHTTP2 = true
	env.srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{nodeDER}, PrivateKey: nodeKey}},
		ClientAuth:   tls.RequireAnyClientCert,
	}
	env.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake failures are tested
	env.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			env.newConn.Add(1)
		}
	}
	env.srv.StartTLS()
	t.Cleanup(env.srv.Close)
	env.opts = client.Options{
		CACertPEM:       identity.EncodeCertPEM(svc.CertDER),
		CertPEM:         identity.EncodeCertPEM(userDER),
		KeyPEM:          userKeyPEM,
		MinPollInterval: time.Microsecond,
		MaxPollInterval: time.Millisecond,
	}
	return env
}

func (e *testEnv) client(t *testing.T) *client.Client {
	t.Helper()
	c, err := client.New(e.srv.URL, e.opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func TestAppendEntryStatusReceipt(t *testing.T) {
	env := newTestEnv(t)
	c := env.client(t)
	ctx := context.Background()

	id, err := c.Append(ctx, "", "hello", nil)
	if err != nil {
		t.Fatal(err)
	}
	if id != "2.1" {
		t.Errorf("Append id = %q, want 2.1", id)
	}
	id2, err := c.Append(ctx, "coll", "in a collection", []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := env.fake.tags[1], []string{"a", "b"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("tags sent = %v, want %v", got, want)
	}

	e, err := c.Entry(ctx, id, "")
	if err != nil {
		t.Fatal(err)
	}
	if e.Contents != "hello" || e.TransactionID != id {
		t.Errorf("Entry = %+v, want contents hello at %s", e, id)
	}
	e, err = c.Entry(ctx, id2, "coll")
	if err != nil {
		t.Fatal(err)
	}
	if e.Contents != "in a collection" || e.CollectionID != "coll" {
		t.Errorf("Entry = %+v, want contents in collection coll", e)
	}

	s, err := c.Status(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if s.State != api.TxPending {
		t.Errorf("first Status = %q, want Pending", s.State)
	}
	if err := c.WaitCommitted(ctx, id2); err != nil {
		t.Fatal(err)
	}
	r, err := c.Receipt(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if r.State != api.StateReady || r.Receipt == nil || r.TransactionID != id {
		t.Errorf("Receipt = %+v, want Ready with a receipt for %s", r, id)
	}

	cur, err := c.Current(ctx, "coll")
	if err != nil {
		t.Fatal(err)
	}
	if cur.TransactionID != id2 {
		t.Errorf("Current(coll) = %s, want %s", cur.TransactionID, id2)
	}

	var colls []string
	for col, err := range c.Collections(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		colls = append(colls, col.CollectionID)
	}
	if got, want := fmt.Sprint(colls), "[subledger:0 coll]"; got != want {
		t.Errorf("Collections = %s, want %s", got, want)
	}

	li, err := c.LedgerIdentity(ctx, "myledger")
	if err != nil {
		t.Fatal(err)
	}
	if li.LedgerID != "myledger" || li.LedgerTLSCertificate != "PEM" {
		t.Errorf("LedgerIdentity = %+v", li)
	}

	for _, r := range env.fake.requests {
		if got := r.URL.Query().Get("api-version"); got != api.APIVersion2022 {
			t.Errorf("%s %s: api-version = %q, want %s", r.Method, r.URL, got, api.APIVersion2022)
		}
		if r.ProtoMajor != 2 {
			t.Errorf("%s %s: protocol %s, want HTTP/2", r.Method, r.URL, r.Proto)
		}
	}
}

func TestAppendAndWait(t *testing.T) {
	for _, tt := range []struct {
		name        string
		waitExt     bool
		wantReceipt bool
	}{
		{"extension", true, true},
		{"polling", false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := newTestEnv(t)
			env.fake.waitExt = tt.waitExt
			c := env.client(t)
			for i := range 3 {
				res, err := c.AppendAndWait(context.Background(), "", "x", nil)
				if err != nil {
					t.Fatal(err)
				}
				if want := fmt.Sprintf("2.%d", i+1); res.TransactionID != want {
					t.Errorf("TransactionID = %s, want %s", res.TransactionID, want)
				}
				if got := res.Receipt != nil; got != tt.wantReceipt {
					t.Errorf("has receipt = %v, want %v", got, tt.wantReceipt)
				}
			}
			supported, known := c.WaitExtension()
			if !known || supported != tt.waitExt {
				t.Errorf("WaitExtension() = %v, %v, want %v, true", supported, known, tt.waitExt)
			}
			var statusPolls, waitParams int
			for _, r := range env.fake.requests {
				if strings.HasSuffix(r.URL.Path, "/status") {
					statusPolls++
				}
				if r.URL.Query().Get("wait") != "" {
					waitParams++
				}
			}
			if tt.waitExt && statusPolls != 0 {
				t.Errorf("status polls with the extension = %d, want 0", statusPolls)
			}
			if !tt.waitExt {
				// One Pending and one Committed per write; wait=committed
				// only tried on the first write.
				if statusPolls != 6 || waitParams != 1 {
					t.Errorf("status polls, wait params = %d, %d, want 6, 1", statusPolls, waitParams)
				}
			}
		})
	}
}

func TestAppendBatch(t *testing.T) {
	for _, waitExt := range []bool{true, false} {
		t.Run(fmt.Sprintf("waitExt=%v", waitExt), func(t *testing.T) {
			env := newTestEnv(t)
			env.fake.waitExt = waitExt
			c := env.client(t)
			res, err := c.AppendBatch(context.Background(), "audit", []api.BatchEntry{
				{Contents: "a"},
				{Contents: strings.Repeat("x", 9000)},
				{Contents: "c", CollectionID: "other"},
			}, true)
			if err != nil {
				t.Fatal(err)
			}
			got := fmt.Sprintf("%s/%s %s/%v %s/%s", res[0].CollectionID, res[0].TransactionID,
				res[1].CollectionID, res[1].Error != nil, res[2].CollectionID, res[2].TransactionID)
			if want := "audit/2.1 audit/true other/2.2"; got != want {
				t.Errorf("results = %s, want %s", got, want)
			}
			var statusPolls int
			for _, r := range env.fake.requests {
				if strings.HasSuffix(r.URL.Path, "/status") {
					statusPolls++
					if !strings.HasSuffix(r.URL.Path, "/2.2/status") {
						t.Errorf("polled %s, want the last transaction 2.2", r.URL.Path)
					}
				}
			}
			if wantPolls := map[bool]int{true: 0, false: 2}[waitExt]; statusPolls != wantPolls {
				t.Errorf("status polls = %d, want %d", statusPolls, wantPolls)
			}
		})
	}
}

func TestList(t *testing.T) {
	env := newTestEnv(t)
	c := env.client(t)
	ctx := context.Background()
	for i := range 10 {
		coll := ""
		if i%3 == 0 {
			coll = "other"
		}
		var tags []string
		if i%2 == 0 {
			tags = []string{"even"}
		}
		if _, err := c.Append(ctx, coll, "e"+strconv.Itoa(i), tags); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		name string
		opts client.ListOptions
		want string
	}{
		{"all default", client.ListOptions{}, "e1 e2 e4 e5 e7 e8"},
		{"collection", client.ListOptions{CollectionID: "other"}, "e0 e3 e6 e9"},
		{"range", client.ListOptions{From: "2.3", To: "2.8"}, "e2 e4 e5 e7"},
		{"tag", client.ListOptions{Tag: "even"}, "e2 e4 e8"},
		{"empty range", client.ListOptions{From: "2.9", To: "2.8"}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for e, err := range c.List(ctx, tt.opts) {
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, e.Contents)
			}
			if strings.Join(got, " ") != tt.want {
				t.Errorf("List(%+v) = %q, want %q", tt.opts, strings.Join(got, " "), tt.want)
			}
		})
	}

	// Stopping early stops fetching pages.
	env.fake.mu.Lock()
	before := len(env.fake.requests)
	env.fake.mu.Unlock()
	for range c.List(ctx, client.ListOptions{CollectionID: "other"}) {
		break
	}
	env.fake.mu.Lock()
	after := len(env.fake.requests)
	env.fake.mu.Unlock()
	if after-before != 1 { // the first page was seen before: Ready at once
		t.Errorf("requests for one entry = %d, want 1", after-before)
	}

	// A bad argument comes back as an error from the iteration.
	var errs int
	for _, err := range c.List(ctx, client.ListOptions{From: "bogus"}) {
		var e *client.Error
		if !errors.As(err, &e) || e.Code != "InvalidTransactionId" {
			t.Errorf("List(bogus) error = %v, want InvalidTransactionId", err)
		}
		errs++
	}
	if errs != 1 {
		t.Errorf("List(bogus) yielded %d errors, want 1", errs)
	}
}

func TestErrors(t *testing.T) {
	env := newTestEnv(t)
	c := env.client(t)
	ctx := context.Background()
	for _, tt := range []struct {
		name       string
		call       func() error
		wantStatus int
		wantCode   string
	}{
		{"oversized entry", func() error {
			_, err := c.Append(ctx, "", strings.Repeat("x", 9000), nil)
			return err
		}, 400, "EntrySizeCapacityExceeded"},
		{"unknown transaction", func() error { _, err := c.Status(ctx, "2.99"); return err }, 404, "TransactionNotFound"},
		{"bad transaction id", func() error { _, err := c.Entry(ctx, "x.y", ""); return err }, 400, "InvalidTransactionId"},
		{"unknown user", func() error { _, err := c.GetUser(ctx, strings.Repeat("ab", 32)); return err }, 404, "UserNotFound"},
		{"bad role", func() error { _, err := c.SetUser(ctx, strings.Repeat("ab", 32), "Owner"); return err }, 400, "InvalidRole"},
		{"wait unknown", func() error { return c.WaitCommitted(ctx, "2.42") }, 404, "TransactionNotFound"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var e *client.Error
			if !errors.As(err, &e) {
				t.Fatalf("error = %v, want a *client.Error", err)
			}
			if e.StatusCode != tt.wantStatus || e.Code != tt.wantCode {
				t.Errorf("error = %d %s, want %d %s", e.StatusCode, e.Code, tt.wantStatus, tt.wantCode)
			}
			if e.Message == "" {
				t.Errorf("error %v has no message", e)
			}
		})
	}
	if len(env.fake.entries) != 0 {
		t.Errorf("entries after errors = %d, want 0", len(env.fake.entries))
	}
}

func TestUsers(t *testing.T) {
	env := newTestEnv(t)
	c := env.client(t)
	ctx := context.Background()
	hexID := "5f233d" + strings.Repeat("00", 27) + "abb5"
	var parts []string
	for i := 0; i < len(hexID); i += 2 {
		parts = append(parts, strings.ToUpper(hexID[i:i+2]))
	}
	colonID := strings.Join(parts, ":")

	u, err := c.SetUser(ctx, colonID, api.RoleReader)
	if err != nil {
		t.Fatal(err)
	}
	if u.UserID != colonID || u.AssignedRole != api.RoleReader {
		t.Errorf("SetUser = %+v, want %s Reader", u, colonID)
	}
	// The colons reach the server unescaped, as ACL clients send them.
	last := env.fake.requests[len(env.fake.requests)-1]
	if got, want := last.URL.EscapedPath(), "/app/users/"+colonID; got != want {
		t.Errorf("request path = %s, want %s", got, want)
	}
	u, err = c.GetUser(ctx, hexID)
	if err != nil {
		t.Fatal(err)
	}
	if u.UserID != hexID || u.AssignedRole != api.RoleReader {
		t.Errorf("GetUser(hex) = %+v, want %s Reader", u, hexID)
	}
	if _, err := c.SetUser(ctx, hexID, api.RoleContributor); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if _, err := c.SetUser(ctx, fmt.Sprintf("%064x", i), api.RoleReader); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	roles := map[string]string{}
	for u, err := range c.ListUsers(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		n++
		roles[u.UserID] = u.AssignedRole
	}
	if n != 5 || roles[hexID] != api.RoleContributor {
		t.Errorf("ListUsers: %d users, %s is %q; want 5, Contributor", n, hexID, roles[hexID])
	}
	if err := c.DeleteUser(ctx, colonID); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetUser(ctx, hexID)
	var e *client.Error
	if !errors.As(err, &e) || e.StatusCode != http.StatusNotFound {
		t.Errorf("GetUser after delete: %v, want 404", err)
	}
}

func TestConcurrentReuse(t *testing.T) {
	env := newTestEnv(t)
	c := env.client(t)
	// The first request negotiates HTTP/2; every later one, from any
	// goroutine, multiplexes over that connection.
	if _, err := c.Append(context.Background(), "", "first", nil); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Go(func() {
			for range 5 {
				if _, err := c.Append(context.Background(), "", "x", nil); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := len(env.fake.entries); got != 321 {
		t.Errorf("entries = %d, want 321", got)
	}
	if got := env.newConn.Load(); got != 1 {
		t.Errorf("connections = %d, want 1", got)
	}
}

func TestPinnedServiceCertificate(t *testing.T) {
	env := newTestEnv(t)
	other, err := identity.NewService("", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	opts := env.opts
	opts.CACertPEM = identity.EncodeCertPEM(other.CertDER)
	c, err := client.New(env.srv.URL, opts)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Append(context.Background(), "", "x", nil)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Append with another service certificate: %v, want a certificate error", err)
	}
	if len(env.fake.entries) != 0 {
		t.Errorf("entries = %d, want 0", len(env.fake.entries))
	}
}

func TestNewRejects(t *testing.T) {
	env := newTestEnv(t)
	for _, tt := range []struct {
		name     string
		endpoint string
		mod      func(*client.Options)
	}{
		{"http", "http://127.0.0.1:1", nil},
		{"query", env.srv.URL + "?x=1", nil},
		{"no host", "https://", nil},
		{"no ca", env.srv.URL, func(o *client.Options) { o.CACertPEM = nil }},
		{"no cert", env.srv.URL, func(o *client.Options) { o.CertPEM = nil }},
		{"bad key", env.srv.URL, func(o *client.Options) { o.KeyPEM = []byte("junk") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := env.opts
			if tt.mod != nil {
				tt.mod(&o)
			}
			if _, err := client.New(tt.endpoint, o); err == nil {
				t.Errorf("New(%q) succeeded, want an error", tt.endpoint)
			}
		})
	}
}

func TestLoadProfile(t *testing.T) {
	env := newTestEnv(t)
	dir := t.TempDir()
	for name, b := range map[string][]byte{
		"service_cert.pem": env.opts.CACertPEM,
		"user0_cert.pem":   env.opts.CertPEM,
		"user0_privk.pem":  env.opts.KeyPEM,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// One absolute path, two relative to the profile's directory.
	prof := fmt.Sprintf(`{"endpoint":%q,"cacert":%q,"cert":"user0_cert.pem","key":"user0_privk.pem"}`,
		env.srv.URL, filepath.Join(dir, "service_cert.pem"))
	path := filepath.Join(dir, "profile.json")
	if err := os.WriteFile(path, []byte(prof), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := client.LoadProfile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.New()
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	if _, err := c.Append(context.Background(), "", "via profile", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := client.LoadProfile(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("LoadProfile(missing) succeeded")
	}
}

func TestContextCancelStopsPolling(t *testing.T) {
	env := newTestEnv(t)
	env.fake.waitExt = false
	c := env.client(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Receipt(ctx, "2.1"); !errors.Is(err, context.Canceled) {
		t.Errorf("Receipt with cancelled context: %v, want context.Canceled", err)
	}
}
