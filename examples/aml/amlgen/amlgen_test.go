package amlgen

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/cleanroom/runner"
)

func generate(t testing.TB, cfg Config) *Manifest {
	t.Helper()
	m, err := Generate(cfg, t.TempDir())
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return m
}

func TestDeterministic(t *testing.T) {
	cfg := Config{Seed: 7, RowsPerBank: 5000}
	a, b, c := generate(t, cfg), generate(t, cfg), generate(t, Config{Seed: 8, RowsPerBank: 5000})
	for i := range Banks {
		fa, fb, fc := read(t, a.Files[i]), read(t, b.Files[i]), read(t, c.Files[i])
		if !bytes.Equal(fa, fb) {
			t.Errorf("%s differs between two runs with the same seed", Banks[i])
		}
		if bytes.Equal(fa, fc) {
			t.Errorf("%s is the same for seeds 7 and 8", Banks[i])
		}
		if a.Rows[i] < 4000 || a.Rows[i] > 6000 {
			t.Errorf("%s has %d rows, want about 5000", Banks[i], a.Rows[i])
		}
	}
	if fmt.Sprint(a.Structuring, a.RoundTrips) != fmt.Sprint(b.Structuring, b.RoundTrips) {
		t.Error("planted patterns differ between two runs with the same seed")
	}
}

func TestConfigRefused(t *testing.T) {
	for _, cfg := range []Config{
		{RowsPerBank: 10},
		{RowsPerBank: MaxRowsPerBank + 1},
		{Weeks: MinWeeks - 1},
		{Structurers: MaxPatterns + 1},
		{RowsPerBank: 1000}, // too few customers for the default patterns
	} {
		dir := t.TempDir()
		if m, err := Generate(cfg, dir); err == nil {
			t.Errorf("Generate(%+v) = %d rows, want an error", cfg, m.Rows)
		}
		if left, _ := os.ReadDir(dir); len(left) > 0 {
			t.Errorf("Generate(%+v) failed but left %d files", cfg, len(left))
		}
	}
	if _, err := Generate(Config{}, filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("Generate into a missing directory succeeded")
	}
}

func read(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func tables(t testing.TB, m *Manifest) []runner.Table {
	t.Helper()
	var ts []runner.Table
	for i, name := range Banks {
		ts = append(ts, runner.Table{Name: name, Schema: Schema, CSV: read(t, m.Files[i]), Rules: Rules()})
	}
	return ts
}

// runContract runs a contract in process as the clean-room runner does and
// opens the result with the regulator's key.
func runContract(t testing.TB, ts []runner.Table, sql string) (string, *runner.Result) {
	t.Helper()
	reg, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ctx := []byte("aml example")
	res, err := runner.Run(context.Background(), runner.Job{
		Tables: ts, SQL: sql, Context: ctx,
		Recipients: []runner.Recipient{{ID: "regulator", Key: reg.PublicKey()}},
	})
	if err != nil {
		t.Fatalf("runner.Run: %v", err)
	}
	out, err := runner.Open(reg, ctx, res.Sealed[0].Ciphertext)
	if err != nil {
		t.Fatalf("runner.Open: %v", err)
	}
	return string(out), res
}

// TestContractsFindExactlyThePlanted runs both contracts over generated data
// under the banks' rules and checks that each returns exactly the planted
// patterns, and that an independent detector over the files agrees.
func TestContractsFindExactlyThePlanted(t *testing.T) {
	cfgs := []Config{{Seed: 1}, {Seed: 2, RowsPerBank: 12000, Structurers: 9, RoundTrips: 7, Decoys: 3}}
	if testing.Short() {
		cfgs = cfgs[1:]
	}
	for _, cfg := range cfgs {
		t.Run(fmt.Sprintf("seed%d", cfg.Seed), func(t *testing.T) {
			m := generate(t, cfg)
			if len(m.Structuring) != m.Config.Structurers || len(m.RoundTrips) != m.Config.RoundTrips {
				t.Fatalf("planted %d structurers and %d round trips, want %d and %d",
					len(m.Structuring), len(m.RoundTrips), m.Config.Structurers, m.Config.RoundTrips)
			}
			ts := tables(t, m)
			d := detect(t, m)
			for _, c := range Contracts() {
				want, err := m.Expected(c.Name)
				if err != nil {
					t.Fatal(err)
				}
				got, res := runContract(t, ts, c.SQL)
				if got != want {
					t.Errorf("contract %s found\n%s\nwant exactly the planted\n%s", c.Name, got, want)
				}
				if res.Suppressed != 0 {
					t.Errorf("contract %s suppressed %d rows, want 0", c.Name, res.Suppressed)
				}
				if d[c.Name] != want {
					t.Errorf("independent detector found for %s\n%s\nwant\n%s", c.Name, d[c.Name], want)
				}
			}
		})
	}
}

// TestManySeeds varies the seed, size, period and numbers of patterns and
// decoys: the contracts and the independent detector find exactly the
// planted patterns every time.
func TestManySeeds(t *testing.T) {
	if testing.Short() {
		t.Skip("eight generations and sixteen contract runs")
	}
	for seed := uint64(10); seed < 18; seed++ {
		cfg := Config{Seed: seed, RowsPerBank: 8000 + int(seed)*500, Structurers: int(seed%7) - 1, RoundTrips: int(seed%5) + 1,
			Decoys: int(seed%3) + 1, Weeks: MinWeeks + int(seed%20)}
		m := generate(t, cfg)
		ts := tables(t, m)
		d := detect(t, m)
		for _, c := range Contracts() {
			want, _ := m.Expected(c.Name)
			if got, _ := runContract(t, ts, c.SQL); got != want || d[c.Name] != want {
				t.Errorf("seed %d, contract %s found\n%s\nthe detector\n%s\nwant\n%s", seed, c.Name, got, d[c.Name], want)
			}
		}
	}
}

// TestDecoysWouldFoolNaiveRules checks that the noise and decoys give a
// naive rule something to be wrong about: single sub-threshold deposits,
// customers with several of them over a month, and money that comes back to
// the bank it left.
func TestDecoysWouldFoolNaiveRules(t *testing.T) {
	m := generate(t, Config{Seed: 1})
	rs := records(t, m)
	subs := map[string][]time.Time{} // customer -> sub-threshold deposits
	for _, r := range rs {
		if r.kind == "cash_deposit" && r.amount >= BandLow && r.amount < Threshold {
			subs[r.customer] = append(subs[r.customer], r.t)
		}
	}
	flagged := map[string]bool{}
	for _, s := range m.Structuring {
		flagged[s.Customer] = true
	}
	single, month := 0, 0
	for c, ts := range subs {
		if flagged[c] {
			continue
		}
		single++
		slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
		for i := 0; i+3 < len(ts); i++ {
			if ts[i+3].Sub(ts[i]) <= 30*24*time.Hour {
				month++
				break
			}
		}
	}
	if single < 50 {
		t.Errorf("%d unflagged customers with a sub-threshold deposit, want at least 50", single)
	}
	if month < m.Config.Decoys {
		t.Errorf("%d unflagged customers with four sub-threshold deposits within 30 days, want at least %d", month, m.Config.Decoys)
	}
}

func TestRuleBreakingQueriesRefused(t *testing.T) {
	m := generate(t, Config{Seed: 3, RowsPerBank: 2000, Structurers: 1, RoundTrips: 1, Decoys: -1})
	ts := tables(t, m)
	reg, _ := ecdh.X25519().GenerateKey(rand.Reader)
	cases := []struct{ sql, rule, column string }{
		{"SELECT holder_name, count(*) AS n FROM bank1 GROUP BY 1", runner.RuleForbidden, "holder_name"},
		{"SELECT customer_ref, count(*) FROM bank1 WHERE holder_name LIKE 'A%' GROUP BY 1", runner.RuleForbidden, "holder_name"},
		{"SELECT a.customer_ref, b.counterparty_account FROM bank1 a JOIN bank2 b ON a.payment_ref = b.payment_ref", runner.RuleJoinOnly, "counterparty_account"},
		{"SELECT payment_ref, count(*) FROM bank2 GROUP BY 1", runner.RuleJoinOnly, "payment_ref"},
		{"SELECT customer_ref, amount FROM bank3", runner.RuleAggregateOnly, "amount"},
		{"SELECT customer_ref, count(*) FROM bank1 WHERE amount > 9000 GROUP BY 1", runner.RuleAggregateOnly, "amount"},
		{"SELECT customer_ref, max(amount) FROM bank1 GROUP BY 1", runner.RuleAggregateOnly, "amount"},
		{"SELECT * FROM bank1", runner.RuleUnsupported, ""},
		{"SELECT customer_ref FROM bank1 UNION SELECT customer_ref FROM bank2", runner.RuleUnsupported, ""},
	}
	for _, tc := range cases {
		_, err := runner.Run(context.Background(), runner.Job{Tables: ts, SQL: tc.sql, Recipients: []runner.Recipient{{ID: "regulator", Key: reg.PublicKey()}}})
		var re *runner.RuleError
		if !errors.As(err, &re) {
			t.Errorf("Run(%q) = %v, want a rule error", tc.sql, err)
			continue
		}
		if re.Rule != tc.rule || re.Column != tc.column {
			t.Errorf("Run(%q) broke %s on column %q (%v), want %s on %q", tc.sql, re.Rule, re.Column, err, tc.rule, tc.column)
		}
		if !strings.Contains(err.Error(), tc.rule) {
			t.Errorf("error %q does not name rule %s", err, tc.rule)
		}
	}
}

// TestLarge generates a million rows per bank (AMLGEN_ROWS to change) and
// times generation, loading alone, and both contracts in process. It runs
// only when asked:
//
//	AMLGEN_LARGE=1 go test -run TestLarge -v -timeout 30m ./examples/aml/amlgen
func TestLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("a million rows per bank")
	}
	rows := 1_000_000
	if s := os.Getenv("AMLGEN_ROWS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("AMLGEN_ROWS: %v", err)
		}
		rows = n
	}
	if os.Getenv("AMLGEN_LARGE") == "" {
		t.Skip("set AMLGEN_LARGE=1 to run (takes minutes)")
	}
	start := time.Now()
	m := generate(t, Config{Seed: 1, RowsPerBank: rows})
	gen := time.Since(start)
	var size int64
	for _, f := range m.Files {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		size += st.Size()
	}
	t.Logf("generated %v rows (%.0f MB) in %v: %.0f rows/s", m.Rows, float64(size)/1e6, gen, float64(m.Rows[0]+m.Rows[1]+m.Rows[2])/gen.Seconds())
	ts := tables(t, m)
	start = time.Now()
	runContract(t, ts, "SELECT count(*) AS n FROM bank1")
	t.Logf("load only (a count over the three loaded tables): %v", time.Since(start))
	for _, c := range Contracts() {
		want, _ := m.Expected(c.Name)
		start := time.Now()
		got, _ := runContract(t, ts, c.SQL)
		t.Logf("contract %s: %v (load, check, run, seal)", c.Name, time.Since(start))
		if got != want {
			t.Errorf("contract %s found\n%s\nwant\n%s", c.Name, got, want)
		}
	}
	t.Logf("peak RSS %.0f MiB", peakRSS()/(1<<20))
}

// peakRSS returns the process's peak resident set size in bytes (Linux).
func peakRSS() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			return kb * 1024
		}
	}
	return 0
}

// rec is a parsed row.
type rec struct {
	bank                                   int
	txn, customer, kind, dir, cpBank, pref string
	t                                      time.Time
	amount                                 int64
}

func records(t testing.TB, m *Manifest) []rec {
	t.Helper()
	var rs []rec
	for b, name := range m.Files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		cr := csv.NewReader(f)
		head, err := cr.Read()
		if err != nil {
			t.Fatal(err)
		}
		col := map[string]int{}
		for i, h := range head {
			col[h] = i
		}
		for {
			row, err := cr.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			ts, err := time.Parse(TimeLayout, row[col["ts"]])
			if err != nil {
				t.Fatal(err)
			}
			amount, err := strconv.ParseInt(row[col["amount"]], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			rs = append(rs, rec{bank: b, txn: row[col["txn_id"]], customer: row[col["customer_ref"]], kind: row[col["kind"]],
				dir: row[col["direction"]], cpBank: row[col["counterparty_bank"]], pref: row[col["payment_ref"]], t: ts, amount: amount})
		}
		f.Close()
	}
	return rs
}

// detect finds both patterns from their definitions in plain Go, without
// SQL, and renders them as the contracts' results.
func detect(t testing.TB, m *Manifest) map[string]string {
	t.Helper()
	rs := records(t, m)

	// Structuring: per customer and ISO week, cash deposits in the band.
	type cw struct{ customer, week string }
	type agg struct {
		n     int
		total int64
		banks [3]bool
	}
	weeks := map[cw]*agg{}
	for _, r := range rs {
		if r.kind != "cash_deposit" || r.amount < BandLow || r.amount >= Threshold {
			continue
		}
		k := cw{r.customer, weekOf(r.t)}
		a := weeks[k]
		if a == nil {
			a = &agg{}
			weeks[k] = a
		}
		a.n++
		a.total += r.amount
		a.banks[r.bank] = true
	}
	var sRows []string
	for k, a := range weeks {
		if a.n < MinDeposits {
			continue
		}
		var bs []string
		for b, ok := range a.banks {
			if ok {
				bs = append(bs, Banks[b])
			}
		}
		sRows = append(sRows, fmt.Sprintf("%s,%s,%d,%s,%d", k.customer, k.week, a.n, strings.Join(bs, "+"), a.total))
	}
	slices.Sort(sRows)

	// Round trips: payments between the three banks, as (customer, bank)
	// nodes; a cycle through three banks whose times rise from the origin.
	type node struct {
		customer string
		bank     int
	}
	type payment struct {
		from, to node
		t        time.Time
		amount   int64
	}
	sides := map[string][]rec{}
	for _, r := range rs {
		if r.kind == "transfer" && r.pref != "" && r.cpBank != "ext" && slices.Contains(Banks[:], r.cpBank) {
			sides[r.pref] = append(sides[r.pref], r)
		}
	}
	outs := map[node][]payment{}
	for _, s := range sides {
		if len(s) != 2 || s[0].bank == s[1].bank {
			continue
		}
		o, i := s[0], s[1]
		if o.dir == "in" {
			o, i = i, o
		}
		p := payment{from: node{o.customer, o.bank}, to: node{i.customer, i.bank}, t: o.t, amount: o.amount}
		outs[p.from] = append(outs[p.from], p)
	}
	var rRows []string
	for _, ps := range outs {
		for _, e1 := range ps {
			for _, e2 := range outs[e1.to] {
				if e2.to.bank == e1.from.bank || e2.to.bank == e1.to.bank {
					continue
				}
				for _, e3 := range outs[e2.to] {
					if e3.to != e1.from {
						continue
					}
					if e2.t.Before(e1.t) || e3.t.Before(e2.t) || !e1.t.Before(e3.t) || e3.t.Sub(e1.t) > Window {
						continue
					}
					lo, hi := min(e1.amount, e2.amount, e3.amount), max(e1.amount, e2.amount, e3.amount)
					if 10*lo < 9*hi {
						continue
					}
					rRows = append(rRows, fmt.Sprintf("%s,%s,%s,%s:%s>%s:%s,%d,%d", formatTime(e1.t), Banks[e1.from.bank], e1.from.customer,
						Banks[e1.to.bank], e1.to.customer, Banks[e2.to.bank], e2.to.customer, e1.amount, e3.amount))
				}
			}
		}
	}
	slices.Sort(rRows)
	join := func(h string, rows []string) string {
		var b strings.Builder
		b.WriteString(h + "\n")
		for _, r := range rows {
			b.WriteString(r + "\n")
		}
		return b.String()
	}
	return map[string]string{
		ContractStructuring: join(StructuringHeader, sRows),
		ContractRoundTrips:  join(RoundTripHeader, rRows),
	}
}
