package amlgen

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// plan picks the special customers and builds the planted patterns and
// decoys, checking each against the patterns' definitions.
func (g *gen) plan() error {
	r := g.rng(streamPlan, 0)
	c := g.cfg
	need := c.Structurers + 4*c.Decoys + 3*c.RoundTrips + (3+3+4+3)*c.Decoys
	if need*4 > g.persons {
		return fmt.Errorf("%d special customers of %d: %w", need, g.persons, errTooSmall)
	}
	pick := func(s *spec) int {
		for {
			j := r.IntN(g.persons)
			if g.special[j] == nil {
				g.special[j] = s
				return j
			}
		}
	}
	for range c.Structurers {
		g.plantStructurer(r, pick)
	}
	for range c.Decoys {
		for _, kind := range []string{"near", "spread", "large", "small"} {
			g.plantDepositDecoy(r, pick, kind)
		}
	}
	for range c.RoundTrips {
		if err := g.plantCycle(r, pick, ""); err != nil {
			return err
		}
	}
	for range c.Decoys {
		for _, kind := range []string{"amounts", "slow", "other", "backwards"} {
			if err := g.plantCycle(r, pick, kind); err != nil {
				return err
			}
		}
	}
	slices.SortFunc(g.structuring, func(a, b Structuring) int {
		return strings.Compare(a.Customer+a.Week, b.Customer+b.Week)
	})
	slices.SortFunc(g.roundTrips, func(a, b RoundTrip) int {
		return strings.Compare(a.Started+a.Customer, b.Started+b.Customer)
	})
	return nil
}

// chooseBanks returns n distinct banks in random order.
func chooseBanks(r *rand.Rand, n int) []int {
	p := r.Perm(3)
	return p[:n]
}

// deposit is one planted cash deposit.
func (g *gen) deposit(lead int, p *person, bank int, t time.Time, amount int64) {
	g.planted[lead] = append(g.planted[lead], event{bank: bank, r: record{
		t: t, account: p.accounts[bank][0], customer: p.ref, name: p.name,
		kind: "cash_deposit", dir: "in", amount: amount, currency: "EUR",
	}})
}

// inWeek returns a random business-hours instant of week w, day 0..6.
func inWeek(r *rand.Rand, w int) time.Time {
	return Start.AddDate(0, 0, 7*w+r.IntN(7)).Add(time.Duration(8*3600+r.IntN(10*3600)) * time.Second)
}

// plantStructurer plants 4..7 sub-threshold cash deposits in one week over
// two or three banks, at most three at any bank.
func (g *gen) plantStructurer(r *rand.Rand, pick func(*spec) int) {
	banks := chooseBanks(r, 2+r.IntN(2))
	s := &spec{subCap: 0}
	for _, b := range banks {
		s.accounts[b] = 1
	}
	j := pick(s)
	p := g.person(j)
	n := min(MinDeposits+r.IntN(4), 3*len(banks))
	per := make([]int, 3)
	for i := range n {
		b := banks[i%len(banks)]
		for per[b] >= 3 {
			b = banks[(slices.Index(banks, b)+1)%len(banks)]
		}
		per[b]++
	}
	w := r.IntN(g.cfg.Weeks)
	f := Structuring{Customer: p.ref, Week: Start.AddDate(0, 0, 7*w).Format("2006-01-02"), Deposits: n}
	var used []string
	for b := range 3 {
		for range per[b] {
			amount := int64(BandLow + r.IntN(Threshold-BandLow))
			f.Total += amount
			g.deposit(j, p, b, inWeek(r, w), amount)
		}
		if per[b] > 0 {
			used = append(used, Banks[b])
		}
	}
	f.Banks = strings.Join(used, "+")
	g.structuring = append(g.structuring, f)
}

// plantDepositDecoy plants cash deposits that a naive rule would flag but
// structuring (MinDeposits in the band in one week) does not:
//   - near: three sub-threshold deposits in one week over two banks;
//   - spread: one sub-threshold deposit a week for six to nine weeks;
//   - large: four to six deposits at or above the threshold in one week;
//   - small: five to eight deposits far below the band in one week.
func (g *gen) plantDepositDecoy(r *rand.Rand, pick func(*spec) int, kind string) {
	banks := chooseBanks(r, 2)
	s := &spec{subCap: 0}
	for _, b := range banks {
		s.accounts[b] = 1
	}
	j := pick(s)
	p := g.person(j)
	w := r.IntN(g.cfg.Weeks - 9)
	band := func() int64 { return int64(BandLow + r.IntN(Threshold-BandLow)) }
	switch kind {
	case "near":
		for i := range 3 {
			g.deposit(j, p, banks[i%2], inWeek(r, w), band())
		}
	case "spread":
		for i := range 6 + r.IntN(4) {
			g.deposit(j, p, banks[i%2], inWeek(r, w+i), band())
		}
	case "large":
		for i := range 4 + r.IntN(3) {
			g.deposit(j, p, banks[i%2], inWeek(r, w), int64(Threshold+r.IntN(5000)))
		}
	case "small":
		for i := range 5 + r.IntN(4) {
			g.deposit(j, p, banks[i%2], inWeek(r, w), int64(1000+r.IntN(4000)))
		}
	}
}

// hop is one payment of a planted cycle or decoy chain.
type hop struct {
	from, to         *person
	fromBank, toBank int
	fromAcct, toAcct string
	t                time.Time
	amount           int64
}

// cycleOK reports whether three hops, in flow order, make a round trip:
// each hop after the previous (a tie counts as after), within Window, and
// the smallest amount at least 90% of the largest.
func cycleOK(h [3]hop) bool {
	if h[0].from.idx != h[2].to.idx || h[0].fromBank != h[2].toBank {
		return false
	}
	if h[1].t.Before(h[0].t) || h[2].t.Before(h[1].t) || !h[0].t.Before(h[2].t) {
		return false
	}
	if h[2].t.Sub(h[0].t) > Window {
		return false
	}
	lo := min(h[0].amount, h[1].amount, h[2].amount)
	hi := max(h[0].amount, h[1].amount, h[2].amount)
	return 10*lo >= 9*hi
}

// plantCycle plants a round trip (kind "") or a decoy that fails one of its
// conditions:
//   - amounts: the hops' amounts differ widely;
//   - slow: the cycle takes two to four weeks;
//   - other: the money returns to another customer of the origin bank;
//   - backwards: the second bank pays on before it is paid.
func (g *gen) plantCycle(r *rand.Rand, pick func(*spec) int, kind string) error {
	banks := chooseBanks(r, 3)
	a, b, c := banks[0], banks[1], banks[2]
	var so, sx, sz spec
	so.subCap, sx.subCap, sz.subCap = 2, 2, 2
	so.accounts[a] = 2
	sx.accounts[b] = 1
	sz.accounts[c] = 1
	ps := []int{pick(&so), pick(&sx), pick(&sz)}
	origin, x, z := g.person(ps[0]), g.person(ps[1]), g.person(ps[2])
	back, backAcct := origin, origin.accounts[a][1]
	if kind == "other" {
		sq := spec{subCap: 2}
		sq.accounts[a] = 1
		ps = append(ps, pick(&sq))
		back = g.person(ps[3])
		backAcct = back.accounts[a][0]
	}
	days := g.cfg.Weeks*7 - 40
	t1 := Start.Add(time.Duration(r.IntN(days*86400)) * time.Second)
	gap := func() time.Duration { return time.Duration(3600+r.IntN(47*3600)) * time.Second }
	t2 := t1.Add(gap())
	t3 := t2.Add(gap())
	m1 := int64(20_000 + r.IntN(180_000))
	skim := func(m int64) int64 { return m * int64(950+r.IntN(46)) / 1000 }
	m2 := skim(m1)
	m3 := skim(m2)
	switch kind {
	case "amounts":
		m2 = m1 * int64(20+r.IntN(50)) / 100
		m3 = skim(m2)
	case "slow":
		t2 = t1.Add(time.Duration(7+r.IntN(7)) * 24 * time.Hour)
		t3 = t2.Add(time.Duration(7+r.IntN(7)) * 24 * time.Hour)
	case "backwards":
		t2 = t1.Add(-gap())
		t3 = t1.Add(gap())
	}
	h := [3]hop{
		{from: origin, to: x, fromBank: a, toBank: b, fromAcct: origin.accounts[a][0], toAcct: x.accounts[b][0], t: t1, amount: m1},
		{from: x, to: z, fromBank: b, toBank: c, fromAcct: x.accounts[b][0], toAcct: z.accounts[c][0], t: t2, amount: m2},
		{from: z, to: back, fromBank: c, toBank: a, fromAcct: z.accounts[c][0], toAcct: backAcct, t: t3, amount: m3},
	}
	if ok := cycleOK(h); ok != (kind == "") {
		return fmt.Errorf("planted %q cycle: round trip is %t", kind, ok)
	}
	lead := slices.Min(ps)
	for _, hp := range h {
		pref := g.paymentRef()
		g.planted[lead] = append(g.planted[lead],
			event{bank: hp.fromBank, r: record{t: hp.t, account: hp.fromAcct, customer: hp.from.ref, name: hp.from.name,
				kind: "transfer", dir: "out", cpBank: Banks[hp.toBank], cpAcct: hp.toAcct, pref: pref, amount: hp.amount, currency: "EUR"}},
			event{bank: hp.toBank, r: record{t: hp.t, account: hp.toAcct, customer: hp.to.ref, name: hp.to.name,
				kind: "transfer", dir: "in", cpBank: Banks[hp.fromBank], cpAcct: hp.fromAcct, pref: pref, amount: hp.amount, currency: "EUR"}})
	}
	if kind == "" {
		g.roundTrips = append(g.roundTrips, RoundTrip{
			Started:    formatTime(t1),
			OriginBank: Banks[a],
			Customer:   origin.ref,
			Via:        fmt.Sprintf("%s:%s>%s:%s", Banks[b], x.ref, Banks[c], z.ref),
			Sent:       m1,
			Returned:   m3,
		})
	}
	return nil
}
