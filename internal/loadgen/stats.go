package loadgen

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// maxSamples bounds the latencies one recorder keeps; beyond it, reservoir
// sampling keeps a uniform sample.
const maxSamples = 1 << 18

// recorder collects latencies of one kind from one worker.
type recorder struct {
	n       int
	max     time.Duration
	samples []time.Duration
	rng     *rand.Rand
}

func (r *recorder) add(d time.Duration) {
	r.n++
	r.max = max(r.max, d)
	if len(r.samples) < maxSamples {
		r.samples = append(r.samples, d)
		return
	}
	if i := r.rng.IntN(r.n); i < maxSamples {
		r.samples[i] = d
	}
}

// Stats summarise one kind of operation over the measured window.
type Stats struct {
	Count  int           `json:"count"`
	PerSec float64       `json:"perSec"`
	P50    time.Duration `json:"-"`
	P90    time.Duration `json:"-"`
	P99    time.Duration `json:"-"`
	Max    time.Duration `json:"-"`
}

// MarshalJSON writes latencies as milliseconds.
func (s Stats) MarshalJSON() ([]byte, error) {
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
	return json.Marshal(statsJSON{s.Count, math.Round(s.PerSec*10) / 10, ms(s.P50), ms(s.P90), ms(s.P99), ms(s.Max)})
}

// statsJSON is the JSON form of Stats.
type statsJSON struct {
	Count  int     `json:"count"`
	PerSec float64 `json:"perSec"`
	P50    float64 `json:"p50Ms"`
	P90    float64 `json:"p90Ms"`
	P99    float64 `json:"p99Ms"`
	Max    float64 `json:"maxMs"`
}

// UnmarshalJSON reads what MarshalJSON writes.
func (s *Stats) UnmarshalJSON(b []byte) error {
	var j statsJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	d := func(ms float64) time.Duration { return time.Duration(math.Round(ms * 1e6)) }
	*s = Stats{Count: j.Count, PerSec: j.PerSec, P50: d(j.P50), P90: d(j.P90), P99: d(j.P99), Max: d(j.Max)}
	return nil
}

// summarize merges recorders and computes Stats over a window.
func summarize(rs []*recorder, window time.Duration) Stats {
	var s Stats
	var all []time.Duration
	for _, r := range rs {
		s.Count += r.n
		s.Max = max(s.Max, r.max)
		all = append(all, r.samples...)
	}
	if window > 0 {
		s.PerSec = float64(s.Count) / window.Seconds()
	}
	slices.Sort(all)
	s.P50 = Percentile(all, 0.50)
	s.P90 = Percentile(all, 0.90)
	s.P99 = Percentile(all, 0.99)
	return s
}

// Percentile returns the p-th percentile (0 < p ≤ 1) of sorted by the
// nearest-rank method: the smallest sample such that at least a fraction p
// of the samples are at most it. It returns 0 for no samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	// The epsilon keeps 0.28*25 = 7.000000000000001 at rank 7.
	rank := int(math.Ceil(p*float64(n) - 1e-9))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}
