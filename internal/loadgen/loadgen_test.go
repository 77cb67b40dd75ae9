package loadgen

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/quick"
	"time"

	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/client"
	"github.com/parleyhq/parley/internal/identity"
)

// naivePercentile is the definition: the smallest sample v such that at
// least a fraction p of the samples are ≤ v.
func naivePercentile(samples []time.Duration, p float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	best := time.Duration(math.MaxInt64)
	for _, v := range samples {
		le := 0
		for _, x := range samples {
			if x <= v {
				le++
			}
		}
		if float64(le) >= p*float64(len(samples))-1e-9 && v < best {
			best = v
		}
	}
	return best
}

func TestPercentileMatchesNaive(t *testing.T) {
	f := func(raw []uint16, pRaw uint16) bool {
		samples := make([]time.Duration, len(raw))
		for i, v := range raw {
			samples[i] = time.Duration(v % 100) // many ties
		}
		p := float64(pRaw%1000+1) / 1000 // (0, 1]
		sorted := slices.Clone(samples)
		slices.Sort(sorted)
		return Percentile(sorted, p) == naivePercentile(samples, p)
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 2000}); err != nil {
		t.Error(err)
	}
}

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i + 1)
	}
	for _, tt := range []struct {
		samples []time.Duration
		p       float64
		want    time.Duration
	}{
		{nil, 0.5, 0},
		{[]time.Duration{7}, 0.99, 7},
		{hundred, 0.50, 50},
		{hundred, 0.90, 90},
		{hundred, 0.99, 99},
		{hundred, 1, 100},
		{hundred, 0.001, 1},
		{[]time.Duration{1, 2, 3}, 0.5, 2},
	} {
		if got := Percentile(tt.samples, tt.p); got != tt.want {
			t.Errorf("Percentile(%d samples, %v) = %v, want %v", len(tt.samples), tt.p, got, tt.want)
		}
	}
}

func TestSummarize(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	a := &recorder{rng: rng}
	b := &recorder{rng: rng}
	var all []time.Duration
	for i := range 1000 {
		d := time.Duration(rng.IntN(1e6))
		all = append(all, d)
		if i%3 == 0 {
			a.add(d)
		} else {
			b.add(d)
		}
	}
	s := summarize([]*recorder{a, b}, 2*time.Second)
	slices.Sort(all)
	if s.Count != 1000 || s.PerSec != 500 {
		t.Errorf("Count, PerSec = %d, %v, want 1000, 500", s.Count, s.PerSec)
	}
	for _, c := range []struct {
		name      string
		got, want time.Duration
	}{
		{"p50", s.P50, naivePercentile(all, 0.5)},
		{"p90", s.P90, naivePercentile(all, 0.9)},
		{"p99", s.P99, naivePercentile(all, 0.99)},
		{"max", s.Max, all[len(all)-1]},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestStatsJSONRoundTrip(t *testing.T) {
	in := Stats{Count: 3, PerSec: 1.5, P50: 1500 * time.Microsecond, P90: 2 * time.Millisecond, P99: 25 * time.Millisecond, Max: time.Second}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out Stats
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Errorf("round trip of %s = %+v, want %+v", b, out, in)
	}
}

func TestRecorderReservoirBounded(t *testing.T) {
	r := &recorder{rng: rand.New(rand.NewPCG(3, 4))}
	for i := range maxSamples + 1000 {
		r.add(time.Duration(i))
	}
	if len(r.samples) != maxSamples || r.n != maxSamples+1000 || r.max != time.Duration(maxSamples+999) {
		t.Errorf("samples, n, max = %d, %d, %v", len(r.samples), r.n, r.max)
	}
}

func TestConfigRejects(t *testing.T) {
	for _, cfg := range []Config{
		{Clients: -1},
		{Clients: MaxClients + 1},
		{EntrySize: MaxEntrySize + 1},
		{ReadRatio: 1.5},
		{ReadRatio: math.NaN()},
		{Rate: -1},
		{Duration: -time.Second},
		{Wait: "sometimes"},
		{ReceiptEvery: -2},
	} {
		if err := cfg.setDefaults(); err == nil {
			t.Errorf("Config %+v accepted", cfg)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for _, tt := range []struct {
		endpoint string
		want     bool
	}{
		{"https://127.0.0.1:8443", true},
		{"https://127.9.9.9", true},
		{"https://[::1]:443", true},
		{"https://localhost:1", true},
		{"https://10.0.0.1:8443", false},
		{"https://example.com", false},
		{"https://localhost.example.com", false},
	} {
		got, err := IsLoopback(tt.endpoint)
		if err != nil || got != tt.want {
			t.Errorf("IsLoopback(%q) = %v, %v, want %v", tt.endpoint, got, err, tt.want)
		}
	}
}

// fakeLedger answers writes (honouring wait=committed if waitExt), status
// (Pending once per transaction), receipts and entries.
type fakeLedger struct {
	waitExt bool
	seq     atomic.Int64
	mu      sync.Mutex
	polled  map[string]bool
	reads   atomic.Int64
}

func (f *fakeLedger) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	p := r.URL.Path
	switch {
	case r.Method == http.MethodPost && p == "/app/transactions":
		var e api.LedgerEntry
		if err := json.NewDecoder(r.Body).Decode(&e); err != nil || e.Contents == "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		id := "2." + strconv.FormatInt(f.seq.Add(1), 10)
		w.Header().Set(api.TransactionIDHeader, id)
		res := api.WriteResult{CollectionID: "subledger:0"}
		if f.waitExt && r.URL.Query().Get("wait") == api.WaitCommitted {
			res.TransactionID, res.State = id, api.TxCommitted
			res.Receipt = &api.TransactionReceipt{State: api.StateReady, TransactionID: id, Receipt: &api.Receipt{}}
		}
		json.NewEncoder(w).Encode(res)
	case strings.HasSuffix(p, "/status"):
		id := strings.TrimSuffix(strings.TrimPrefix(p, "/app/transactions/"), "/status")
		f.mu.Lock()
		st := api.TxCommitted
		if !f.polled[id] {
			f.polled[id] = true
			st = api.TxPending
		}
		f.mu.Unlock()
		json.NewEncoder(w).Encode(api.TransactionStatus{State: st, TransactionID: id})
	case strings.HasSuffix(p, "/receipt"):
		json.NewEncoder(w).Encode(api.TransactionReceipt{State: api.StateReady, Receipt: &api.Receipt{}})
	case strings.HasPrefix(p, "/app/transactions/"):
		f.reads.Add(1)
		json.NewEncoder(w).Encode(api.LedgerQueryResult{State: api.StateReady, Entry: &api.LedgerEntry{Contents: "x"}})
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func newFakeClient(t *testing.T, h http.Handler) *client.Client {
	t.Helper()
	svc, err := identity.NewService("", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, nodeKey, err := identity.NewClientCert("node", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	nodeDER, err := svc.EndorseNode(&nodeKey.PublicKey, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	userDER, userKey, err := identity.NewClientCert("u", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := identity.EncodeKeyPEM(userKey)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{nodeDER}, PrivateKey: nodeKey}},
		ClientAuth:   tls.RequireAnyClientCert,
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, client.Options{
		CACertPEM: identity.EncodeCertPEM(svc.CertDER),
		CertPEM:   identity.EncodeCertPEM(userDER),
		KeyPEM:    keyPEM,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func TestRun(t *testing.T) {
	for _, tt := range []struct {
		name      string
		waitExt   bool
		cfg       Config
		wantMode  WaitMode
		wantReads bool
	}{
		{"auto with extension", true, Config{Wait: WaitAuto, ReceiptEvery: 1}, WaitExtension, false},
		{"auto without extension", false, Config{Wait: WaitAuto, ReceiptEvery: 2}, WaitPoll, false},
		{"poll with reads", true, Config{Wait: WaitPoll, ReadRatio: 0.5, ReceiptEvery: 1}, WaitPoll, true},
		{"none", true, Config{Wait: WaitNone}, WaitNone, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeLedger{waitExt: tt.waitExt, polled: map[string]bool{}}
			c := newFakeClient(t, f)
			cfg := tt.cfg
			cfg.Clients, cfg.Duration, cfg.Warmup, cfg.EntrySize = 4, 300*time.Millisecond, 50*time.Millisecond, 100
			res, err := Run(context.Background(), c, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if res.Wait != tt.wantMode {
				t.Errorf("Wait = %s, want %s", res.Wait, tt.wantMode)
			}
			if res.Errors != 0 {
				t.Errorf("Errors = %d (%v), want 0", res.Errors, res.ErrorSamples)
			}
			if res.Writes.Count == 0 {
				t.Fatal("no writes measured")
			}
			if got := int64(res.Writes.Count); got > f.seq.Load() {
				t.Errorf("measured writes %d > writes served %d", got, f.seq.Load())
			}
			if res.Writes.P50 > res.Writes.P99 || res.Writes.P99 > res.Writes.Max {
				t.Errorf("write percentiles out of order: %+v", res.Writes)
			}
			if tt.wantMode == WaitNone {
				if res.Committed.Count != 0 || res.Receipts.Count != 0 {
					t.Errorf("WaitNone measured %d commits, %d receipts, want 0", res.Committed.Count, res.Receipts.Count)
				}
			} else {
				if res.Committed.Count == 0 || res.Receipts.Count == 0 {
					t.Errorf("committed, receipts = %d, %d, want > 0", res.Committed.Count, res.Receipts.Count)
				}
				if res.Committed.P50 < res.Writes.P50 {
					t.Errorf("commit p50 %v < write p50 %v", res.Committed.P50, res.Writes.P50)
				}
			}
			if (res.Reads.Count > 0) != tt.wantReads || (f.reads.Load() > 0) != tt.wantReads {
				t.Errorf("reads measured %d, served %d, want reads %v", res.Reads.Count, f.reads.Load(), tt.wantReads)
			}
			b, err := json.Marshal(res)
			if err != nil || !strings.Contains(string(b), `"p99Ms"`) {
				t.Errorf("JSON = %s, %v", b, err)
			}
		})
	}
}

func TestRunRateCap(t *testing.T) {
	f := &fakeLedger{polled: map[string]bool{}}
	c := newFakeClient(t, f)
	const rate, clients = 100.0, 8
	res, err := Run(context.Background(), c, Config{Clients: clients, Duration: 500 * time.Millisecond, Rate: rate, Wait: WaitNone})
	if err != nil {
		t.Fatal(err)
	}
	// At most one operation per interval, plus one in flight per client.
	if max := int(rate*0.5) + clients + 1; res.Writes.Count > max {
		t.Errorf("writes = %d with rate %v over 0.5s, want ≤ %d", res.Writes.Count, rate, max)
	}
}

func TestBaselineAndReport(t *testing.T) {
	cfg := Config{Clients: 4, Duration: 200 * time.Millisecond, EntrySize: 64}
	base, err := RunBaseline(context.Background(), cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if base.Writes.Count == 0 || base.Errors != 0 || base.Wait != WaitNone {
		t.Fatalf("baseline = %+v", base)
	}
	ledger := &Result{Wait: WaitExtension, Committed: Stats{PerSec: base.Writes.PerSec / 2}}
	if r := NewReport(ledger, base); math.Abs(r.Ratio-0.5) > 1e-9 {
		t.Errorf("Ratio = %v, want 0.5", r.Ratio)
	}
	if r := NewReport(ledger, nil); r.Ratio != 0 {
		t.Errorf("Ratio without baseline = %v, want 0", r.Ratio)
	}
}

func TestNoopRejectsOtherClients(t *testing.T) {
	n, err := StartNoop()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	certDER, key, err := identity.NewClientCert("stranger", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := identity.EncodeKeyPEM(key)
	o := n.Options()
	o.CertPEM, o.KeyPEM = identity.EncodeCertPEM(certDER), keyPEM
	c, err := client.New(n.Endpoint(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	_, err = c.Append(context.Background(), "", "x", nil)
	var e *client.Error
	if !errorsAs(err, &e) || e.StatusCode != http.StatusForbidden {
		t.Errorf("Append as a stranger: %v, want 403", err)
	}
}

func errorsAs(err error, target **client.Error) bool { return errors.As(err, target) }

func TestRunSpreadUsesEveryEndpoint(t *testing.T) {
	fs := []*fakeLedger{{waitExt: true, polled: map[string]bool{}}, {waitExt: true, polled: map[string]bool{}}, {waitExt: true, polled: map[string]bool{}}}
	var cs []*client.Client
	for _, f := range fs {
		cs = append(cs, newFakeClient(t, f))
	}
	res, err := RunSpread(context.Background(), cs, Config{Clients: 6, Duration: 500 * time.Millisecond, Warmup: 200 * time.Millisecond, EntrySize: 64})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 {
		t.Errorf("Errors = %d (%v), want 0", res.Errors, res.ErrorSamples)
	}
	if len(res.Endpoints) != len(cs) {
		t.Errorf("Endpoints = %v, want %d", res.Endpoints, len(cs))
	}
	for i, f := range fs {
		if f.seq.Load() == 0 {
			t.Errorf("endpoint %d served no write", i)
		}
	}
	if res.MaxCommitGap <= 0 || res.MaxCommitGap > res.Window {
		t.Errorf("MaxCommitGap = %v, want in (0, %v]", res.MaxCommitGap, res.Window)
	}
}

func TestGapTracker(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	for _, tt := range []struct {
		name        string
		commits     []int // ms after the window's start, in any order
		wantGap     int   // ms
		wantGapFrom int   // ms
	}{
		{"none", nil, 1000, 0},
		{"from the start", []int{300, 400, 550, 800}, 300, 0},
		{"between", []int{10, 100, 700, 710, 990}, 600, 100},
		{"out of order", []int{100, 700, 10, 50, 990}, 600, 100},
		{"until the end", []int{10, 200}, 800, 200},
		{"outside the window ignored", []int{-50, 500, 1200}, 500, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := &gapTracker{from: t0, last: t0, end: at(1000)}
			for _, c := range tt.commits {
				g.commit(at(c))
			}
			gap, from := g.result()
			if gap != time.Duration(tt.wantGap)*time.Millisecond || from != time.Duration(tt.wantGapFrom)*time.Millisecond {
				t.Errorf("result = %v from %v, want %dms from %dms", gap, from, tt.wantGap, tt.wantGapFrom)
			}
		})
	}
}
