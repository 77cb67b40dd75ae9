// Package amlgen generates the synthetic data of the anti-money-laundering
// clean-room example (examples/aml): three banks' transaction tables, one
// CSV file per bank, with laundering patterns planted across the banks,
// and the two contracts that find them.
//
// The data is deterministic: the same [Config] writes byte-identical files.
// Rows are written as they are generated, so millions of rows per bank do
// not sit in memory.
//
// # Patterns
//
// Structuring: one customer makes [MinDeposits] or more cash deposits of
// [BandLow] to [Threshold]-1 EUR, just below the reporting threshold, in one
// ISO week, spread over accounts at two or three banks so that no bank alone
// sees more than three. Found by [StructuringSQL].
//
// Round trip: money leaves a customer's account at one bank, passes through
// an account at each of the other two banks and comes back to an account of
// the same customer at the first bank (planted: a second account) within
// [Window], every hop carrying at least 90% of the largest hop's amount.
// Found by [RoundTripSQL].
//
// # Noise and decoys
//
// Around the patterns, ordinary customers receive salaries, pay by card,
// withdraw and deposit cash (now and then a single deposit just below the
// threshold), and transfer money to each other within and between banks and
// to outside banks. Decoys look like the patterns to a naive rule but are
// not: three sub-threshold deposits in a week, one a week for months,
// many deposits above the threshold or far below it, cycles whose amounts
// differ, cycles that take weeks, chains that return to another customer,
// and chains whose hops run backwards in time.
//
// Noise never forms a pattern, by construction: a customer's sub-threshold
// cash deposits are capped (and re-drawn) at two a week, and transfers
// between ordinary customers go only from a (customer, bank) pair to a
// greater one in a fixed order, so they cannot close a cycle. Planted
// patterns and decoys use customers of their own who send or receive no
// other transfer between the three banks and make no other sub-threshold
// deposit. The package tests check the result with an independent detector.
package amlgen

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/parleyhq/parley/internal/cleanroom/dataset"
	"github.com/parleyhq/parley/internal/cleanroom/runner"
)

// Banks are the three banks' dataset (table) names, in file order.
var Banks = [3]string{"bank1", "bank2", "bank3"}

// The patterns' parameters, as the contracts test them.
const (
	// Threshold is the cash reporting threshold in EUR.
	Threshold = 10_000
	// BandLow is the lowest amount counted as just below the threshold.
	BandLow = 9_000
	// MinDeposits is the number of sub-threshold cash deposits in one ISO
	// week that makes structuring.
	MinDeposits = 4
	// Window is the longest a round trip may take.
	Window = 10 * 24 * time.Hour
)

// Start is the first instant of the generated period, a Monday.
var Start = time.Date(2026, time.January, 5, 0, 0, 0, 0, time.UTC)

// TimeLayout is the layout of the ts column (UTC). It sorts as text in
// time order and casts to a DuckDB TIMESTAMP.
const TimeLayout = "2006-01-02 15:04:05"

// Schema is every bank's dataset schema. amount is in whole EUR.
var Schema = dataset.Schema{Columns: []dataset.Column{
	{Name: "txn_id", Type: dataset.Varchar},
	{Name: "ts", Type: dataset.Varchar},
	{Name: "account", Type: dataset.Varchar},
	{Name: "customer_ref", Type: dataset.Varchar},
	{Name: "holder_name", Type: dataset.Varchar},
	{Name: "kind", Type: dataset.Varchar},
	{Name: "direction", Type: dataset.Varchar},
	{Name: "counterparty_bank", Type: dataset.Varchar},
	{Name: "counterparty_account", Type: dataset.Varchar},
	{Name: "payment_ref", Type: dataset.Varchar},
	{Name: "amount", Type: dataset.Bigint},
	{Name: "currency", Type: dataset.Varchar},
}}

// Rules returns the analysis rules every bank sets on its dataset:
//   - holder_name is forbidden: names never enter a query; customer_ref is
//     the pseudonym the banks share (a keyed hash of the national id), and
//     the regulator resolves it through the bank when it opens a case;
//   - payment_ref and counterparty_account are join-only: they link the
//     sender's and the receiver's records of a payment but can be neither
//     listed nor filtered, so no query maps who pays whom;
//   - amount is aggregate-only: it appears in a result only through count,
//     sum, avg or a variance, never as a row's raw value or in a WHERE.
//
// There is no minimum-entities rule: the recipient is the regulator, whose
// purpose is to name the customers behind a finding.
func Rules() runner.Rules {
	return runner.Rules{
		Forbidden:     []string{"holder_name"},
		JoinOnly:      []string{"payment_ref", "counterparty_account"},
		AggregateOnly: []string{"amount"},
	}
}

// RulesJSON returns [Rules] as the JSON the clean-room API and CLI accept.
func RulesJSON() []byte {
	b, err := json.Marshal(Rules())
	if err != nil {
		panic(err) // a fixed value always marshals
	}
	return b
}

// The contracts' SQL.
var (
	//go:embed structuring.sql
	StructuringSQL string
	//go:embed round_trips.sql
	RoundTripSQL string
)

// Contract is one contract of the example.
type Contract struct {
	// Name is the contract's name in the room.
	Name string
	SQL  string
}

// Contract names.
const (
	ContractStructuring = "structuring"
	ContractRoundTrips  = "round-trips"
)

// Contracts returns the example's contracts. Each reads all three banks'
// datasets and its result goes to the regulator only.
func Contracts() []Contract {
	return []Contract{
		{Name: ContractStructuring, SQL: StructuringSQL},
		{Name: ContractRoundTrips, SQL: RoundTripSQL},
	}
}

// Structuring is one structuring finding, as a row of the structuring
// contract's result.
type Structuring struct {
	Customer string // customer_ref
	Week     string // the ISO week's Monday, YYYY-MM-DD
	Deposits int
	Banks    string // the banks with a sub-threshold deposit, e.g. "bank1+bank3"
	Total    int64
}

// RoundTrip is one round-trip finding, as a row of the round-trips
// contract's result.
type RoundTrip struct {
	Started    string // the origin's outgoing payment, in TimeLayout
	OriginBank string
	Customer   string // the origin customer's customer_ref
	Via        string // "bankX:ref>bankY:ref", the pass-through customers in order
	Sent       int64
	Returned   int64
}

// Headers of the contracts' results.
const (
	StructuringHeader = "customer,week,deposits,banks,total"
	RoundTripHeader   = "started,origin_bank,customer,via,sent,returned"
)

// Manifest describes what [Generate] wrote.
type Manifest struct {
	// Config is the configuration used, defaults filled in.
	Config Config
	// Files are the banks' CSV files, in [Banks] order.
	Files [3]string
	// Rows are the data rows in each file.
	Rows [3]int64
	// Customers is the number of customers (people) generated.
	Customers int
	// Structuring and RoundTrips are the planted patterns, sorted as the
	// contracts sort their results.
	Structuring []Structuring
	RoundTrips  []RoundTrip
}

// Expected returns the CSV result (header row first) the named contract
// must produce over the generated data: exactly the planted patterns.
func (m *Manifest) Expected(contract string) (string, error) {
	var b strings.Builder
	switch contract {
	case ContractStructuring:
		b.WriteString(StructuringHeader + "\n")
		for _, s := range m.Structuring {
			fmt.Fprintf(&b, "%s,%s,%d,%s,%d\n", s.Customer, s.Week, s.Deposits, s.Banks, s.Total)
		}
	case ContractRoundTrips:
		b.WriteString(RoundTripHeader + "\n")
		for _, r := range m.RoundTrips {
			fmt.Fprintf(&b, "%s,%s,%s,%s,%d,%d\n", r.Started, r.OriginBank, r.Customer, r.Via, r.Sent, r.Returned)
		}
	default:
		return "", fmt.Errorf("unknown contract %q", contract)
	}
	return b.String(), nil
}

// Config configures [Generate]. Zero fields take the documented defaults.
type Config struct {
	// Seed selects the data; the same Config writes the same bytes.
	Seed uint64 `json:"seed"`
	// RowsPerBank is the approximate number of rows per bank (default
	// 30,000); the generator sizes the customer base to reach it.
	RowsPerBank int `json:"rows_per_bank"`
	// Weeks is the length of the period from [Start] (default 26, at
	// least MinWeeks).
	Weeks int `json:"weeks"`
	// Structurers and RoundTrips are the numbers of planted patterns
	// (default 4 each; -1 plants none).
	Structurers int `json:"structurers"`
	RoundTrips  int `json:"round_trips"`
	// Decoys is the number of decoys of each kind (default 2; -1 for none).
	Decoys int `json:"decoys"`
}

// Limits on a Config.
const (
	MaxRowsPerBank = 50_000_000
	MinWeeks       = 12 // room for the longest decoys (nine weeks of deposits, a four-week cycle)
	MaxWeeks       = 520
	MaxPatterns    = 10_000
)

func (c Config) withDefaults() (Config, error) {
	def := func(v *int, d int) {
		switch {
		case *v == 0:
			*v = d
		case *v < 0:
			*v = 0
		}
	}
	def(&c.RowsPerBank, 30_000)
	def(&c.Weeks, 26)
	def(&c.Structurers, 4)
	def(&c.RoundTrips, 4)
	def(&c.Decoys, 2)
	switch {
	case c.RowsPerBank < 1000 || c.RowsPerBank > MaxRowsPerBank:
		return c, fmt.Errorf("rows per bank %d, want 1000..%d", c.RowsPerBank, MaxRowsPerBank)
	case c.Weeks < MinWeeks || c.Weeks > MaxWeeks:
		return c, fmt.Errorf("weeks %d, want %d..%d", c.Weeks, MinWeeks, MaxWeeks)
	case c.Structurers > MaxPatterns || c.RoundTrips > MaxPatterns || c.Decoys > MaxPatterns:
		return c, fmt.Errorf("at most %d patterns or decoys of a kind", MaxPatterns)
	}
	return c, nil
}

func formatTime(t time.Time) string { return t.Format(TimeLayout) }

func weekOf(t time.Time) string {
	d := int(t.Sub(Start) / (7 * 24 * time.Hour))
	return Start.AddDate(0, 0, 7*d).Format("2006-01-02")
}
