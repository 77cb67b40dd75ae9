package merkle

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math/bits"
)

// Hash is a SHA-256 value: a leaf, an internal node or a root.
type Hash = [32]byte

// ErrRange is returned, wrapped, when a leaf index or tree size is out of
// range: an index not below the size it is taken in, a size of 0 where a
// non-empty tree is needed, or a size above [Tree.Size]. [VerifyConsistency]
// also returns it for sizes that admit no proof.
var ErrRange = errors.New("index or size out of range")

// HashChildren returns the internal node over left and right:
// SHA256(left ‖ right), with no RFC 6962 prefix.
func HashChildren(left, right Hash) Hash {
	var b [2 * sha256.Size]byte
	copy(b[:sha256.Size], left[:])
	copy(b[sha256.Size:], right[:])
	return sha256.Sum256(b[:])
}

// Step is one element of an audit path from a leaf towards the root. Left
// means the sibling hash is on the left: the next value is
// HashChildren(Sibling, cur); otherwise it is HashChildren(cur, Sibling).
// This is the {"left": h} / {"right": h} element of an ACL receipt proof.
type Step struct {
	Left    bool
	Sibling Hash
}

// RootFromPath folds path over leaf, in order from the leaf towards the root,
// and returns the root it leads to. The caller compares the result with a
// trusted (signed) root.
func RootFromPath(leaf Hash, path []Step) Hash {
	cur := leaf
	for _, s := range path {
		if s.Left {
			cur = HashChildren(s.Sibling, cur)
		} else {
			cur = HashChildren(cur, s.Sibling)
		}
	}
	return cur
}

// Tree is an append-only Merkle tree that can also forget an uncommitted
// suffix with [Tree.Truncate]. The zero value is an empty tree, ready to use.
// A Tree is not safe for concurrent use.
type Tree struct {
	size uint64
	// levels[k] holds the roots of the complete subtrees of 2^k leaves, in
	// order: entry i covers leaves [i·2^k, (i+1)·2^k) and there are size>>k
	// of them. They are stored in chunks of chunkLen hashes, all full but
	// the last, so that growing never copies and never needs twice the
	// memory. Chunks past the last one may linger in the backing array
	// after Truncate; Append reuses them.
	levels [][][]Hash
}

const (
	chunkBits = 12
	chunkLen  = 1 << chunkBits // 128 KiB of hashes
)

// at returns entry i of level k.
func (t *Tree) at(k int, i uint64) Hash {
	return t.levels[k][i>>chunkBits][i&(chunkLen-1)]
}

// push appends h to level k.
func (t *Tree) push(k int, h Hash) {
	if k == len(t.levels) {
		t.levels = append(t.levels, nil)
	}
	l := t.levels[k]
	if len(l) == 0 || len(l[len(l)-1]) == chunkLen {
		// Reuse a chunk that Truncate left in the spare capacity, if any.
		if len(l) < cap(l) {
			l = l[:len(l)+1]
		} else {
			l = append(l, nil)
		}
		c := l[len(l)-1][:0]
		if cap(c) == 0 && len(l) > 1 {
			c = make([]Hash, 0, chunkLen)
		}
		// The first chunk grows by append, so small trees stay small.
		l[len(l)-1] = c
	}
	l[len(l)-1] = append(l[len(l)-1], h)
	t.levels[k] = l
}

// Append adds leaf as the last leaf of the tree. It hashes once amortised and
// allocates once per chunkLen entries of a level (about one allocation per
// 2000 leaves), never copying stored hashes.
func (t *Tree) Append(leaf Hash) {
	t.push(0, leaf)
	t.size++
	// Each trailing zero bit of the new size closes a complete subtree.
	for k := 0; t.size>>k&1 == 0; k++ {
		n := t.size >> k
		t.push(k+1, HashChildren(t.at(k, n-2), t.at(k, n-1)))
	}
}

// Size returns the number of leaves.
func (t *Tree) Size() uint64 { return t.size }

// Leaf returns the leaf at index, which must be below [Tree.Size].
func (t *Tree) Leaf(index uint64) (Hash, error) {
	if index >= t.size {
		return Hash{}, fmt.Errorf("leaf %d of tree size %d: %w", index, t.size, ErrRange)
	}
	return t.at(0, index), nil
}

// Root returns the root of the whole tree. The root of an empty tree is the
// zero Hash, which no non-empty tree has (barring a SHA-256 preimage).
func (t *Tree) Root() Hash {
	if t.size == 0 {
		return Hash{}
	}
	return t.rangeRoot(0, t.size)
}

// RootAt returns the root of the tree of the first size leaves, with size in
// [1, Size()].
func (t *Tree) RootAt(size uint64) (Hash, error) {
	if err := t.checkSize(size); err != nil {
		return Hash{}, fmt.Errorf("root at %w", err)
	}
	return t.rangeRoot(0, size), nil
}

// Path returns the audit path of the leaf at index (0-based) in the tree of
// the first size leaves, ordered from the leaf towards the root, so that
// RootFromPath(leaf, path) equals RootAt(size). It requires index < size ≤
// Size(). The path of the only leaf of a one-leaf tree is empty.
func (t *Tree) Path(index, size uint64) ([]Step, error) {
	if err := t.checkSize(size); err != nil {
		return nil, fmt.Errorf("path at %w", err)
	}
	if index >= size {
		return nil, fmt.Errorf("path of leaf %d in tree size %d: %w", index, size, ErrRange)
	}
	// Walk down from the root of [0, size) to the leaf. At each node [lo, hi)
	// with k the largest power of two below hi-lo, the leaf is in the left
	// child [lo, lo+k), a complete subtree, or in the right child [lo+k, hi).
	// The first pass only counts the steps so the result is allocated once.
	n := 0
	for lo, hi := uint64(0), size; hi-lo > 1; n++ {
		k := splitPoint(hi - lo)
		if index < lo+k {
			hi = lo + k
		} else {
			lo += k
		}
	}
	path := make([]Step, n)
	for lo, hi := uint64(0), size; hi-lo > 1; {
		k := splitPoint(hi - lo)
		n--
		if index < lo+k {
			path[n] = Step{Left: false, Sibling: t.rangeRoot(lo+k, hi)}
			hi = lo + k
		} else {
			path[n] = Step{Left: true, Sibling: t.rangeRoot(lo, lo+k)}
			lo += k
		}
	}
	return path, nil
}

// Truncate forgets the leaves at index size and above, so that Size()
// becomes size; this rolls back an uncommitted suffix. It requires size ≤
// Size(); Truncate(0) empties the tree. The memory of the forgotten leaves is
// kept for reuse by later appends.
func (t *Tree) Truncate(size uint64) error {
	if size > t.size {
		return fmt.Errorf("truncate to %d of tree size %d: %w", size, t.size, ErrRange)
	}
	for k, l := range t.levels {
		n := size >> k
		full, rest := n>>chunkBits, n&(chunkLen-1)
		if rest == 0 {
			l = l[:full]
		} else {
			l = l[:full+1]
			l[full] = l[full][:rest]
		}
		t.levels[k] = l
	}
	t.size = size
	return nil
}

// Consistency returns the RFC 9162 §2.1.4.1 consistency proof between the
// tree of the first oldSize leaves and the tree of the first newSize leaves,
// with 1 ≤ oldSize ≤ newSize ≤ Size(). The proof for oldSize == newSize is
// empty. [VerifyConsistency] checks it.
func (t *Tree) Consistency(oldSize, newSize uint64) ([]Hash, error) {
	if err := t.checkSize(newSize); err != nil {
		return nil, fmt.Errorf("consistency to new %w", err)
	}
	if oldSize == 0 || oldSize > newSize {
		return nil, fmt.Errorf("consistency from size %d to %d: %w", oldSize, newSize, ErrRange)
	}
	// SUBPROOF(m, D[lo:hi], b) of RFC 9162, unrolled. Each level down
	// contributes one hash that comes after the deeper ones in the proof,
	// so the proof is filled from its end.
	proof := make([]Hash, consistencyLen(oldSize, newSize))
	i := len(proof)
	m, lo, hi, whole := oldSize, uint64(0), newSize, true
	for m != hi {
		k := splitPoint(hi - lo)
		i--
		if m <= lo+k {
			proof[i] = t.rangeRoot(lo+k, hi)
			hi = lo + k
		} else {
			proof[i] = t.rangeRoot(lo, lo+k)
			lo += k
			whole = false
		}
	}
	if !whole {
		// [lo, hi) is the old tree's last complete subtree; the verifier
		// cannot derive it from the old root, so it leads the proof.
		i--
		proof[i] = t.rangeRoot(lo, hi)
	}
	return proof, nil
}

// consistencyLen returns the number of hashes in the consistency proof from
// size m to size n, for 1 ≤ m ≤ n.
func consistencyLen(m, n uint64) int {
	l, lo, hi, whole := 0, uint64(0), n, true
	for m != hi {
		k := splitPoint(hi - lo)
		if m <= lo+k {
			hi = lo + k
		} else {
			lo += k
			whole = false
		}
		l++
	}
	if !whole {
		l++
	}
	return l
}

// checkSize reports whether size names a non-empty prefix of the tree.
func (t *Tree) checkSize(size uint64) error {
	if size == 0 || size > t.size {
		return fmt.Errorf("size %d of tree size %d: %w", size, t.size, ErrRange)
	}
	return nil
}

// rangeRoot returns MTH(D[lo:hi]) for a node of the tree of some size ≤
// Size(): 0 ≤ lo < hi ≤ Size() and lo is a multiple of the largest power of
// two not above hi-lo. Such a node is the right-leaning fold of the complete
// subtrees given by the binary digits of hi-lo, largest first, so it is
// computed from the right end with one hash per digit after the first.
func (t *Tree) rangeRoot(lo, hi uint64) Hash {
	rest := hi - lo
	k := bits.TrailingZeros64(rest)
	end := hi - 1<<k
	cur := t.at(k, end>>k)
	for rest &^= 1 << k; rest != 0; rest &^= 1 << k {
		k = bits.TrailingZeros64(rest)
		end -= 1 << k
		cur = HashChildren(t.at(k, end>>k), cur)
	}
	return cur
}

// splitPoint returns the largest power of two strictly less than n, for n ≥ 2.
func splitPoint(n uint64) uint64 {
	return 1 << (bits.Len64(n-1) - 1)
}
