// Package healthgen generates the synthetic data of the health clean-room
// example (examples/health): three hospitals' admission records, one CSV
// file per hospital, and the contract that pools them into joint cohort
// statistics under a minimum group size.
//
// Patients carry a pseudonymous patient_ref that is the same at every
// hospital (a keyed hash of a national health number, say), a fixed age
// band and sex; some are admitted at more than one hospital. Diagnoses
// (ICD-10 chapter codes) depend on the age band, some are rare, so some
// diagnosis × age band cells have fewer than [MinGroup] patients at a
// hospital and the runner suppresses them.
//
// The data is deterministic: the same [Config] writes byte-identical files.
package healthgen

import (
	"bufio"
	_ "embed"
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/parleyhq/parley/internal/cleanroom/dataset"
	"github.com/parleyhq/parley/internal/cleanroom/runner"
)

// Hospitals are the hospitals' dataset (table) names, in file order.
var Hospitals = [3]string{"hospital1", "hospital2", "hospital3"}

// MinGroup is the minimum number of a hospital's distinct patients behind
// every output row.
const MinGroup = 10

// Schema is every hospital's dataset schema. admitted is a date
// (YYYY-MM-DD); length_of_stay is in days.
var Schema = dataset.Schema{Columns: []dataset.Column{
	{Name: "encounter_id", Type: dataset.Varchar},
	{Name: "patient_ref", Type: dataset.Varchar},
	{Name: "admitted", Type: dataset.Varchar},
	{Name: "age_band", Type: dataset.Varchar},
	{Name: "sex", Type: dataset.Varchar},
	{Name: "diagnosis", Type: dataset.Varchar},
	{Name: "outcome", Type: dataset.Varchar},
	{Name: "length_of_stay", Type: dataset.Bigint},
	{Name: "postcode", Type: dataset.Varchar},
}}

// Rules returns the analysis rules every hospital sets on its dataset:
//   - postcode is forbidden (with age band and sex it narrows a patient down);
//   - encounter_id is join-only: it may only link rows, never be listed;
//   - patient_ref and length_of_stay are aggregate-only: counted, summed or
//     averaged, never listed, grouped on or filtered on;
//   - at least [MinGroup] distinct patient_refs of the hospital behind every
//     output row (min-entities); rows below are suppressed.
func Rules() runner.Rules {
	return runner.Rules{
		Forbidden:     []string{"postcode"},
		JoinOnly:      []string{"encounter_id"},
		AggregateOnly: []string{"patient_ref", "length_of_stay"},
		Entity:        "patient_ref",
		MinEntities:   MinGroup,
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

// CohortSQL is the contract's query.
//
//go:embed cohort.sql
var CohortSQL string

// ContractName is the contract's name in the room.
const ContractName = "cohort-statistics"

// Header is the header row of the contract's result.
const Header = "diagnosis,age_band,patients,admissions,mean_stay,deaths"

// AgeBands are the age bands, in result order.
var AgeBands = []string{"0-17", "18-34", "35-49", "50-64", "65-79", "80+"}

// diagnosis is an ICD-10 code with its mean length of stay, death rate,
// and relative frequency in each age band.
type diagnosis struct {
	code    string
	stay    float64
	death   float64
	weights [6]float64
	female  bool // only female patients
}

var diagnoses = []diagnosis{
	{code: "C34", stay: 9, death: 0.08, weights: [6]float64{0, 0, 1, 4, 6, 4}},                // lung cancer
	{code: "E11", stay: 4, death: 0.01, weights: [6]float64{0, 1, 4, 6, 6, 4}},                // type 2 diabetes
	{code: "E84", stay: 14, death: 0.02, weights: [6]float64{0.4, 0.3, 0.05, 0, 0, 0}},        // cystic fibrosis, rare
	{code: "F32", stay: 12, death: 0, weights: [6]float64{1, 5, 5, 3, 1, 0.5}},                // depression
	{code: "G12", stay: 11, death: 0.05, weights: [6]float64{0, 0, 0.05, 0.3, 0.4, 0.1}},      // motor neuron disease, rare
	{code: "I21", stay: 5, death: 0.06, weights: [6]float64{0, 0.2, 2, 5, 6, 5}},              // acute myocardial infarction
	{code: "I50", stay: 8, death: 0.07, weights: [6]float64{0, 0, 0.5, 3, 7, 9}},              // heart failure
	{code: "J18", stay: 6, death: 0.05, weights: [6]float64{4, 2, 2, 3, 6, 9}},                // pneumonia
	{code: "K35", stay: 3, death: 0, weights: [6]float64{6, 5, 2, 1, 0.5, 0.2}},               // appendicitis
	{code: "N39", stay: 3, death: 0.01, weights: [6]float64{2, 3, 2, 2, 4, 6}},                // urinary tract infection
	{code: "O80", stay: 2, death: 0, weights: [6]float64{0, 10, 4, 0.05, 0, 0}, female: true}, // childbirth
	{code: "S72", stay: 10, death: 0.04, weights: [6]float64{0.2, 0.3, 0.5, 1.5, 5, 10}},      // hip fracture
}

// bandWeights is the share of patients in each age band.
var bandWeights = [6]float64{0.15, 0.2, 0.18, 0.17, 0.17, 0.13}

// Config configures [Generate]. Zero fields take the documented defaults.
type Config struct {
	// Seed selects the data; the same Config writes the same bytes.
	Seed uint64 `json:"seed"`
	// RowsPerHospital is the approximate number of admissions per
	// hospital (default 20,000).
	RowsPerHospital int `json:"rows_per_hospital"`
}

// MaxRowsPerHospital bounds Config.RowsPerHospital.
const MaxRowsPerHospital = 10_000_000

// Manifest describes what [Generate] wrote.
type Manifest struct {
	Config Config
	// Files are the hospitals' CSV files, in [Hospitals] order.
	Files [3]string
	// Rows are the data rows in each file.
	Rows [3]int64
	// Patients is the number of distinct patients.
	Patients int
	// Expected is the contract's result over the data (header row first):
	// the cells every hospital contributes at least MinGroup patients to.
	Expected string
	// Cells and Suppressed count the diagnosis × age band cells with any
	// admission, and those the min-entities rule suppresses.
	Cells, Suppressed int
}

// Generate writes the three hospitals' CSV files into dir (hospital1.csv,
// hospital2.csv, hospital3.csv, created or truncated) and returns what it
// wrote with the contract's expected result. On error it removes the files.
func Generate(cfg Config, dir string) (m *Manifest, err error) {
	if cfg.RowsPerHospital == 0 {
		cfg.RowsPerHospital = 20_000
	}
	if cfg.RowsPerHospital < 1000 || cfg.RowsPerHospital > MaxRowsPerHospital {
		return nil, fmt.Errorf("rows per hospital %d, want 1000..%d", cfg.RowsPerHospital, MaxRowsPerHospital)
	}
	m = &Manifest{Config: cfg}
	files := &m.Files // a failing return sets m to nil before this runs
	defer func() {
		if err != nil {
			for _, f := range files {
				if f != "" {
					os.Remove(f) // no partial dataset is left behind
				}
			}
		}
	}()
	var ws [3]*bufio.Writer
	var fs [3]*os.File
	for h, name := range Hospitals {
		m.Files[h] = filepath.Join(dir, name+".csv")
		f, err := os.OpenFile(m.Files[h], os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, fmt.Errorf("create %s: %w", m.Files[h], err)
		}
		defer func() {
			if cerr := f.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("close %s: %w", f.Name(), cerr)
			}
		}()
		fs[h] = f
		ws[h] = bufio.NewWriterSize(f, 1<<20)
		if _, err := ws[h].WriteString(strings.Join(columnNames(), ",") + "\n"); err != nil {
			return nil, fmt.Errorf("write %s: %w", m.Files[h], err)
		}
	}

	keys := rand.New(rand.NewPCG(cfg.Seed, 0))
	refKey := keys.Uint64()
	const meanAdmissions = 1.75
	m.Patients = int(math.Ceil(float64(cfg.RowsPerHospital) * 3 / meanAdmissions))
	cells := map[cell]*stats{}
	year := time.Date(2025, time.January, 1, 0, 0, 0, 0, time.UTC)
	var line []byte
	for i := range m.Patients {
		r := rand.New(rand.NewPCG(cfg.Seed^1<<56, uint64(i)))
		ref := fmt.Sprintf("p%08x", perm32(refKey, uint32(i)))
		band := pick(r, bandWeights[:])
		sex := "M"
		if r.Float64() < 0.52 {
			sex = "F"
		}
		postcode := fmt.Sprintf("%05d", 10000+r.IntN(90000))
		home := r.IntN(3)
		n := 1
		for n < 6 && r.Float64() < 0.43 {
			n++
		}
		weights := make([]float64, len(diagnoses))
		for d, dg := range diagnoses {
			if !dg.female || sex == "F" {
				weights[d] = dg.weights[band]
			}
		}
		prev := -1
		for range n {
			h := home
			if r.Float64() < 0.25 {
				h = (home + 1 + r.IntN(2)) % 3
			}
			d := prev
			if d < 0 || r.Float64() < 0.4 {
				d = pick(r, weights)
			}
			prev = d
			dg := diagnoses[d]
			stay := int64(1 + r.ExpFloat64()*(dg.stay-1))
			outcome := "discharged"
			if u := r.Float64(); u < dg.death*(1+0.5*float64(band)/5) {
				outcome = "died"
			} else if u > 0.95 {
				outcome = "transferred"
			}
			m.Rows[h]++
			admitted := year.AddDate(0, 0, r.IntN(365))
			l := line[:0]
			l = append(l, 'h', byte('1'+h), '-', 'e')
			l = appendPadded(l, m.Rows[h], 9)
			l = append(l, ',')
			l = append(l, ref...)
			l = append(l, ',')
			l = admitted.AppendFormat(l, "2006-01-02")
			for _, f := range []string{AgeBands[band], sex, dg.code, outcome} {
				l = append(l, ',')
				l = append(l, f...)
			}
			l = append(l, ',')
			l = strconv.AppendInt(l, stay, 10)
			l = append(l, ',')
			l = append(l, postcode...)
			l = append(l, '\n')
			line = l
			if _, err := ws[h].Write(l); err != nil {
				return nil, fmt.Errorf("write %s: %w", m.Files[h], err)
			}
			c := cell{dg.code, AgeBands[band]}
			s := cells[c]
			if s == nil {
				s = newStats()
				cells[c] = s
			}
			s.add(h, uint32(i), stay, outcome == "died")
		}
	}
	for h, w := range ws {
		if err := w.Flush(); err != nil {
			return nil, fmt.Errorf("write %s: %w", fs[h].Name(), err)
		}
	}
	m.Expected, m.Cells, m.Suppressed = render(cells)
	return m, nil
}

func columnNames() []string {
	var names []string
	for _, c := range Schema.Columns {
		names = append(names, c.Name)
	}
	return names
}

// pick draws an index with probability proportional to its weight.
func pick(r *rand.Rand, w []float64) int {
	var sum float64
	for _, x := range w {
		sum += x
	}
	u := r.Float64() * sum
	for i, x := range w {
		if u < x {
			return i
		}
		u -= x
	}
	for i := len(w) - 1; i >= 0; i-- {
		if w[i] > 0 {
			return i
		}
	}
	return 0
}

// perm32 is a keyed bijection on uint32: distinct inputs give distinct ids.
func perm32(key uint64, x uint32) uint32 {
	for i := range 4 {
		x ^= uint32(key >> (16 * i))
		x *= 0x9E3779B1
		x ^= x >> 15
		x = bits.RotateLeft32(x, 11)
	}
	return x
}

func appendPadded(b []byte, n int64, width int) []byte {
	s := strconv.AppendInt(nil, n, 10)
	for i := len(s); i < width; i++ {
		b = append(b, '0')
	}
	return append(b, s...)
}

// cell is one diagnosis × age band group.
type cell struct{ diagnosis, band string }

// stats accumulates one cell's statistics; patients are kept per hospital
// for the min-entities rule and overall for the de-duplicated count.
type stats struct {
	perHospital [3]map[uint32]bool
	all         map[uint32]bool
	admissions  int64
	staySum     int64
	deaths      int64
}

func newStats() *stats {
	s := &stats{all: map[uint32]bool{}}
	for h := range s.perHospital {
		s.perHospital[h] = map[uint32]bool{}
	}
	return s
}

func (s *stats) add(h int, patient uint32, stay int64, died bool) {
	s.perHospital[h][patient] = true
	s.all[patient] = true
	s.admissions++
	s.staySum += stay
	if died {
		s.deaths++
	}
}

// Row renders a cell as a result row, or reports false when a hospital
// contributes fewer than MinGroup patients (the runner's min-entities rule).
func (s *stats) row(c cell) (string, bool) {
	for _, p := range s.perHospital {
		if len(p) < MinGroup {
			return "", false
		}
	}
	mean := math.Round(float64(s.staySum)/float64(s.admissions)*100) / 100
	return fmt.Sprintf("%s,%s,%d,%d,%s,%d", c.diagnosis, c.band, len(s.all), s.admissions,
		strconv.FormatFloat(mean, 'g', -1, 64), s.deaths), true
}

func render(cells map[cell]*stats) (string, int, int) {
	var rows []string
	suppressed := 0
	for c, s := range cells {
		if row, ok := s.row(c); ok {
			rows = append(rows, row)
		} else {
			suppressed++
		}
	}
	slices.Sort(rows)
	return Header + "\n" + strings.Join(append(rows, ""), "\n"), len(cells), suppressed
}
