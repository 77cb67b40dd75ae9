package blob

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Dir is a [Store] on a local directory. Each blob is a file; its digest is
// recomputed by Stat (blobs are read rarely and the ledger, not the store, is
// the source of truth for digests).
type Dir struct {
	root string
}

var _ Store = (*Dir)(nil)

// OpenDir returns a Dir rooted at root, creating it if needed.
func OpenDir(root string) (*Dir, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("create blob directory: %w", err)
	}
	return &Dir{root: root}, nil
}

func (d *Dir) path(name string) (string, error) {
	if !ValidName(name) {
		return "", fmt.Errorf("blob name %q is not valid", name)
	}
	return filepath.Join(d.root, filepath.FromSlash(name)), nil
}

// Put writes r to a temporary file in the blob's directory, fsyncs it,
// renames it into place without replacing an existing blob, and fsyncs the
// directory.
func (d *Dir) Put(ctx context.Context, name string, r io.Reader) (Info, error) {
	p, err := d.path(name)
	if err != nil {
		return Info{}, err
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Info{}, fmt.Errorf("create blob directory: %w", err)
	}
	var suffix [8]byte
	rand.Read(suffix[:])
	tmp := filepath.Join(dir, ".tmp-"+filepath.Base(p)+"-"+hex.EncodeToString(suffix[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return Info{}, fmt.Errorf("create temporary blob: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			f.Close()
			os.Remove(tmp)
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), ctxReader{ctx, r})
	if err != nil {
		return Info{}, fmt.Errorf("write blob %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return Info{}, fmt.Errorf("sync blob %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return Info{}, fmt.Errorf("close blob %s: %w", name, err)
	}
	info := Info{Name: name, Size: n}
	h.Sum(info.Digest[:0])
	// Link fails if the name exists, so an existing blob is never replaced.
	if err := os.Link(tmp, p); err != nil {
		if !errors.Is(err, fs.ErrExist) {
			return Info{}, fmt.Errorf("link blob %s: %w", name, err)
		}
		old, err := d.Stat(ctx, name)
		if err != nil {
			return Info{}, err
		}
		if old.Digest != info.Digest {
			return Info{}, fmt.Errorf("put %s: %w", name, ErrExists)
		}
	}
	os.Remove(tmp)
	committed = true
	if err := syncDir(dir); err != nil {
		return Info{}, fmt.Errorf("sync blob directory: %w", err)
	}
	return info, nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// Get opens the blob for reading.
func (d *Dir) Get(_ context.Context, name string) (io.ReadCloser, error) {
	p, err := d.path(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("get %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", name, err)
	}
	return f, nil
}

// Stat returns the blob's size and digest, reading it to compute the digest.
func (d *Dir) Stat(ctx context.Context, name string) (Info, error) {
	rc, err := d.Get(ctx, name)
	if err != nil {
		return Info{}, err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, ctxReader{ctx, rc})
	if err != nil {
		return Info{}, fmt.Errorf("read blob %s: %w", name, err)
	}
	info := Info{Name: name, Size: n}
	h.Sum(info.Digest[:0])
	return info, nil
}

// ctxReader stops a copy when its context is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
