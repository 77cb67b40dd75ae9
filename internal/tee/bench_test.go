package tee

import (
	"crypto/sha256"
	"testing"
)

func BenchmarkVerifySNP(b *testing.B) {
	ev := snpEvidence()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(ev, VerifyOptions{Now: snpNow}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyTDX(b *testing.B) {
	ev := tdxEvidence()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(ev, VerifyOptions{Now: tdxNow}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyVirtual(b *testing.B) {
	key, _ := NewVirtualKey()
	m := sha256.Sum256(nil)
	raw, err := VirtualEvidence(key, m[:], [ReportDataSize]byte{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(Evidence{Platform: Virtual, Raw: raw}, VerifyOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
