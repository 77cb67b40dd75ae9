package merkle_test

import (
	gobuild "go/build"
	"testing"
)

// TestImportsArePure keeps the package free of I/O, goroutine plumbing and
// other packages of the project.
func TestImportsArePure(t *testing.T) {
	pkg, err := gobuild.ImportDir(".", 0)
	if err != nil {
		t.Fatalf("read package: %v", err)
	}
	allowed := map[string]bool{"crypto/sha256": true, "errors": true, "fmt": true, "math/bits": true}
	for _, imp := range pkg.Imports {
		if !allowed[imp] {
			t.Errorf("package merkle imports %q, want only %v", imp, allowed)
		}
	}
}
