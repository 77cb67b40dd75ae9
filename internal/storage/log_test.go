package storage

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/parleyhq/parley/internal/ledgertest/lazyfs"
	"github.com/parleyhq/parley/internal/vfs"
	"go.etcd.io/raft/v3/raftpb"
)

// testEntries returns n entries from first with the given term; every
// sigEvery-th index is a signature; payloads of size bytes depend on index
// and term.
func testEntries(first, n, term uint64, sigEvery, size int) []Entry {
	ents := make([]Entry, n)
	for i := range ents {
		idx := first + uint64(i)
		d := make([]byte, size+int(idx%5))
		for j := range d {
			d[j] = byte(idx*7 + term*13 + uint64(j))
		}
		ents[i] = Entry{Term: term, Index: idx, Signature: idx%uint64(sigEvery) == 0, Data: d}
	}
	return ents
}

func checkEntries(t *testing.T, l *Log, want []Entry) {
	t.Helper()
	if len(want) == 0 {
		return
	}
	if got, w := l.LastIndex(), want[len(want)-1].Index; got != w {
		t.Errorf("LastIndex = %d, want %d", got, w)
	}
	for _, w := range want {
		e, err := l.Entry(w.Index)
		if err != nil {
			t.Fatalf("Entry(%d): %v", w.Index, err)
		}
		if !entryEqual(e, w) {
			t.Fatalf("Entry(%d) = %s, want %s", w.Index, fmtEntry(e), fmtEntry(w))
		}
		term, err := l.Term(w.Index)
		if err != nil || term != w.Term {
			t.Fatalf("Term(%d) = %d, %v; want %d", w.Index, term, err, w.Term)
		}
	}
	got, err := l.Entries(want[0].Index, want[len(want)-1].Index+1, 1<<62)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("Entries returned %d entries, want %d", len(got), len(want))
	}
	for i := range got {
		if !entryEqual(got[i], want[i]) {
			t.Fatalf("Entries[%d] = %s, want %s", i, fmtEntry(got[i]), fmtEntry(want[i]))
		}
	}
}

type backend struct {
	name string
	new  func(t *testing.T) (vfs.FS, string)
}

var backends = []backend{
	{"lazyfs", func(t *testing.T) (vfs.FS, string) { return lazyfs.New(), "/ledger" }},
	{"os", func(t *testing.T) (vfs.FS, string) { return vfs.OS{}, filepath.Join(t.TempDir(), "ledger") }},
}

func TestRoundTrip(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			fsys, dir := b.new(t)
			opts := Options{FS: fsys, ChunkSize: 1000}
			l, err := Open(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			if l.FirstIndex() != 1 || l.LastIndex() != 0 {
				t.Errorf("empty log: FirstIndex, LastIndex = %d, %d; want 1, 0", l.FirstIndex(), l.LastIndex())
			}
			var want []Entry
			next := uint64(1)
			for batch := 1; next <= 600; batch = batch%13 + 1 {
				ents := testEntries(next, uint64(batch), 1+next/200, 7, 40)
				if err := l.Append(ents); err != nil {
					t.Fatal(err)
				}
				want = append(want, ents...)
				next += uint64(batch)
				if batch%3 == 0 {
					if err := l.Sync(); err != nil {
						t.Fatal(err)
					}
				}
			}
			checkEntries(t, l, want) // read back before close: buffered and written
			if err := l.MarkCommitted(300); err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l, err = Open(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			checkEntries(t, l, want)
			// The watermark survives a restart at chunk granularity (the
			// rest comes from raft_state's commit).
			if got := l.Committed(); got < 294 || got > 300 {
				t.Errorf("Committed = %d, want the end of the last chunk covered by 300", got)
			}

			// Names on disk.
			names, err := fsys.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			names = slices.DeleteFunc(names, func(n string) bool { return n == hardStateFile })
			slices.SortFunc(names, func(a, b string) int {
				ca, _ := parseChunkName(a)
				cb, _ := parseChunkName(b)
				return cmpU64(ca.start, cb.start)
			})
			next = 1
			var chunks int
			for i, n := range names {
				if n == hardStateFile {
					continue
				}
				chunks++
				c, err := parseChunkName(n)
				if err != nil {
					t.Fatal(err)
				}
				if c.String() != n {
					t.Errorf("name %q does not round-trip: %q", n, c.String())
				}
				if c.start != next {
					t.Errorf("chunk %s starts at %d, want %d", n, c.start, next)
				}
				if !c.complete {
					if i != len(names)-1 {
						t.Errorf("open chunk %s is not last in %q", n, names)
					}
					continue
				}
				if c.end%7 != 0 {
					t.Errorf("chunk %s does not end on a signature", n)
				}
				if want := c.end <= l.Committed(); c.committed != want {
					t.Errorf("chunk %s: committed suffix %v, want %v", n, c.committed, want)
				}
				next = c.end + 1
			}
			if chunks < 10 {
				t.Errorf("only %d chunks for 600 entries with ChunkSize 1000, want many rotations", chunks)
			}
			var scanned []Entry
			err = Scan(fsys, dir, func(c ChunkInfo, e Entry) error {
				if e.Index < c.Start || e.Index > c.End {
					return fmt.Errorf("entry %d outside chunk %+v", e.Index, c)
				}
				scanned = append(scanned, e)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(scanned, want, entryEqual) {
				t.Errorf("Scan returned %d entries differing from the %d appended", len(scanned), len(want))
			}
		})
	}
}

func TestEntriesMaxBytes(t *testing.T) {
	l, err := Open("/l", Options{FS: lazyfs.New(), ChunkSize: 300})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ents := make([]Entry, 30)
	for i := range ents {
		ents[i] = Entry{Term: 1, Index: uint64(i + 1), Signature: i%3 == 2, Data: make([]byte, 10)}
	}
	if err := l.Append(ents); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		lo, hi, max uint64
		want        int
	}{
		{1, 31, 0, 1},
		{1, 31, 9, 1},
		{1, 31, 10, 1},
		{1, 31, 29, 2},
		{1, 31, 30, 3},
		{5, 31, 1 << 40, 26},
		{5, 6, 1 << 40, 1},
		{3, 3, 1 << 40, 0},
	}
	for _, tt := range tests {
		got, err := l.Entries(tt.lo, tt.hi, tt.max)
		if err != nil || len(got) != tt.want {
			t.Errorf("Entries(%d, %d, %d) = %d entries, %v; want %d", tt.lo, tt.hi, tt.max, len(got), err, tt.want)
		}
		for i, e := range got {
			if e.Index != tt.lo+uint64(i) {
				t.Errorf("Entries(%d, %d, %d)[%d].Index = %d", tt.lo, tt.hi, tt.max, i, e.Index)
			}
		}
	}
	for _, r := range [][2]uint64{{0, 2}, {30, 32}, {31, 32}} {
		if _, err := l.Entries(r[0], r[1], 100); !errors.Is(err, ErrNotFound) {
			t.Errorf("Entries(%d, %d) error = %v, want ErrNotFound", r[0], r[1], err)
		}
	}
	if _, err := l.Entry(31); !errors.Is(err, ErrNotFound) {
		t.Errorf("Entry(31) error = %v, want ErrNotFound", err)
	}
	if _, err := l.Term(31); !errors.Is(err, ErrNotFound) {
		t.Errorf("Term(31) error = %v, want ErrNotFound", err)
	}
	if term, err := l.Term(0); term != 0 || err != nil {
		t.Errorf("Term(0) = %d, %v; want 0, nil", term, err)
	}
}

func TestAppendRejects(t *testing.T) {
	l, err := Open("/l", Options{FS: lazyfs.New()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Append([]Entry{{Term: 2, Index: 1}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		ents []Entry
	}{
		{"gap", []Entry{{Term: 2, Index: 3}}},
		{"repeat", []Entry{{Term: 2, Index: 1}}},
		{"not contiguous", []Entry{{Term: 2, Index: 2}, {Term: 2, Index: 4}}},
		{"term decreases", []Entry{{Term: 1, Index: 2}}},
		{"term decreases inside", []Entry{{Term: 3, Index: 2}, {Term: 2, Index: 3}}},
	}
	for _, tt := range tests {
		if err := l.Append(tt.ents); err == nil {
			t.Errorf("Append %s succeeded, want error", tt.name)
		}
	}
	if l.LastIndex() != 1 {
		t.Errorf("LastIndex after rejected appends = %d, want 1", l.LastIndex())
	}
	if err := l.Append([]Entry{{Term: 2, Index: 2}}); err != nil {
		t.Errorf("valid Append after rejected ones: %v", err)
	}
}

func TestFirstIndex(t *testing.T) {
	fsys := lazyfs.New()
	l, err := Open("/l", Options{FS: fsys, FirstIndex: 1000, ChunkSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	if l.FirstIndex() != 1000 || l.LastIndex() != 999 || l.Committed() != 999 {
		t.Errorf("FirstIndex, LastIndex, Committed = %d, %d, %d; want 1000, 999, 999", l.FirstIndex(), l.LastIndex(), l.Committed())
	}
	if err := l.Append([]Entry{{Term: 1, Index: 1}}); err == nil {
		t.Error("Append at 1 to a log starting at 1000 succeeded")
	}
	want := testEntries(1000, 50, 3, 4, 20)
	if err := l.Append(want); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := Open("/l", Options{FS: fsys, FirstIndex: 1}); err == nil {
		t.Error("Open with a FirstIndex not matching the first chunk succeeded")
	}
	l, err = Open("/l", Options{FS: fsys})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	checkEntries(t, l, want)
}

func TestTruncateFrom(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			fsys, dir := b.new(t)
			opts := Options{FS: fsys, ChunkSize: 200}
			l, err := Open(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			want := testEntries(1, 100, 1, 5, 20)
			if err := l.Append(want); err != nil {
				t.Fatal(err)
			}
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
			if err := l.MarkCommitted(20); err != nil {
				t.Fatal(err)
			}
			if err := l.TruncateFrom(20); err == nil {
				t.Error("TruncateFrom(20) with Committed 20 succeeded")
			}
			// Find a chunk boundary to cut across: truncate in the middle of
			// the chunk before the last complete one.
			names, _ := fsys.ReadDir(dir)
			var ends []uint64
			for _, n := range names {
				if c, err := parseChunkName(n); err == nil && c.complete {
					ends = append(ends, c.end)
				}
			}
			if len(ends) < 4 {
				t.Fatalf("only %d complete chunks: %q", len(ends), names)
			}
			cut := ends[len(ends)-3] - 2 // inside a complete chunk, two chunks back
			if err := l.TruncateFrom(cut); err != nil {
				t.Fatal(err)
			}
			if l.LastIndex() != cut-1 {
				t.Errorf("LastIndex after TruncateFrom(%d) = %d, want %d", cut, l.LastIndex(), cut-1)
			}
			if _, err := l.Entry(cut); !errors.Is(err, ErrNotFound) {
				t.Errorf("Entry(%d) after truncation: %v, want ErrNotFound", cut, err)
			}
			want = want[:cut-1]
			checkEntries(t, l, want)
			more := testEntries(cut, 60, 2, 5, 33)
			if err := l.Append(more); err != nil {
				t.Fatal(err)
			}
			want = append(want, more...)
			checkEntries(t, l, want)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l, err = Open(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			checkEntries(t, l, want)
			if err := Scan(fsys, dir, func(ChunkInfo, Entry) error { return nil }); err != nil {
				t.Errorf("Scan after truncate and append: %v", err)
			}
			// Truncate everything uncommitted, including the open chunk.
			if err := l.TruncateFrom(21); err != nil {
				t.Fatal(err)
			}
			checkEntries(t, l, want[:20])
		})
	}
}

func TestTornTail(t *testing.T) {
	tests := []struct {
		name    string
		garbage func(frame []byte) []byte
		dropped int
	}{
		{"half a frame", func(f []byte) []byte { return f[:len(f)/2] }, -1},
		{"header only", func(f []byte) []byte { return f[:10] }, -1},
		{"bad crc at end", func(f []byte) []byte { f[len(f)-1] ^= 1; return f }, -1},
		{"zeros", func(f []byte) []byte { return make([]byte, 4096) }, 4096},
		{"random garbage", func(f []byte) []byte { return []byte("\x93garbage that is not a frame at all, honestly") }, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ledger")
			l, err := Open(dir, Options{ChunkSize: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			want := testEntries(1, 30, 1, 10, 50)
			if err := l.Append(want); err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			next := testEntries(31, 1, 1, 10, 50)
			garbage := tt.garbage(appendFrame(nil, &next[0]))
			f, err := os.OpenFile(filepath.Join(dir, "ledger_1"), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(garbage)
			f.Close()

			var logBuf bytes.Buffer
			l, err = Open(dir, Options{Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
			if err != nil {
				t.Fatal(err)
			}
			checkEntries(t, l, want)
			if !strings.Contains(logBuf.String(), "cut torn tail") ||
				!strings.Contains(logBuf.String(), fmt.Sprintf("bytes_dropped=%d", len(garbage))) {
				t.Errorf("log = %q, want a torn-tail message with bytes_dropped=%d", logBuf.String(), len(garbage))
			}
			// The cut is on disk and the log continues where it was cut.
			if err := l.Append(next); err != nil {
				t.Fatal(err)
			}
			l.Close()
			if err := Scan(vfs.OS{}, dir, func(ChunkInfo, Entry) error { return nil }); err != nil {
				t.Errorf("Scan after repair: %v", err)
			}
		})
	}
}

func TestCorruptionRefused(t *testing.T) {
	setup := func(t *testing.T) string {
		dir := filepath.Join(t.TempDir(), "ledger")
		l, err := Open(dir, Options{ChunkSize: 500})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Append(testEntries(1, 62, 1, 4, 30)); err != nil {
			t.Fatal(err)
		}
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := l.MarkCommitted(30); err != nil {
			t.Fatal(err)
		}
		if err := l.SetHardState(raftpb.HardState{Term: 1, Commit: 62}); err != nil {
			t.Fatal(err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	find := func(t *testing.T, dir string, complete, committed bool) string {
		names, _ := os.ReadDir(dir)
		for _, n := range names {
			c, err := parseChunkName(n.Name())
			if err == nil && c.complete == complete && c.committed == committed {
				return n.Name()
			}
		}
		t.Fatalf("no chunk (complete %v, committed %v) in %s", complete, committed, dir)
		return ""
	}
	flip := func(t *testing.T, path string, at func(size int) int) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[at(len(b))] ^= 0x40
		os.WriteFile(path, b, 0o644)
	}
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string) string // returns the file to be named
	}{
		{"byte in the middle of a committed chunk", func(t *testing.T, dir string) string {
			n := find(t, dir, true, true)
			flip(t, filepath.Join(dir, n), func(s int) int { return s / 2 })
			return n
		}},
		{"byte in a complete chunk", func(t *testing.T, dir string) string {
			n := find(t, dir, true, false)
			flip(t, filepath.Join(dir, n), func(s int) int { return s - 1 })
			return n
		}},
		{"bad frame below commit in open chunk", func(t *testing.T, dir string) string {
			n := find(t, dir, false, false)
			flip(t, filepath.Join(dir, n), func(s int) int { return s - 1 })
			return n
		}},
		{"damage before the end of the open chunk", func(t *testing.T, dir string) string {
			n := find(t, dir, false, false)
			flip(t, filepath.Join(dir, n), func(s int) int { return 12 })
			return n
		}},
		{"unknown chunk-like file", func(t *testing.T, dir string) string {
			os.WriteFile(filepath.Join(dir, "ledger_x"), nil, 0o644)
			return "ledger_x"
		}},
		{"corrupt raft_state", func(t *testing.T, dir string) string {
			flip(t, filepath.Join(dir, hardStateFile), func(s int) int { return 9 })
			return "raft_state"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := setup(t)
			name := tt.damage(t, dir)
			l, err := Open(dir, Options{})
			if err == nil {
				l.Close()
				t.Fatal("Open succeeded on a damaged ledger")
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), name) {
				t.Errorf("Open error = %v, want ErrCorrupt naming %s", err, name)
			}
		})
	}
}

func TestHardState(t *testing.T) {
	fsys := lazyfs.New()
	l, err := Open("/l", Options{FS: fsys})
	if err != nil {
		t.Fatal(err)
	}
	if got := l.HardState(); got != (raftpb.HardState{}) {
		t.Errorf("HardState of a new log = %v, want empty", got)
	}
	hs := raftpb.HardState{Term: 7, Vote: 2, Commit: 0}
	if err := l.SetHardState(hs); err != nil {
		t.Fatal(err)
	}
	n := fsys.SyncCount()
	if err := l.SetHardState(hs); err != nil {
		t.Fatal(err)
	}
	if got := fsys.SyncCount(); got != n {
		t.Errorf("unchanged SetHardState did %d fsyncs, want 0", got-n)
	}
	fsys.Crash()
	l, err = Open("/l", Options{FS: fsys})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := l.HardState(); got != hs {
		t.Errorf("HardState after crash = %v, want %v", got, hs)
	}
	b := encodeHardState(hs)
	if got, err := decodeHardState(b); err != nil || got != hs {
		t.Errorf("decodeHardState(encode(%v)) = %v, %v", hs, got, err)
	}
}

func TestMarkCommittedCheap(t *testing.T) {
	fsys := lazyfs.New()
	l, err := Open("/l", Options{FS: fsys, ChunkSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Append(testEntries(1, 1000, 1, 10, 10))
	l.Sync()
	n := fsys.SyncCount()
	idx := uint64(1)
	allocs := testing.AllocsPerRun(100, func() {
		if err := l.MarkCommitted(idx); err != nil {
			t.Fatal(err)
		}
		idx += 5
	})
	if allocs != 0 {
		t.Errorf("MarkCommitted inside the open chunk allocates %v times, want 0", allocs)
	}
	if got := fsys.SyncCount(); got != n {
		t.Errorf("MarkCommitted inside the open chunk did %d fsyncs, want 0", got-n)
	}
}

func TestAppendAllocs(t *testing.T) {
	l, err := Open("/l", Options{FS: lazyfs.New(), ChunkSize: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	batch := testEntries(1, 100, 1, 1000, 1024)
	next := uint64(1)
	allocs := testing.AllocsPerRun(20, func() {
		for i := range batch {
			batch[i].Index = next
			next++
		}
		if err := l.Append(batch); err != nil {
			t.Fatal(err)
		}
	})
	// Amortised buffer growth only: well under one allocation per entry.
	if allocs > 5 {
		t.Errorf("Append of 100 entries allocates %v times, want amortised buffers only", allocs)
	}
}

func TestConcurrentReadAppend(t *testing.T) {
	l, err := Open("/l", Options{FS: lazyfs.New(), ChunkSize: 2000})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	all := testEntries(1, 2000, 1, 9, 30)
	if err := l.Append(all[:1]); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for i := uint64(0); ; i++ {
				select {
				case <-done:
					return
				default:
				}
				last := l.LastIndex()
				idx := 1 + i%last
				e, err := l.Entry(idx)
				if err != nil {
					t.Errorf("Entry(%d): %v", idx, err)
					return
				}
				if !entryEqual(e, all[idx-1]) {
					t.Errorf("Entry(%d) = %s, want %s", idx, fmtEntry(e), fmtEntry(all[idx-1]))
					return
				}
			}
		})
	}
	for i := 1; i < len(all); i += 10 {
		if err := l.Append(all[i:min(i+10, len(all))]); err != nil {
			t.Fatal(err)
		}
		if i%30 == 1 {
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(done)
	wg.Wait()
}

func TestClosed(t *testing.T) {
	l, err := Open("/l", Options{FS: lazyfs.New()})
	if err != nil {
		t.Fatal(err)
	}
	l.Append(testEntries(1, 3, 1, 2, 5))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if err := l.Append(testEntries(4, 1, 1, 2, 5)); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close = %v, want ErrClosed", err)
	}
	if _, err := l.Entry(1); !errors.Is(err, ErrClosed) {
		t.Errorf("Entry after Close = %v, want ErrClosed", err)
	}
}
