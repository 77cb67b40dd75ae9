package storage

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/parleyhq/parley/internal/ledgertest/lazyfs"
)

func TestReset(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			fsys, dir := b.new(t)
			l, err := Open(dir, Options{FS: fsys, ChunkSize: 200})
			if err != nil {
				t.Fatal(err)
			}
			old := testEntries(1, 40, 1, 4, 20)
			if err := l.Append(old); err != nil {
				t.Fatal(err)
			}
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
			if err := l.Reset(101); err != nil {
				t.Fatal(err)
			}
			if l.FirstIndex() != 101 || l.LastIndex() != 100 || l.Committed() != 100 {
				t.Errorf("FirstIndex, LastIndex, Committed = %d, %d, %d; want 101, 100, 100", l.FirstIndex(), l.LastIndex(), l.Committed())
			}
			if _, err := l.Entry(5); !errors.Is(err, ErrNotFound) {
				t.Errorf("Entry(5) after Reset: %v, want ErrNotFound", err)
			}
			want := testEntries(101, 30, 2, 4, 20)
			if err := l.Append(want); err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l, err = Open(dir, Options{FS: fsys})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if l.FirstIndex() != 101 {
				t.Errorf("FirstIndex after reopening = %d, want 101", l.FirstIndex())
			}
			checkEntries(t, l, want)
			// The old chunks are archived, whole, where Scan finds them.
			var n int
			if err := Scan(fsys, filepath.Join(dir, ArchiveDirPrefix+"101"), func(_ ChunkInfo, e Entry) error { n++; return nil }); err != nil {
				t.Fatal(err)
			}
			if n != len(old) {
				t.Errorf("archived entries = %d, want %d", n, len(old))
			}
		})
	}
}

// TestResetPowerLoss: once Reset returns, a power loss does not bring the
// archived chunks back; without its directory fsync it would.
func TestResetPowerLoss(t *testing.T) {
	for _, skip := range []syncSite{siteNone, siteReset} {
		t.Run(skip.String(), func(t *testing.T) {
			fsys := lazyfs.New()
			l, err := Open("/l", Options{FS: fsys, ChunkSize: 200, testOnlySkipSync: skip})
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Append(testEntries(1, 40, 1, 4, 20)); err != nil {
				t.Fatal(err)
			}
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
			if err := l.Reset(101); err != nil {
				t.Fatal(err)
			}
			fsys.Crash()
			l, err = Open("/l", Options{FS: fsys})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			kept := l.LastIndex() >= l.FirstIndex()
			if want := skip == siteReset; kept != want {
				t.Errorf("old chunks in place after the crash: %v, want %v", kept, want)
			}
		})
	}
}
