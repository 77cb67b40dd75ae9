// Package blob stores clean-room ciphertexts (encrypted datasets and
// encrypted results) by name. The ledger records each blob's SHA-256 digest;
// the store only holds bytes and never sees a key.
//
// [Store] is the interface the rest of Parley uses. [Dir] implements it on a
// local directory and is the default. An S3-compatible implementation must
// satisfy the same contract; see [Store].
package blob

import (
	"context"
	"errors"
	"io"
	"regexp"
)

// ErrNotFound is returned (wrapped) by Get and Stat when no blob has the name.
var ErrNotFound = errors.New("blob: not found")

// ErrExists is returned (wrapped) by Put when a blob with the name already
// exists with different content. Blobs are immutable.
var ErrExists = errors.New("blob: exists with different content")

// Info describes a stored blob.
type Info struct {
	Name   string
	Size   int64
	Digest [32]byte // SHA-256 of the content
}

// Store holds immutable, named blobs.
//
// Contract, for every implementation (local directory, S3-compatible):
//   - Names match [ValidName]; anything else is refused before any I/O.
//   - Put reads r to the end, computes the SHA-256 as it goes and returns it.
//     The blob is durable once Put returns nil, and becomes visible to Get and
//     Stat atomically: a reader sees all of it or nothing. A failed or
//     cancelled Put leaves nothing visible under the name.
//   - Blobs are immutable: Put of an existing name succeeds only if the
//     content is identical (same digest), and returns [ErrExists] otherwise.
//   - Get returns a reader the caller must close; Get and Stat return
//     [ErrNotFound] for a missing name. Callers verify the digest they
//     expect against the ledger; the store is not trusted for integrity.
//   - All methods are safe for concurrent use.
//
// An S3-compatible store maps a name to an object key under a prefix, uses a
// single PutObject (or a multipart upload completed only after every part
// succeeded) with an If-None-Match: * precondition for immutability, stores
// the hex SHA-256 as object metadata (x-amz-meta-sha256) or checksum for Stat,
// and maps 404 NoSuchKey to ErrNotFound. It is not built yet.
type Store interface {
	Put(ctx context.Context, name string, r io.Reader) (Info, error)
	Get(ctx context.Context, name string) (io.ReadCloser, error)
	Stat(ctx context.Context, name string) (Info, error)
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}(/[a-z0-9][a-z0-9._-]{0,127}){0,3}$`)

// ValidName reports whether name can name a blob: one to four slash-separated
// segments of lowercase letters, digits, '.', '_' and '-', each starting with
// a letter or digit and at most 128 bytes long.
func ValidName(name string) bool { return nameRE.MatchString(name) }
