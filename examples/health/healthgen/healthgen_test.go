package healthgen

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
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

func read(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDeterministic(t *testing.T) {
	a, b, c := generate(t, Config{Seed: 5, RowsPerHospital: 3000}), generate(t, Config{Seed: 5, RowsPerHospital: 3000}), generate(t, Config{Seed: 6, RowsPerHospital: 3000})
	for i := range Hospitals {
		fa, fb, fc := read(t, a.Files[i]), read(t, b.Files[i]), read(t, c.Files[i])
		if !bytes.Equal(fa, fb) {
			t.Errorf("%s differs between two runs with the same seed", Hospitals[i])
		}
		if bytes.Equal(fa, fc) {
			t.Errorf("%s is the same for seeds 5 and 6", Hospitals[i])
		}
		if a.Rows[i] < 2000 || a.Rows[i] > 4500 {
			t.Errorf("%s has %d rows, want about 3000", Hospitals[i], a.Rows[i])
		}
	}
}

func TestConfigRefused(t *testing.T) {
	for _, rows := range []int{-1, 999, MaxRowsPerHospital + 1} {
		dir := t.TempDir()
		if _, err := Generate(Config{RowsPerHospital: rows}, dir); err == nil {
			t.Errorf("Generate with %d rows per hospital succeeded, want an error", rows)
		}
		if left, _ := os.ReadDir(dir); len(left) > 0 {
			t.Errorf("Generate with %d rows failed but left %d files", rows, len(left))
		}
	}
	if _, err := Generate(Config{}, t.TempDir()+"/missing"); err == nil {
		t.Error("Generate into a missing directory succeeded")
	}
}

func run(t testing.TB, m *Manifest, sql string) (string, *runner.Result, error) {
	t.Helper()
	var ts []runner.Table
	for i, name := range Hospitals {
		ts = append(ts, runner.Table{Name: name, Schema: Schema, CSV: read(t, m.Files[i]), Rules: Rules()})
	}
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	res, err := runner.Run(context.Background(), runner.Job{Tables: ts, SQL: sql, Recipients: []runner.Recipient{{ID: "hospital1", Key: k.PublicKey()}}})
	if err != nil {
		return "", nil, err
	}
	out, err := runner.Open(k, nil, res.Sealed[0].Ciphertext)
	if err != nil {
		t.Fatal(err)
	}
	return string(out), res, nil
}

// plain computes the contract's result from the CSV files in plain Go: per
// diagnosis and age band, distinct patients over all hospitals, admissions,
// mean stay rounded to 2 places and deaths, keeping only the cells to which
// every hospital contributes at least MinGroup distinct patients. It
// returns the result and the number of cells dropped.
func plain(t testing.TB, m *Manifest) (string, int) {
	t.Helper()
	type agg struct {
		per        [3]map[string]bool
		all        map[string]bool
		n, stay, d int64
	}
	cells := map[[2]string]*agg{}
	for h, name := range m.Files {
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
		for i, c := range head {
			col[c] = i
		}
		for {
			row, err := cr.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			k := [2]string{row[col["diagnosis"]], row[col["age_band"]]}
			a := cells[k]
			if a == nil {
				a = &agg{all: map[string]bool{}, per: [3]map[string]bool{{}, {}, {}}}
				cells[k] = a
			}
			p := row[col["patient_ref"]]
			a.per[h][p] = true
			a.all[p] = true
			a.n++
			s, err := strconv.ParseInt(row[col["length_of_stay"]], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			a.stay += s
			if row[col["outcome"]] == "died" {
				a.d++
			}
		}
		f.Close()
	}
	var rows []string
	dropped := 0
	for k, a := range cells {
		if len(a.per[0]) < MinGroup || len(a.per[1]) < MinGroup || len(a.per[2]) < MinGroup {
			dropped++
			continue
		}
		mean := math.Round(float64(a.stay)/float64(a.n)*100) / 100
		rows = append(rows, fmt.Sprintf("%s,%s,%d,%d,%s,%d", k[0], k[1], len(a.all), a.n, strconv.FormatFloat(mean, 'g', -1, 64), a.d))
	}
	slices.Sort(rows)
	return Header + "\n" + strings.Join(append(rows, ""), "\n"), dropped
}

// TestCohortEqualsPlainGo runs the contract under the hospitals' rules and
// checks the result against a plain-Go computation over the files, that
// small groups were suppressed, and that de-duplication mattered.
func TestCohortEqualsPlainGo(t *testing.T) {
	cfgs := []Config{{Seed: 1}, {Seed: 2, RowsPerHospital: 5000}}
	if testing.Short() {
		cfgs = cfgs[1:]
	}
	for _, cfg := range cfgs {
		t.Run(fmt.Sprintf("seed%d", cfg.Seed), func(t *testing.T) {
			m := generate(t, cfg)
			got, res, err := run(t, m, CohortSQL)
			if err != nil {
				t.Fatalf("run contract: %v", err)
			}
			want, dropped := plain(t, m)
			if got != want {
				t.Errorf("contract result\n%s\nwant (plain Go)\n%s", got, want)
			}
			if got != m.Expected {
				t.Errorf("contract result\n%s\nwant (manifest)\n%s", got, m.Expected)
			}
			if res.Suppressed != dropped || res.Suppressed != m.Suppressed {
				t.Errorf("runner suppressed %d rows, plain Go drops %d, manifest says %d", res.Suppressed, dropped, m.Suppressed)
			}
			if res.Suppressed == 0 || res.Rows < 20 {
				t.Errorf("%d rows kept and %d suppressed, want some of each", res.Rows, res.Suppressed)
			}
			// De-duplication: some kept cell has fewer patients than the
			// sum of the hospitals' own counts would give, i.e. admissions
			// of one patient at several hospitals were counted once.
			if !strings.Contains(got, ",") || dedupCells(t, m) == 0 {
				t.Error("no cell has a patient seen at more than one hospital")
			}
		})
	}
}

// TestManySeeds checks the contract against plain Go for more seeds and sizes.
func TestManySeeds(t *testing.T) {
	if testing.Short() {
		t.Skip("six generations and contract runs")
	}
	for seed := uint64(10); seed < 16; seed++ {
		m := generate(t, Config{Seed: seed, RowsPerHospital: 1000 + int(seed-10)*3000})
		got, res, err := run(t, m, CohortSQL)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		want, dropped := plain(t, m)
		if got != want || got != m.Expected || res.Suppressed != dropped {
			t.Errorf("seed %d: contract result (%d suppressed)\n%s\nwant (%d dropped)\n%s", seed, res.Suppressed, got, dropped, want)
		}
	}
}

// dedupCells counts the cells with a patient admitted at two hospitals.
func dedupCells(t testing.TB, m *Manifest) int {
	seen := map[string]map[string]int{} // cell -> patient -> hospitals bitmask
	for h, name := range m.Files {
		cr := csv.NewReader(bytes.NewReader(read(t, name)))
		rows, err := cr.ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows[1:] {
			k := r[5] + "," + r[3]
			if seen[k] == nil {
				seen[k] = map[string]int{}
			}
			seen[k][r[1]] |= 1 << h
		}
	}
	n := 0
	for _, ps := range seen {
		for _, mask := range ps {
			if mask&(mask-1) != 0 {
				n++
				break
			}
		}
	}
	return n
}

// TestSmallGroupsSuppressed runs a query that groups finely enough that
// every group is below the minimum: all its rows are suppressed.
func TestSmallGroupsSuppressed(t *testing.T) {
	m := generate(t, Config{Seed: 3, RowsPerHospital: 3000})
	got, res, err := run(t, m, `SELECT h1.diagnosis, h1.admitted, count(*) AS n FROM hospital1 h1 GROUP BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	if got != "diagnosis,admitted,n\n" || res.Rows != 0 || res.Suppressed == 0 {
		t.Errorf("per-day groups gave %d rows (%d suppressed): %q, want all suppressed", res.Rows, res.Suppressed, got)
	}
}

func TestRuleBreakingQueriesRefused(t *testing.T) {
	m := generate(t, Config{Seed: 4, RowsPerHospital: 1000})
	cases := []struct{ sql, rule, column string }{
		{"SELECT postcode, count(*) FROM hospital1 GROUP BY 1", runner.RuleForbidden, "postcode"},
		{"SELECT patient_ref, count(*) FROM hospital2 GROUP BY 1", runner.RuleAggregateOnly, "patient_ref"},
		{"SELECT diagnosis, max(length_of_stay) FROM hospital1 GROUP BY 1", runner.RuleAggregateOnly, "length_of_stay"},
		{"SELECT count(*) FROM hospital1 a JOIN hospital2 b ON a.patient_ref = b.patient_ref", runner.RuleAggregateOnly, "patient_ref"},
		{"SELECT encounter_id, count(*) FROM hospital3 GROUP BY 1", runner.RuleJoinOnly, "encounter_id"},
		{"SELECT diagnosis, age_band, sex FROM hospital1", runner.RuleMinEntities, ""},
		{"SELECT count(*) FROM hospital1 a JOIN hospital1 b ON a.encounter_id = b.encounter_id", runner.RuleMinEntities, ""},
	}
	for _, tc := range cases {
		_, _, err := run(t, m, tc.sql)
		var re *runner.RuleError
		if !errors.As(err, &re) {
			t.Errorf("Run(%q) = %v, want a rule error", tc.sql, err)
			continue
		}
		if re.Rule != tc.rule || re.Column != tc.column {
			t.Errorf("Run(%q) broke %s on %q (%v), want %s on %q", tc.sql, re.Rule, re.Column, err, tc.rule, tc.column)
		}
	}
}

// TestLarge times generation and the contract in process at
// HEALTHGEN_ROWS admissions per hospital (default a million). It runs only
// when asked:
//
//	HEALTHGEN_LARGE=1 go test -run TestLarge -v -timeout 30m ./examples/health/healthgen
func TestLarge(t *testing.T) {
	if os.Getenv("HEALTHGEN_LARGE") == "" {
		t.Skip("set HEALTHGEN_LARGE=1 to run")
	}
	rows := 1_000_000
	if s := os.Getenv("HEALTHGEN_ROWS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("HEALTHGEN_ROWS: %v", err)
		}
		rows = n
	}
	start := time.Now()
	m := generate(t, Config{Seed: 1, RowsPerHospital: rows})
	gen := time.Since(start)
	t.Logf("generated %v admissions in %v: %.0f rows/s", m.Rows, gen, float64(m.Rows[0]+m.Rows[1]+m.Rows[2])/gen.Seconds())
	start = time.Now()
	got, res, err := run(t, m, CohortSQL)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("contract: %v (load, check, run, suppress, seal); %d rows, %d suppressed", time.Since(start), res.Rows, res.Suppressed)
	if got != m.Expected {
		t.Errorf("contract result\n%s\nwant\n%s", got, m.Expected)
	}
}
