package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/parleyhq/parley/client"
	"github.com/parleyhq/parley/internal/loadgen"
)

func newBenchCmd() *cobra.Command {
	cf := &connFlags{}
	var (
		cfg          loadgen.Config
		wait         string
		baseline     bool
		jsonOut      bool
		allowRemote  bool
		http1        bool
		minRatio     float64
		maxP99       time.Duration
		pollInterval time.Duration
		nodesFile    string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load-test a ledger and compare it with a no-op HTTPS server",
		Long: `Run a load generator against one ledger endpoint: --clients concurrent
clients (sharing one keep-alive HTTP/2 client, as an application would) write
--entry-size-byte entries, and read a fraction --read-ratio of the time, for
--warmup then --duration, then stop by themselves.

It prints throughput and latency p50/p90/p99/max for:
  write response        the POST's answer
  write → Committed     from sending a write to knowing it is committed: with
                        Parley's wait-for-commit extension (--wait extension,
                        chosen by auto when offered) the write answers at
                        commit; with --wait poll the status is polled, as ACL
                        clients do
  receipt after commit  every --receipt-every-th write also fetches its
                        receipt: time from commit until it is served
  reads                 GET of a recent entry

--baseline also starts, in this process, an HTTPS server on 127.0.0.1 with
the same kinds of certificates and mutual TLS that does nothing but answer
200 with a small JSON body, runs the same clients against it for the same
time first, and prints the ratio of committed appends/s to its requests/s.

--nodes FILE spreads the clients round-robin over every node of a cluster
(FILE is the nodes.json examples/cluster/start.sh writes: [{"endpoint"}]),
with the profile's certificates; backups forward writes to the primary.
Every run also reports the longest time in the window without a commit:
kill the primary mid-run to measure a failover's write unavailability
(examples/cluster/failover.sh does).

Targets for CI: --min-ratio (needs --baseline) and --max-p99 (write →
Committed, or the write response with --wait none) make the command exit 1
when unmet. Only loopback endpoints are accepted unless --allow-remote.`,
		Example: `  parley dev &
  parley bench --duration 10s --baseline
  parley bench --clients 64 --entry-size 1024 --duration 30s --warmup 5s --baseline --json > bench.json
  parley bench --read-ratio 0.9 --duration 10s
  parley bench --profile cl/profile.json --nodes cl/nodes.json   # a start.sh cluster
  parley bench --baseline --min-ratio 0.7 --max-p99 25ms   # CI gate`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Wait = loadgen.WaitMode(wait)
			if minRatio > 0 && !baseline {
				return &exitError{code: 2, err: fmt.Errorf("--min-ratio needs --baseline")}
			}
			p, err := cf.resolve()
			if err != nil {
				return err
			}
			if ok, err := loadgen.IsLoopback(p.Endpoint); err != nil || !ok {
				if err == nil && !allowRemote {
					err = fmt.Errorf("endpoint %s is not loopback: pass --allow-remote to load-test it", p.Endpoint)
				}
				if err != nil {
					return &exitError{code: 2, err: err}
				}
			}
			o, err := p.Options()
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			o.APIVersion = cf.apiVersion
			o.DisableHTTP2 = http1
			o.MinPollInterval = pollInterval
			o.MaxPollInterval = 8 * pollInterval
			endpoints := []string{p.Endpoint}
			if nodesFile != "" {
				if endpoints, err = nodeEndpoints(nodesFile); err != nil {
					return &exitError{code: 2, err: err}
				}
			}
			var cs []*client.Client
			for _, ep := range endpoints {
				if ok, err := loadgen.IsLoopback(ep); err != nil || (!ok && !allowRemote) {
					return &exitError{code: 2, err: fmt.Errorf("endpoint %s is not loopback: pass --allow-remote to load-test it", ep)}
				}
				c, err := client.New(ep, o)
				if err != nil {
					return &exitError{code: 2, err: err}
				}
				defer c.CloseIdleConnections()
				cs = append(cs, c)
			}
			ctx := cmd.Context()
			var base *loadgen.Result
			if baseline {
				if base, err = loadgen.RunBaseline(ctx, cfg, o); err != nil {
					return fmt.Errorf("baseline: %w", err)
				}
			}
			res, err := loadgen.RunSpread(ctx, cs, cfg)
			if err != nil {
				return err
			}
			rep := loadgen.NewReport(res, base)
			if jsonOut {
				if err := printJSON(cmd.OutOrStdout(), rep); err != nil {
					return err
				}
			} else {
				printBench(cmd.OutOrStdout(), rep, cfg)
			}
			return checkTargets(rep, minRatio, maxP99)
		},
	}
	cf.register(cmd.Flags())
	f := cmd.Flags()
	f.IntVar(&cfg.Clients, "clients", 64, "concurrent clients")
	f.DurationVar(&cfg.Duration, "duration", 10*time.Second, "measured time")
	f.DurationVar(&cfg.Warmup, "warmup", time.Second, "unmeasured time before it")
	f.IntVar(&cfg.EntrySize, "entry-size", 1024, "bytes of contents per write")
	f.Float64Var(&cfg.ReadRatio, "read-ratio", 0, "fraction of operations that read, 0..1")
	f.Float64Var(&cfg.Rate, "rate", 0, "cap on operations per second across clients (0: none)")
	f.StringVar(&cfg.CollectionID, "collection", "", "collection to write to")
	f.StringVar(&wait, "wait", string(loadgen.WaitAuto), "how to learn of commit: auto, extension, poll or none")
	f.IntVar(&cfg.ReceiptEvery, "receipt-every", 10, "fetch the receipt of every n-th write of each client (0: never)")
	f.DurationVar(&pollInterval, "poll-interval", time.Millisecond, "first status/receipt poll interval (backs off to 8x)")
	f.BoolVar(&baseline, "baseline", false, "also measure a no-op HTTPS+mTLS server and print the ratio")
	f.BoolVar(&jsonOut, "json", false, "print the report as JSON")
	f.BoolVar(&allowRemote, "allow-remote", false, "allow a non-loopback endpoint")
	f.StringVar(&nodesFile, "nodes", "", "spread clients over the endpoints of this nodes.json (examples/cluster/start.sh)")
	f.BoolVar(&http1, "http1", false, "use HTTP/1.1 (one connection per concurrent request) instead of HTTP/2")
	f.Float64Var(&minRatio, "min-ratio", 0, "exit 1 if committed appends/s ÷ no-op requests/s is below this")
	f.DurationVar(&maxP99, "max-p99", 0, "exit 1 if p99 write → Committed is above this")
	return cmd
}

// maxNodesFile bounds a --nodes file.
const maxNodesFile = 1 << 20

// nodeEndpoints reads the endpoints of a nodes.json: host:port or https
// URLs.
func nodeEndpoints(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read nodes: %w", err)
	}
	if len(b) > maxNodesFile {
		return nil, fmt.Errorf("read nodes %s: larger than %d bytes", path, maxNodesFile)
	}
	var nodes []struct {
		Endpoint string `json:"endpoint"`
	}
	if err := json.Unmarshal(b, &nodes); err != nil {
		return nil, fmt.Errorf("read nodes %s: %w", path, err)
	}
	var eps []string
	for i, n := range nodes {
		switch {
		case n.Endpoint == "":
			return nil, fmt.Errorf("read nodes %s: node %d has no endpoint", path, i)
		case strings.Contains(n.Endpoint, "://"):
			eps = append(eps, n.Endpoint)
		default:
			eps = append(eps, "https://"+n.Endpoint)
		}
	}
	if len(eps) == 0 {
		return nil, fmt.Errorf("read nodes %s: no node", path)
	}
	return eps, nil
}

// checkTargets returns an exit error naming every target the report
// misses.
func checkTargets(rep *loadgen.Report, minRatio float64, maxP99 time.Duration) error {
	var missed []string
	res := rep.Ledger
	commit := res.Committed
	if res.Wait == loadgen.WaitNone {
		commit = res.Writes
	}
	if res.Writes.Count == 0 && res.Reads.Count == 0 {
		missed = append(missed, "no operation completed")
	}
	if minRatio > 0 && rep.Ratio < minRatio {
		missed = append(missed, fmt.Sprintf("ratio %.3f < %.3f", rep.Ratio, minRatio))
	}
	if maxP99 > 0 && (commit.Count == 0 || commit.P99 > maxP99) {
		missed = append(missed, fmt.Sprintf("p99 write → Committed %v > %v", commit.P99, maxP99))
	}
	if len(missed) == 0 {
		return nil
	}
	return &exitError{code: 1, err: fmt.Errorf("bench targets missed: %v", missed)}
}

func printBench(w io.Writer, rep *loadgen.Report, cfg loadgen.Config) {
	res := rep.Ledger
	fmt.Fprintf(w, "parley bench %s: %d clients, %v measured after %v warmup, %d-byte entries, read ratio %.2f, commit by %s\n\n",
		res.Endpoint, res.Clients, cfg.Duration, cfg.Warmup, res.EntrySize, res.ReadRatio, res.Wait)
	fmt.Fprintf(w, "  %-24s %9s %10s %9s %9s %9s %9s\n", "", "count", "per sec", "p50", "p90", "p99", "max")
	row := func(name string, s loadgen.Stats) {
		if s.Count == 0 {
			return
		}
		fmt.Fprintf(w, "  %-24s %9d %10.1f %9s %9s %9s %9s\n", name, s.Count, s.PerSec,
			ms(s.P50), ms(s.P90), ms(s.P99), ms(s.Max))
	}
	row("write response", res.Writes)
	row("write → Committed", res.Committed)
	row("receipt after commit", res.Receipts)
	row("reads", res.Reads)
	if len(res.Endpoints) > 1 {
		fmt.Fprintf(w, "\n  clients spread over %s\n", strings.Join(res.Endpoints, ", "))
	}
	if res.Wait != loadgen.WaitNone {
		fmt.Fprintf(w, "\n  longest time without a commit: %s, from %s into the window\n", ms(res.MaxCommitGap), ms(res.MaxCommitGapAt))
	}
	if rep.Baseline != nil {
		row("no-op HTTPS baseline", rep.Baseline.Writes)
		fmt.Fprintf(w, "\n  committed appends/s ÷ no-op requests/s = %.3f\n", rep.Ratio)
	}
	if res.Errors > 0 {
		fmt.Fprintf(w, "\n  %d errors, e.g.:\n", res.Errors)
		for _, e := range res.ErrorSamples {
			fmt.Fprintf(w, "    %s\n", e)
		}
	}
	if rep.Baseline != nil && rep.Baseline.Errors > 0 {
		fmt.Fprintf(w, "\n  baseline: %d errors, e.g. %v\n", rep.Baseline.Errors, rep.Baseline.ErrorSamples)
	}
}

// ms formats a latency in milliseconds.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}
