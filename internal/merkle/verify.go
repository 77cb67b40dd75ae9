package merkle

import (
	"errors"
	"fmt"
)

// ErrInvalidProof is returned, wrapped, by [VerifyConsistency] when a proof
// has the wrong length or does not lead to the given roots.
var ErrInvalidProof = errors.New("invalid proof")

// VerifyConsistency checks that proof shows the tree of newSize leaves with
// root newRoot extends the tree of oldSize leaves with root oldRoot, using
// the RFC 9162 §2.1.4.2 algorithm over this package's hashing. It requires
// 1 ≤ oldSize ≤ newSize (else the error wraps [ErrRange]); for oldSize ==
// newSize the proof must be empty and the roots equal. Any other failure
// wraps [ErrInvalidProof] and says which check failed. Work is bounded by
// the sizes, not by len(proof).
//
// Because internal nodes carry no RFC 6962 domain separation, a root does
// not commit to the size of its tree: any hash can be read as the root of a
// subtree of any size. A proof may therefore also verify for other sizes
// whose proofs have the same shape; the proof from 3 to 5 leaves, for
// instance, also verifies from 3 to 8, with leaf 4 read as the root of
// leaves 4 to 7. Callers MUST take both sizes from the signed statements the
// roots come from (a signature transaction records the size it covers),
// never from the party that supplies the proof.
func VerifyConsistency(oldSize, newSize uint64, oldRoot, newRoot Hash, proof []Hash) error {
	switch {
	case oldSize == 0 || oldSize > newSize:
		return fmt.Errorf("verify consistency from size %d to %d: %w", oldSize, newSize, ErrRange)
	case len(proof) != consistencyLen(oldSize, newSize):
		return fmt.Errorf("verify consistency from size %d to %d: proof has %d hashes, want %d: %w",
			oldSize, newSize, len(proof), consistencyLen(oldSize, newSize), ErrInvalidProof)
	case oldSize == newSize:
		if oldRoot != newRoot {
			return fmt.Errorf("verify consistency of size %d: roots differ: %x != %x: %w",
				oldSize, oldRoot, newRoot, ErrInvalidProof)
		}
		return nil
	}

	// Steps 2 to 7 of RFC 9162 §2.1.4.2. The length check above has already
	// ruled out step 1 (an empty proof).
	var fr, sr Hash
	if oldSize&(oldSize-1) == 0 {
		// The old tree is a complete subtree of the new one: the proof
		// starts from the old root itself.
		fr, sr = oldRoot, oldRoot
	} else {
		fr, sr = proof[0], proof[0]
		proof = proof[1:]
	}
	fn, sn := oldSize-1, newSize-1
	for fn&1 == 1 {
		fn >>= 1
		sn >>= 1
	}
	for _, c := range proof {
		if sn == 0 {
			return fmt.Errorf("verify consistency from size %d to %d: proof too long: %w",
				oldSize, newSize, ErrInvalidProof)
		}
		if fn&1 == 1 || fn == sn {
			fr = HashChildren(c, fr)
			sr = HashChildren(c, sr)
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			sr = HashChildren(sr, c)
		}
		fn >>= 1
		sn >>= 1
	}
	switch {
	case sn != 0:
		return fmt.Errorf("verify consistency from size %d to %d: proof too short: %w",
			oldSize, newSize, ErrInvalidProof)
	case fr != oldRoot:
		return fmt.Errorf("verify consistency from size %d to %d: old root mismatch: computed %x, given %x: %w",
			oldSize, newSize, fr, oldRoot, ErrInvalidProof)
	case sr != newRoot:
		return fmt.Errorf("verify consistency from size %d to %d: new root mismatch: computed %x, given %x: %w",
			oldSize, newSize, sr, newRoot, ErrInvalidProof)
	}
	return nil
}
