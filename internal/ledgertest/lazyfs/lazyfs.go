// Package lazyfs is an in-memory [vfs.FS] that models what survives a power
// cut, in the spirit of LazyFS for Jepsen. Crash tests run storage code on
// it, call [FS.Crash] at arbitrary points and check that everything the code
// promised to be durable is still there.
//
// # Model
//
// Every file is an inode with two contents: the current one (what reads
// see) and the durable one (as of the inode's last successful File.Sync).
// Every directory has current entries (changed by create, rename, remove and
// MkdirAll) and durable entries (as of its last successful SyncDir). Names
// and data are independent: a directory entry points at an inode, so a
// rename moves the inode and its data goes with it.
//
// [FS.Crash] simulates a power loss: every directory's entries revert to its
// durable entries, starting at the root (a directory whose own entry was
// never made durable disappears with everything in it), and every file that
// is still reachable reverts to its durable content. A file created and
// synced but whose directory was never synced is lost; a rename not followed
// by SyncDir is undone. [FS.CrashTorn] does the same but lets each file keep
// a random prefix of data appended since its last Sync, as a disk that wrote
// back some pages on its own would.
//
// Handles opened before a crash are dead afterwards: every method but Close
// returns an error wrapping [ErrCrashed].
//
// The FS is safe for concurrent use; one mutex guards everything.
package lazyfs

import (
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/parleyhq/parley/internal/vfs"
)

// ErrCrashed is wrapped by the errors of handles opened before [FS.Crash].
var ErrCrashed = errors.New("file handle invalidated by crash")

// ErrInjected is wrapped by the error of a Sync or SyncDir failed on purpose
// by [FS.FailSyncAfter].
var ErrInjected = errors.New("injected sync failure")

type node struct {
	dir bool

	// Files.
	data    []byte // current content
	durable []byte // content as of the last Sync; never shares memory with data
	clean   int    // data[:clean] is known to equal durable[:clean]

	// Directories.
	cur map[string]*node
	dur map[string]*node
}

func newDir() *node {
	return &node{dir: true, cur: map[string]*node{}, dur: map[string]*node{}}
}

// FS is the in-memory file system. The zero value is not usable; call [New].
type FS struct {
	mu     sync.Mutex
	root   *node
	gen    uint64 // bumped by every crash; handles of older generations are dead
	syncs  int
	failAt int // the value of syncs at which a sync fails; 0 = disarmed
	hook   func(op, name string)
}

var _ vfs.FS = (*FS)(nil)

// New returns an empty file system whose root directory exists durably.
// Relative and absolute names are both resolved from that root.
func New() *FS {
	return &FS{root: newDir()}
}

// SetHook registers fn to be called after every successful mutating
// operation (op is one of "create", "write", "truncate", "sync", "mkdir",
// "rename", "remove", "syncdir"; name is the file or directory). fn runs
// without the FS lock held, so it may call [FS.Clone]; it runs on the
// goroutine that did the operation. A nil fn removes the hook.
func (f *FS) SetHook(fn func(op, name string)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hook = fn
}

func (f *FS) fire(op, name string) {
	f.mu.Lock()
	h := f.hook
	f.mu.Unlock()
	if h != nil {
		h(op, name)
	}
}

// FailSyncAfter arms a one-shot fault: the next n calls to File.Sync or
// SyncDir succeed and the one after returns an error wrapping [ErrInjected]
// and persists nothing. A negative n disarms it.
func (f *FS) FailSyncAfter(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n < 0 {
		f.failAt = 0
		return
	}
	f.failAt = f.syncs + n + 1
}

// SyncCount returns how many times File.Sync and SyncDir have been called,
// failed calls included.
func (f *FS) SyncCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.syncs
}

// countSync records a sync attempt and reports whether it must fail.
// f.mu must be held.
func (f *FS) countSync() bool {
	f.syncs++
	if f.failAt != 0 && f.syncs == f.failAt {
		f.failAt = 0
		return true
	}
	return false
}

// Crash simulates a power loss: everything not made durable is forgotten
// and every open handle becomes invalid.
func (f *FS) Crash() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.crash(nil)
}

// CrashTorn is like [FS.Crash], except that a file whose current content
// extends its durable content keeps the durable content plus a random prefix
// (chosen with r) of the unsynced extension. A file whose unsynced changes
// are not a pure extension (a truncation or an overwrite) reverts as with
// Crash.
func (f *FS) CrashTorn(r *rand.Rand) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.crash(r)
}

func (f *FS) crash(r *rand.Rand) {
	f.gen++
	seen := map[*node]bool{}
	var walk func(n *node)
	walk = func(n *node) {
		if seen[n] {
			return
		}
		seen[n] = true
		if !n.dir {
			keep := n.durable
			if r != nil && n.clean >= len(n.durable) && len(n.data) > len(n.durable) {
				extra := r.IntN(len(n.data) - len(n.durable) + 1)
				keep = n.data[:len(n.durable)+extra]
			}
			n.data = slices.Clone(keep)
			n.durable = slices.Clone(keep)
			n.clean = len(keep)
			return
		}
		n.cur = maps(n.dur)
		// Visit children in name order so that CrashTorn is deterministic
		// for a given r.
		for _, name := range sortedKeys(n.dur) {
			walk(n.dur[name])
		}
	}
	walk(f.root)
}

// Clone returns a deep copy of the whole file system, current and durable
// state alike. The copy has no open handles, no hook, no armed fault and a
// sync count of zero.
func (f *FS) Clone() *FS {
	f.mu.Lock()
	defer f.mu.Unlock()
	copies := map[*node]*node{}
	var cp func(n *node) *node
	cp = func(n *node) *node {
		if c, ok := copies[n]; ok {
			return c
		}
		c := &node{dir: n.dir, clean: n.clean}
		copies[n] = c
		if !n.dir {
			c.data = slices.Clone(n.data)
			c.durable = slices.Clone(n.durable)
			return c
		}
		c.cur = make(map[string]*node, len(n.cur))
		c.dur = make(map[string]*node, len(n.dur))
		for k, v := range n.cur {
			c.cur[k] = cp(v)
		}
		for k, v := range n.dur {
			c.dur[k] = cp(v)
		}
		return c
	}
	return &FS{root: cp(f.root)}
}

func maps(m map[string]*node) map[string]*node {
	c := make(map[string]*node, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func sortedKeys(m map[string]*node) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// split cleans name and returns its components; the root has none.
func split(name string) []string {
	p := path.Clean("/" + filepath.ToSlash(name))
	if p == "/" {
		return nil
	}
	return strings.Split(p[1:], "/")
}

// lookupDir returns the directory at parts. f.mu must be held.
func (f *FS) lookupDir(op, name string, parts []string) (*node, error) {
	n := f.root
	for _, p := range parts {
		c, ok := n.cur[p]
		if !ok {
			return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
		}
		if !c.dir {
			return nil, &fs.PathError{Op: op, Path: name, Err: errors.New("not a directory")}
		}
		n = c
	}
	return n, nil
}

// lookupParent returns the directory holding name and name's base.
// f.mu must be held.
func (f *FS) lookupParent(op, name string) (*node, string, error) {
	parts := split(name)
	if len(parts) == 0 {
		return nil, "", &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	d, err := f.lookupDir(op, name, parts[:len(parts)-1])
	if err != nil {
		return nil, "", err
	}
	return d, parts[len(parts)-1], nil
}

// OpenFile implements [vfs.FS]. It honours O_RDONLY, O_WRONLY, O_RDWR,
// O_APPEND, O_CREATE, O_EXCL and O_TRUNC; perm is ignored.
func (f *FS) OpenFile(name string, flag int, _ fs.FileMode) (vfs.File, error) {
	f.mu.Lock()
	d, base, err := f.lookupParent("open", name)
	if err != nil {
		f.mu.Unlock()
		return nil, err
	}
	n, ok := d.cur[base]
	created := false
	switch {
	case !ok && flag&os.O_CREATE == 0:
		f.mu.Unlock()
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	case !ok:
		n = &node{}
		d.cur[base] = n
		created = true
	case flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		f.mu.Unlock()
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrExist}
	case n.dir:
		f.mu.Unlock()
		return nil, &fs.PathError{Op: "open", Path: name, Err: errors.New("is a directory")}
	}
	h := &file{fs: f, n: n, name: name, gen: f.gen, flag: flag}
	truncated := false
	if flag&os.O_TRUNC != 0 && h.writable() && len(n.data) > 0 {
		n.data = n.data[:0]
		n.clean = 0
		truncated = true
	}
	f.mu.Unlock()
	if created {
		f.fire("create", name)
	}
	if truncated {
		f.fire("truncate", name)
	}
	return h, nil
}

// ReadFile implements [vfs.FS].
func (f *FS) ReadFile(name string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, base, err := f.lookupParent("read", name)
	if err != nil {
		return nil, err
	}
	n, ok := d.cur[base]
	if !ok {
		return nil, &fs.PathError{Op: "read", Path: name, Err: fs.ErrNotExist}
	}
	if n.dir {
		return nil, &fs.PathError{Op: "read", Path: name, Err: errors.New("is a directory")}
	}
	return slices.Clone(n.data), nil
}

// ReadDir implements [vfs.FS].
func (f *FS) ReadDir(dir string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, err := f.lookupDir("readdir", dir, split(dir))
	if err != nil {
		return nil, err
	}
	return sortedKeys(d.cur), nil
}

// MkdirAll implements [vfs.FS].
func (f *FS) MkdirAll(dir string, _ fs.FileMode) error {
	f.mu.Lock()
	n := f.root
	made := false
	for _, p := range split(dir) {
		c, ok := n.cur[p]
		if !ok {
			c = newDir()
			n.cur[p] = c
			made = true
		} else if !c.dir {
			f.mu.Unlock()
			return &fs.PathError{Op: "mkdir", Path: dir, Err: errors.New("not a directory")}
		}
		n = c
	}
	f.mu.Unlock()
	if made {
		f.fire("mkdir", dir)
	}
	return nil
}

// Rename implements [vfs.FS]. Like rename(2), it replaces newname if it is
// a file.
func (f *FS) Rename(oldname, newname string) error {
	f.mu.Lock()
	od, obase, err := f.lookupParent("rename", oldname)
	if err != nil {
		f.mu.Unlock()
		return err
	}
	n, ok := od.cur[obase]
	if !ok {
		f.mu.Unlock()
		return &fs.PathError{Op: "rename", Path: oldname, Err: fs.ErrNotExist}
	}
	nd, nbase, err := f.lookupParent("rename", newname)
	if err != nil {
		f.mu.Unlock()
		return err
	}
	if old, ok := nd.cur[nbase]; ok && old.dir && old != n {
		f.mu.Unlock()
		return &fs.PathError{Op: "rename", Path: newname, Err: errors.New("is a directory")}
	}
	delete(od.cur, obase)
	nd.cur[nbase] = n
	f.mu.Unlock()
	f.fire("rename", newname)
	return nil
}

// Remove implements [vfs.FS]. It removes a file or an empty directory.
func (f *FS) Remove(name string) error {
	f.mu.Lock()
	d, base, err := f.lookupParent("remove", name)
	if err != nil {
		f.mu.Unlock()
		return err
	}
	n, ok := d.cur[base]
	if !ok {
		f.mu.Unlock()
		return &fs.PathError{Op: "remove", Path: name, Err: fs.ErrNotExist}
	}
	if n.dir && len(n.cur) > 0 {
		f.mu.Unlock()
		return &fs.PathError{Op: "remove", Path: name, Err: errors.New("directory not empty")}
	}
	delete(d.cur, base)
	f.mu.Unlock()
	f.fire("remove", name)
	return nil
}

// SyncDir implements [vfs.FS].
func (f *FS) SyncDir(dir string) error {
	f.mu.Lock()
	d, err := f.lookupDir("syncdir", dir, split(dir))
	if err != nil {
		f.mu.Unlock()
		return err
	}
	if f.countSync() {
		f.mu.Unlock()
		return &fs.PathError{Op: "syncdir", Path: dir, Err: ErrInjected}
	}
	d.dur = maps(d.cur)
	f.mu.Unlock()
	f.fire("syncdir", dir)
	return nil
}

// file is an open handle. Its offset is used by Write unless it was opened
// with O_APPEND.
type file struct {
	fs     *FS
	n      *node
	name   string
	gen    uint64
	flag   int
	off    int64
	closed bool
}

func (h *file) writable() bool {
	acc := h.flag & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
	return acc == os.O_WRONLY || acc == os.O_RDWR
}

func (h *file) readable() bool {
	acc := h.flag & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
	return acc == os.O_RDONLY || acc == os.O_RDWR
}

// check returns the error for an operation on a dead handle. h.fs.mu must
// be held.
func (h *file) check(op string) error {
	if h.closed {
		return &fs.PathError{Op: op, Path: h.name, Err: fs.ErrClosed}
	}
	if h.gen != h.fs.gen {
		return &fs.PathError{Op: op, Path: h.name, Err: ErrCrashed}
	}
	return nil
}

func (h *file) Write(p []byte) (int, error) {
	h.fs.mu.Lock()
	if err := h.check("write"); err != nil {
		h.fs.mu.Unlock()
		return 0, err
	}
	if !h.writable() {
		h.fs.mu.Unlock()
		return 0, &fs.PathError{Op: "write", Path: h.name, Err: errors.New("bad file descriptor")}
	}
	n := h.n
	pos := h.off
	if h.flag&os.O_APPEND != 0 {
		pos = int64(len(n.data))
	}
	if int(pos) < n.clean {
		n.clean = int(pos)
	}
	if grow := int(pos) + len(p) - len(n.data); grow > 0 {
		n.data = append(n.data, make([]byte, grow)...)
	}
	copy(n.data[pos:], p)
	h.off = pos + int64(len(p))
	h.fs.mu.Unlock()
	h.fs.fire("write", h.name)
	return len(p), nil
}

// ReadAt behaves as os.File.ReadAt: a short read returns io.EOF.
func (h *file) ReadAt(p []byte, off int64) (int, error) {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.check("read"); err != nil {
		return 0, err
	}
	if !h.readable() {
		return 0, &fs.PathError{Op: "read", Path: h.name, Err: errors.New("bad file descriptor")}
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "readat", Path: h.name, Err: errors.New("negative offset")}
	}
	if off >= int64(len(h.n.data)) {
		return 0, io.EOF
	}
	n := copy(p, h.n.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (h *file) Sync() error {
	h.fs.mu.Lock()
	if err := h.check("sync"); err != nil {
		h.fs.mu.Unlock()
		return err
	}
	if h.fs.countSync() {
		h.fs.mu.Unlock()
		return &fs.PathError{Op: "sync", Path: h.name, Err: ErrInjected}
	}
	n := h.n
	n.durable = append(n.durable[:min(n.clean, len(n.durable))], n.data[n.clean:]...)
	n.clean = len(n.data)
	h.fs.mu.Unlock()
	h.fs.fire("sync", h.name)
	return nil
}

func (h *file) Truncate(size int64) error {
	h.fs.mu.Lock()
	if err := h.check("truncate"); err != nil {
		h.fs.mu.Unlock()
		return err
	}
	if !h.writable() || size < 0 {
		h.fs.mu.Unlock()
		return &fs.PathError{Op: "truncate", Path: h.name, Err: fs.ErrInvalid}
	}
	n := h.n
	if int(size) < len(n.data) {
		n.data = n.data[:size]
		n.clean = min(n.clean, int(size))
	} else {
		n.data = append(n.data, make([]byte, int(size)-len(n.data))...)
	}
	h.fs.mu.Unlock()
	h.fs.fire("truncate", h.name)
	return nil
}

func (h *file) Size() (int64, error) {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.check("stat"); err != nil {
		return 0, err
	}
	return int64(len(h.n.data)), nil
}

// Close marks the handle closed. Closing a handle a crash invalidated
// succeeds; closing twice returns an error wrapping fs.ErrClosed.
func (h *file) Close() error {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if h.closed {
		return &fs.PathError{Op: "close", Path: h.name, Err: fs.ErrClosed}
	}
	h.closed = true
	return nil
}
