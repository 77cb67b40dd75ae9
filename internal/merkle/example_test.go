package merkle_test

import (
	"crypto/sha256"
	"fmt"

	"github.com/parleyhq/parley/internal/merkle"
)

func Example() {
	var t merkle.Tree
	for _, tx := range []string{"tx0", "tx1", "tx2", "tx3", "tx4"} {
		t.Append(sha256.Sum256([]byte(tx)))
	}

	// A receipt for transaction 2 against the signed root of 5 leaves.
	root, _ := t.RootAt(5)
	path, _ := t.Path(2, 5)
	leaf, _ := t.Leaf(2)
	fmt.Println("receipt proof steps:", len(path))
	fmt.Println("receipt verifies:", merkle.RootFromPath(leaf, path) == root)

	// The tree of 5 leaves extends the earlier signed tree of 3.
	old, _ := t.RootAt(3)
	proof, _ := t.Consistency(3, 5)
	fmt.Println("consistent:", merkle.VerifyConsistency(3, 5, old, root, proof) == nil)

	// An uncommitted suffix is rolled back.
	_ = t.Truncate(3)
	fmt.Println("size after rollback:", t.Size(), "root back to the old one:", t.Root() == old)
	// Output:
	// receipt proof steps: 3
	// receipt verifies: true
	// consistent: true
	// size after rollback: 3 root back to the old one: true
}
