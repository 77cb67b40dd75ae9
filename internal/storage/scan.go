package storage

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"

	"github.com/parleyhq/parley/internal/vfs"
)

// ErrCorrupt is wrapped by the errors of [Open] and [Scan] when a ledger
// directory is damaged, and by [Log.Entry] and [Log.Entries] when a frame
// read back fails its checks. The error is a [*CorruptError] naming the
// chunk file and seqno.
var ErrCorrupt = errors.New("ledger corrupt")

// CorruptError describes damage found in a ledger directory. It wraps
// [ErrCorrupt] and the underlying cause.
type CorruptError struct {
	File  string // chunk file name (no directory)
	Seqno uint64 // the first seqno affected
	Err   error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("ledger chunk %s, seqno %d: %v", e.File, e.Seqno, e.Err)
}

// Unwrap returns ErrCorrupt and the cause.
func (e *CorruptError) Unwrap() []error { return []error{ErrCorrupt, e.Err} }

func corrupt(file string, seqno uint64, format string, args ...any) error {
	return &CorruptError{File: file, Seqno: seqno, Err: fmt.Errorf(format, args...)}
}

// ChunkInfo describes a chunk file, as [Scan] passes it to its callback.
type ChunkInfo struct {
	Name       string // file name, without the directory
	Start, End uint64 // inclusive seqnos of the first and last entries
	Complete   bool   // the name carries an end (the chunk is closed)
	Committed  bool   // the name carries the .committed suffix
	Size       int64  // file size in bytes
}

// chunkFile is a chunk file found in a directory.
type chunkFile struct {
	file string
	chunkName
}

// listChunks returns the chunk files of dir sorted by start. Names that
// look like chunks but do not parse are corruption.
func listChunks(fsys vfs.FS, dir string) ([]chunkFile, error) {
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list ledger directory: %w", err)
	}
	var files []chunkFile
	for _, n := range names {
		if !isChunkLike(n) {
			continue
		}
		c, err := parseChunkName(n)
		if err != nil {
			return nil, &CorruptError{File: n, Err: err}
		}
		files = append(files, chunkFile{n, c})
	}
	slices.SortFunc(files, func(a, b chunkFile) int {
		if a.start != b.start {
			return cmpU64(a.start, b.start)
		}
		return cmpU64(a.end, b.end)
	})
	return files, nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// termRun says that entries from first on have term, up to the next run.
type termRun struct{ first, term uint64 }

// chunkScan is the result of parsing a chunk file's bytes.
type chunkScan struct {
	offsets  []uint32  // offset of each good frame
	runs     []termRun // terms of the good frames; the first run starts at start
	validLen int       // bytes up to the end of the last good frame
	lastTerm uint64
	lastSig  bool
	badOff   int   // offset of the first bad frame, if bad != nil
	bad      error // the first problem; nil if every byte parsed
}

func (s *chunkScan) n() int { return len(s.offsets) }

// parseChunk checks the magic and every frame of data, which must hold
// consecutive indexes from start with terms from prevTerm on.
func parseChunk(data []byte, start, prevTerm uint64) chunkScan {
	var s chunkScan
	s.lastTerm = prevTerm
	if len(data) > math.MaxUint32 {
		s.bad = fmt.Errorf("chunk file of %d bytes exceeds 4 GiB", len(data))
		return s
	}
	if len(data) < len(chunkMagic) || string(data[:len(chunkMagic)]) != chunkMagic {
		s.bad = errors.New("bad chunk magic")
		return s
	}
	off := len(chunkMagic)
	s.validLen = off
	for off < len(data) {
		e, n, err := decodeFrame(data[off:])
		want := start + uint64(len(s.offsets))
		switch {
		case err != nil:
		case e.Index != want:
			err = fmt.Errorf("frame has seqno %d, want %d", e.Index, want)
		case e.Term < s.lastTerm:
			err = fmt.Errorf("frame term %d below previous term %d", e.Term, s.lastTerm)
		}
		if err != nil {
			s.bad, s.badOff = err, off
			return s
		}
		if len(s.runs) == 0 || e.Term != s.lastTerm {
			s.runs = append(s.runs, termRun{e.Index, e.Term})
		}
		s.offsets = append(s.offsets, uint32(off))
		s.lastTerm, s.lastSig = e.Term, e.Signature
		off += n
		s.validLen = off
	}
	return s
}

// isTornTail reports whether the bad bytes from off to the end of an open
// chunk look like an interrupted write rather than damage: the frame header
// is cut short, the frame it declares reaches or passes the end of the file
// (a payload or checksum only partly written), or every byte is zero (space
// the file system allocated but never wrote). off < len(chunkMagic) means
// the magic itself is bad.
func isTornTail(data []byte, off int) bool {
	rest := data[off:]
	if len(rest) == 0 || !bytes.ContainsFunc(rest, func(r rune) bool { return r != 0 }) {
		return true
	}
	if off < len(chunkMagic) {
		return len(data) < len(chunkMagic) && string(data) == chunkMagic[:len(data)]
	}
	if len(rest) < headerSize {
		return true
	}
	return frameOverhead+frameSize(rest) >= uint64(len(rest))
}

// Scan reads a ledger directory without changing it, chunk by chunk in
// seqno order, and calls fn for every entry. Each chunk is checked whole
// (names, contiguity with the previous chunk, frame checksums, that the
// frames hold exactly the seqnos the name says, that a complete chunk ends
// with a signature, that terms never decrease, that only the last chunk is
// open) before fn sees any of its entries. The first problem is returned as
// a [*CorruptError] (wrapping [ErrCorrupt]) naming the chunk file and seqno.
// Unlike [Open], Scan does not forgive a torn tail: run it on a ledger that
// was closed cleanly or opened (and so repaired) since its last crash.
//
// Scan cannot tell a ledger missing its first chunks from one started at a
// later index (from a snapshot): a caller that knows the first seqno must
// check the first ChunkInfo.Start.
//
// e.Data aliases a buffer that belongs to fn once passed. An error from fn
// stops the scan and is returned as is.
func Scan(fsys vfs.FS, dir string, fn func(c ChunkInfo, e Entry) error) error {
	files, err := listChunks(fsys, dir)
	if err != nil {
		return err
	}
	var next, prevTerm uint64
	for i, f := range files {
		if i > 0 && f.start != next {
			return corrupt(f.file, min(f.start, next), "chunk starts at seqno %d, want %d (gap or overlap)", f.start, next)
		}
		if !f.complete && i != len(files)-1 {
			return corrupt(f.file, f.start, "open chunk is not the last chunk")
		}
		data, err := fsys.ReadFile(filepath.Join(dir, f.file))
		if err != nil {
			return fmt.Errorf("read chunk %s: %w", f.file, err)
		}
		s := parseChunk(data, f.start, prevTerm)
		if err := checkChunk(f, &s); err != nil {
			return err
		}
		info := ChunkInfo{
			Name: f.file, Start: f.start, End: f.start + uint64(s.n()) - 1,
			Complete: f.complete, Committed: f.committed, Size: int64(len(data)),
		}
		for _, off := range s.offsets {
			e, _, err := decodeFrame(data[off:])
			if err != nil {
				return fmt.Errorf("decode frame of chunk %s at offset %d: %w", f.file, off, err)
			}
			if err := fn(info, e); err != nil {
				return err
			}
		}
		next, prevTerm = info.End+1, s.lastTerm
	}
	return nil
}

// checkChunk applies the checks every chunk must pass except for the torn
// tail Open forgives in the last open chunk.
func checkChunk(f chunkFile, s *chunkScan) error {
	if s.bad != nil {
		return &CorruptError{File: f.file, Seqno: f.start + uint64(s.n()), Err: s.bad}
	}
	if s.n() == 0 {
		return corrupt(f.file, f.start, "chunk holds no entries")
	}
	end := f.start + uint64(s.n()) - 1
	if f.complete && end != f.end {
		return corrupt(f.file, min(end, f.end)+1, "chunk ends at seqno %d, its name says %d", end, f.end)
	}
	if f.complete && !s.lastSig {
		return corrupt(f.file, end, "complete chunk does not end with a signature entry")
	}
	return nil
}
