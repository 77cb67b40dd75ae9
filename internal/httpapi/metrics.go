package httpapi

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/parleyhq/parley/internal/engine"
)

// durationBuckets are the upper bounds, in seconds, of the request duration
// histogram.
var durationBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// metrics counts requests by route and status and keeps a duration
// histogram per route. Routes are the mux's patterns, a bounded set.
type metrics struct {
	mu       sync.Mutex
	requests map[requestKey]uint64
	hists    map[string]*histogram
}

type requestKey struct {
	route string
	code  int
}

type histogram struct {
	counts []uint64 // per bucket, not cumulative; last is +Inf
	sum    float64
	n      uint64
}

func newMetrics() *metrics {
	return &metrics{requests: make(map[requestKey]uint64), hists: make(map[string]*histogram)}
}

func (m *metrics) observe(route string, code int, d time.Duration) {
	s := d.Seconds()
	i, _ := slices.BinarySearch(durationBuckets, s)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests[requestKey{route, code}]++
	h := m.hists[route]
	if h == nil {
		h = &histogram{counts: make([]uint64, len(durationBuckets)+1)}
		m.hists[route] = h
	}
	h.counts[i]++
	h.sum += s
	h.n++
}

// write writes every metric in the Prometheus text exposition format
// (version 0.0.4).
func (m *metrics) write(w io.Writer, eng *engine.Engine) {
	var b strings.Builder
	em := eng.Metrics()
	counter := func(name, help string, v uint64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", name, help, name, name, v)
	}
	gauge := func(name, help string, v uint64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n%s %d\n", name, help, name, name, v)
	}
	counter("parley_engine_transactions_total", "Transactions sequenced by this node.", em.Transactions.Load())
	counter("parley_engine_signatures_total", "Signature transactions emitted by this node.", em.Signatures.Load())
	counter("parley_engine_conflicts_total", "Transactions refused for a conflicting read.", em.Conflicts.Load())
	counter("parley_engine_syncs_total", "Ledger fsync batches.", em.Syncs.Load())
	counter("parley_engine_entries_total", "Ledger entries persisted.", em.Entries.Load())
	gauge("parley_ledger_last_seqno", "Seqno of the last transaction in this node's log.", eng.Current().Seqno)
	gauge("parley_ledger_committed_seqno", "Seqno of the last committed signature transaction.", eng.CommittedID().Seqno)
	gauge("parley_ledger_view", "Current raft term (view).", eng.View())
	primary := uint64(0)
	if eng.IsPrimary() {
		primary = 1
	}
	gauge("parley_node_is_primary", "1 if this node is the primary.", primary)

	m.mu.Lock()
	keys := make([]requestKey, 0, len(m.requests))
	for k := range m.requests {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b requestKey) int {
		if c := strings.Compare(a.route, b.route); c != 0 {
			return c
		}
		return a.code - b.code
	})
	b.WriteString("# HELP parley_http_requests_total HTTP requests served, by route and status code.\n# TYPE parley_http_requests_total counter\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "parley_http_requests_total{route=\"%s\",code=\"%d\"} %d\n", escapeLabel(k.route), k.code, m.requests[k])
	}
	routes := make([]string, 0, len(m.hists))
	for r := range m.hists {
		routes = append(routes, r)
	}
	slices.Sort(routes)
	b.WriteString("# HELP parley_http_request_duration_seconds Time to serve an HTTP request, by route.\n# TYPE parley_http_request_duration_seconds histogram\n")
	for _, r := range routes {
		h := m.hists[r]
		l := escapeLabel(r)
		var cum uint64
		for i, ub := range durationBuckets {
			cum += h.counts[i]
			fmt.Fprintf(&b, "parley_http_request_duration_seconds_bucket{route=\"%s\",le=\"%s\"} %d\n", l, strconv.FormatFloat(ub, 'g', -1, 64), cum)
		}
		cum += h.counts[len(durationBuckets)]
		fmt.Fprintf(&b, "parley_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %d\n", l, cum)
		fmt.Fprintf(&b, "parley_http_request_duration_seconds_sum{route=\"%s\"} %s\n", l, strconv.FormatFloat(h.sum, 'g', -1, 64))
		fmt.Fprintf(&b, "parley_http_request_duration_seconds_count{route=\"%s\"} %d\n", l, h.n)
	}
	m.mu.Unlock()
	io.WriteString(w, b.String())
}

// escapeLabel escapes a label value: backslash, double quote and newline.
func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}
