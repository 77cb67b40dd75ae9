package receipt

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"testing"

	"github.com/parleyhq/parley/api"
)

// BenchmarkVerify verifies a P-384 receipt with a 20-step proof (a tree of
// about a million transactions) and no service endorsements.
func BenchmarkVerify(b *testing.B) {
	s := newService(b)
	n := newNode(b, s)
	parts := leafParts(1<<20, [32]byte{})
	proof := make(Proof, 20)
	for i := range proof {
		var h [32]byte
		binary.BigEndian.PutUint64(h[:], uint64(i))
		h = sha256.Sum256(h[:])
		if i%2 == 0 {
			proof[i] = Left(h)
		} else {
			proof[i] = Right(h)
		}
	}
	root, err := Root(parts.Leaf(), proof)
	if err != nil {
		b.Fatal(err)
	}
	sig, err := ecdsa.SignASN1(rand.Reader, n.key, root[:])
	if err != nil {
		b.Fatal(err)
	}
	r := New(n.certPEM, n.id, parts, proof, sig, nil)
	if err := Verify(r, s.Cert); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := Verify(r, s.Cert); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyAzure verifies the real P-256 Azure receipt 2 (10-step
// proof).
func BenchmarkVerifyAzure(b *testing.B) {
	v := loadAzure(b)[1]
	b.ReportAllocs()
	for b.Loop() {
		if err := Verify(&v.receipt, v.service); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLeaf(b *testing.B) {
	parts := leafParts(12345, [32]byte{7})
	ce := CommitEvidenceDigest(parts.CommitEvidence)
	b.SetBytes(96)
	b.ReportAllocs()
	var sink [32]byte
	for b.Loop() {
		sink = Leaf(parts.WriteSetDigest, ce, parts.ClaimsDigest)
	}
	_ = sink
}

func BenchmarkClaimsDigest(b *testing.B) {
	claims := []api.ApplicationClaim{LedgerEntryClaim("subledger:0", "Hello world", make([]byte, 32))}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ClaimsDigest(claims); err != nil {
			b.Fatal(err)
		}
	}
}
