package blob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
)

func TestDirPutGetStat(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	d, err := OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	content := []byte("ciphertext bytes")
	info, err := d.Put(ctx, "rooms/r1/datasets/d1", bytes.NewReader(content))
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if want := sha256.Sum256(content); info.Digest != want || info.Size != int64(len(content)) {
		t.Errorf("Put info %+v, want size %d digest %x", info, len(content), want)
	}
	rc, err := d.Get(ctx, "rooms/r1/datasets/d1")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, content) {
		t.Errorf("Get returned %q, want %q", got, content)
	}
	st, err := d.Stat(ctx, "rooms/r1/datasets/d1")
	if err != nil || st != info {
		t.Errorf("Stat = %+v, %v; want %+v", st, err, info)
	}

	// Same content again is fine; different content is refused.
	if _, err := d.Put(ctx, "rooms/r1/datasets/d1", bytes.NewReader(content)); err != nil {
		t.Errorf("Put of identical content: %v", err)
	}
	if _, err := d.Put(ctx, "rooms/r1/datasets/d1", strings.NewReader("other")); !errors.Is(err, ErrExists) {
		t.Errorf("Put of different content: got %v, want ErrExists", err)
	}
	if _, err := d.Get(ctx, "missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get missing: got %v, want ErrNotFound", err)
	}
	if _, err := d.Stat(ctx, "missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat missing: got %v, want ErrNotFound", err)
	}
	// No temporary files remain.
	entries, _ := os.ReadDir(root + "/rooms/r1/datasets")
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want 1", len(entries))
	}
}

func TestDirNames(t *testing.T) {
	d, err := OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", "..", "../x", "/abs", "a//b", "A", "a/../b", ".tmp-x", "a/b/c/d/e", strings.Repeat("a", 129)} {
		if _, err := d.Put(context.Background(), name, strings.NewReader("x")); err == nil {
			t.Errorf("Put accepted name %q", name)
		}
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("boom") }

func TestDirFailedPutLeavesNothing(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	d, _ := OpenDir(root)
	if _, err := d.Put(ctx, "x", io.MultiReader(strings.NewReader("part"), failingReader{})); err == nil {
		t.Fatal("Put succeeded with a failing reader")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := d.Put(cctx, "y", strings.NewReader("data")); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with cancelled context: got %v, want context.Canceled", err)
	}
	entries, _ := os.ReadDir(root)
	if len(entries) != 0 {
		t.Errorf("failed puts left %d entries", len(entries))
	}
}

func TestDirConcurrentPut(t *testing.T) {
	d, _ := OpenDir(t.TempDir())
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = d.Put(context.Background(), "same", strings.NewReader("same content"))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Put %d: %v", i, err)
		}
	}
}
