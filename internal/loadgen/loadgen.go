// Package loadgen is the load generator behind `parley bench`: a fixed
// number of concurrent clients write (and optionally read) ledger entries
// against one endpoint (or spread over the nodes of a cluster) for a fixed
// time, and it reports throughput and latency percentiles for the write
// response, write to Committed, receipt availability after commit, and
// reads, and the longest time without a commit (a failover's write
// unavailability).
//
// A run is bounded: it talks only to the clients it is given, and stops
// by itself when its duration is over. [StartNoop] starts an HTTPS server
// that does nothing, so that a run can compare a ledger with the cost of
// HTTPS and mutual TLS alone on the same machine.
//
// # Example
//
//	res, err := loadgen.Run(ctx, c, loadgen.Config{Clients: 64, Duration: 10 * time.Second})
//	if err != nil { … }
//	fmt.Println(res.Committed.PerSec, res.Committed.P99)
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/parleyhq/parley/client"
)

// WaitMode says how a run learns that a write is committed.
type WaitMode string

// Wait modes.
const (
	// WaitAuto uses WaitExtension if the server honours it, else WaitPoll.
	WaitAuto WaitMode = "auto"
	// WaitExtension writes with Parley's wait=committed: one round trip
	// returns at commit, so the write response is the commit.
	WaitExtension WaitMode = "extension"
	// WaitPoll writes as ACL clients do, then polls the status.
	WaitPoll WaitMode = "poll"
	// WaitNone only writes: no commit or receipt latency.
	WaitNone WaitMode = "none"
)

// Limits on a Config.
const (
	MaxClients   = 10000
	MaxEntrySize = 1 << 20
)

// Config is one run. Zero values take the defaults noted.
type Config struct {
	Clients   int           // concurrent clients; default 64
	Duration  time.Duration // measured time; default 10s
	Warmup    time.Duration // unmeasured time before it; default none
	EntrySize int           // bytes of contents per write; default 1024
	ReadRatio float64       // fraction of operations that read, 0..1
	// Rate caps operations per second across all clients; 0 means none.
	Rate         float64
	CollectionID string   // empty means the default collection
	Wait         WaitMode // default WaitAuto
	// ReceiptEvery makes every n-th committed write of each client also
	// fetch its receipt, measuring how long after commit it is available;
	// 0 means never.
	ReceiptEvery int
}

func (c *Config) setDefaults() error {
	if c.Clients == 0 {
		c.Clients = 64
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.EntrySize == 0 {
		c.EntrySize = 1024
	}
	if c.Wait == "" {
		c.Wait = WaitAuto
	}
	switch {
	case c.Clients < 1 || c.Clients > MaxClients:
		return fmt.Errorf("clients %d: want 1 to %d", c.Clients, MaxClients)
	case c.Duration < 0 || c.Warmup < 0:
		return errors.New("duration and warmup must not be negative")
	case c.EntrySize < 1 || c.EntrySize > MaxEntrySize:
		return fmt.Errorf("entry size %d: want 1 to %d", c.EntrySize, MaxEntrySize)
	case !(c.ReadRatio >= 0 && c.ReadRatio <= 1):
		return fmt.Errorf("read ratio %v: want 0 to 1", c.ReadRatio)
	case c.Rate < 0:
		return fmt.Errorf("rate %v: must not be negative", c.Rate)
	case c.ReceiptEvery < 0:
		return fmt.Errorf("receipt-every %d: must not be negative", c.ReceiptEvery)
	}
	switch c.Wait {
	case WaitAuto, WaitExtension, WaitPoll, WaitNone:
	default:
		return fmt.Errorf("wait mode %q: want auto, extension, poll or none", c.Wait)
	}
	return nil
}

// Result is the outcome of a run.
type Result struct {
	Endpoint  string        `json:"endpoint"`
	Clients   int           `json:"clients"`
	EntrySize int           `json:"entrySize"`
	ReadRatio float64       `json:"readRatio"`
	Wait      WaitMode      `json:"wait"` // the mode used: never auto
	Window    time.Duration `json:"-"`
	WindowSec float64       `json:"durationSec"`
	// Writes is the latency of the write's response.
	Writes Stats `json:"writes"`
	// Committed is the latency from sending a write to knowing it is
	// committed; PerSec is committed appends per second.
	Committed Stats `json:"committed"`
	// Receipts is the latency from commit to the receipt being served.
	Receipts Stats `json:"receipts"`
	Reads    Stats `json:"reads"`
	// Errors counts failed operations in the window; ErrorSamples holds
	// a few distinct messages.
	Errors       int      `json:"errors"`
	ErrorSamples []string `json:"errorSamples,omitempty"`
	// Endpoints are the endpoints the clients were spread over, when
	// more than one.
	Endpoints []string `json:"endpoints,omitempty"`
	// MaxCommitGap is the longest time in the window during which no
	// write committed (from the window's start, between two commits, or
	// until its end), and MaxCommitGapAt when it began, from the window's
	// start: during a primary failover, the write unavailability.
	MaxCommitGap   time.Duration `json:"-"`
	MaxCommitGapAt time.Duration `json:"-"`
	MaxCommitGapMs float64       `json:"maxCommitGapMs"`
	GapAtMs        float64       `json:"maxCommitGapAtMs"`
}

// maxErrorSamples bounds Result.ErrorSamples.
const maxErrorSamples = 5

// errorPause is how long a client waits after a failed operation before
// the next, so that an endpoint that is down (a killed node) is not
// spun on.
const errorPause = 5 * time.Millisecond

// Run runs cfg against c and returns the figures of the measured window.
// It returns when the warmup and the duration have passed, or ctx ends.
func Run(ctx context.Context, c *client.Client, cfg Config) (*Result, error) {
	return RunSpread(ctx, []*client.Client{c}, cfg)
}

// RunSpread is Run with the clients spread round-robin over cs (one per
// node of a cluster, say: backups forward writes to the primary). The
// first write, which learns the wait mode, goes to cs[0].
func RunSpread(ctx context.Context, cs []*client.Client, cfg Config) (*Result, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if len(cs) == 0 {
		return nil, errors.New("no client")
	}
	c := cs[0]
	contents := func(worker, n int) string {
		s := fmt.Sprintf("parley bench w%d n%d ", worker, n)
		if len(s) >= cfg.EntrySize {
			return s[:cfg.EntrySize]
		}
		return s + strings.Repeat("x", cfg.EntrySize-len(s))
	}

	// One write first, to learn the wait mode and have an entry to read.
	ids := &idRing{}
	mode := cfg.Wait
	probeCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	switch mode {
	case WaitAuto, WaitExtension:
		res, err := c.AppendAndWait(probeCtx, cfg.CollectionID, contents(-1, 0), nil)
		if err != nil {
			return nil, fmt.Errorf("first write: %w", err)
		}
		ids.add(res.TransactionID)
		ok, _ := c.WaitExtension()
		if mode == WaitExtension && !ok {
			return nil, errors.New("server does not honour wait=committed")
		}
		mode = map[bool]WaitMode{true: WaitExtension, false: WaitPoll}[ok]
	default:
		id, err := c.Append(probeCtx, cfg.CollectionID, contents(-1, 0), nil)
		if err != nil {
			return nil, fmt.Errorf("first write: %w", err)
		}
		ids.add(id)
	}

	start := time.Now()
	measureFrom := start.Add(cfg.Warmup)
	end := measureFrom.Add(cfg.Duration)
	runCtx, stop := context.WithDeadline(ctx, end)
	defer stop()
	var pace *pacer
	if cfg.Rate > 0 {
		pace = &pacer{interval: time.Duration(float64(time.Second) / cfg.Rate)}
	}

	gaps := &gapTracker{last: measureFrom, from: measureFrom, end: end}
	workers := make([]*worker, cfg.Clients)
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{
			id: i, c: cs[i%len(cs)], cfg: &cfg, gaps: gaps, mode: mode, ids: ids, pace: pace,
			from: measureFrom, end: end, contents: contents,
			rng: rand.New(rand.NewPCG(uint64(i), uint64(start.UnixNano()))),
		}
		for _, r := range []*recorder{&w.writes, &w.committed, &w.receipts, &w.reads} {
			r.rng = w.rng
		}
		workers[i] = w
		wg.Go(func() { w.run(runCtx) })
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	window := cfg.Duration
	pick := func(f func(*worker) *recorder) []*recorder {
		out := make([]*recorder, len(workers))
		for i, w := range workers {
			out[i] = f(w)
		}
		return out
	}
	res := &Result{
		Endpoint:  c.Endpoint(),
		Clients:   cfg.Clients,
		EntrySize: cfg.EntrySize,
		ReadRatio: cfg.ReadRatio,
		Wait:      mode,
		Window:    window,
		WindowSec: window.Seconds(),
		Writes:    summarize(pick(func(w *worker) *recorder { return &w.writes }), window),
		Committed: summarize(pick(func(w *worker) *recorder { return &w.committed }), window),
		Receipts:  summarize(pick(func(w *worker) *recorder { return &w.receipts }), window),
		Reads:     summarize(pick(func(w *worker) *recorder { return &w.reads }), window),
	}
	if len(cs) > 1 {
		for _, c := range cs {
			res.Endpoints = append(res.Endpoints, c.Endpoint())
		}
	}
	if mode != WaitNone {
		res.MaxCommitGap, res.MaxCommitGapAt = gaps.result()
		res.MaxCommitGapMs = float64(res.MaxCommitGap) / float64(time.Millisecond)
		res.GapAtMs = float64(res.MaxCommitGapAt) / float64(time.Millisecond)
	}
	seen := map[string]bool{}
	for _, w := range workers {
		res.Errors += w.errors
		for _, e := range w.errorSamples {
			if !seen[e] && len(res.ErrorSamples) < maxErrorSamples {
				seen[e] = true
				res.ErrorSamples = append(res.ErrorSamples, e)
			}
		}
	}
	return res, nil
}

// worker is one client's loop and its own figures.
type worker struct {
	id       int
	c        *client.Client
	cfg      *Config
	mode     WaitMode
	ids      *idRing
	pace     *pacer
	gaps     *gapTracker
	from     time.Time
	end      time.Time
	contents func(worker, n int) string
	rng      *rand.Rand

	writes, committed, receipts, reads recorder
	errors                             int
	failed                             bool // the last operation failed
	errorSamples                       []string
	n                                  int
}

// measured reports whether an operation that started at t0 and finished
// now counts.
func (w *worker) measured(t0, now time.Time) bool {
	return !t0.Before(w.from) && !now.After(w.end)
}

func (w *worker) fail(ctx context.Context, t0 time.Time, err error) {
	w.failed = true
	if ctx.Err() != nil || t0.Before(w.from) {
		return // cut off by the end of the run, or during warmup
	}
	w.errors++
	if len(w.errorSamples) < maxErrorSamples {
		w.errorSamples = append(w.errorSamples, err.Error())
	}
}

// pause waits errorPause, or until ctx ends.
func pause(ctx context.Context) {
	t := time.NewTimer(errorPause)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (w *worker) run(ctx context.Context) {
	for ctx.Err() == nil {
		if w.pace != nil && w.pace.wait(ctx) != nil {
			return
		}
		w.failed = false
		if w.cfg.ReadRatio > 0 && w.rng.Float64() < w.cfg.ReadRatio {
			w.read(ctx)
		} else {
			w.write(ctx)
		}
		if w.failed {
			pause(ctx)
		}
	}
}

func (w *worker) read(ctx context.Context) {
	t0 := time.Now()
	id := w.ids.pick(w.rng)
	var err error
	if id == "" {
		_, err = w.c.Current(ctx, w.cfg.CollectionID)
	} else {
		_, err = w.c.Entry(ctx, id, w.cfg.CollectionID)
	}
	if err != nil {
		w.fail(ctx, t0, err)
		return
	}
	if now := time.Now(); w.measured(t0, now) {
		w.reads.add(now.Sub(t0))
	}
}

func (w *worker) write(ctx context.Context) {
	w.n++
	body := w.contents(w.id, w.n)
	t0 := time.Now()
	var id string
	var committedAt time.Time
	switch w.mode {
	case WaitExtension:
		res, err := w.c.AppendAndWait(ctx, w.cfg.CollectionID, body, nil)
		if err != nil {
			w.fail(ctx, t0, err)
			return
		}
		id, committedAt = res.TransactionID, time.Now()
		w.gaps.commit(committedAt)
		if w.measured(t0, committedAt) {
			w.writes.add(committedAt.Sub(t0))
			w.committed.add(committedAt.Sub(t0))
		}
	default:
		var err error
		id, err = w.c.Append(ctx, w.cfg.CollectionID, body, nil)
		if err != nil {
			w.fail(ctx, t0, err)
			return
		}
		if now := time.Now(); w.measured(t0, now) {
			w.writes.add(now.Sub(t0))
		}
		if w.mode == WaitNone {
			w.ids.add(id)
			return
		}
		if err := w.c.WaitCommitted(ctx, id); err != nil {
			w.fail(ctx, t0, err)
			return
		}
		committedAt = time.Now()
		w.gaps.commit(committedAt)
		if w.measured(t0, committedAt) {
			w.committed.add(committedAt.Sub(t0))
		}
	}
	w.ids.add(id)
	if w.cfg.ReceiptEvery == 0 || w.n%w.cfg.ReceiptEvery != 0 {
		return
	}
	if err := w.receipt(ctx, id); err != nil {
		w.fail(ctx, t0, err)
		return
	}
	if now := time.Now(); w.measured(t0, now) {
		w.receipts.add(now.Sub(committedAt))
	}
}

// notYetKnownFor bounds how long a receipt fetch retries a node that does
// not know the transaction yet.
const notYetKnownFor = 5 * time.Second

// receipt fetches the receipt of id. A backup that has not yet learned of
// a commit the primary answered says TransactionNotFound: that is retried,
// every errorPause, for up to notYetKnownFor.
func (w *worker) receipt(ctx context.Context, id string) error {
	deadline := time.Now().Add(notYetKnownFor)
	for {
		_, err := w.c.Receipt(ctx, id)
		var ce *client.Error
		if err == nil || !errors.As(err, &ce) || ce.StatusCode != http.StatusNotFound || ce.Code != "TransactionNotFound" || time.Now().After(deadline) {
			return err
		}
		pause(ctx)
	}
}

// gapTracker finds the longest time without a commit in [from, end].
type gapTracker struct {
	mu        sync.Mutex
	from, end time.Time
	last      time.Time // the last commit, or from
	max       time.Duration
	maxAt     time.Time
}

// commit notes a write known committed at t.
func (g *gapTracker) commit(t time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if t.Before(g.from) || t.After(g.end) {
		return
	}
	if d := t.Sub(g.last); d > g.max {
		g.max, g.maxAt = d, g.last
	}
	if t.After(g.last) {
		g.last = t
	}
}

// result returns the longest gap, counting the one from the last commit
// to the end, and when it began, from the window's start.
func (g *gapTracker) result() (gap, at time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	max, maxAt := g.max, g.maxAt
	if d := g.end.Sub(g.last); d > max {
		max, maxAt = d, g.last
	}
	return max, maxAt.Sub(g.from)
}

// idRing holds the ids of recent writes for reads to pick from.
type idRing struct {
	mu   sync.Mutex
	ids  [1024]string
	n    int
	next int
}

func (r *idRing) add(id string) {
	r.mu.Lock()
	r.ids[r.next] = id
	r.next = (r.next + 1) % len(r.ids)
	r.n = min(r.n+1, len(r.ids))
	r.mu.Unlock()
}

// pick returns a random recent id, or "" if there is none.
func (r *idRing) pick(rng *rand.Rand) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == 0 {
		return ""
	}
	return r.ids[rng.IntN(r.n)]
}

// pacer spaces operations interval apart across all workers. It does not
// catch up after falling behind.
type pacer struct {
	mu       sync.Mutex
	next     time.Time
	interval time.Duration
}

func (p *pacer) wait(ctx context.Context) error {
	p.mu.Lock()
	now := time.Now()
	if p.next.Before(now) {
		p.next = now
	}
	at := p.next
	p.next = p.next.Add(p.interval)
	p.mu.Unlock()
	d := at.Sub(now)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Report is a ledger run and, optionally, the no-op baseline of the same
// run.
type Report struct {
	Ledger   *Result `json:"ledger"`
	Baseline *Result `json:"baseline,omitempty"`
	// Ratio is the ledger's committed appends per second (its writes per
	// second with WaitNone) over the baseline's requests per second.
	Ratio float64 `json:"ratio,omitempty"`
}

// RunBaseline starts a [Noop] server and runs cfg against it as plain
// writes, with client options like opts (transport settings; the
// certificates are the no-op server's).
func RunBaseline(ctx context.Context, cfg Config, opts client.Options) (*Result, error) {
	n, err := StartNoop()
	if err != nil {
		return nil, err
	}
	defer n.Close()
	o := n.Options()
	o.DisableHTTP2 = opts.DisableHTTP2
	o.APIVersion = opts.APIVersion
	c, err := client.New(n.Endpoint(), o)
	if err != nil {
		return nil, fmt.Errorf("baseline client: %w", err)
	}
	defer c.CloseIdleConnections()
	cfg.Wait = WaitNone
	cfg.ReadRatio = 0
	cfg.ReceiptEvery = 0
	return Run(ctx, c, cfg)
}

// NewReport combines a ledger run with its baseline.
func NewReport(ledger, baseline *Result) *Report {
	r := &Report{Ledger: ledger, Baseline: baseline}
	if baseline != nil && baseline.Writes.PerSec > 0 {
		rate := ledger.Committed.PerSec
		if ledger.Wait == WaitNone {
			rate = ledger.Writes.PerSec
		}
		r.Ratio = rate / baseline.Writes.PerSec
	}
	return r
}

// IsLoopback reports whether endpoint's host is a loopback address or
// "localhost", without resolving any name.
func IsLoopback(endpoint string) (bool, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return false, fmt.Errorf("parse endpoint: %w", err)
	}
	h := u.Hostname()
	if strings.EqualFold(h, "localhost") {
		return true, nil
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback(), nil
}
