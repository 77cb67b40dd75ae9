package amlgen

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Random streams: every person and the plan draw from their own PCG stream,
// so a person's data does not depend on generation order.
const (
	streamPlan    = 1
	streamProfile = 2
	streamEvents  = 3
)

// rowsPerMembershipWeek is the average number of rows one customer's
// membership of one bank produces per week (own records and incoming
// transfers), used to size the customer base.
const rowsPerMembershipWeek = 1.45

// avgMemberships is the average number of banks an ordinary customer uses.
const avgMemberships = 1.55

// Generate writes the three banks' CSV files into dir (bank1.csv, bank2.csv,
// bank3.csv, created or truncated) and returns what it wrote and planted.
// On error it removes the files.
func Generate(cfg Config, dir string) (*Manifest, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	g := newGen(cfg)
	if err := g.plan(); err != nil {
		return nil, err
	}
	m := &Manifest{Config: cfg, Customers: g.persons}
	for b := range Banks {
		m.Files[b] = filepath.Join(dir, Banks[b]+".csv")
	}
	if err := g.write(m.Files); err != nil {
		for _, f := range m.Files {
			os.Remove(f) // no partial dataset is left behind
		}
		return nil, err
	}
	for b, w := range g.out {
		m.Rows[b] = w.rows
	}
	m.Structuring = g.structuring
	m.RoundTrips = g.roundTrips
	return m, nil
}

type gen struct {
	cfg     Config
	persons int
	// special holds the customers of planted patterns and decoys.
	special map[int]*spec
	// planted holds the planted and decoy records, by the lowest person
	// index of their pattern (they are written with that person).
	planted     map[int][]event
	structuring []Structuring
	roundTrips  []RoundTrip
	out         [3]*bankWriter
	payments    uint64
	keys        [4]uint64 // account id keys per bank, then the customer_ref key
}

// spec is what a planted pattern or decoy needs of a customer.
type spec struct {
	accounts [3]int // accounts at each bank; 0 = not a customer there
	subCap   int    // sub-threshold cash deposits allowed per week in noise
}

type event struct {
	bank int
	r    record
}

type record struct {
	t                         time.Time
	account, customer, name   string
	kind, dir, cpBank, cpAcct string
	pref, currency            string
	amount                    int64
}

func newGen(cfg Config) *gen {
	g := &gen{cfg: cfg, special: map[int]*spec{}, planted: map[int][]event{}}
	perBank := float64(cfg.RowsPerBank)
	g.persons = int(math.Ceil(perBank * 3 / (avgMemberships * rowsPerMembershipWeek * float64(cfg.Weeks))))
	kr := rand.New(rand.NewPCG(cfg.Seed, 0))
	for i := range g.keys {
		g.keys[i] = kr.Uint64()
	}
	return g
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

// mix64 is a keyed bijection on uint64 (the splitmix64 finalizer).
func mix64(key, x uint64) uint64 {
	x ^= key
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func (g *gen) rng(stream, n uint64) *rand.Rand {
	return rand.New(rand.NewPCG(g.cfg.Seed^stream<<56, n))
}

func (g *gen) account(bank, person, k int) string {
	return fmt.Sprintf("b%d-%08x", bank+1, perm32(g.keys[bank], uint32(2*person+k)))
}

func (g *gen) customerRef(person int) string {
	return fmt.Sprintf("c%08x", perm32(g.keys[3], uint32(person)))
}

func (g *gen) paymentRef() string {
	g.payments++
	return fmt.Sprintf("p%016x", mix64(g.keys[0]^g.keys[3], g.payments))
}

var (
	firstNames = []string{"Anna", "Ben", "Clara", "David", "Elena", "Felix", "Greta", "Hugo", "Ines", "Jonas", "Katrin", "Leo", "Maria", "Noah", "Olga", "Paul", "Rosa", "Simon", "Tara", "Umar", "Vera", "Yusuf", "Zoe", "Mateo"}
	lastNames  = []string{"Adler", "Berger", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Horvat", "Ivanova", "Jansen", "Kowalski", "Lindqvist", "Moreau", "Novak", "Okafor", "Petrov", "Rossi", "Schmidt", "Tanaka", "Urban", "Vogel", "Weber", "Yilmaz", "Zimmermann"}
)

// person is one customer: a real person who may bank at several banks.
type person struct {
	idx      int
	ref      string
	name     string
	accounts [3][]string
	banks    []int
	act      float64 // activity multiplier
	salaried bool
	primary  int
	subCap   int
	special  bool
}

func (g *gen) person(j int) *person {
	r := g.rng(streamProfile, uint64(j))
	p := &person{
		idx:  j,
		ref:  g.customerRef(j),
		name: firstNames[r.IntN(len(firstNames))] + " " + lastNames[r.IntN(len(lastNames))],
		act:  0.5 + r.Float64(),
		// salaried people get a monthly salary from an outside employer
		salaried: r.Float64() < 0.7,
		subCap:   2,
	}
	var counts [3]int
	if s := g.special[j]; s != nil {
		counts = s.accounts
		p.subCap = s.subCap
		p.special = true
	} else {
		first := r.IntN(3)
		counts[first] = 1
		if u := r.Float64(); u < 0.45 {
			counts[(first+1+r.IntN(2))%3] = 1
			if u < 0.10 {
				counts = [3]int{1, 1, 1}
			}
		}
		for b := range counts {
			if counts[b] > 0 && r.Float64() < 0.2 {
				counts[b] = 2 // a savings account
			}
		}
	}
	for b, n := range counts {
		if n == 0 {
			continue
		}
		p.banks = append(p.banks, b)
		for k := range n {
			p.accounts[b] = append(p.accounts[b], g.account(b, j, k))
		}
	}
	p.primary = p.banks[r.IntN(len(p.banks))]
	return p
}

// bankWriter writes one bank's CSV.
type bankWriter struct {
	f    *os.File
	w    *bufio.Writer
	bank int
	rows int64
	line []byte
}

const header = "txn_id,ts,account,customer_ref,holder_name,kind,direction,counterparty_bank,counterparty_account,payment_ref,amount,currency\n"

func (w *bankWriter) write(r *record) error {
	w.rows++
	l := w.line[:0]
	l = append(l, 'b', byte('1'+w.bank), '-')
	l = appendPadded(l, w.rows, 9)
	l = append(l, ',')
	l = r.t.AppendFormat(l, TimeLayout)
	for _, f := range []string{r.account, r.customer, r.name, r.kind, r.dir, r.cpBank, r.cpAcct, r.pref} {
		l = append(l, ',')
		l = append(l, f...)
	}
	l = append(l, ',')
	l = strconv.AppendInt(l, r.amount, 10)
	l = append(l, ',')
	l = append(l, r.currency...)
	l = append(l, '\n')
	w.line = l
	_, err := w.w.Write(l)
	return err
}

func appendPadded(b []byte, n int64, width int) []byte {
	s := strconv.AppendInt(nil, n, 10)
	for i := len(s); i < width; i++ {
		b = append(b, '0')
	}
	return append(b, s...)
}

func (g *gen) write(files [3]string) (err error) {
	defer func() {
		for _, w := range g.out {
			if w == nil {
				continue
			}
			if cerr := w.f.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("close %s: %w", w.f.Name(), cerr)
			}
		}
	}()
	for b, name := range files {
		f, err := os.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return fmt.Errorf("create %s: %w", name, err)
		}
		g.out[b] = &bankWriter{f: f, w: bufio.NewWriterSize(f, 1<<20), bank: b}
	}
	for _, w := range g.out {
		if _, err := w.w.WriteString(header); err != nil {
			return fmt.Errorf("write header: %w", err)
		}
	}
	for j := range g.persons {
		if err := g.writePerson(j); err != nil {
			return err
		}
	}
	for _, w := range g.out {
		if err := w.w.Flush(); err != nil {
			return fmt.Errorf("write %s: %w", w.f.Name(), err)
		}
	}
	return nil
}

// emit writes a record to its bank.
func (g *gen) emit(bank int, r *record) error {
	if err := g.out[bank].write(r); err != nil {
		return fmt.Errorf("write %s: %w", Banks[bank], err)
	}
	return nil
}

// writePerson writes person j's own activity, the incoming side of
// transfers j sends, and the planted records led by j.
func (g *gen) writePerson(j int) error {
	p := g.person(j)
	for i := range g.planted[j] {
		e := &g.planted[j][i]
		if err := g.emit(e.bank, &e.r); err != nil {
			return err
		}
	}
	r := g.rng(streamEvents, uint64(j))
	week := 7 * 24 * time.Hour
	for w := range g.cfg.Weeks {
		ws := Start.Add(time.Duration(w) * week)
		subs := 0 // sub-threshold cash deposits this week, all banks
		for _, b := range p.banks {
			at := func() time.Time {
				return ws.Add(time.Duration(r.Int64N(int64(week/time.Second))) * time.Second)
			}
			acct := p.accounts[b][r.IntN(len(p.accounts[b]))]
			own := func(kind, dir, cpBank, cpAcct, pref string, amount int64, cur string) record {
				return record{t: at(), account: acct, customer: p.ref, name: p.name, kind: kind, dir: dir,
					cpBank: cpBank, cpAcct: cpAcct, pref: pref, amount: amount, currency: cur}
			}
			var recs []record
			if p.salaried && b == p.primary && w%4 == j%4 {
				recs = append(recs, own("transfer", "in", "ext", g.extAccount(r), g.paymentRef(), 1500+r.Int64N(4500), "EUR"))
			}
			for range 3 {
				if r.Float64() < 0.3*p.act {
					cur := "EUR"
					if u := r.Float64(); u < 0.05 {
						cur = "USD"
					} else if u < 0.08 {
						cur = "GBP"
					}
					recs = append(recs, own("card", "out", "ext", g.merchant(r), "", 3+r.Int64N(300), cur))
				}
			}
			if r.Float64() < 0.12*p.act {
				recs = append(recs, own("cash_withdrawal", "out", "", "", "", 20*(1+r.Int64N(25)), "EUR"))
			}
			if r.Float64() < 0.06*p.act {
				recs = append(recs, own("cash_deposit", "in", "", "", "", g.cashAmount(r, p, &subs), "EUR"))
			}
			for _, rec := range recs {
				if err := g.emit(b, &rec); err != nil {
					return err
				}
			}
			if r.Float64() < 0.15*p.act {
				if err := g.transfer(r, p, b, acct, at()); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// cashAmount draws a cash deposit, re-drawing a sub-threshold amount once
// the person's weekly cap is reached.
func (g *gen) cashAmount(r *rand.Rand, p *person, subs *int) int64 {
	for {
		u := r.Float64()
		switch {
		case u < 0.60:
			return 50 + r.Int64N(2950)
		case u < 0.85:
			return 3000 + r.Int64N(6000)
		case u < 0.93:
			return Threshold + r.Int64N(20000)
		}
		if *subs < p.subCap {
			*subs++
			return BandLow + r.Int64N(Threshold-BandLow)
		}
	}
}

func (g *gen) extAccount(r *rand.Rand) string {
	return fmt.Sprintf("x-%08x", r.Uint32())
}

func (g *gen) merchant(r *rand.Rand) string {
	return fmt.Sprintf("m-%04d", r.IntN(5000))
}

// transferAmount draws a transfer amount, log-uniform from 10 to 50,000 EUR
// with some just below the cash threshold (which is not structuring: the
// pattern counts cash deposits).
func transferAmount(r *rand.Rand) int64 {
	if r.Float64() < 0.05 {
		return BandLow + r.Int64N(Threshold-BandLow)
	}
	return int64(math.Exp(math.Log(10) + r.Float64()*(math.Log(50000)-math.Log(10))))
}

// transfer writes a transfer from person p's account at bank b. Ordinary
// customers pay ordinary customers of greater index, or themselves at a
// greater bank, so transfers between ordinary customers never close a
// cycle; special customers pay only outside banks.
func (g *gen) transfer(r *rand.Rand, p *person, b int, acct string, t time.Time) error {
	amount := transferAmount(r)
	pref := g.paymentRef()
	out := record{t: t, account: acct, customer: p.ref, name: p.name, kind: "transfer", dir: "out", pref: pref, amount: amount, currency: "EUR"}
	var to *person
	toBank, toAcct := -1, ""
	u := r.Float64()
	switch {
	case p.special:
	case u < 0.55:
		// another ordinary customer of greater index
		for range 4 {
			n := g.persons - p.idx - 1
			if n <= 0 {
				break
			}
			j := p.idx + 1 + r.IntN(min(n, 3000))
			if g.special[j] != nil {
				continue // re-draw: special customers get no noise transfers
			}
			to = g.person(j)
			toBank = to.banks[r.IntN(len(to.banks))]
			toAcct = to.accounts[toBank][r.IntN(len(to.accounts[toBank]))]
			break
		}
	case u < 0.70:
		// the same customer at a greater bank, or their other account here
		for _, nb := range p.banks {
			if nb > b {
				to, toBank, toAcct = p, nb, p.accounts[nb][0]
				break
			}
		}
		if to == nil && len(p.accounts[b]) > 1 {
			for _, a := range p.accounts[b] {
				if a != acct {
					to, toBank, toAcct = p, b, a
				}
			}
		}
	}
	if to == nil {
		out.cpBank, out.cpAcct = "ext", g.extAccount(r)
		return g.emit(b, &out)
	}
	out.cpBank, out.cpAcct = Banks[toBank], toAcct
	in := record{t: t, account: toAcct, customer: to.ref, name: to.name, kind: "transfer", dir: "in",
		cpBank: Banks[b], cpAcct: acct, pref: pref, amount: amount, currency: "EUR"}
	if err := g.emit(b, &out); err != nil {
		return err
	}
	return g.emit(toBank, &in)
}

var errTooSmall = errors.New("too few customers for the planted patterns and decoys; raise rows per bank")
