package dataset

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

var testSchema = Schema{Columns: []Column{{"account", Varchar}, {"amount", Bigint}}}

func testKey(t testing.TB) Key {
	t.Helper()
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// seal encrypts plaintext with a small chunk size so tests see many chunks.
func seal(t testing.TB, key Key, id ID, plaintext []byte, chunkSize uint32) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, key, Header{ID: id, ChunkSize: chunkSize, Schema: testSchema})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(plaintext); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := w.Digest(), sha256.Sum256(buf.Bytes()); got != want {
		t.Fatalf("writer digest %x, want %x", got, want)
	}
	return buf.Bytes()
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	key := testKey(t)
	id := ID{1, 2, 3}
	for _, n := range []int{0, 1, MinChunkSize - 1, MinChunkSize, MinChunkSize + 1, 3 * MinChunkSize, 5*MinChunkSize + 17} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			plain := pattern(n)
			ct := seal(t, key, id, plain, MinChunkSize)

			h, got, digest, err := Open(ct, key)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatalf("Open returned %d bytes, want the %d written", len(got), len(plain))
			}
			if h.ID != id || h.ChunkSize != MinChunkSize || h.Schema.Columns[1] != testSchema.Columns[1] {
				t.Errorf("header %+v does not match what was written", h)
			}
			if digest != sha256.Sum256(ct) {
				t.Errorf("Open digest %x, want sha256 of ciphertext", digest)
			}

			r, err := NewReader(bytes.NewReader(ct), key)
			if err != nil {
				t.Fatalf("NewReader: %v", err)
			}
			got, err = io.ReadAll(r)
			if err != nil {
				t.Fatalf("Reader: %v", err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatalf("Reader returned %d bytes, want the %d written", len(got), len(plain))
			}
			if r.Digest() != digest {
				t.Errorf("Reader digest %x, want %x", r.Digest(), digest)
			}
		})
	}
}

// openBoth decrypts ct with Open and with Reader and returns both errors.
func openBoth(ct []byte, key Key) (error, error) {
	_, _, _, errOpen := Open(ct, key)
	r, err := NewReader(bytes.NewReader(ct), key)
	if err != nil {
		return errOpen, err
	}
	_, err = io.ReadAll(r)
	return errOpen, err
}

func TestTamperFails(t *testing.T) {
	key := testKey(t)
	id := ID{9}
	const cs = MinChunkSize
	plain := pattern(3*cs + 100) // chunks 0,1,2 full and 3 final
	ct := seal(t, key, id, plain, cs)
	hlen := len(ct) - (3*(cs+tagSize) + 100 + tagSize)
	chunk := func(i int) []byte {
		start := hlen + i*(cs+tagSize)
		end := min(start+cs+tagSize, len(ct))
		return ct[start:end]
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	head := ct[:hlen]
	otherID := seal(t, key, ID{8}, plain, cs)
	// A dataset whose plaintext ends exactly on a chunk boundary, so its
	// last full chunk is final; dropping it leaves a non-final chunk last.
	aligned := seal(t, key, id, pattern(2*cs), cs)

	cases := []struct {
		name string
		ct   []byte
	}{
		{"swap chunks 0 and 1", cat(head, chunk(1), chunk(0), chunk(2), chunk(3))},
		{"drop chunk 1", cat(head, chunk(0), chunk(2), chunk(3))},
		{"drop final chunk", cat(head, chunk(0), chunk(1), chunk(2))},
		{"drop final of aligned", aligned[:len(aligned)-(cs+tagSize)]},
		{"duplicate chunk 0", cat(head, chunk(0), chunk(0), chunk(1), chunk(2), chunk(3))},
		{"truncate final chunk", ct[:len(ct)-1]},
		{"truncate to header", head},
		{"truncate inside header", ct[:hlen-1]},
		{"append byte", cat(ct, []byte{0})},
		{"append chunk", cat(ct, chunk(0))},
		{"chunk from other dataset", cat(otherID[:hlen], chunk(0), otherID[hlen+cs+tagSize:])},
		{"header from other dataset", cat(otherID[:hlen], ct[hlen:])},
		{"empty", nil},
	}
	// Every single-bit flip anywhere must fail; test one bit per byte
	// position at a stride that hits the header and each chunk.
	for i := 0; i < len(ct); i += 97 {
		c := bytes.Clone(ct)
		c[i] ^= 1 << (i % 8)
		cases = append(cases, struct {
			name string
			ct   []byte
		}{fmt.Sprintf("flip byte %d", i), c})
	}
	for _, i := range []int{hlen, len(ct) - 1, hlen - 1, 0} {
		c := bytes.Clone(ct)
		c[i] ^= 0x80
		cases = append(cases, struct {
			name string
			ct   []byte
		}{fmt.Sprintf("flip high bit %d", i), c})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			errOpen, errRead := openBoth(tc.ct, key)
			if errOpen == nil {
				t.Errorf("Open accepted a tampered ciphertext")
			}
			if errRead == nil {
				t.Errorf("Reader accepted a tampered ciphertext")
			}
			for _, err := range []error{errOpen, errRead} {
				if err != nil && !errors.Is(err, ErrDecrypt) && !errors.Is(err, ErrFormat) {
					t.Errorf("error %v wraps neither ErrDecrypt nor ErrFormat", err)
				}
			}
		})
	}

	wrong := testKey(t)
	if errOpen, errRead := openBoth(ct, wrong); !errors.Is(errOpen, ErrDecrypt) || !errors.Is(errRead, ErrDecrypt) {
		t.Errorf("wrong key: got %v and %v, want ErrDecrypt", errOpen, errRead)
	}
}

func TestEncryptCSV(t *testing.T) {
	key := testKey(t)
	in := "account,amount\nA-1,100\n\"B,2\",\nC-3,-7\n"
	var buf bytes.Buffer
	info, err := EncryptCSV(&buf, strings.NewReader(in), key, ID{5}, testSchema, 0)
	if err != nil {
		t.Fatalf("EncryptCSV: %v", err)
	}
	if info.Rows != 3 || info.Size != int64(buf.Len()) || info.Digest != sha256.Sum256(buf.Bytes()) {
		t.Errorf("info %+v does not describe the %d-byte ciphertext with 3 rows", info, buf.Len())
	}
	_, plain, _, err := Open(buf.Bytes(), key)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(plain); got != in {
		t.Errorf("plaintext %q, want %q", got, in)
	}

	bad := []struct{ name, in string }{
		{"wrong header", "acct,amount\nA,1\n"},
		{"not a number", "account,amount\nA,x\n"},
		{"short row", "account,amount\nA\n"},
		{"no header", ""},
	}
	for _, tc := range bad {
		if _, err := EncryptCSV(io.Discard, strings.NewReader(tc.in), key, ID{}, testSchema, 0); err == nil {
			t.Errorf("%s: EncryptCSV accepted %q", tc.name, tc.in)
		}
	}
}

func TestInferSchema(t *testing.T) {
	in := "id,score,ok,name,mixed\n1,1.5,true,x,1\n2,,false,y,z\n,3,,,\n"
	got, err := InferSchema(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Column{{"id", Bigint}, {"score", Double}, {"ok", Boolean}, {"name", Varchar}, {"mixed", Varchar}}
	for i, c := range want {
		if got.Columns[i] != c {
			t.Errorf("column %d is %+v, want %+v", i, got.Columns[i], c)
		}
	}
}

func TestHeaderRejected(t *testing.T) {
	key := testKey(t)
	cases := []Header{
		{ChunkSize: MinChunkSize - 1, Schema: testSchema},
		{ChunkSize: MaxChunkSize + 1, Schema: testSchema},
		{Schema: Schema{}},
		{Schema: Schema{Columns: []Column{{"A", Bigint}}}},
		{Schema: Schema{Columns: []Column{{"a", "BLOB"}}}},
		{Schema: Schema{Columns: []Column{{"a", Bigint}, {"a", Bigint}}}},
	}
	for _, h := range cases {
		if _, err := NewWriter(io.Discard, key, h); err == nil {
			t.Errorf("NewWriter accepted header %+v", h)
		}
	}
}

func FuzzOpen(f *testing.F) {
	key := Key{1}
	f.Add(seal(f, key, ID{1}, pattern(3*MinChunkSize+5), MinChunkSize))
	f.Add(seal(f, key, ID{1}, nil, MinChunkSize))
	f.Add([]byte(magic))
	f.Fuzz(func(t *testing.T, ct []byte) {
		h, plain, _, errOpen := Open(ct, key)
		r, err := NewReader(bytes.NewReader(ct), key)
		var got []byte
		if err == nil {
			got, err = io.ReadAll(r)
		}
		if (errOpen == nil) != (err == nil) {
			t.Fatalf("Open error %v but Reader error %v", errOpen, err)
		}
		if errOpen != nil {
			return
		}
		if !bytes.Equal(plain, got) {
			t.Fatalf("Open and Reader disagree on plaintext")
		}
		// Anything that opens must re-seal to the same ciphertext.
		if again := seal(t, key, h.ID, plain, h.ChunkSize); !bytes.Equal(again[:fixedHeaderSize], ct[:fixedHeaderSize]) {
			t.Fatalf("re-sealed header differs")
		}
	})
}

func BenchmarkOpen(b *testing.B) {
	key := testKey(b)
	plain := pattern(64 << 20)
	ct := seal(b, key, ID{1}, plain, DefaultChunkSize)
	b.SetBytes(int64(len(plain)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := Open(ct, key); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReader(b *testing.B) {
	key := testKey(b)
	plain := pattern(64 << 20)
	ct := seal(b, key, ID{1}, plain, DefaultChunkSize)
	b.SetBytes(int64(len(plain)))
	b.ReportAllocs()
	for b.Loop() {
		r, err := NewReader(bytes.NewReader(ct), key)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			b.Fatal(err)
		}
	}
}
