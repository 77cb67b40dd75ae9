package merkle_test

import (
	"crypto/sha256"
	"encoding/binary"
	"testing"

	"github.com/parleyhq/parley/internal/merkle"
)

// benchSize is 1M in the decimal sense: not a power of two, so roots,
// paths and proofs of the whole tree cross incomplete subtrees.
const benchSize = 1_000_000

// benchTree builds a tree of benchSize leaves.
func benchTree(b *testing.B) *merkle.Tree {
	b.Helper()
	var t merkle.Tree
	var leaf Hash
	for i := range uint64(benchSize) {
		binary.LittleEndian.PutUint64(leaf[:], i)
		t.Append(sha256.Sum256(leaf[:]))
	}
	return &t
}

// next is a cheap deterministic sequence over [1, benchSize].
func next(x uint64) uint64 { return x*6364136223846793005 + 1442695040888963407 }

// BenchmarkAppend reports the cost of one leaf (one hash amortised).
func BenchmarkAppend(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(32)
	var t merkle.Tree
	var leaf Hash
	for b.Loop() {
		leaf[0]++
		t.Append(leaf)
	}
}

func BenchmarkPath(b *testing.B) {
	t := benchTree(b)
	b.ReportAllocs()
	x := uint64(1)
	for b.Loop() {
		x = next(x)
		if _, err := t.Path(x%benchSize, benchSize); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRootAt(b *testing.B) {
	t := benchTree(b)
	b.ReportAllocs()
	x := uint64(1)
	for b.Loop() {
		x = next(x)
		if _, err := t.RootAt(1 + x%benchSize); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkConsistency(b *testing.B) {
	t := benchTree(b)
	b.ReportAllocs()
	x := uint64(1)
	for b.Loop() {
		x = next(x)
		if _, err := t.Consistency(1+x%benchSize, benchSize); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyConsistency(b *testing.B) {
	t := benchTree(b)
	const old = benchSize/3 + 7
	proof, err := t.Consistency(old, benchSize)
	if err != nil {
		b.Fatal(err)
	}
	r1, _ := t.RootAt(old)
	r2 := t.Root()
	b.ReportAllocs()
	for b.Loop() {
		if err := merkle.VerifyConsistency(old, benchSize, r1, r2, proof); err != nil {
			b.Fatal(err)
		}
	}
}
