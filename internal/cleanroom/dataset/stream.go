package dataset

import (
	"bufio"
	"crypto/cipher"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
)

// Writer encrypts a plaintext stream into the dataset format. Close must be
// called to seal the final chunk.
type Writer struct {
	w          io.Writer
	aead       cipher.AEAD
	headerHash [32]byte
	digest     hash.Hash
	size       int64
	buf        []byte // plaintext of the pending chunk, cap chunkSize+tag
	ad         []byte
	nonce      [nonceSize]byte
	index      uint64
	chunkSize  int
	header     Header
	closed     bool
	err        error
}

// NewWriter writes h to w and returns a Writer that encrypts what is written
// to it under key. h.Version zero means Version; h.ChunkSize zero means
// DefaultChunkSize.
func NewWriter(w io.Writer, key Key, h Header) (*Writer, error) {
	if h.Version == 0 {
		h.Version = Version
	}
	if h.ChunkSize == 0 {
		h.ChunkSize = DefaultChunkSize
	}
	hb, err := h.marshal()
	if err != nil {
		return nil, fmt.Errorf("encode header: %w", err)
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	dw := &Writer{
		w:          w,
		aead:       aead,
		headerHash: sha256.Sum256(hb),
		digest:     sha256.New(),
		chunkSize:  int(h.ChunkSize),
		header:     h,
		buf:        make([]byte, 0, int(h.ChunkSize)+tagSize),
	}
	if err := dw.emit(hb); err != nil {
		return nil, err
	}
	return dw, nil
}

func (dw *Writer) emit(b []byte) error {
	if _, err := dw.w.Write(b); err != nil {
		dw.err = fmt.Errorf("write ciphertext: %w", err)
		return dw.err
	}
	dw.digest.Write(b)
	dw.size += int64(len(b))
	return nil
}

// Write buffers p, sealing and writing each chunk once it is full and more
// data follows it.
func (dw *Writer) Write(p []byte) (int, error) {
	if dw.err != nil {
		return 0, dw.err
	}
	if dw.closed {
		return 0, errors.New("dataset: write after close")
	}
	n := 0
	for len(p) > 0 {
		if len(dw.buf) == dw.chunkSize {
			// A full chunk with more data behind it is not the final one.
			if err := dw.seal(false); err != nil {
				return n, err
			}
		}
		k := min(len(p), dw.chunkSize-len(dw.buf))
		dw.buf = append(dw.buf, p[:k]...)
		p = p[k:]
		n += k
	}
	return n, nil
}

func (dw *Writer) seal(final bool) error {
	dw.ad = chunkAD(dw.ad, &dw.headerHash, dw.index, final)
	ct := dw.aead.Seal(dw.buf[:0], chunkNonce(&dw.nonce, dw.index), dw.buf, dw.ad)
	if err := dw.emit(ct); err != nil {
		return err
	}
	dw.index++
	dw.buf = dw.buf[:0]
	return nil
}

// Close seals the final chunk. It does not close the underlying writer.
func (dw *Writer) Close() error {
	if dw.err != nil {
		return dw.err
	}
	if dw.closed {
		return nil
	}
	dw.closed = true
	return dw.seal(true)
}

// Digest returns the SHA-256 of the ciphertext written so far; after Close it
// is the dataset's digest.
func (dw *Writer) Digest() [32]byte {
	var d [32]byte
	dw.digest.Sum(d[:0])
	return d
}

// Size returns the number of ciphertext bytes written so far.
func (dw *Writer) Size() int64 { return dw.size }

// Reader decrypts a dataset ciphertext stream. It returns plaintext only from
// chunks that authenticated, and reports io.EOF only after the final chunk
// authenticated and nothing follows it.
type Reader struct {
	r          *bufio.Reader
	aead       cipher.AEAD
	header     Header
	headerHash [32]byte
	digest     hash.Hash
	buf        []byte
	out        []byte // undelivered plaintext
	ad         []byte
	nonce      [nonceSize]byte
	index      uint64
	done       bool
	err        error
}

// NewReader reads the header from r and returns a Reader that decrypts the
// chunks after it under key.
func NewReader(r io.Reader, key Key) (*Reader, error) {
	dr := &Reader{r: bufio.NewReader(r), digest: sha256.New()}
	h, hb, err := ReadHeader(io.TeeReader(dr.r, dr.digest))
	if err != nil {
		return nil, err
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	dr.aead = aead
	dr.header = h
	dr.headerHash = sha256.Sum256(hb)
	dr.buf = make([]byte, int(h.ChunkSize)+tagSize)
	return dr, nil
}

// Header returns the dataset's header.
func (dr *Reader) Header() Header { return dr.header }

// Digest returns the SHA-256 of the ciphertext read so far; once Read has
// returned io.EOF it is the dataset's digest.
func (dr *Reader) Digest() [32]byte {
	var d [32]byte
	dr.digest.Sum(d[:0])
	return d
}

// Read decrypts into p.
func (dr *Reader) Read(p []byte) (int, error) {
	for len(dr.out) == 0 {
		if dr.err != nil {
			return 0, dr.err
		}
		if dr.done {
			return 0, io.EOF
		}
		dr.err = dr.next()
	}
	n := copy(p, dr.out)
	dr.out = dr.out[n:]
	return n, nil
}

func (dr *Reader) next() error {
	n, err := io.ReadFull(dr.r, dr.buf)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		// A short chunk can only be the final one.
	case err != nil:
		return fmt.Errorf("read chunk %d: %w", dr.index, err)
	}
	if n < tagSize {
		return fmt.Errorf("%w: chunk %d is %d bytes, missing or truncated", ErrFormat, dr.index, n)
	}
	final := n < len(dr.buf)
	if !final {
		if _, err := dr.r.Peek(1); err == io.EOF {
			final = true
		} else if err != nil {
			return fmt.Errorf("read chunk %d: %w", dr.index+1, err)
		}
	}
	if final && n == tagSize && dr.index > 0 {
		return fmt.Errorf("%w: empty final chunk %d", ErrFormat, dr.index)
	}
	ct := dr.buf[:n]
	dr.digest.Write(ct)
	dr.ad = chunkAD(dr.ad, &dr.headerHash, dr.index, final)
	pt, err := dr.aead.Open(ct[:0], chunkNonce(&dr.nonce, dr.index), ct, dr.ad)
	if err != nil {
		return fmt.Errorf("open chunk %d: %w", dr.index, ErrDecrypt)
	}
	dr.out = pt
	dr.index++
	dr.done = final
	return nil
}

// Open decrypts a whole in-memory ciphertext, returning its header, its
// plaintext and its digest. It is the fast path the runner uses.
func Open(ciphertext []byte, key Key) (Header, []byte, [32]byte, error) {
	br := &countingReader{b: ciphertext}
	h, hb, err := ReadHeader(br)
	if err != nil {
		return Header{}, nil, [32]byte{}, err
	}
	aead, err := newAEAD(key)
	if err != nil {
		return Header{}, nil, [32]byte{}, err
	}
	headerHash := sha256.Sum256(hb)
	// Hash each chunk just before decrypting it, while it is in cache.
	h256 := sha256.New()
	h256.Write(ciphertext[:br.n])
	rest := ciphertext[br.n:]
	full := int(h.ChunkSize) + tagSize
	chunks := (len(rest) + full - 1) / full
	if chunks == 0 {
		return Header{}, nil, [32]byte{}, fmt.Errorf("%w: no chunks", ErrFormat)
	}
	plain := make([]byte, 0, len(rest)-chunks*tagSize+tagSize)
	var (
		ad    []byte
		nonce [nonceSize]byte
	)
	for i := 0; len(rest) > 0; i++ {
		n := min(full, len(rest))
		final := n == len(rest)
		if n < tagSize || (final && n == tagSize && i > 0) {
			return Header{}, nil, [32]byte{}, fmt.Errorf("%w: chunk %d is %d bytes", ErrFormat, i, n)
		}
		h256.Write(rest[:n])
		ad = chunkAD(ad, &headerHash, uint64(i), final)
		plain, err = aead.Open(plain, chunkNonce(&nonce, uint64(i)), rest[:n], ad)
		if err != nil {
			return Header{}, nil, [32]byte{}, fmt.Errorf("open chunk %d: %w", i, ErrDecrypt)
		}
		rest = rest[n:]
	}
	var digest [32]byte
	h256.Sum(digest[:0])
	return h, plain, digest, nil
}

type countingReader struct {
	b []byte
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.n >= len(c.b) {
		return 0, io.EOF
	}
	k := copy(p, c.b[c.n:])
	c.n += k
	return k, nil
}
