package runner

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/parleyhq/parley/internal/cleanroom/dataset"
)

var benchRows = flag.Int("rows", 100_000, "rows per party in BenchmarkRunThreeParties")

// partyCSV returns n rows of (account, customer, segment, amount); account
// i exists at every party, so a three-way join matches every row.
func partyCSV(n, party int) []byte {
	var b strings.Builder
	b.Grow(n * 40)
	b.WriteString("account,customer,segment,amount\n")
	for i := range n {
		b.WriteString("acct")
		b.WriteString(strconv.Itoa(i))
		b.WriteString(",cust")
		b.WriteString(strconv.Itoa(i / 4))
		b.WriteString(",seg")
		b.WriteString(strconv.Itoa((i + party) % 10))
		b.WriteByte(',')
		b.WriteString(strconv.Itoa(i % 1000))
		b.WriteByte('\n')
	}
	return []byte(b.String())
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

// BenchmarkRunThreeParties loads three parties' datasets, joins them on
// account and aggregates by segment under a min-entities rule.
// go test -run='^$' -bench=ThreeParties -benchtime=1x ./internal/cleanroom/runner -rows=1000000
func BenchmarkRunThreeParties(b *testing.B) {
	schema := dataset.Schema{Columns: []dataset.Column{
		col("account", dataset.Varchar), col("customer", dataset.Varchar),
		col("segment", dataset.Varchar), col("amount", dataset.Bigint),
	}}
	rules := Rules{JoinOnly: []string{"account", "customer"}, AggregateOnly: []string{"amount"}, Entity: "customer", MinEntities: 10}
	var tables []Table
	var size int64
	for p := range 3 {
		csv := partyCSV(*benchRows, p)
		size += int64(len(csv))
		tables = append(tables, Table{Name: fmt.Sprintf("bank%d", p+1), Schema: schema, CSV: csv, Rules: rules})
	}
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	job := Job{
		Tables: tables,
		SQL: `SELECT b1.segment, count(*) AS n, sum(b1.amount) + sum(b2.amount) + sum(b3.amount) AS total
		      FROM bank1 b1 JOIN bank2 b2 ON b1.account = b2.account JOIN bank3 b3 ON b1.account = b3.account
		      GROUP BY b1.segment`,
		Recipients: []Recipient{{ID: "regulator", Key: k.PublicKey()}},
	}
	b.SetBytes(size)
	for b.Loop() {
		res, err := Run(context.Background(), job)
		if err != nil {
			b.Fatal(err)
		}
		if res.Rows != 10 {
			b.Fatalf("rows %d, want 10", res.Rows)
		}
	}
	b.ReportMetric(peakRSS()/(1<<20), "peak-RSS-MiB")
}
