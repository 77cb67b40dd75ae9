package merkle_test

import (
	"slices"
	"testing"

	"github.com/parleyhq/parley/internal/merkle"
)

// hashesOf cuts b into 32-byte hashes, dropping a short tail.
func hashesOf(b []byte) []Hash {
	hs := make([]Hash, len(b)/32)
	for i := range hs {
		hs[i] = Hash(b[32*i:])
	}
	return hs
}

// FuzzVerifyConsistency feeds VerifyConsistency arbitrary sizes, roots and
// proofs, then valid proofs of a real tree read at fuzzed sizes and with
// fuzzed bytes XORed in. It must never panic, must always agree with the
// reference verifier, must accept every untouched valid proof and must
// reject every tampered one at the true sizes.
func FuzzVerifyConsistency(f *testing.F) {
	f.Add(uint64(3), uint64(5), int8(0), int8(0), []byte{}, []byte{})
	f.Add(uint64(1), uint64(2), int8(1), int8(1), []byte{}, make([]byte, 64))
	f.Add(uint64(4), uint64(70), int8(0), int8(0), []byte{1}, make([]byte, 32*8))
	f.Add(^uint64(0), ^uint64(0)-1, int8(-1), int8(3), []byte{0x80}, []byte("arbitrary bytes that are not a proof at all, really"))
	f.Add(uint64(7), uint64(1<<40), int8(0), int8(-2), make([]byte, 64), make([]byte, 32*40))
	f.Fuzz(func(t *testing.T, oldSize, newSize uint64, dOld, dNew int8, roots, proofBytes []byte) {
		// Arbitrary input: no panic, same answer as the reference.
		var r1, r2 Hash
		copy(r1[:], roots)
		if len(roots) > 32 {
			copy(r2[:], roots[32:])
		}
		proof := hashesOf(proofBytes)
		err := merkle.VerifyConsistency(oldSize, newSize, r1, r2, proof)
		if want := refVerify(oldSize, newSize, r1, r2, proof); (err == nil) != want {
			t.Fatalf("VerifyConsistency(%d, %d, %x, %x, %x) = %v, reference accepts: %t", oldSize, newSize, r1, r2, proof, err, want)
		}

		// A real tree: its proof verifies untouched.
		m := 1 + oldSize%100
		n := m + newSize%100
		tr := build(leaves(int(n), newSize))
		valid, err := tr.Consistency(m, n)
		if err != nil {
			t.Fatalf("Consistency(%d, %d): %v", m, n, err)
		}
		v1, _ := tr.RootAt(m)
		v2, _ := tr.RootAt(n)
		if err := merkle.VerifyConsistency(m, n, v1, v2, valid); err != nil {
			t.Fatalf("VerifyConsistency(%d, %d) of a valid proof: %v", m, n, err)
		}

		// Tampered: fuzzed bytes XORed into the roots and the proof.
		p := slices.Clone(valid)
		t1, t2 := v1, v2
		for i, b := range roots {
			switch {
			case i < 32:
				t1[i] ^= b
			case i < 64:
				t2[i-32] ^= b
			}
		}
		for i, b := range proofBytes {
			if i/32 < len(p) {
				p[i/32][i%32] ^= b
			}
		}
		tampered := t1 != v1 || t2 != v2 || !slices.Equal(p, valid)
		if m == n {
			// The proof is empty: equal roots are all there is to check.
			tampered = t1 != t2
		}
		err = merkle.VerifyConsistency(m, n, t1, t2, p)
		if tampered && err == nil {
			t.Fatalf("VerifyConsistency(%d, %d) accepts a tampered proof or root", m, n)
		}
		if !tampered && err != nil {
			t.Fatalf("VerifyConsistency(%d, %d) of a valid proof: %v", m, n, err)
		}

		// Other sizes: whatever the answer, the reference must agree.
		m2, n2 := m+uint64(int64(dOld)), n+uint64(int64(dNew))
		err = merkle.VerifyConsistency(m2, n2, t1, t2, p)
		if want := refVerify(m2, n2, t1, t2, p); (err == nil) != want {
			t.Fatalf("VerifyConsistency(%d, %d) of the proof for (%d, %d) = %v, reference accepts: %t", m2, n2, m, n, err, want)
		}
	})
}
