package merkle_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/quick"

	"github.com/parleyhq/parley/internal/merkle"
)

type Hash = merkle.Hash

// The reference implementation below follows RFC 9162 §2.1 literally
// (recursion over slices of leaves) with SHA256(left ‖ right) nodes. It
// shares no code with the package.

func refHash(l, r Hash) Hash { return sha256.Sum256(append(l[:], r[:]...)) }

// refSplit returns the largest power of two strictly less than n ≥ 2.
func refSplit[T int | uint64](n T) T {
	k := T(1)
	for k <= (n-1)/2 {
		k *= 2
	}
	return k
}

func refRoot(d []Hash) Hash {
	if len(d) == 1 {
		return d[0]
	}
	k := refSplit(len(d))
	return refHash(refRoot(d[:k]), refRoot(d[k:]))
}

func refPath(m int, d []Hash) []merkle.Step {
	if len(d) == 1 {
		return nil
	}
	k := refSplit(len(d))
	if m < k {
		return append(refPath(m, d[:k]), merkle.Step{Left: false, Sibling: refRoot(d[k:])})
	}
	return append(refPath(m-k, d[k:]), merkle.Step{Left: true, Sibling: refRoot(d[:k])})
}

func refSubproof(m int, d []Hash, whole bool) []Hash {
	n := len(d)
	if m == n {
		if whole {
			return nil
		}
		return []Hash{refRoot(d)}
	}
	k := refSplit(n)
	if m <= k {
		return append(refSubproof(m, d[:k], whole), refRoot(d[k:]))
	}
	return append(refSubproof(m-k, d[k:], false), refRoot(d[:k]))
}

// refVerify checks a consistency proof by rebuilding both roots along the
// recursion of SUBPROOF, consuming the proof in order: a different algorithm
// from the RFC 9162 §2.1.4.2 bit walk that the package uses.
func refVerify(m, n uint64, oldRoot, newRoot Hash, proof []Hash) bool {
	if m == 0 || m > n {
		return false
	}
	if m == n {
		return len(proof) == 0 && oldRoot == newRoot
	}
	rest := proof
	next := func() (Hash, bool) {
		if len(rest) == 0 {
			return Hash{}, false
		}
		h := rest[0]
		rest = rest[1:]
		return h, true
	}
	var rec func(m, n uint64, whole bool) (o, nw Hash, ok bool)
	rec = func(m, n uint64, whole bool) (Hash, Hash, bool) {
		if m == n {
			if whole {
				return oldRoot, oldRoot, true
			}
			h, ok := next()
			return h, h, ok
		}
		k := refSplit(n)
		if m <= k {
			o, nw, ok := rec(m, k, whole)
			c, ok2 := next()
			return o, refHash(nw, c), ok && ok2
		}
		o, nw, ok := rec(m-k, n-k, false)
		c, ok2 := next()
		return refHash(c, o), refHash(c, nw), ok && ok2
	}
	o, nw, ok := rec(m, n, true)
	return ok && len(rest) == 0 && o == oldRoot && nw == newRoot
}

// leaves returns n distinct pseudo-random leaves.
func leaves(n int, seed uint64) []Hash {
	r := rand.New(rand.NewPCG(seed, 1))
	d := make([]Hash, n)
	for i := range d {
		for j := 0; j < len(d[i]); j += 8 {
			v := r.Uint64()
			for b := range 8 {
				d[i][j+b] = byte(v >> (8 * b))
			}
		}
	}
	return d
}

func build(d []Hash) *merkle.Tree {
	var t merkle.Tree
	for _, l := range d {
		t.Append(l)
	}
	return &t
}

func mustHex(t testing.TB, s string) Hash {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return Hash(b)
}

func TestHashChildren(t *testing.T) {
	l, r := sha256.Sum256([]byte("l")), sha256.Sum256([]byte("r"))
	if got, want := merkle.HashChildren(l, r), sha256.Sum256(append(l[:], r[:]...)); got != want {
		t.Errorf("HashChildren = %x, want %x", got, want)
	}
}

// TestGoldenRoots checks roots computed independently with Python:
//
//	import hashlib
//	H = lambda b: hashlib.sha256(b).digest()
//	L = [H(str(i).encode()) for i in range(7)]
//	def mth(d):
//	    if len(d) == 1: return d[0]
//	    k = 1
//	    while k*2 < len(d): k *= 2
//	    return H(mth(d[:k]) + mth(d[k:]))
//	for n in range(1, 8): print(n, mth(L[:n]).hex())
func TestGoldenRoots(t *testing.T) {
	golden := []string{
		"5feceb66ffc86f38d952786c6d696c79c2dbc239dd4e91b46729d73a27fb57e9",
		"b9b10a1bc77d2a241d120324db7f3b81b2edb67eb8e9cf02af9c95d30329aef5",
		"c80f77387d860fa469920d7ac2f8a959ef83a651f76dc54923734ed76daaef53",
		"c478fead0c89b79540638f844c8819d9a4281763af9272c7f3968776b6052345",
		"ea030edba0761730b75f565d17f9c40ee2b10633c3f4a696197832a6e67edf47",
		"5aaeb3eadf27de3588a1e1631adc0490528b4b84ca933af43213a75d4eb09a19",
		"e8a7fae8322910fba7beae39b1bf9f3993236dd79532f17f537cdfeb1fd895e4",
	}
	var tr merkle.Tree
	for i, g := range golden {
		tr.Append(sha256.Sum256([]byte(fmt.Sprint(i))))
		want := mustHex(t, g)
		if got := tr.Root(); got != want {
			t.Errorf("Root() at size %d = %x, want %x", i+1, got, want)
		}
	}
	for i, g := range golden {
		got, err := tr.RootAt(uint64(i + 1))
		if want := mustHex(t, g); err != nil || got != want {
			t.Errorf("RootAt(%d) = %x, %v, want %x", i+1, got, err, want)
		}
	}
}

func TestEmptyTree(t *testing.T) {
	var tr merkle.Tree
	if got := tr.Size(); got != 0 {
		t.Errorf("Size() = %d, want 0", got)
	}
	if got := tr.Root(); got != (Hash{}) {
		t.Errorf("Root() = %x, want zero", got)
	}
	if err := tr.Truncate(0); err != nil {
		t.Errorf("Truncate(0) = %v, want nil", err)
	}
	tr.Append(Hash{1})
	if got, want := tr.Root(), (Hash{1}); got != want {
		t.Errorf("Root() of one leaf = %x, want the leaf %x", got, want)
	}
	if p, err := tr.Path(0, 1); err != nil || len(p) != 0 {
		t.Errorf("Path(0, 1) = %v, %v, want empty", p, err)
	}
}

// TestAgainstReference compares every root, path and consistency proof of
// every tree of 1 to 70 leaves with the reference implementation.
func TestAgainstReference(t *testing.T) {
	const max = 70
	d := leaves(max, 1)
	var tr merkle.Tree
	for n := 1; n <= max; n++ {
		tr.Append(d[n-1])
		want := refRoot(d[:n])
		if got := tr.Root(); got != want {
			t.Fatalf("Root() at size %d = %x, want %x", n, got, want)
		}
	}
	for n := 1; n <= max; n++ {
		un := uint64(n)
		root := refRoot(d[:n])
		if got, err := tr.RootAt(un); err != nil || got != root {
			t.Fatalf("RootAt(%d) = %x, %v, want %x", n, got, err, root)
		}
		for i := range n {
			ui := uint64(i)
			if got, err := tr.Leaf(ui); err != nil || got != d[i] {
				t.Fatalf("Leaf(%d) = %x, %v, want %x", i, got, err, d[i])
			}
			got, err := tr.Path(ui, un)
			if err != nil {
				t.Fatalf("Path(%d, %d): %v", i, n, err)
			}
			if want := refPath(i, d[:n]); !slices.Equal(got, want) {
				t.Fatalf("Path(%d, %d) = %v, want %v", i, n, got, want)
			}
			if r := merkle.RootFromPath(d[i], got); r != root {
				t.Fatalf("RootFromPath(leaf %d, Path(%d, %d)) = %x, want %x", i, i, n, r, root)
			}
		}
		for m := 1; m <= n; m++ {
			um := uint64(m)
			got, err := tr.Consistency(um, un)
			if err != nil {
				t.Fatalf("Consistency(%d, %d): %v", m, n, err)
			}
			if want := refSubproof(m, d[:n], true); !slices.Equal(got, want) {
				t.Fatalf("Consistency(%d, %d) = %x, want %x", m, n, got, want)
			}
			old := refRoot(d[:m])
			if err := merkle.VerifyConsistency(um, un, old, root, got); err != nil {
				t.Fatalf("VerifyConsistency(%d, %d) of a valid proof: %v", m, n, err)
			}
			if !refVerify(um, un, old, root, got) {
				t.Fatalf("reference rejects Consistency(%d, %d)", m, n)
			}
		}
	}
}

// TestQuickLarge compares random roots, paths and proofs of a larger tree
// with the reference.
func TestQuickLarge(t *testing.T) {
	const max = 5000
	d := leaves(max, 2)
	tr := build(d)
	check := func(a, b, c uint16) bool {
		n := 1 + int(a)%max
		m := 1 + int(b)%n
		i := int(c) % n
		root, err := tr.RootAt(uint64(n))
		if err != nil || root != refRoot(d[:n]) {
			t.Logf("RootAt(%d) = %x, %v, want %x", n, root, err, refRoot(d[:n]))
			return false
		}
		path, err := tr.Path(uint64(i), uint64(n))
		if err != nil || !slices.Equal(path, refPath(i, d[:n])) {
			t.Logf("Path(%d, %d) = %v, %v, want %v", i, n, path, err, refPath(i, d[:n]))
			return false
		}
		proof, err := tr.Consistency(uint64(m), uint64(n))
		if err != nil || !slices.Equal(proof, refSubproof(m, d[:n], true)) {
			t.Logf("Consistency(%d, %d) = %x, %v, want %x", m, n, proof, err, refSubproof(m, d[:n], true))
			return false
		}
		return merkle.VerifyConsistency(uint64(m), uint64(n), refRoot(d[:m]), root, proof) == nil
	}
	if err := quick.Check(check, &quick.Config{MaxCount: 300}); err != nil {
		t.Error(err)
	}
}

// TestVerifyConsistencyRejects tampers with valid proofs of every pair of
// sizes up to 70: a single flipped bit anywhere in the proof or either root,
// a truncated or extended proof.
func TestVerifyConsistencyRejects(t *testing.T) {
	t.Parallel()
	const max = 70
	d := leaves(max, 3)
	tr := build(d)
	for n := uint64(1); n <= max; n++ {
		for m := uint64(1); m <= n; m++ {
			proof, err := tr.Consistency(m, n)
			if err != nil {
				t.Fatalf("Consistency(%d, %d): %v", m, n, err)
			}
			r1, _ := tr.RootAt(m)
			r2, _ := tr.RootAt(n)
			reject := func(what string, r1, r2 Hash, proof []Hash) {
				t.Helper()
				err := merkle.VerifyConsistency(m, n, r1, r2, proof)
				if !errors.Is(err, merkle.ErrInvalidProof) {
					t.Fatalf("VerifyConsistency(%d, %d) with %s = %v, want ErrInvalidProof", m, n, what, err)
				}
			}
			// Every bit for small trees, a spread of bits beyond.
			bitsOf := func(j int) []int {
				if n <= 12 {
					bs := make([]int, 256)
					for i := range bs {
						bs[i] = i
					}
					return bs
				}
				return []int{0, 7, 8, (j*37 + 11) % 256, 255}
			}
			for j := range proof {
				for _, bit := range bitsOf(j) {
					p := slices.Clone(proof)
					p[j][bit/8] ^= 1 << (bit % 8)
					reject(fmt.Sprintf("bit %d of hash %d flipped", bit, j), r1, r2, p)
				}
			}
			for _, bit := range bitsOf(len(proof)) {
				f1, f2 := r1, r2
				f1[bit/8] ^= 1 << (bit % 8)
				f2[bit/8] ^= 1 << (bit % 8)
				reject(fmt.Sprintf("bit %d of old root flipped", bit), f1, r2, proof)
				reject(fmt.Sprintf("bit %d of new root flipped", bit), r1, f2, proof)
			}
			if len(proof) > 0 {
				reject("last hash dropped", r1, r2, proof[:len(proof)-1])
				reject("first hash dropped", r1, r2, proof[1:])
				reject("first hash repeated", r1, r2, append([]Hash{proof[0]}, proof...))
			}
			reject("zero hash appended", r1, r2, append(slices.Clone(proof), Hash{}))
			reject("old root appended", r1, r2, append(slices.Clone(proof), r1))
		}
	}
}

// TestVerifyConsistencyWrongSizes verifies valid proofs against other sizes.
// Without RFC 6962 domain separation a root does not fix the size of its
// tree (any hash may be read as the root of a subtree of any size), so some
// wrong sizes legitimately verify; the test checks the package decides
// exactly as the reference does, and that it rejects a sample of wrong
// sizes that are structurally impossible.
func TestVerifyConsistencyWrongSizes(t *testing.T) {
	t.Parallel()
	const max = 24
	d := leaves(max, 4)
	tr := build(d)
	var accepted, rejected int
	for n := uint64(1); n <= max; n++ {
		for m := uint64(1); m <= n; m++ {
			proof, _ := tr.Consistency(m, n)
			r1, _ := tr.RootAt(m)
			r2, _ := tr.RootAt(n)
			for n2 := uint64(0); n2 <= max+8; n2++ {
				for m2 := uint64(0); m2 <= n2+1; m2++ {
					err := merkle.VerifyConsistency(m2, n2, r1, r2, proof)
					if want := refVerify(m2, n2, r1, r2, proof); (err == nil) != want {
						t.Fatalf("VerifyConsistency(%d, %d) of the proof for (%d, %d) = %v, reference accepts: %t", m2, n2, m, n, err, want)
					}
					if err == nil {
						accepted++
					} else {
						rejected++
					}
				}
			}
		}
	}
	t.Logf("wrong or right sizes: %d accepted, %d rejected", accepted, rejected)

	// The proof for (3, 5) is [l2, l3, H(l0,l1), l4]. It also reads as the
	// proof for (3, 6), (3, 7) or (3, 8), with l4 taken for the root of leaves
	// [4:6), [4:7) or [4:8), but not for sizes that move the old tree's edge.
	proof, _ := tr.Consistency(3, 5)
	r1, _ := tr.RootAt(3)
	r2, _ := tr.RootAt(5)
	for _, s := range []struct {
		m, n uint64
		ok   bool
	}{
		{3, 5, true}, {3, 6, true}, {3, 7, true}, {3, 8, true},
		{3, 4, false}, {3, 9, false}, {2, 5, false}, {4, 5, false}, {5, 7, false}, {6, 7, false}, {1, 5, false},
	} {
		if err := merkle.VerifyConsistency(s.m, s.n, r1, r2, proof); (err == nil) != s.ok {
			t.Errorf("VerifyConsistency(%d, %d) of the proof for (3, 5) = %v, want success %t", s.m, s.n, err, s.ok)
		}
	}
}

func TestTruncate(t *testing.T) {
	const max = 70
	a, b := leaves(max, 5), leaves(max, 6)
	orig := build(a)
	for s := 0; s <= max; s++ {
		tr := build(a)
		if err := tr.Truncate(uint64(s)); err != nil {
			t.Fatalf("Truncate(%d): %v", s, err)
		}
		if got := tr.Size(); got != uint64(s) {
			t.Fatalf("Size() after Truncate(%d) = %d", s, got)
		}
		if s > 0 {
			if got, want := tr.Root(), refRoot(a[:s]); got != want {
				t.Fatalf("Root() after Truncate(%d) = %x, want %x", s, got, want)
			}
		} else if got := tr.Root(); got != (Hash{}) {
			t.Fatalf("Root() after Truncate(0) = %x, want zero", got)
		}
		if _, err := tr.Leaf(uint64(s)); !errors.Is(err, merkle.ErrRange) {
			t.Fatalf("Leaf(%d) after Truncate(%d) = %v, want ErrRange", s, s, err)
		}
		// A different suffix gives the tree of the spliced leaves.
		for _, l := range b[s:] {
			tr.Append(l)
		}
		spliced := append(slices.Clone(a[:s]), b[s:]...)
		for n := 1; n <= max; n++ {
			if got, _ := tr.RootAt(uint64(n)); got != refRoot(spliced[:n]) {
				t.Fatalf("RootAt(%d) after Truncate(%d) and new leaves = %x, want %x", n, s, got, refRoot(spliced[:n]))
			}
		}
		// Rolling back again and re-appending the original suffix restores
		// every root, path and proof of the original tree.
		if err := tr.Truncate(uint64(s)); err != nil {
			t.Fatalf("second Truncate(%d): %v", s, err)
		}
		for _, l := range a[s:] {
			tr.Append(l)
		}
		for n := uint64(1); n <= max; n++ {
			got, _ := tr.RootAt(n)
			want, _ := orig.RootAt(n)
			if got != want {
				t.Fatalf("RootAt(%d) after Truncate(%d) and re-append = %x, want %x", n, s, got, want)
			}
			gp, _ := tr.Path(n-1, n)
			wp, _ := orig.Path(n-1, n)
			if !slices.Equal(gp, wp) {
				t.Fatalf("Path(%d, %d) after Truncate(%d) and re-append = %v, want %v", n-1, n, s, gp, wp)
			}
			gc, _ := tr.Consistency(1+n/3, n)
			wc, _ := orig.Consistency(1+n/3, n)
			if !slices.Equal(gc, wc) {
				t.Fatalf("Consistency(%d, %d) after Truncate(%d) and re-append = %x, want %x", 1+n/3, n, s, gc, wc)
			}
		}
	}
}

func TestRangeErrors(t *testing.T) {
	tr := build(leaves(5, 7))
	root5 := tr.Root()
	tests := []struct {
		name string
		call func() error
	}{
		{"Leaf(5)", func() error { _, err := tr.Leaf(5); return err }},
		{"Leaf(max)", func() error { _, err := tr.Leaf(^uint64(0)); return err }},
		{"RootAt(0)", func() error { _, err := tr.RootAt(0); return err }},
		{"RootAt(6)", func() error { _, err := tr.RootAt(6); return err }},
		{"Path(5, 5)", func() error { _, err := tr.Path(5, 5); return err }},
		{"Path(3, 3)", func() error { _, err := tr.Path(3, 3); return err }},
		{"Path(0, 0)", func() error { _, err := tr.Path(0, 0); return err }},
		{"Path(0, 6)", func() error { _, err := tr.Path(0, 6); return err }},
		{"Consistency(0, 5)", func() error { _, err := tr.Consistency(0, 5); return err }},
		{"Consistency(0, 0)", func() error { _, err := tr.Consistency(0, 0); return err }},
		{"Consistency(4, 3)", func() error { _, err := tr.Consistency(4, 3); return err }},
		{"Consistency(1, 6)", func() error { _, err := tr.Consistency(1, 6); return err }},
		{"Truncate(6)", func() error { return tr.Truncate(6) }},
		{"VerifyConsistency(0, 5)", func() error { return merkle.VerifyConsistency(0, 5, Hash{}, root5, nil) }},
		{"VerifyConsistency(0, 0)", func() error { return merkle.VerifyConsistency(0, 0, Hash{}, Hash{}, nil) }},
		{"VerifyConsistency(5, 4)", func() error { return merkle.VerifyConsistency(5, 4, root5, root5, nil) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, merkle.ErrRange) {
				t.Errorf("%s = %v, want ErrRange", tt.name, err)
			}
		})
	}
	if got := tr.Size(); got != 5 {
		t.Errorf("Size() after failed calls = %d, want 5", got)
	}
	if got := tr.Root(); got != root5 {
		t.Errorf("Root() after failed calls = %x, want %x", got, root5)
	}
}

func TestVerifyConsistencySameSize(t *testing.T) {
	tr := build(leaves(5, 8))
	r, _ := tr.RootAt(5)
	other, _ := tr.RootAt(4)
	if err := merkle.VerifyConsistency(5, 5, r, r, nil); err != nil {
		t.Errorf("VerifyConsistency(5, 5) of equal roots = %v, want nil", err)
	}
	if err := merkle.VerifyConsistency(5, 5, r, other, nil); !errors.Is(err, merkle.ErrInvalidProof) {
		t.Errorf("VerifyConsistency(5, 5) of different roots = %v, want ErrInvalidProof", err)
	}
	if err := merkle.VerifyConsistency(5, 5, r, r, []Hash{r}); !errors.Is(err, merkle.ErrInvalidProof) {
		t.Errorf("VerifyConsistency(5, 5) with a non-empty proof = %v, want ErrInvalidProof", err)
	}
}

// TestVerifyConsistencyHugeSizes checks the verifier's work is bounded by
// the sizes and that it does not trust a proof's length.
func TestVerifyConsistencyHugeSizes(t *testing.T) {
	const top = ^uint64(0)
	for _, s := range []struct{ m, n uint64 }{{1, top}, {top - 1, top}, {1 << 63, top}, {top, top}, {3, 1 << 63}} {
		for _, l := range []int{0, 1, 63, 64, 65, 130, 1000} {
			proof := make([]Hash, l)
			err := merkle.VerifyConsistency(s.m, s.n, Hash{1}, Hash{2}, proof)
			if err == nil {
				t.Errorf("VerifyConsistency(%d, %d) with %d zero hashes = nil, want an error", s.m, s.n, l)
			}
		}
	}
}

// TestTruncateLarge rolls back and regrows a tree across the boundaries of
// the package's internal storage chunks (4096 hashes) and checks every root
// against a tree built without rollback.
func TestTruncateLarge(t *testing.T) {
	const max = 3*4096 + 100
	a, b := leaves(max, 9), leaves(max, 10)
	tr := build(a)
	for _, s := range []int{max - 1, 3 * 4096, 3*4096 - 1, 2*4096 + 1, 8192, 4097, 4096, 4095, 2048, 1, 0, 12000} {
		if err := tr.Truncate(uint64(s)); err != nil {
			t.Fatalf("Truncate(%d): %v", s, err)
		}
		for _, l := range b[s:] {
			tr.Append(l)
		}
		spliced := append(slices.Clone(a[:s]), b[s:]...)
		want := build(spliced)
		for n := uint64(1); n <= max; n++ {
			got, _ := tr.RootAt(n)
			w, _ := want.RootAt(n)
			if got != w {
				t.Fatalf("RootAt(%d) after Truncate(%d) and regrowth = %x, want %x", n, s, got, w)
			}
		}
		for i := range uint64(max) {
			if got, _ := tr.Leaf(i); got != spliced[i] {
				t.Fatalf("Leaf(%d) after Truncate(%d) and regrowth = %x", i, s, got)
			}
		}
		a = spliced
		b = leaves(max, uint64(s)+11)
	}
	if got, want := tr.Root(), refRoot(a); got != want {
		t.Fatalf("Root() after all rollbacks = %x, want %x", got, want)
	}
}
