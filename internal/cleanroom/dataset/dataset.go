// Package dataset implements Parley's encrypted dataset format for clean
// rooms: a data owner turns a CSV file into a self-describing ciphertext on
// its own machine, and only a holder of the dataset's 32-byte data key can
// turn it back.
//
// The plaintext is split into fixed-size chunks, each sealed with
// AES-256-GCM under the data key. Every chunk's additional data binds the
// SHA-256 of the header (which holds the format version, the dataset id, the
// chunk size and the schema), the chunk index and a final-chunk flag, so
// chunks cannot be reordered, dropped, truncated, or moved between datasets,
// and the header cannot be altered. The SHA-256 of the whole ciphertext is
// what the ledger records. The byte layout is documented in docs/cleanroom.md.
package dataset

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
)

// Version is the format version this package writes and reads.
const Version = 1

// Bounds on header fields; a header outside them is rejected before any
// allocation it would cause.
const (
	// DefaultChunkSize is the plaintext size of every chunk but the last.
	DefaultChunkSize = 1 << 20
	// MinChunkSize and MaxChunkSize bound the chunk size a header may declare.
	MinChunkSize = 1 << 10
	MaxChunkSize = 16 << 20
	// MaxSchemaSize bounds the encoded schema in a header.
	MaxSchemaSize = 64 << 10
	// MaxColumns bounds the number of columns in a schema.
	MaxColumns = 1024
)

const (
	magic     = "PLYDSET\x00"
	tagSize   = 16
	nonceSize = 12
	// fixed header: magic, version u16, id [16], chunk size u32, schema length u32.
	fixedHeaderSize = len(magic) + 2 + 16 + 4 + 4
)

// ErrDecrypt is returned (wrapped) when a chunk does not authenticate: the
// wrong key, or a ciphertext that was altered, reordered, truncated, extended
// or taken from another dataset.
var ErrDecrypt = errors.New("dataset: chunk does not authenticate")

// ErrFormat is returned (wrapped) when the header or the chunk framing is
// malformed.
var ErrFormat = errors.New("dataset: malformed ciphertext")

// ID names a dataset; it is bound into every chunk.
type ID [16]byte

// NewID returns a random dataset id.
func NewID() (ID, error) {
	var id ID
	if _, err := rand.Read(id[:]); err != nil {
		return ID{}, fmt.Errorf("read random id: %w", err)
	}
	return id, nil
}

// String returns the id in hex.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Key is a dataset's AES-256 data key.
type Key [32]byte

// NewKey returns a random data key.
func NewKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return Key{}, fmt.Errorf("read random key: %w", err)
	}
	return k, nil
}

// Type is a column type. The runner maps it to the DuckDB type of the same name.
type Type string

// The column types a schema may use.
const (
	Bigint  Type = "BIGINT"
	Double  Type = "DOUBLE"
	Varchar Type = "VARCHAR"
	Boolean Type = "BOOLEAN"
)

// Column is one named, typed column.
type Column struct {
	Name string `json:"name"`
	Type Type   `json:"type"`
}

// Schema lists a dataset's columns in CSV order.
type Schema struct {
	Columns []Column `json:"columns"`
}

var columnName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Validate checks that the schema has 1..MaxColumns columns with distinct
// lowercase identifier names and known types.
func (s Schema) Validate() error {
	if len(s.Columns) == 0 || len(s.Columns) > MaxColumns {
		return fmt.Errorf("schema has %d columns, want 1..%d", len(s.Columns), MaxColumns)
	}
	seen := make(map[string]bool, len(s.Columns))
	for _, c := range s.Columns {
		if !columnName.MatchString(c.Name) {
			return fmt.Errorf("column name %q: want a lowercase identifier", c.Name)
		}
		if seen[c.Name] {
			return fmt.Errorf("column name %q appears twice", c.Name)
		}
		seen[c.Name] = true
		switch c.Type {
		case Bigint, Double, Varchar, Boolean:
		default:
			return fmt.Errorf("column %q has unknown type %q", c.Name, c.Type)
		}
	}
	return nil
}

// Header is the authenticated, unencrypted prefix of a dataset ciphertext.
type Header struct {
	Version   uint16
	ID        ID
	ChunkSize uint32
	Schema    Schema
}

// marshal encodes the header; it is also the input to the header hash.
func (h Header) marshal() ([]byte, error) {
	if err := h.check(); err != nil {
		return nil, err
	}
	schema, err := json.Marshal(h.Schema)
	if err != nil {
		return nil, fmt.Errorf("encode schema: %w", err)
	}
	if len(schema) > MaxSchemaSize {
		return nil, fmt.Errorf("schema is %d bytes, limit %d", len(schema), MaxSchemaSize)
	}
	b := make([]byte, 0, fixedHeaderSize+len(schema))
	b = append(b, magic...)
	b = binary.BigEndian.AppendUint16(b, h.Version)
	b = append(b, h.ID[:]...)
	b = binary.BigEndian.AppendUint32(b, h.ChunkSize)
	b = binary.BigEndian.AppendUint32(b, uint32(len(schema)))
	return append(b, schema...), nil
}

func (h Header) check() error {
	if h.Version != Version {
		return fmt.Errorf("%w: version %d, want %d", ErrFormat, h.Version, Version)
	}
	if h.ChunkSize < MinChunkSize || h.ChunkSize > MaxChunkSize {
		return fmt.Errorf("%w: chunk size %d outside %d..%d", ErrFormat, h.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	if err := h.Schema.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrFormat, err)
	}
	return nil
}

// ReadHeader reads and validates a header from r, returning it with its
// encoded bytes.
func ReadHeader(r io.Reader) (Header, []byte, error) {
	fixed := make([]byte, fixedHeaderSize)
	if _, err := io.ReadFull(r, fixed); err != nil {
		return Header{}, nil, fmt.Errorf("%w: read header: %w", ErrFormat, err)
	}
	if string(fixed[:len(magic)]) != magic {
		return Header{}, nil, fmt.Errorf("%w: bad magic", ErrFormat)
	}
	p := fixed[len(magic):]
	var h Header
	h.Version = binary.BigEndian.Uint16(p)
	copy(h.ID[:], p[2:18])
	h.ChunkSize = binary.BigEndian.Uint32(p[18:22])
	n := binary.BigEndian.Uint32(p[22:26])
	if n > MaxSchemaSize {
		return Header{}, nil, fmt.Errorf("%w: schema is %d bytes, limit %d", ErrFormat, n, MaxSchemaSize)
	}
	schema := make([]byte, n)
	if _, err := io.ReadFull(r, schema); err != nil {
		return Header{}, nil, fmt.Errorf("%w: read schema: %w", ErrFormat, err)
	}
	dec := json.NewDecoder(bytes.NewReader(schema))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h.Schema); err != nil {
		return Header{}, nil, fmt.Errorf("%w: decode schema: %w", ErrFormat, err)
	}
	if err := h.check(); err != nil {
		return Header{}, nil, err
	}
	// The encoding must be canonical so the header hash is unambiguous.
	canon, err := h.marshal()
	if err != nil {
		return Header{}, nil, err
	}
	raw := append(fixed, schema...)
	if !bytes.Equal(canon, raw) {
		return Header{}, nil, fmt.Errorf("%w: header is not canonically encoded", ErrFormat)
	}
	return h, raw, nil
}

// chunkAD returns the additional data of chunk i: "parley dataset chunk v1",
// the header's SHA-256, the index and the final flag.
func chunkAD(dst []byte, headerHash *[32]byte, i uint64, final bool) []byte {
	dst = append(dst[:0], "parley dataset chunk v1"...)
	dst = append(dst, headerHash[:]...)
	dst = binary.BigEndian.AppendUint64(dst, i)
	if final {
		return append(dst, 1)
	}
	return append(dst, 0)
}

// chunkNonce returns the nonce of chunk i. Nonces never repeat under a key
// because each dataset has its own random key and each index is sealed once.
func chunkNonce(dst *[nonceSize]byte, i uint64) []byte {
	*dst = [nonceSize]byte{}
	binary.BigEndian.PutUint64(dst[4:], i)
	return dst[:]
}

func newAEAD(key Key) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, fmt.Errorf("new aes cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("new gcm: %w", err)
	}
	return aead, nil
}
