package tee

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	sevtestdata "github.com/google/go-sev-guest/verify/testdata"
	tdxtestdata "github.com/google/go-tdx-guest/testing/testdata"
)

// Fixed clocks inside the sample certificates' validity.
var (
	snpNow = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	tdxNow = time.Date(2023, 7, 1, 0, 0, 0, 0, time.UTC)
)

func snpEvidence() Evidence {
	return Evidence{Platform: SevSnp, Raw: bytes.Clone(sevtestdata.AttestationBytes), VCEK: bytes.Clone(sevtestdata.VcekBytes)}
}

// tdxSampleTrailer is what go-tdx-guest appends to its sample quote after
// the signed data, "only for testing purpose". Verify refuses unsigned
// trailing bytes other than zeros, so the tests cut it off.
const tdxSampleTrailer = "\nextra bytes(only for testing purpose)\n"

func tdxEvidence() Evidence {
	raw, ok := bytes.CutSuffix(tdxtestdata.RawQuote, []byte(tdxSampleTrailer))
	if !ok {
		panic("the sample TDX quote no longer ends with its test trailer")
	}
	return Evidence{Platform: TDX, Raw: bytes.Clone(raw)}
}

func TestVerifyTDXSampleWithTrailerRefused(t *testing.T) {
	if _, err := Verify(Evidence{Platform: TDX, Raw: tdxtestdata.RawQuote}, VerifyOptions{Now: tdxNow}); !errors.Is(err, ErrMalformed) {
		t.Errorf("Verify(sample with its unsigned trailer) = %v, want ErrMalformed", err)
	}
}

func TestVerifySNPSample(t *testing.T) {
	r, err := Verify(snpEvidence(), VerifyOptions{Now: snpNow})
	if err != nil {
		t.Fatalf("Verify(sample SNP report) = %v, want nil", err)
	}
	if !r.Debug {
		t.Errorf("Debug = false, want true (the sample is a debug VM)")
	}
	if got := r.Claims["x-ms-sevsnpvm-is-debuggable"]; got != true {
		t.Errorf("x-ms-sevsnpvm-is-debuggable = %v, want true", got)
	}
	if got, want := r.Claims["x-ms-sevsnpvm-launchmeasurement"], hex.EncodeToString(r.Measurement); got != want {
		t.Errorf("launchmeasurement claim = %v, want %v", got, want)
	}
	if got := r.Claims["x-ms-sevsnpvm-reportdata"].(string); got[:10] != "0102030405" {
		t.Errorf("reportdata claim = %s, want 0102030405…", got)
	}
	if len(r.Measurement) != 48 {
		t.Errorf("measurement is %d bytes, want 48", len(r.Measurement))
	}
}

func TestVerifyTDXSample(t *testing.T) {
	r, err := Verify(tdxEvidence(), VerifyOptions{Now: tdxNow})
	if err != nil {
		t.Fatalf("Verify(sample TDX quote) = %v, want nil", err)
	}
	if got := r.Claims["tdx_mrtd"].(string); got[:8] != "6363b804" {
		t.Errorf("tdx_mrtd = %s, want 6363b804…", got)
	}
	if len(r.RTMRs) != 4 {
		t.Errorf("%d RTMRs, want 4", len(r.RTMRs))
	}
	for _, c := range []string{"tdx_rtmr0", "tdx_rtmr3", "tdx_report_data", "dbgstat", "tdx_td_attributes_debug"} {
		if _, ok := r.Claims[c]; !ok {
			t.Errorf("claim %s missing", c)
		}
	}
}

// TestFlippedBytes flips each bit-0 of every byte of the real evidence in
// turn: every one must make verification fail.
func TestFlippedBytes(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	cases := []struct {
		name  string
		ev    func() Evidence
		field func(*Evidence) []byte
		now   time.Time
	}{
		{"snp report", snpEvidence, func(e *Evidence) []byte { return e.Raw }, snpNow},
		{"snp vcek", snpEvidence, func(e *Evidence) []byte { return e.VCEK }, snpNow},
		{"tdx quote", tdxEvidence, func(e *Evidence) []byte { return e.Raw }, tdxNow},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := tc.ev()
			n := len(tc.field(&base))
			passed := 0
			for i := range n {
				ev := tc.ev()
				tc.field(&ev)[i] ^= 0x01
				if _, err := Verify(ev, VerifyOptions{Now: tc.now}); err == nil {
					passed++
					if passed < 10 {
						t.Errorf("byte %d (0x%x) flipped: Verify = nil, want an error", i, i)
					}
				} else if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnverified) {
					t.Errorf("byte %d flipped: error %v wraps neither ErrMalformed nor ErrUnverified", i, err)
				}
			}
			if passed > 0 {
				t.Errorf("%d of %d flipped bytes still verify, want 0", passed, n)
			}
		})
	}
}

func TestVerifyExpired(t *testing.T) {
	if _, err := Verify(snpEvidence(), VerifyOptions{Now: time.Date(2035, 1, 1, 0, 0, 0, 0, time.UTC)}); !errors.Is(err, ErrUnverified) {
		t.Errorf("Verify(SNP, 2035) = %v, want ErrUnverified", err)
	}
}
