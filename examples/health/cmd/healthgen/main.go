// Command healthgen writes the data of the health clean-room example into a
// directory: the three hospitals' admission CSVs, their schema and analysis
// rules, the contract's SQL, and the result it must produce.
//
//	go run ./examples/health/cmd/healthgen -out /tmp/health -rows 20000
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/parleyhq/parley/examples/health/healthgen"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "healthgen:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg healthgen.Config
	out := flag.String("out", "", "directory to write into (created if missing)")
	flag.Uint64Var(&cfg.Seed, "seed", 1, "random seed; the same flags write the same bytes")
	flag.IntVar(&cfg.RowsPerHospital, "rows", 20_000, "approximate admissions per hospital")
	flag.Parse()
	if *out == "" || flag.NArg() > 0 {
		flag.Usage()
		return fmt.Errorf("want -out DIR and no arguments")
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return err
	}
	start := time.Now()
	m, err := healthgen.Generate(cfg, *out)
	if err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	took := time.Since(start)
	schema, err := json.MarshalIndent(healthgen.Schema, "", "  ")
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"schema.json":  append(schema, '\n'),
		"rules.json":   append(healthgen.RulesJSON(), '\n'),
		"cohort.sql":   []byte(healthgen.CohortSQL),
		"expected.csv": []byte(m.Expected),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(*out, name), b, 0o600); err != nil {
			return err
		}
	}
	var rows int64
	for i, f := range m.Files {
		fmt.Printf("%s: %d admissions\n", f, m.Rows[i])
		rows += m.Rows[i]
	}
	fmt.Printf("%d patients, %d admissions in %v; %d diagnosis x age band cells, %d below %d patients at some hospital\n",
		m.Patients, rows, took.Round(time.Millisecond), m.Cells, m.Suppressed, healthgen.MinGroup)
	return nil
}
