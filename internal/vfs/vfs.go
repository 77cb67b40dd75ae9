// Package vfs is the small file-system interface the ledger's storage writes
// through. Production code uses [OS]; crash tests use a fake that forgets
// every byte and every directory entry not yet made durable (see
// internal/ledgertest/lazyfs), so that a missing fsync on the commit path
// shows up as lost data in a test.
//
// # Durability contract
//
// Data written to a [File] is durable only after [File.Sync] returns nil.
// Creating, renaming or removing a file is durable only after [FS.SyncDir] on
// the directory that holds it returns nil. Implementations MUST NOT promise
// more than that, and callers MUST NOT assume more.
package vfs

import (
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// File is an open file. It is not safe for concurrent use unless the
// implementation says otherwise; ReadAt may be called concurrently with
// itself.
type File interface {
	io.Writer
	io.ReaderAt
	io.Closer
	// Sync makes the file's contents durable.
	Sync() error
	// Truncate changes the file's size; the change is durable after Sync.
	Truncate(size int64) error
	// Size returns the file's current size, durable or not.
	Size() (int64, error)
}

// FS is a file system rooted anywhere; names are ordinary paths.
type FS interface {
	// OpenFile opens name with os.O_* flags, as os.OpenFile. Writes always
	// go to the end of the file (callers open with os.O_APPEND or only
	// write sequentially after opening).
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	// ReadFile returns the whole contents of name.
	ReadFile(name string) ([]byte, error)
	// ReadDir lists the names (not paths) of the entries of dir, sorted.
	ReadDir(dir string) ([]string, error)
	// MkdirAll creates dir and its parents. Their entries are durable only
	// after SyncDir on each parent.
	MkdirAll(dir string, perm fs.FileMode) error
	// Rename atomically replaces newname with oldname.
	Rename(oldname, newname string) error
	// Remove deletes a file.
	Remove(name string) error
	// SyncDir makes the entries of dir (creations, renames, removals) durable.
	SyncDir(dir string) error
}

// OS is the real file system.
type OS struct{}

var _ FS = OS{}

type osFile struct{ *os.File }

func (f osFile) Size() (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// OpenFile implements [FS].
func (OS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

// ReadFile implements [FS].
func (OS) ReadFile(name string) ([]byte, error) { return os.ReadFile(name) }

// ReadDir implements [FS].
func (OS) ReadDir(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return names, nil
}

// MkdirAll implements [FS].
func (OS) MkdirAll(dir string, perm fs.FileMode) error { return os.MkdirAll(dir, perm) }

// Rename implements [FS].
func (OS) Rename(oldname, newname string) error { return os.Rename(oldname, newname) }

// Remove implements [FS].
func (OS) Remove(name string) error { return os.Remove(name) }

// SyncDir implements [FS].
func (OS) SyncDir(dir string) error {
	d, err := os.Open(filepath.Clean(dir))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// WriteFileDurable writes data to name through a temporary file, fsyncs it,
// renames it into place and fsyncs the directory, so that after a crash name
// holds either its old contents or data, never a mix.
func WriteFileDurable(fsys FS, name string, data []byte, perm fs.FileMode) error {
	tmp := name + ".tmp"
	f, err := fsys.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := fsys.Rename(tmp, name); err != nil {
		return err
	}
	return fsys.SyncDir(filepath.Dir(name))
}

// MkdirAllDurable creates dir and any missing parents and makes every
// directory entry on the way durable, by fsyncing each parent up to the root.
func MkdirAllDurable(fsys FS, dir string, perm fs.FileMode) error {
	if err := fsys.MkdirAll(dir, perm); err != nil {
		return err
	}
	for d := filepath.Clean(dir); ; {
		parent := filepath.Dir(d)
		if parent == d {
			return nil
		}
		if err := fsys.SyncDir(parent); err != nil {
			return err
		}
		d = parent
	}
}
