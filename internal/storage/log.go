package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/parleyhq/parley/internal/vfs"
	"go.etcd.io/raft/v3/raftpb"
)

// Entry is one ledger entry: a raft log entry whose index is the seqno and
// whose term is the view.
type Entry struct {
	Term, Index uint64
	Signature   bool // a signature transaction; chunks end only on these
	// ConfChange marks a ledger transaction that also changes raft's
	// membership (frame flag bit 1); its payload is an ordinary ledger
	// transaction.
	ConfChange bool
	Data       []byte
}

// Options configure [Open]. The zero value is usable.
type Options struct {
	// FS is the file system the log writes through; nil means vfs.OS{}.
	FS vfs.FS
	// ChunkSize is the size in bytes at which the open chunk is completed
	// at the next signature entry; 0 means 5 MiB. At most 1 GiB.
	ChunkSize int64
	// FirstIndex is the index of the first entry of a new, empty log (when
	// the log starts from a snapshot); 0 means 1. When the directory holds
	// chunks already, a non-zero FirstIndex must match the first chunk's
	// start.
	FirstIndex uint64
	// Logger receives recovery messages (torn tails cut, names repaired);
	// nil discards them.
	Logger *slog.Logger
	// AllowTruncateCorruption makes Open cut the last open chunk at its
	// first bad frame even when the damage does not look like a torn write,
	// and even below the commit index in raft_state. DANGEROUS: it silently
	// drops entries that may have been acknowledged. Use it only for manual
	// recovery, after copying the directory.
	AllowTruncateCorruption bool

	// testOnlySkipSync turns one fsync site into a no-op, so that tests can
	// show the crash test fails without it.
	testOnlySkipSync syncSite
}

const (
	defaultChunkSize = 5 << 20
	maxChunkSize     = 1 << 30
	// flushThreshold is the buffered size at which Append writes to the
	// file without waiting for Sync.
	flushThreshold = 1 << 20
	maxReaders     = 16
	hardStateFile  = "raft_state"
)

// ErrNotFound is wrapped by the errors of [Log.Term], [Log.Entry] and
// [Log.Entries] for indexes outside [FirstIndex, LastIndex].
var ErrNotFound = errors.New("entry not found")

// ErrClosed is returned by the methods of a closed [Log].
var ErrClosed = errors.New("log closed")

// syncSite names each place the log fsyncs a file or directory.
type syncSite int

const (
	siteNone         syncSite = iota
	siteMkdir                 // Open: parent of each directory it created
	siteOpenTruncate          // Open: file whose torn tail was cut
	siteOpenRepair            // Open: directory after renames or removals
	siteRotate                // Append: chunk data before its complete name
	siteSyncFile              // Sync: the open chunk
	siteSyncDir               // Sync: the directory after create/rename
	siteCommitDir             // MarkCommitted: directory after renames
	siteTruncRemove           // TruncateFrom: directory after each removal
	siteTruncRename           // TruncateFrom: directory after reopening a chunk
	siteTruncFile             // TruncateFrom: the shortened chunk
	siteReset                 // Reset: archive and ledger directories
	numSyncSites
)

var siteNames = [...]string{"none", "mkdir", "open-truncate", "open-repair", "rotate",
	"sync-file", "sync-dir", "commit-dir", "truncate-remove", "truncate-rename", "truncate-file", "reset"}

func (s syncSite) String() string { return siteNames[s] }

// Log is a ledger entry log in one directory. Readers ([Log.Entry],
// [Log.Entries], [Log.Term], the index getters) may run concurrently with
// each other and with one writer; the mutating methods serialise among
// themselves.
type Log struct {
	fsys      vfs.FS
	dir       string
	chunkSize int64
	logger    *slog.Logger
	skip      syncSite

	// wmu serialises the mutating methods. The fields below it are used
	// only by them.
	wmu          sync.Mutex
	err          error // sticky: set by a failed write or fsync
	fileDirty    bool  // the open chunk has writes not yet fsynced
	dirDirty     bool  // the directory has changes not yet fsynced
	commitCursor int   // chunks[:commitCursor] are named .committed

	// mu guards what readers see. Writers hold wmu and take mu to change it.
	mu        sync.RWMutex
	closed    bool
	first     uint64
	last      uint64
	committed uint64
	chunks    []*chunk
	terms     []termRun
	w         vfs.File // the open chunk, or nil
	buf       []byte   // bytes of the open chunk after flushed, not yet written
	flushed   int64    // bytes of the open chunk written to w
	hs        raftpb.HardState

	readers readerCache
}

// chunk is the in-memory index of one chunk file.
type chunk struct {
	name    chunkName
	offsets []uint32 // offset of each entry's frame; entry start+i at offsets[i]
	size    int64    // file size including bytes still buffered
}

func (c *chunk) lastIndex() uint64 { return c.name.start + uint64(len(c.offsets)) - 1 }

// frameEnd returns the end offset of entry i's frame.
func (c *chunk) frameEnd(i int) int64 {
	if i+1 < len(c.offsets) {
		return int64(c.offsets[i+1])
	}
	return c.size
}

// Open opens the log in dir, creating dir (durably) if needed. It reads
// every chunk, rebuilds the index, and repairs what a crash can leave
// behind: the torn tail of the last open chunk is cut off (and the cut
// fsynced), an open chunk left with no entries is removed, and names are
// brought up to date (complete chunks the commit index covers become
// .committed; an open chunk followed by another is completed). Any other
// damage returns a [*CorruptError] wrapping [ErrCorrupt] and the log is not
// opened.
//
// The commit index of the opened log is the largest of FirstIndex-1, the
// end of the last .committed chunk, and raft_state's commit (capped at the
// last index).
func Open(dir string, opts Options) (*Log, error) {
	if opts.FS == nil {
		opts.FS = vfs.OS{}
	}
	if opts.ChunkSize == 0 {
		opts.ChunkSize = defaultChunkSize
	}
	if opts.ChunkSize < 0 || opts.ChunkSize > maxChunkSize {
		return nil, fmt.Errorf("open ledger: chunk size %d out of range (0, %d]", opts.ChunkSize, maxChunkSize)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Log{
		fsys:      opts.FS,
		dir:       dir,
		chunkSize: opts.ChunkSize,
		logger:    opts.Logger.With(slog.String("ledger", dir)),
		skip:      opts.testOnlySkipSync,
	}
	if err := l.ensureDir(); err != nil {
		return nil, fmt.Errorf("create ledger directory: %w", err)
	}
	if err := l.load(opts); err != nil {
		l.closeFiles()
		return nil, err
	}
	return l, nil
}

// ensureDir creates dir if it does not exist and fsyncs the parent of every
// directory it created.
func (l *Log) ensureDir() error {
	var missing []string
	for d := l.dir; ; d = filepath.Dir(d) {
		_, err := l.fsys.ReadDir(d)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := l.fsys.MkdirAll(l.dir, 0o750); err != nil {
		return err
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := l.syncDir(siteMkdir, filepath.Dir(missing[i])); err != nil {
			return err
		}
	}
	return nil
}

func (l *Log) load(opts Options) error {
	hs, err := readHardState(l.fsys, filepath.Join(l.dir, hardStateFile))
	if err != nil {
		return err
	}
	l.hs = hs
	files, err := listChunks(l.fsys, l.dir)
	if err != nil {
		return err
	}
	l.first = max(opts.FirstIndex, 1)
	if len(files) > 0 {
		if opts.FirstIndex != 0 && files[0].start != opts.FirstIndex {
			return fmt.Errorf("open ledger: first chunk %s starts at %d, but Options.FirstIndex is %d",
				files[0].file, files[0].start, opts.FirstIndex)
		}
		l.first = files[0].start
	}
	l.last = l.first - 1
	l.committed = l.first - 1
	var prevTerm uint64
	var repairDir bool
	var onDisk []chunkName // the name each kept chunk has on disk
	for i, f := range files {
		if i > 0 && f.start != l.last+1 {
			return corrupt(f.file, min(f.start, l.last+1), "chunk starts at seqno %d, want %d (gap or overlap)", f.start, l.last+1)
		}
		data, err := l.fsys.ReadFile(filepath.Join(l.dir, f.file))
		if err != nil {
			return fmt.Errorf("read chunk %s: %w", f.file, err)
		}
		s := parseChunk(data, f.start, prevTerm)
		if f.complete || i < len(files)-1 {
			if err := checkChunk(f, &s); err != nil {
				return err
			}
		} else if s.bad != nil {
			keep, err := l.cutTornTail(f, data, &s, opts.AllowTruncateCorruption)
			if err != nil {
				return err
			}
			if !keep {
				repairDir = true
				continue
			}
		}
		c := &chunk{name: f.chunkName, offsets: s.offsets, size: int64(s.validLen)}
		if !f.complete && i < len(files)-1 {
			// An open chunk followed by another: its completing rename was
			// lost. checkChunk made sure it ends on a signature.
			c.name = chunkName{start: f.start, end: c.lastIndex(), complete: true}
		}
		l.chunks = append(l.chunks, c)
		onDisk = append(onDisk, f.chunkName)
		for _, r := range s.runs {
			if n := len(l.terms); n == 0 || l.terms[n-1].term != r.term {
				l.terms = append(l.terms, r)
			}
		}
		prevTerm = s.lastTerm
		l.last = c.lastIndex()
		if f.committed {
			l.committed = l.last
		}
	}
	l.committed = max(l.committed, min(hs.Commit, l.last))

	// Bring names up to date.
	for i, c := range l.chunks {
		want, old := c.name, onDisk[i]
		if want.complete && want.end <= l.committed {
			want.committed = true
		}
		if want == old {
			continue
		}
		if err := l.fsys.Rename(filepath.Join(l.dir, old.String()), filepath.Join(l.dir, want.String())); err != nil {
			return fmt.Errorf("rename chunk %s: %w", old, err)
		}
		l.logger.Warn("renamed chunk", slog.String("from", old.String()), slog.String("to", want.String()))
		c.name = want
		repairDir = true
	}
	if repairDir {
		if err := l.syncDir(siteOpenRepair, l.dir); err != nil {
			return err
		}
	}
	for l.commitCursor < len(l.chunks) && l.chunks[l.commitCursor].name.committed {
		l.commitCursor++
	}
	if n := len(l.chunks); n > 0 && !l.chunks[n-1].name.complete {
		c := l.chunks[n-1]
		w, err := l.fsys.OpenFile(filepath.Join(l.dir, c.name.String()), os.O_RDWR|os.O_APPEND, 0)
		if err != nil {
			return fmt.Errorf("open chunk %s: %w", c.name, err)
		}
		l.w, l.flushed = w, c.size
	}
	return nil
}

// cutTornTail cuts the last open chunk at its first bad frame if the damage
// is a torn write (or allowCorrupt), and fsyncs the cut. It reports whether
// the chunk still holds entries; if not, the file has been removed.
func (l *Log) cutTornTail(f chunkFile, data []byte, s *chunkScan, allowCorrupt bool) (bool, error) {
	cut, badSeqno := s.badOff, f.start+uint64(s.n())
	if cut < len(chunkMagic) {
		cut = 0
	}
	torn := isTornTail(data, cut)
	if !torn && !allowCorrupt {
		return false, &CorruptError{File: f.file, Seqno: badSeqno, Err: s.bad}
	}
	if l.hs.Commit >= badSeqno && !allowCorrupt {
		return false, &CorruptError{File: f.file, Seqno: badSeqno,
			Err: fmt.Errorf("bad tail would drop seqnos up to the commit index %d: %w", l.hs.Commit, s.bad)}
	}
	level := slog.LevelWarn
	if !torn {
		level = slog.LevelError
	}
	l.logger.Log(context.Background(), level, "cut torn tail of open chunk",
		slog.String("chunk", f.file), slog.Uint64("first_dropped_seqno", badSeqno),
		slog.Int("bytes_dropped", len(data)-cut), slog.Bool("looks_torn", torn), slog.Any("reason", s.bad))
	name := filepath.Join(l.dir, f.file)
	if s.n() == 0 {
		if err := l.fsys.Remove(name); err != nil {
			return false, fmt.Errorf("remove empty chunk %s: %w", f.file, err)
		}
		return false, nil
	}
	w, err := l.fsys.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return false, fmt.Errorf("open chunk %s: %w", f.file, err)
	}
	defer w.Close()
	if err := w.Truncate(int64(cut)); err != nil {
		return false, fmt.Errorf("truncate chunk %s: %w", f.file, err)
	}
	if err := l.syncFile(siteOpenTruncate, w); err != nil {
		return false, fmt.Errorf("fsync chunk %s: %w", f.file, err)
	}
	return true, nil
}

func (l *Log) syncFile(site syncSite, f vfs.File) error {
	if l.skip == site {
		return nil
	}
	return f.Sync()
}

func (l *Log) syncDir(site syncSite, dir string) error {
	if l.skip == site {
		return nil
	}
	return l.fsys.SyncDir(dir)
}

func (l *Log) path(c *chunk) string { return filepath.Join(l.dir, c.name.String()) }

// usable returns the error that stops a mutating method. l.wmu must be held.
func (l *Log) usable() error {
	if l.closed {
		return ErrClosed
	}
	if l.err != nil {
		return fmt.Errorf("ledger unusable after an earlier error: %w", l.err)
	}
	return nil
}

// fail records err as sticky and returns it. l.wmu must be held.
func (l *Log) fail(err error) error {
	if err != nil && l.err == nil {
		l.err = err
	}
	return err
}

// FirstIndex returns the index of the first entry.
func (l *Log) FirstIndex() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.first
}

// LastIndex returns the index of the last entry, FirstIndex()-1 when the log
// is empty. It counts entries appended but not yet synced.
func (l *Log) LastIndex() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.last
}

// Committed returns the commit watermark (see [Log.MarkCommitted] and
// [Open]).
func (l *Log) Committed() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.committed
}

// HardState returns the raft HardState last saved with
// [Log.SetHardState], or the empty one.
func (l *Log) HardState() raftpb.HardState {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.hs
}

// SetHardState saves hs durably in raft_state before it returns. It does
// nothing if hs equals the saved HardState.
func (l *Log) SetHardState(hs raftpb.HardState) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	if hs.Term == l.hs.Term && hs.Vote == l.hs.Vote && hs.Commit == l.hs.Commit {
		return nil
	}
	if err := vfs.WriteFileDurable(l.fsys, filepath.Join(l.dir, hardStateFile), encodeHardState(hs), 0o640); err != nil {
		return l.fail(fmt.Errorf("write raft_state: %w", err))
	}
	l.mu.Lock()
	l.hs = hs
	l.mu.Unlock()
	return nil
}

// Term returns the term of the entry at index. Term(0) is 0, as raft
// expects of an empty log starting at 1.
func (l *Log) Term(index uint64) (uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if index == 0 {
		return 0, nil
	}
	if l.closed {
		return 0, ErrClosed
	}
	if index < l.first || index > l.last {
		return 0, fmt.Errorf("term of %d: outside [%d, %d]: %w", index, l.first, l.last, ErrNotFound)
	}
	i := sort.Search(len(l.terms), func(i int) bool { return l.terms[i].first > index }) - 1
	return l.terms[i].term, nil
}

// locate returns the chunk holding index and the entry's position in it.
// l.mu must be held.
func (l *Log) locate(index uint64) (*chunk, int) {
	i := sort.Search(len(l.chunks), func(i int) bool { return l.chunks[i].name.start > index }) - 1
	c := l.chunks[i]
	return c, int(index - c.name.start)
}

// Entry reads the entry at index from disk (or from the write buffer),
// checking its checksum. The caller owns the returned Data.
func (l *Log) Entry(index uint64) (Entry, error) {
	ents, err := l.Entries(index, index+1, 0)
	if err != nil {
		return Entry{}, err
	}
	return ents[0], nil
}

// Entries returns the entries in [lo, hi), stopping before the total payload
// size would exceed maxBytes but always returning at least one entry, like
// raft.Storage.Entries. Indexes outside [FirstIndex, LastIndex] return an
// error wrapping [ErrNotFound]. The caller owns the returned slice; entries
// read together share one buffer.
func (l *Log) Entries(lo, hi, maxBytes uint64) ([]Entry, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return nil, ErrClosed
	}
	if lo >= hi {
		return nil, nil
	}
	if lo < l.first || hi-1 > l.last {
		return nil, fmt.Errorf("entries [%d, %d): outside [%d, %d]: %w", lo, hi, l.first, l.last, ErrNotFound)
	}
	out := make([]Entry, 0, min(hi-lo, 256))
	var total uint64
	for idx := lo; idx < hi; {
		c, i := l.locate(idx)
		n := min(len(c.offsets)-i, int(min(hi-idx, math.MaxInt)))
		k, full := 0, false
		for k < n {
			size := uint64(c.frameEnd(i+k)-int64(c.offsets[i+k])) - frameOverhead
			if len(out)+k > 0 && total+size > maxBytes {
				full = true
				break
			}
			total += size
			k++
		}
		if k > 0 {
			from := int64(c.offsets[i])
			buf := make([]byte, c.frameEnd(i+k-1)-from)
			if err := l.readAt(c, buf, from); err != nil {
				return nil, fmt.Errorf("read chunk %s: %w", c.name, err)
			}
			for j := range k {
				e, m, err := decodeFrame(buf)
				if err == nil && e.Index != idx+uint64(j) {
					err = fmt.Errorf("frame has seqno %d", e.Index)
				}
				if err != nil {
					return nil, &CorruptError{File: c.name.String(), Seqno: idx + uint64(j), Err: err}
				}
				out = append(out, e)
				buf = buf[m:]
			}
			idx += uint64(k)
		}
		if full {
			break
		}
	}
	return out, nil
}

// readAt fills p from chunk c at off, from the buffer for bytes not yet
// written. l.mu must be held (read or write).
func (l *Log) readAt(c *chunk, p []byte, off int64) error {
	n := len(p)
	if l.w != nil && c == l.chunks[len(l.chunks)-1] {
		if off >= l.flushed {
			copy(p, l.buf[off-l.flushed:])
			return nil
		}
		if end := off + int64(n); end > l.flushed {
			copy(p[l.flushed-off:], l.buf[:end-l.flushed])
			n = int(l.flushed - off)
		}
	}
	r, err := l.readers.acquire(l, c)
	if err != nil {
		return err
	}
	defer l.readers.release(r)
	m, err := r.f.ReadAt(p[:n], off)
	if m == n {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// Append appends ents, which must continue the log: ents[0].Index =
// LastIndex()+1, consecutive indexes, terms never decreasing, payloads of
// at most [MaxPayload] bytes. The entries are buffered and written to the
// open chunk (at most one write per call, besides chunk completions) but are
// not durable until [Log.Sync]. A signature entry that brings the open chunk
// to ChunkSize or more completes it: the chunk is flushed, fsynced and
// renamed to its complete name (durable at the next Sync), and the next
// entry starts a new chunk file.
func (l *Log) Append(ents []Entry) error {
	if len(ents) == 0 {
		return nil
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	if err := l.checkAppend(ents); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range ents {
		e := &ents[i]
		if l.w == nil {
			if err := l.newChunk(e.Index); err != nil {
				return l.fail(err)
			}
		}
		c := l.chunks[len(l.chunks)-1]
		c.offsets = append(c.offsets, uint32(c.size))
		l.buf = appendFrame(l.buf, e)
		c.size += int64(frameOverhead + len(e.Data))
		if n := len(l.terms); n == 0 || l.terms[n-1].term != e.Term {
			l.terms = append(l.terms, termRun{e.Index, e.Term})
		}
		l.last = e.Index
		if e.Signature && c.size >= l.chunkSize {
			if err := l.completeChunk(c); err != nil {
				return l.fail(err)
			}
		}
	}
	if len(l.buf) >= flushThreshold {
		return l.fail(l.flushLocked())
	}
	return nil
}

// checkAppend validates ents before anything is written. l.wmu must be held.
func (l *Log) checkAppend(ents []Entry) error {
	var term uint64
	if n := len(l.terms); n > 0 {
		term = l.terms[n-1].term
	}
	size := int64(-1) // the open chunk's size; -1 when none is open
	if l.w != nil {
		size = l.chunks[len(l.chunks)-1].size
	}
	for i := range ents {
		e := &ents[i]
		if want := l.last + 1 + uint64(i); e.Index != want {
			return fmt.Errorf("append entry %d: index %d, want %d", i, e.Index, want)
		}
		if e.Term < term {
			return fmt.Errorf("append entry %d: term %d below previous term %d", e.Index, e.Term, term)
		}
		if len(e.Data) > MaxPayload {
			return fmt.Errorf("append entry %d: payload of %d bytes exceeds %d", e.Index, len(e.Data), MaxPayload)
		}
		term = e.Term
		if size < 0 {
			size = int64(len(chunkMagic))
		}
		size += int64(frameOverhead + len(e.Data))
		if size > math.MaxUint32 {
			return fmt.Errorf("append entry %d: chunk would exceed 4 GiB with no signature entry to end it", e.Index)
		}
		if e.Signature && size >= l.chunkSize {
			size = -1
		}
	}
	return nil
}

// newChunk creates the open chunk file for entries from start. l.mu must
// be held.
func (l *Log) newChunk(start uint64) error {
	c := &chunk{name: chunkName{start: start}, size: int64(len(chunkMagic))}
	w, err := l.fsys.OpenFile(l.path(c), os.O_RDWR|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("create chunk %s: %w", c.name, err)
	}
	l.w, l.flushed = w, 0
	l.buf = append(l.buf[:0], chunkMagic...)
	l.chunks = append(l.chunks, c)
	l.dirDirty = true
	return nil
}

// completeChunk flushes and fsyncs the open chunk c, then renames it to its
// complete (or committed) name. l.mu must be held.
func (l *Log) completeChunk(c *chunk) error {
	if err := l.flushLocked(); err != nil {
		return err
	}
	if err := l.syncFile(siteRotate, l.w); err != nil {
		return fmt.Errorf("fsync chunk %s: %w", c.name, err)
	}
	l.fileDirty = false
	if err := l.w.Close(); err != nil {
		return fmt.Errorf("close chunk %s: %w", c.name, err)
	}
	l.w, l.flushed = nil, 0
	old := l.path(c)
	end := c.lastIndex()
	c.name = chunkName{start: c.name.start, end: end, complete: true, committed: end <= l.committed}
	if err := l.fsys.Rename(old, l.path(c)); err != nil {
		return fmt.Errorf("complete chunk %s: %w", c.name, err)
	}
	l.dirDirty = true
	return nil
}

// flushLocked writes the buffer to the open chunk. l.mu must be held.
func (l *Log) flushLocked() error {
	if len(l.buf) == 0 {
		return nil
	}
	if _, err := l.w.Write(l.buf); err != nil {
		return fmt.Errorf("write chunk: %w", err)
	}
	l.flushed += int64(len(l.buf))
	l.buf = l.buf[:0]
	if cap(l.buf) > 4*flushThreshold {
		l.buf = nil
	}
	l.fileDirty = true
	return nil
}

// Sync makes everything appended so far durable: it writes the buffer,
// fsyncs the open chunk if it changed, and fsyncs the directory if a chunk
// was created or renamed since the last Sync. Readers are not blocked while
// it waits for the disk.
func (l *Log) Sync() error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	return l.fail(l.sync())
}

func (l *Log) sync() error {
	if l.w != nil {
		if len(l.buf) > 0 {
			// Readers may copy from l.buf meanwhile: both only read it.
			if _, err := l.w.Write(l.buf); err != nil {
				return fmt.Errorf("write chunk: %w", err)
			}
			l.mu.Lock()
			l.flushed += int64(len(l.buf))
			l.buf = l.buf[:0]
			l.mu.Unlock()
			l.fileDirty = true
		}
		if l.fileDirty {
			if err := l.syncFile(siteSyncFile, l.w); err != nil {
				return fmt.Errorf("fsync open chunk: %w", err)
			}
			l.fileDirty = false
		}
	}
	if l.dirDirty {
		if err := l.syncDir(siteSyncDir, l.dir); err != nil {
			return fmt.Errorf("fsync ledger directory: %w", err)
		}
		l.dirDirty = false
	}
	return nil
}

// MarkCommitted raises the commit watermark to index (lower values are
// ignored) and renames every complete chunk it now covers to its
// .committed name, fsyncing the directory before it returns. It costs one
// comparison when no chunk is covered. index must not exceed LastIndex().
func (l *Log) MarkCommitted(index uint64) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if index <= l.committed {
		return nil
	}
	if err := l.usable(); err != nil {
		return err
	}
	if index > l.last {
		return fmt.Errorf("mark committed %d: beyond last index %d", index, l.last)
	}
	renamed := false
	l.mu.Lock()
	l.committed = index
	for l.commitCursor < len(l.chunks) {
		c := l.chunks[l.commitCursor]
		if !c.name.complete || c.name.end > index {
			break
		}
		if !c.name.committed {
			old := l.path(c)
			c.name.committed = true
			if err := l.fsys.Rename(old, l.path(c)); err != nil {
				c.name.committed = false
				l.mu.Unlock()
				return l.fail(fmt.Errorf("rename chunk to %s: %w", l.path(c), err))
			}
			renamed = true
		}
		l.commitCursor++
	}
	l.mu.Unlock()
	if renamed {
		if err := l.syncDir(siteCommitDir, l.dir); err != nil {
			return l.fail(fmt.Errorf("fsync ledger directory: %w", err))
		}
	}
	return nil
}

// TruncateFrom removes the entries from index on (a follower's uncommitted
// suffix being overwritten). It refuses index ≤ Committed() and does
// nothing if index > LastIndex(). Chunks that start at or after index are
// removed (newest first, fsyncing the directory after each); the chunk
// holding index-1, if complete, is renamed back to its open name (directory
// fsynced), then cut after index-1 and fsynced, and becomes the open chunk.
// All of it is durable when TruncateFrom returns; entries appended before
// it and not yet synced stay non-durable until the next Sync.
func (l *Log) TruncateFrom(index uint64) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	if index <= l.committed {
		return fmt.Errorf("truncate from %d: at or below committed index %d", index, l.committed)
	}
	if index > l.last {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fail(l.truncateLocked(index))
}

func (l *Log) truncateLocked(index uint64) error {
	if l.w != nil {
		if err := l.flushLocked(); err != nil {
			return err
		}
	}
	for n := len(l.chunks); n > 0 && l.chunks[n-1].name.start >= index; n = len(l.chunks) {
		c := l.chunks[n-1]
		if l.w != nil && n == len(l.chunks) && !c.name.complete {
			l.w.Close()
			l.w, l.flushed, l.fileDirty = nil, 0, false
		}
		l.readers.drop(c)
		if err := l.fsys.Remove(l.path(c)); err != nil {
			return fmt.Errorf("remove chunk %s: %w", c.name, err)
		}
		l.chunks = l.chunks[:n-1]
		if err := l.syncDir(siteTruncRemove, l.dir); err != nil {
			return fmt.Errorf("fsync ledger directory: %w", err)
		}
	}
	l.commitCursor = min(l.commitCursor, len(l.chunks))
	if n := len(l.chunks); n > 0 && l.chunks[n-1].lastIndex() >= index {
		c := l.chunks[n-1]
		if c.name.complete {
			old := l.path(c)
			l.readers.drop(c)
			c.name = chunkName{start: c.name.start}
			if err := l.fsys.Rename(old, l.path(c)); err != nil {
				return fmt.Errorf("reopen chunk %s: %w", c.name, err)
			}
			if err := l.syncDir(siteTruncRename, l.dir); err != nil {
				return fmt.Errorf("fsync ledger directory: %w", err)
			}
			w, err := l.fsys.OpenFile(l.path(c), os.O_RDWR|os.O_APPEND, 0)
			if err != nil {
				return fmt.Errorf("open chunk %s: %w", c.name, err)
			}
			l.w = w
		}
		off := c.offsets[index-c.name.start]
		if err := l.w.Truncate(int64(off)); err != nil {
			return fmt.Errorf("truncate chunk %s: %w", c.name, err)
		}
		if err := l.syncFile(siteTruncFile, l.w); err != nil {
			return fmt.Errorf("fsync chunk %s: %w", c.name, err)
		}
		c.offsets = c.offsets[:index-c.name.start]
		c.size, l.flushed, l.fileDirty = int64(off), int64(off), false
	}
	for n := len(l.terms); n > 0 && l.terms[n-1].first >= index; n = len(l.terms) {
		l.terms = l.terms[:n-1]
	}
	l.last = index - 1
	return nil
}

// Close syncs the log (unless an earlier error made it unusable) and
// closes its files. Later calls do nothing.
func (l *Log) Close() error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if l.closed {
		return nil
	}
	var err error
	if l.err == nil {
		err = l.fail(l.sync())
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if cerr := l.closeFiles(); err == nil {
		err = cerr
	}
	return err
}

func (l *Log) closeFiles() error {
	var err error
	if l.w != nil {
		err = l.w.Close()
		l.w = nil
	}
	l.readers.closeAll()
	return err
}

// readerCache keeps a few read-only handles on chunk files.
type readerCache struct {
	mu   sync.Mutex
	ents []*cachedReader
}

type cachedReader struct {
	c        *chunk
	f        vfs.File
	refs     int
	uncached bool // not in ents: close when refs drops to 0
}

// acquire returns a handle on c. l.mu must be held (read or write), which
// keeps c's name stable.
func (rc *readerCache) acquire(l *Log, c *chunk) (*cachedReader, error) {
	rc.mu.Lock()
	for _, r := range rc.ents {
		if r.c == c {
			r.refs++
			rc.mu.Unlock()
			return r, nil
		}
	}
	rc.mu.Unlock()
	f, err := l.fsys.OpenFile(l.path(c), os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, r := range rc.ents {
		if r.c == c {
			r.refs++
			f.Close()
			return r, nil
		}
	}
	r := &cachedReader{c: c, f: f, refs: 1}
	if len(rc.ents) >= maxReaders {
		i := 0
		for i < len(rc.ents) && rc.ents[i].refs > 0 {
			i++
		}
		if i == len(rc.ents) {
			r.uncached = true
			return r, nil
		}
		rc.ents[i].f.Close()
		rc.ents = append(rc.ents[:i], rc.ents[i+1:]...)
	}
	rc.ents = append(rc.ents, r)
	return r, nil
}

func (rc *readerCache) release(r *cachedReader) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	r.refs--
	if r.uncached && r.refs == 0 {
		r.f.Close()
	}
}

// drop closes the handle on c, if any. l.mu must be held for writing, so no
// reader is using it.
func (rc *readerCache) drop(c *chunk) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for i, r := range rc.ents {
		if r.c == c {
			r.f.Close()
			rc.ents = append(rc.ents[:i], rc.ents[i+1:]...)
			return
		}
	}
}

func (rc *readerCache) closeAll() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, r := range rc.ents {
		r.f.Close()
	}
	rc.ents = nil
}
