package storage

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/parleyhq/parley/internal/ledgertest/lazyfs"
	"github.com/parleyhq/parley/internal/vfs"
)

// smallLedger builds a closed ledger on lazyfs in /l with a few committed
// chunks, a few complete ones and an open one, and returns the chunk names
// in seqno order.
func smallLedger(t *testing.T) (*lazyfs.FS, []string) {
	t.Helper()
	fsys := lazyfs.New()
	l, err := Open("/l", Options{FS: fsys, ChunkSize: 90})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Append(testEntries(1, 20, 1, 3, 6)); err != nil {
		t.Fatal(err)
	}
	if err := l.Append(testEntries(21, 5, 2, 3, 6)); err != nil {
		t.Fatal(err)
	}
	if err := l.MarkCommitted(8); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	files, err := listChunks(fsys, "/l")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var committed, complete, open int
	for _, f := range files {
		names = append(names, f.file)
		switch {
		case f.committed:
			committed++
		case f.complete:
			complete++
		default:
			open++
		}
	}
	if committed < 2 || complete < 2 || open != 1 {
		t.Fatalf("ledger has chunks %q, want at least 2 committed, 2 complete and 1 open", names)
	}
	return fsys, names
}

func writeFile(t *testing.T, fsys vfs.FS, name string, data []byte) {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func readFile(t *testing.T, fsys vfs.FS, name string) []byte {
	t.Helper()
	b, err := fsys.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wantCorrupt checks that Scan reports corruption naming file.
func wantCorrupt(t *testing.T, fsys vfs.FS, file, what string) {
	t.Helper()
	err := Scan(fsys, "/l", func(ChunkInfo, Entry) error { return nil })
	var ce *CorruptError
	if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) {
		t.Fatalf("%s: Scan = %v, want a CorruptError", what, err)
	}
	if file != "" && ce.File != file {
		t.Fatalf("%s: Scan blames %s (%v), want %s", what, ce.File, err, file)
	}
}

func TestScanIntact(t *testing.T) {
	fsys, _ := smallLedger(t)
	var got []uint64
	err := Scan(fsys, "/l", func(c ChunkInfo, e Entry) error {
		got = append(got, e.Index)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := 25; len(got) != want || got[0] != 1 || got[want-1] != 25 {
		t.Errorf("Scan visited %v, want 1..25", got)
	}
	stop := errors.New("stop")
	if err := Scan(fsys, "/l", func(ChunkInfo, Entry) error { return stop }); err != stop {
		t.Errorf("Scan returned %v, want the callback's error", err)
	}
}

func TestScanByteFlips(t *testing.T) {
	fsys, names := smallLedger(t)
	flips := 0
	for _, name := range names {
		orig := readFile(t, fsys, "/l/"+name)
		for i := range orig {
			for _, mask := range []byte{0x01, 0x80} {
				c := fsys.Clone()
				b := slices.Clone(orig)
				b[i] ^= mask
				writeFile(t, c, "/l/"+name, b)
				wantCorrupt(t, c, name, "flip byte "+name)
				flips++
			}
		}
	}
	t.Logf("%d byte flips detected", flips)
}

func TestScanTampering(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(t *testing.T, fsys *lazyfs.FS, names []string) string // returns the file to blame
	}{
		{"complete chunk cut by one frame", func(t *testing.T, fsys *lazyfs.FS, names []string) string {
			n := names[1]
			b := readFile(t, fsys, "/l/"+n)
			s := parseChunk(b, mustParse(t, n).start, 0)
			writeFile(t, fsys, "/l/"+n, b[:s.offsets[s.n()-1]])
			return n
		}},
		{"complete chunk cut mid-frame", func(t *testing.T, fsys *lazyfs.FS, names []string) string {
			n := names[len(names)-2]
			b := readFile(t, fsys, "/l/"+n)
			writeFile(t, fsys, "/l/"+n, b[:len(b)-3])
			return n
		}},
		{"missing middle chunk", func(t *testing.T, fsys *lazyfs.FS, names []string) string {
			fsys.Remove("/l/" + names[2])
			return names[3]
		}},
		{"missing second chunk", func(t *testing.T, fsys *lazyfs.FS, names []string) string {
			fsys.Remove("/l/" + names[1])
			return names[2]
		}},
		{"swapped chunk contents", func(t *testing.T, fsys *lazyfs.FS, names []string) string {
			a, b := readFile(t, fsys, "/l/"+names[1]), readFile(t, fsys, "/l/"+names[2])
			writeFile(t, fsys, "/l/"+names[1], b)
			writeFile(t, fsys, "/l/"+names[2], a)
			return names[1]
		}},
		{"duplicated chunk", func(t *testing.T, fsys *lazyfs.FS, names []string) string {
			c := mustParse(t, names[0])
			c.committed = false
			writeFile(t, fsys, "/l/"+c.String(), readFile(t, fsys, "/l/"+names[0]))
			return names[0]
		}},
		{"extra chunk after the open one", func(t *testing.T, fsys *lazyfs.FS, names []string) string {
			// A well-formed chunk continuing the log, but the open chunk
			// before it was never completed.
			l, err := Open("/other", Options{FS: fsys, FirstIndex: 26})
			if err != nil {
				t.Fatal(err)
			}
			l.Append(testEntries(26, 3, 2, 3, 6))
			l.Close()
			writeFile(t, fsys, "/l/ledger_26-28", readFile(t, fsys, "/other/ledger_26"))
			return names[len(names)-1]
		}},
		{"extra chunk overlapping", func(t *testing.T, fsys *lazyfs.FS, names []string) string {
			c := mustParse(t, names[1])
			writeFile(t, fsys, "/l/"+chunkName{start: c.start + 1, end: c.end, complete: true}.String(), readFile(t, fsys, "/l/"+names[1]))
			return ""
		}},
		{"chunk renamed to a wrong range", func(t *testing.T, fsys *lazyfs.FS, names []string) string {
			c := mustParse(t, names[1])
			c2 := c
			c2.end++
			fsys.Rename("/l/"+names[1], "/l/"+c2.String())
			return c2.String()
		}},
		{"unparsable chunk name", func(t *testing.T, fsys *lazyfs.FS, names []string) string {
			writeFile(t, fsys, "/l/ledger_01-5", nil)
			return "ledger_01-5"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys, names := smallLedger(t)
			blame := tt.tamper(t, fsys, names)
			wantCorrupt(t, fsys, blame, tt.name)
		})
	}
}

func mustParse(t *testing.T, name string) chunkName {
	t.Helper()
	c, err := parseChunkName(name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestChunkNames(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"ledger_1", true},
		{"ledger_1-1", true},
		{"ledger_5-10.committed", true},
		{"ledger_0", false},
		{"ledger_01", false},
		{"ledger_5-4", false},
		{"ledger_5.committed", false},
		{"ledger_5-", false},
		{"ledger_-5", false},
		{"ledger_+5", false},
		{"ledger_5-10.committed.committed", false},
		{"ledger_18446744073709551616", false},
	}
	for _, tt := range tests {
		c, err := parseChunkName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("parseChunkName(%q) error = %v, want ok %v", tt.name, err, tt.ok)
		}
		if err == nil && c.String() != tt.name {
			t.Errorf("parseChunkName(%q).String() = %q", tt.name, c.String())
		}
	}
}

func FuzzFrameDecode(f *testing.F) {
	for _, e := range []Entry{
		{},
		{Term: 1, Index: 1, Data: []byte("hello")},
		{Term: 1<<64 - 1, Index: 1<<64 - 1, Signature: true, Data: bytes.Repeat([]byte{0xff}, 300)},
	} {
		fr := appendFrame(nil, &e)
		f.Add(fr)
		f.Add(fr[:len(fr)-1])
		f.Add(append(fr, 1, 2, 3))
	}
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0}, 40))
	f.Add([]byte{1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, n, err := decodeFrame(b)
		if err != nil {
			if n != 0 || e.Data != nil || e.Term != 0 || e.Index != 0 || e.Signature {
				t.Fatalf("decodeFrame returned partial results with error %v: %d, %+v", err, n, e)
			}
			return
		}
		if n < frameOverhead || n > len(b) || n != frameOverhead+len(e.Data) {
			t.Fatalf("decodeFrame length %d for %d bytes with %d-byte payload", n, len(b), len(e.Data))
		}
		if re := appendFrame(nil, &e); !bytes.Equal(re, b[:n]) {
			t.Fatalf("re-encoded frame differs:\n got %x\nwant %x", re, b[:n])
		}
		// Any single-byte change of a valid frame must be rejected or
		// decode differently (never silently to the same entry).
		c := slices.Clone(b[:n])
		c[int(e.Index%uint64(n))] ^= 0x10
		if e2, _, err := decodeFrame(c); err == nil && entryEqual(e, e2) {
			t.Fatalf("flipped frame decodes to the same entry")
		}
	})
}

func FuzzChunkName(f *testing.F) {
	for _, s := range []string{"ledger_1", "ledger_2-9", "ledger_2-9.committed", "ledger_09", "raft_state"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := parseChunkName(s)
		if err != nil {
			return
		}
		if c.String() != s {
			t.Fatalf("parseChunkName(%q).String() = %q", s, c.String())
		}
	})
}

func benchEntries(n int) []Entry {
	ents := make([]Entry, n)
	data := make([]byte, 1024)
	for i := range data {
		data[i] = byte(i)
	}
	for i := range ents {
		ents[i] = Entry{Term: 1, Data: data, Signature: i == n-1}
	}
	return ents
}

func benchAppend(b *testing.B, sync bool) {
	l, err := Open(filepath.Join(b.TempDir(), "ledger"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	batch := benchEntries(1000)
	next := uint64(1)
	b.ReportAllocs()
	b.SetBytes(int64(len(batch) * 1024))
	for b.Loop() {
		for i := range batch {
			batch[i].Index = next
			next++
		}
		if err := l.Append(batch); err != nil {
			b.Fatal(err)
		}
		if sync {
			if err := l.Sync(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(next-1)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkAppendSync appends 1 KiB entries in batches of 1000 (the last a
// signature) on the real disk and fsyncs each batch: group commit.
func BenchmarkAppendSync(b *testing.B) { benchAppend(b, true) }

// BenchmarkAppend is BenchmarkAppendSync without the fsync.
func BenchmarkAppend(b *testing.B) { benchAppend(b, false) }

func BenchmarkEntry(b *testing.B) {
	l, err := Open(filepath.Join(b.TempDir(), "ledger"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	batch := benchEntries(1000)
	const n = 20_000
	for next := uint64(1); next <= n; {
		for i := range batch {
			batch[i].Index = next
			next++
		}
		if err := l.Append(batch); err != nil {
			b.Fatal(err)
		}
	}
	if err := l.Sync(); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	b.ReportAllocs()
	b.SetBytes(1024)
	for b.Loop() {
		if _, err := l.Entry(1 + rng.Uint64N(n)); err != nil {
			b.Fatal(err)
		}
	}
}
