package tee

import (
	"crypto/sha256"
	"testing"
)

func FuzzVerifyVirtual(f *testing.F) {
	key, err := NewVirtualKey()
	if err != nil {
		f.Fatal(err)
	}
	m := sha256.Sum256(nil)
	raw, err := VirtualEvidence(key, m[:], [ReportDataSize]byte{1})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add([]byte(`{"payload":"","publicKey":"","signature":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Verify(Evidence{Platform: Virtual, Raw: b}, VerifyOptions{})
		if err == nil && (r.Platform != Virtual || len(r.Measurement) != 32) {
			t.Fatalf("accepted evidence gives %+v", r)
		}
	})
}

func FuzzVerifySNP(f *testing.F) {
	ev := snpEvidence()
	f.Add(ev.Raw, ev.VCEK)
	f.Fuzz(func(t *testing.T, report, vcek []byte) {
		Verify(Evidence{Platform: SevSnp, Raw: report, VCEK: vcek}, VerifyOptions{Now: snpNow})
	})
}

func FuzzVerifyTDX(f *testing.F) {
	f.Add(tdxEvidence().Raw)
	f.Fuzz(func(t *testing.T, quote []byte) {
		Verify(Evidence{Platform: TDX, Raw: quote}, VerifyOptions{Now: tdxNow})
	})
}

func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(`{"allowVirtual":true,"allowDebug":true,"virtual":{"measurements":["*"]}}`))
	f.Add([]byte(`{"tdx":{"mrtd":["*"],"rtmrs":[]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePolicy(b)
		if err != nil {
			return
		}
		enc, err := p.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParsePolicy(enc); err != nil {
			t.Fatalf("re-encoded policy %s does not parse: %v", enc, err)
		}
	})
}
