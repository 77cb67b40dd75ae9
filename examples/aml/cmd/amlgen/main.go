// Command amlgen writes the data of the anti-money-laundering clean-room
// example into a directory: the three banks' transaction CSVs, their schema
// and analysis rules, the two contracts' SQL, and the results the contracts
// must produce (exactly the planted patterns).
//
//	go run ./examples/aml/cmd/amlgen -out /tmp/aml -rows 30000
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/parleyhq/parley/examples/aml/amlgen"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "amlgen:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg amlgen.Config
	out := flag.String("out", "", "directory to write into (created if missing)")
	flag.Uint64Var(&cfg.Seed, "seed", 1, "random seed; the same flags write the same bytes")
	flag.IntVar(&cfg.RowsPerBank, "rows", 30_000, "approximate rows per bank")
	flag.IntVar(&cfg.Weeks, "weeks", 26, "weeks of transactions")
	flag.IntVar(&cfg.Structurers, "structurers", 4, "structuring patterns to plant")
	flag.IntVar(&cfg.RoundTrips, "round-trips", 4, "round trips to plant")
	flag.IntVar(&cfg.Decoys, "decoys", 2, "decoys of each kind")
	flag.Parse()
	if *out == "" || flag.NArg() > 0 {
		flag.Usage()
		return fmt.Errorf("want -out DIR and no arguments")
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return err
	}
	start := time.Now()
	m, err := amlgen.Generate(cfg, *out)
	if err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	took := time.Since(start)
	schema, err := json.MarshalIndent(amlgen.Schema, "", "  ")
	if err != nil {
		return err
	}
	manifest, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"schema.json":     append(schema, '\n'),
		"rules.json":      append(amlgen.RulesJSON(), '\n'),
		"manifest.json":   append(manifest, '\n'),
		"structuring.sql": []byte(amlgen.StructuringSQL),
		"round_trips.sql": []byte(amlgen.RoundTripSQL),
	}
	for _, c := range amlgen.Contracts() {
		want, err := m.Expected(c.Name)
		if err != nil {
			return err
		}
		files["expected-"+c.Name+".csv"] = []byte(want)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(*out, name), b, 0o600); err != nil {
			return err
		}
	}
	var rows int64
	for i, f := range m.Files {
		fmt.Printf("%s: %d rows\n", f, m.Rows[i])
		rows += m.Rows[i]
	}
	fmt.Printf("%d customers, %d rows in %v (%.0f rows/s); planted %d structuring and %d round-trip patterns, %d decoys of each kind\n",
		m.Customers, rows, took.Round(time.Millisecond), float64(rows)/took.Seconds(), len(m.Structuring), len(m.RoundTrips), m.Config.Decoys)
	return nil
}
