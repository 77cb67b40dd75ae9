package lazyfs

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/parleyhq/parley/internal/vfs"
)

const rw = os.O_RDWR | os.O_CREATE | os.O_APPEND

// setup makes /d durable and returns the FS.
func setup(t *testing.T) *FS {
	t.Helper()
	f := New()
	if err := f.MkdirAll("/d", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := f.SyncDir("/"); err != nil {
		t.Fatal(err)
	}
	return f
}

func create(t *testing.T, f *FS, name, data string, syncFile, syncDir bool) vfs.File {
	t.Helper()
	h, err := f.OpenFile(name, rw, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Write([]byte(data)); err != nil {
		t.Fatal(err)
	}
	if syncFile {
		if err := h.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if syncDir {
		if err := f.SyncDir("/d"); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// content returns name's content, or "<missing>".
func content(t *testing.T, f *FS, name string) string {
	t.Helper()
	b, err := f.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return "<missing>"
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCrash(t *testing.T) {
	tests := []struct {
		name string
		do   func(t *testing.T, f *FS)
		want map[string]string
	}{
		{
			name: "write without sync lost",
			do: func(t *testing.T, f *FS) {
				h := create(t, f, "/d/a", "one", true, true)
				h.Write([]byte("two"))
			},
			want: map[string]string{"/d/a": "one"},
		},
		{
			name: "sync then crash kept",
			do: func(t *testing.T, f *FS) {
				h := create(t, f, "/d/a", "one", true, true)
				h.Write([]byte("two"))
				h.Sync()
			},
			want: map[string]string{"/d/a": "onetwo"},
		},
		{
			name: "created and synced but dir not synced lost",
			do: func(t *testing.T, f *FS) {
				create(t, f, "/d/a", "one", true, false)
			},
			want: map[string]string{"/d/a": "<missing>"},
		},
		{
			name: "dir synced but data not synced is empty",
			do: func(t *testing.T, f *FS) {
				create(t, f, "/d/a", "one", false, true)
			},
			want: map[string]string{"/d/a": ""},
		},
		{
			name: "rename without dir sync reverted",
			do: func(t *testing.T, f *FS) {
				create(t, f, "/d/a", "one", true, true)
				if err := f.Rename("/d/a", "/d/b"); err != nil {
					t.Fatal(err)
				}
			},
			want: map[string]string{"/d/a": "one", "/d/b": "<missing>"},
		},
		{
			name: "rename with dir sync kept and data follows inode",
			do: func(t *testing.T, f *FS) {
				h := create(t, f, "/d/a", "one", true, true)
				f.Rename("/d/a", "/d/b")
				f.SyncDir("/d")
				h.Write([]byte("two")) // through the old handle: same inode
				h.Sync()
			},
			want: map[string]string{"/d/a": "<missing>", "/d/b": "onetwo"},
		},
		{
			name: "rename replaces target",
			do: func(t *testing.T, f *FS) {
				create(t, f, "/d/a", "new", true, false)
				create(t, f, "/d/b", "old", true, true)
				f.Rename("/d/a", "/d/b")
				f.SyncDir("/d")
			},
			want: map[string]string{"/d/a": "<missing>", "/d/b": "new"},
		},
		{
			name: "remove without dir sync reverted",
			do: func(t *testing.T, f *FS) {
				create(t, f, "/d/a", "one", true, true)
				f.Remove("/d/a")
			},
			want: map[string]string{"/d/a": "one"},
		},
		{
			name: "remove with dir sync kept",
			do: func(t *testing.T, f *FS) {
				create(t, f, "/d/a", "one", true, true)
				f.Remove("/d/a")
				f.SyncDir("/d")
			},
			want: map[string]string{"/d/a": "<missing>"},
		},
		{
			name: "truncate without sync reverted",
			do: func(t *testing.T, f *FS) {
				h := create(t, f, "/d/a", "onetwo", true, true)
				h.Truncate(3)
			},
			want: map[string]string{"/d/a": "onetwo"},
		},
		{
			name: "truncate then append then sync",
			do: func(t *testing.T, f *FS) {
				h := create(t, f, "/d/a", "onetwo", true, true)
				h.Truncate(3)
				h.Write([]byte("six"))
				h.Sync()
			},
			want: map[string]string{"/d/a": "onesix"},
		},
		{
			name: "truncate extends with zeros",
			do: func(t *testing.T, f *FS) {
				h := create(t, f, "/d/a", "ab", true, true)
				h.Truncate(4)
				h.Sync()
			},
			want: map[string]string{"/d/a": "ab\x00\x00"},
		},
		{
			name: "O_TRUNC then sync",
			do: func(t *testing.T, f *FS) {
				create(t, f, "/d/a", "abc", true, true)
				h, _ := f.OpenFile("/d/a", os.O_WRONLY|os.O_TRUNC, 0)
				h.Write([]byte("x"))
				h.Sync()
			},
			want: map[string]string{"/d/a": "x"},
		},
		{
			name: "new directory lost without parent sync",
			do: func(t *testing.T, f *FS) {
				f.MkdirAll("/d/sub", 0o755)
				h, _ := f.OpenFile("/d/sub/a", rw, 0)
				h.Write([]byte("x"))
				h.Sync()
				f.SyncDir("/d/sub")
			},
			want: map[string]string{"/d/sub/a": "<missing>"},
		},
		{
			name: "new directory kept with parent sync",
			do: func(t *testing.T, f *FS) {
				f.MkdirAll("/d/sub", 0o755)
				f.SyncDir("/d")
				h, _ := f.OpenFile("/d/sub/a", rw, 0)
				h.Write([]byte("x"))
				h.Sync()
				f.SyncDir("/d/sub")
			},
			want: map[string]string{"/d/sub/a": "x"},
		},
		{
			name: "failed sync persists nothing",
			do: func(t *testing.T, f *FS) {
				h := create(t, f, "/d/a", "one", true, true)
				h.Write([]byte("two"))
				f.FailSyncAfter(0)
				if err := h.Sync(); !errors.Is(err, ErrInjected) {
					t.Fatalf("Sync = %v, want ErrInjected", err)
				}
			},
			want: map[string]string{"/d/a": "one"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t)
			tt.do(t, f)
			f.Crash()
			for name, want := range tt.want {
				if got := content(t, f, name); got != want {
					t.Errorf("after crash %s = %q, want %q", name, got, want)
				}
			}
		})
	}
}

func TestHandleDeadAfterCrash(t *testing.T) {
	f := setup(t)
	h := create(t, f, "/d/a", "one", true, true)
	f.Crash()
	if _, err := h.Write([]byte("x")); !errors.Is(err, ErrCrashed) {
		t.Errorf("Write after crash = %v, want ErrCrashed", err)
	}
	if _, err := h.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrCrashed) {
		t.Errorf("ReadAt after crash = %v, want ErrCrashed", err)
	}
	if err := h.Sync(); !errors.Is(err, ErrCrashed) {
		t.Errorf("Sync after crash = %v, want ErrCrashed", err)
	}
	if err := h.Truncate(0); !errors.Is(err, ErrCrashed) {
		t.Errorf("Truncate after crash = %v, want ErrCrashed", err)
	}
	if _, err := h.Size(); !errors.Is(err, ErrCrashed) {
		t.Errorf("Size after crash = %v, want ErrCrashed", err)
	}
	if err := h.Close(); err != nil {
		t.Errorf("Close after crash = %v, want nil", err)
	}
	if err := h.Close(); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("second Close = %v, want fs.ErrClosed", err)
	}
	if got := content(t, f, "/d/a"); got != "one" {
		t.Errorf("content = %q, want %q", got, "one")
	}
}

func TestReadAt(t *testing.T) {
	f := setup(t)
	h := create(t, f, "/d/a", "hello", false, false)
	tests := []struct {
		off     int64
		n       int
		want    string
		wantErr error
	}{
		{0, 5, "hello", nil},
		{1, 3, "ell", nil},
		{3, 5, "lo", io.EOF},
		{5, 1, "", io.EOF},
		{9, 1, "", io.EOF},
	}
	for _, tt := range tests {
		p := make([]byte, tt.n)
		n, err := h.ReadAt(p, tt.off)
		if string(p[:n]) != tt.want || err != tt.wantErr {
			t.Errorf("ReadAt(%d bytes, %d) = %q, %v; want %q, %v", tt.n, tt.off, p[:n], err, tt.want, tt.wantErr)
		}
	}
	if _, err := h.ReadAt(make([]byte, 1), -1); err == nil {
		t.Error("ReadAt at negative offset succeeded")
	}
}

// TestAgainstOS checks that the handle semantics lazyfs models (offsets,
// O_APPEND, O_EXCL, truncation, ReadAt at EOF, access modes) match the real
// file system.
func TestAgainstOS(t *testing.T) {
	dir := t.TempDir()
	type opRes struct {
		n   int
		err bool
		s   string
	}
	run := func(fsys vfs.FS, dir string) []opRes {
		var out []opRes
		rec := func(n int, err error, s string) { out = append(out, opRes{n, err != nil, s}) }
		name := dir + "/f"
		h, err := fsys.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		rec(0, err, "")
		_, err = fsys.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		rec(0, err, "")
		n, err := h.Write([]byte("abcdef"))
		rec(n, err, "")
		rec(0, h.Truncate(2), "")
		n, err = h.Write([]byte("XY")) // non-append handle writes at offset 6
		rec(n, err, "")
		sz, err := h.Size()
		rec(int(sz), err, "")
		b, err := fsys.ReadFile(name)
		rec(len(b), err, string(b))
		a, err := fsys.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
		rec(0, err, "")
		n, err = a.Write([]byte("Z"))
		rec(n, err, "")
		n, err = a.ReadAt(make([]byte, 1), 0)
		rec(n, err, "")
		r, err := fsys.OpenFile(name, os.O_RDONLY, 0)
		rec(0, err, "")
		n, err = r.Write([]byte("Q"))
		rec(n, err, "")
		p := make([]byte, 20)
		n, err = r.ReadAt(p, 0)
		rec(n, err, string(p[:n]))
		_, err = fsys.OpenFile(dir+"/missing", os.O_RDONLY, 0)
		rec(0, err, "")
		rec(0, fsys.Rename(name, dir+"/g"), "")
		names, err := fsys.ReadDir(dir)
		rec(len(names), err, "")
		rec(0, fsys.Remove(dir+"/g"), "")
		rec(0, fsys.Remove(dir+"/g"), "")
		for _, c := range []vfs.File{h, a, r} {
			c.Close()
		}
		return out
	}
	want := run(vfs.OS{}, dir)
	lf := New()
	lf.MkdirAll("/x", 0o755)
	got := run(lf, "/x")
	if !slices.Equal(got, want) {
		t.Errorf("lazyfs results differ from os:\n got %+v\nwant %+v", got, want)
	}
}

func TestClone(t *testing.T) {
	f := setup(t)
	create(t, f, "/d/a", "one", true, true)
	h := create(t, f, "/d/b", "two", false, false)
	c := f.Clone()
	h.Write([]byte("more"))
	if got := content(t, c, "/d/b"); got != "two" {
		t.Errorf("clone /d/b = %q, want %q (clone must not share state)", got, "two")
	}
	c.Crash()
	if got := content(t, c, "/d/a"); got != "one" {
		t.Errorf("clone after crash /d/a = %q, want %q", got, "one")
	}
	if got := content(t, c, "/d/b"); got != "<missing>" {
		t.Errorf("clone after crash /d/b = %q, want missing", got)
	}
	if got := content(t, f, "/d/b"); got != "twomore" {
		t.Errorf("original /d/b = %q, want %q", got, "twomore")
	}
}

func TestCrashTorn(t *testing.T) {
	seen := map[string]bool{}
	for seed := range uint64(200) {
		f := setup(t)
		h := create(t, f, "/d/a", "base", true, true)
		h.Write([]byte("-tail"))
		f.CrashTorn(rand.New(rand.NewPCG(seed, 0)))
		got := content(t, f, "/d/a")
		if !bytes.HasPrefix([]byte("base-tail"), []byte(got)) || len(got) < 4 {
			t.Fatalf("seed %d: content %q is not base plus a prefix of the tail", seed, got)
		}
		seen[got] = true
	}
	if len(seen) < 4 {
		t.Errorf("CrashTorn produced only %d distinct outcomes, want variety", len(seen))
	}
	// A truncation is not an extension: it reverts.
	f := setup(t)
	h := create(t, f, "/d/a", "base", true, true)
	h.Truncate(1)
	h.Write([]byte("xxxxxxxx"))
	f.CrashTorn(rand.New(rand.NewPCG(1, 2)))
	if got := content(t, f, "/d/a"); got != "base" {
		t.Errorf("torn crash after truncate = %q, want %q", got, "base")
	}
}

func TestFailSyncAfterAndCount(t *testing.T) {
	f := setup(t)
	start := f.SyncCount()
	h := create(t, f, "/d/a", "x", false, false)
	f.FailSyncAfter(2)
	for i, wantErr := range []bool{false, false, true, false} {
		var err error
		if i%2 == 0 {
			err = h.Sync()
		} else {
			err = f.SyncDir("/d")
		}
		if (err != nil) != wantErr {
			t.Errorf("sync %d: err = %v, want error %v", i, err, wantErr)
		}
	}
	if got, want := f.SyncCount()-start, 4; got != want {
		t.Errorf("SyncCount delta = %d, want %d", got, want)
	}
}

func TestHook(t *testing.T) {
	f := setup(t)
	var ops []string
	f.SetHook(func(op, name string) {
		f.Clone() // must not deadlock
		ops = append(ops, op+" "+name)
	})
	h := create(t, f, "/d/a", "x", true, true)
	f.Rename("/d/a", "/d/b")
	h.Truncate(0)
	f.Remove("/d/b")
	want := []string{"create /d/a", "write /d/a", "sync /d/a", "syncdir /d", "rename /d/b", "truncate /d/a", "remove /d/b"}
	if !slices.Equal(ops, want) {
		t.Errorf("hook ops = %q, want %q", ops, want)
	}
}

func TestConcurrent(t *testing.T) {
	f := setup(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			name := "/d/" + string(rune('a'+i))
			h, err := f.OpenFile(name, rw, 0)
			if err != nil {
				t.Error(err)
				return
			}
			for range 100 {
				h.Write([]byte("x"))
				h.ReadAt(make([]byte, 1), 0)
				h.Sync()
				f.SyncDir("/d")
				f.Clone()
			}
		})
	}
	wg.Wait()
	names, _ := f.ReadDir("/d")
	if len(names) != 8 {
		t.Errorf("ReadDir = %v, want 8 names", names)
	}
}
