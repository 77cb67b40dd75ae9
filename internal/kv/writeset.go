package kv

import (
	"bytes"
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Size limits on map names, keys and values. See the package documentation.
const (
	MaxMapNameLen = 256      // bytes in a map name; names are never empty
	MaxKeyLen     = 64 << 10 // bytes in a key; keys may be empty
	MaxValueLen   = 64 << 20 // bytes in a value; values may be empty
)

// PublicPrefix starts the name of every public map.
const PublicPrefix = "public:"

// encodingVersion is the first byte of every encoded write set.
const encodingVersion = 0x01

// Write flags in the encoding.
const (
	flagPut    = 0x00
	flagDelete = 0x01
)

// ErrMalformed is wrapped by the errors of [WriteSet.UnmarshalBinary] for
// input that is not a canonical encoding, and by those of
// [WriteSet.AppendBinary] and [WriteSet.MarshalBinary] for a write set that
// breaks the ordering, non-emptiness or size rules.
var ErrMalformed = errors.New("malformed write set")

var (
	_ encoding.BinaryAppender    = (*WriteSet)(nil)
	_ encoding.BinaryMarshaler   = (*WriteSet)(nil)
	_ encoding.BinaryUnmarshaler = (*WriteSet)(nil)
)

// IsPublic reports whether m names a public map, one whose writes are stored
// in clear in the ledger.
func IsPublic(m string) bool { return strings.HasPrefix(m, PublicPrefix) }

// Write is one write to one key. A put carries its Value; a delete has
// Deleted set and its Value is ignored.
type Write struct {
	Key     string
	Value   []byte
	Deleted bool
}

// MapWrites holds the writes to one map, sorted by Key, one per key.
type MapWrites struct {
	Map    string
	Writes []Write
}

// WriteSet is the set of writes of a transaction (or of a whole state, see
// [Store.Snapshot]): maps sorted by name, none empty. The zero value and nil
// are the empty write set.
//
// Write sets are values to be read: the functions of this package that
// return one may share Value slices (and Writes slices) with the store or
// with their input, and callers MUST NOT modify them.
type WriteSet struct {
	Maps []MapWrites
}

// Empty reports whether ws holds no writes.
func (ws *WriteSet) Empty() bool { return ws == nil || len(ws.Maps) == 0 }

// Split returns the public maps of ws and the private ones, in order. Both
// results are non-nil and share their Writes slices with ws.
func (ws *WriteSet) Split() (public, private *WriteSet) {
	public, private = &WriteSet{}, &WriteSet{}
	if ws == nil {
		return public, private
	}
	for _, mw := range ws.Maps {
		if IsPublic(mw.Map) {
			public.Maps = append(public.Maps, mw)
		} else {
			private.Maps = append(private.Maps, mw)
		}
	}
	return public, private
}

// Merge returns the union of the well-formed write sets a and b, such as the
// two halves returned by [WriteSet.Split]. Where both write to the same key
// of the same map, b's write wins. The result may share Writes slices with a
// and b. Either argument may be nil.
func Merge(a, b *WriteSet) *WriteSet {
	var am, bm []MapWrites
	if a != nil {
		am = a.Maps
	}
	if b != nil {
		bm = b.Maps
	}
	out := &WriteSet{Maps: make([]MapWrites, 0, len(am)+len(bm))}
	for len(am) > 0 || len(bm) > 0 {
		switch {
		case len(bm) == 0 || (len(am) > 0 && am[0].Map < bm[0].Map):
			out.Maps = append(out.Maps, am[0])
			am = am[1:]
		case len(am) == 0 || bm[0].Map < am[0].Map:
			out.Maps = append(out.Maps, bm[0])
			bm = bm[1:]
		default:
			out.Maps = append(out.Maps, MapWrites{Map: am[0].Map, Writes: mergeWrites(am[0].Writes, bm[0].Writes)})
			am, bm = am[1:], bm[1:]
		}
	}
	return out
}

// mergeWrites merges two key-sorted write lists, b winning on equal keys.
func mergeWrites(a, b []Write) []Write {
	out := make([]Write, 0, len(a)+len(b))
	for len(a) > 0 || len(b) > 0 {
		switch {
		case len(b) == 0 || (len(a) > 0 && a[0].Key < b[0].Key):
			out = append(out, a[0])
			a = a[1:]
		case len(a) == 0 || b[0].Key < a[0].Key:
			out = append(out, b[0])
			b = b[1:]
		default:
			out = append(out, b[0])
			a, b = a[1:], b[1:]
		}
	}
	return out
}

// MarshalBinary returns the canonical encoding of ws described in the
// package documentation. It returns an error wrapping [ErrMalformed] if ws
// is not well-formed (maps or keys unsorted or duplicated, a map without
// writes, or a name, key or value outside the limits).
func (ws *WriteSet) MarshalBinary() ([]byte, error) {
	return ws.AppendBinary(nil)
}

// AppendBinary appends the canonical encoding of ws to b, as
// [WriteSet.MarshalBinary] does. On error it returns b unchanged.
func (ws *WriteSet) AppendBinary(b []byte) ([]byte, error) {
	n, err := ws.encodedLen()
	if err != nil {
		return b, err
	}
	var maps []MapWrites
	if ws != nil {
		maps = ws.Maps
	}
	b = slices.Grow(b, n)
	b = append(b, encodingVersion)
	b = binary.AppendUvarint(b, uint64(len(maps)))
	for _, mw := range maps {
		b = binary.AppendUvarint(b, uint64(len(mw.Map)))
		b = append(b, mw.Map...)
		b = binary.AppendUvarint(b, uint64(len(mw.Writes)))
		for _, w := range mw.Writes {
			b = binary.AppendUvarint(b, uint64(len(w.Key)))
			b = append(b, w.Key...)
			if w.Deleted {
				b = append(b, flagDelete)
				continue
			}
			b = append(b, flagPut)
			b = binary.AppendUvarint(b, uint64(len(w.Value)))
			b = append(b, w.Value...)
		}
	}
	return b, nil
}

// encodedLen checks that ws is well-formed and returns the length of its
// encoding.
func (ws *WriteSet) encodedLen() (int, error) {
	var maps []MapWrites
	if ws != nil {
		maps = ws.Maps
	}
	n := 1 + uvarintLen(len(maps))
	for i, mw := range maps {
		if len(mw.Map) == 0 || len(mw.Map) > MaxMapNameLen {
			return 0, fmt.Errorf("encode write set: map %d: name length %d not in [1, %d]: %w", i, len(mw.Map), MaxMapNameLen, ErrMalformed)
		}
		if i > 0 && maps[i-1].Map >= mw.Map {
			return 0, fmt.Errorf("encode write set: map %d (%.64q): not sorted or duplicated: %w", i, mw.Map, ErrMalformed)
		}
		if len(mw.Writes) == 0 {
			return 0, fmt.Errorf("encode write set: map %.64q: no writes: %w", mw.Map, ErrMalformed)
		}
		n += uvarintLen(len(mw.Map)) + len(mw.Map) + uvarintLen(len(mw.Writes))
		for j, w := range mw.Writes {
			if len(w.Key) > MaxKeyLen {
				return 0, fmt.Errorf("encode write set: map %.64q: write %d: key length %d exceeds %d: %w", mw.Map, j, len(w.Key), MaxKeyLen, ErrMalformed)
			}
			if j > 0 && mw.Writes[j-1].Key >= w.Key {
				return 0, fmt.Errorf("encode write set: map %.64q: write %d: key not sorted or duplicated: %w", mw.Map, j, ErrMalformed)
			}
			n += uvarintLen(len(w.Key)) + len(w.Key) + 1
			if w.Deleted {
				continue
			}
			if len(w.Value) > MaxValueLen {
				return 0, fmt.Errorf("encode write set: map %.64q: write %d: value length %d exceeds %d: %w", mw.Map, j, len(w.Value), MaxValueLen, ErrMalformed)
			}
			n += uvarintLen(len(w.Value)) + len(w.Value)
		}
	}
	return n, nil
}

func uvarintLen(n int) int {
	l := 1
	for x := uint64(n); x >= 0x80; x >>= 7 {
		l++
	}
	return l
}

// UnmarshalBinary decodes the canonical encoding described in the package
// documentation into ws, replacing its contents. It is strict: it accepts
// exactly the byte strings [WriteSet.MarshalBinary] produces and returns an
// error wrapping [ErrMalformed] for anything else, in which case ws is left
// unchanged. The decoded values share one copy of b, so b may be reused
// after UnmarshalBinary returns.
func (ws *WriteSet) UnmarshalBinary(b []byte) error {
	maps, err := decode(b)
	if err != nil {
		return fmt.Errorf("decode write set: %w", err)
	}
	ws.Maps = maps
	return nil
}

func decode(b []byte) ([]MapWrites, error) {
	if len(b) == 0 || b[0] != encodingVersion {
		return nil, malformed("missing or unknown version byte")
	}
	d := decoder{buf: bytes.Clone(b), off: 1}
	mapCount, err := d.uvarint("map count")
	if err != nil {
		return nil, err
	}
	// Every map takes at least 5 bytes: name length, a name of at least one
	// byte, write count, and a write of at least 2 bytes (key length, flag).
	if mapCount > uint64(d.remaining()/5) {
		return nil, malformed(fmt.Sprintf("map count %d exceeds input", mapCount))
	}
	var maps []MapWrites
	if mapCount > 0 {
		maps = make([]MapWrites, 0, mapCount)
	}
	for i := range mapCount {
		name, err := d.bytes("name", 1, MaxMapNameLen)
		if err != nil {
			return nil, fmt.Errorf("map %d: %w", i, err)
		}
		if i > 0 && string(name) <= maps[i-1].Map {
			return nil, malformed(fmt.Sprintf("map %d: name not sorted or duplicated", i))
		}
		mw := MapWrites{Map: string(name)}
		count, err := d.uvarint("write count")
		if err != nil {
			return nil, fmt.Errorf("map %d: %w", i, err)
		}
		if count == 0 || count > uint64(d.remaining()/2) {
			return nil, malformed(fmt.Sprintf("map %d: write count %d not in [1, input]", i, count))
		}
		mw.Writes = make([]Write, 0, min(count, 1024))
		for j := range count {
			key, err := d.bytes("key", 0, MaxKeyLen)
			if err != nil {
				return nil, fmt.Errorf("map %d: write %d: %w", i, j, err)
			}
			if j > 0 && string(key) <= mw.Writes[j-1].Key {
				return nil, malformed(fmt.Sprintf("map %d: write %d: key not sorted or duplicated", i, j))
			}
			w := Write{Key: string(key)}
			if d.remaining() == 0 {
				return nil, malformed(fmt.Sprintf("map %d: write %d: missing flag", i, j))
			}
			switch flag := d.buf[d.off]; flag {
			case flagPut:
				d.off++
				if w.Value, err = d.bytes("value", 0, MaxValueLen); err != nil {
					return nil, fmt.Errorf("map %d: write %d: %w", i, j, err)
				}
			case flagDelete:
				d.off++
				w.Deleted = true
			default:
				return nil, malformed(fmt.Sprintf("map %d: write %d: unknown flag 0x%02x", i, j, flag))
			}
			mw.Writes = append(mw.Writes, w)
		}
		maps = append(maps, mw)
	}
	if d.remaining() != 0 {
		return nil, malformed(fmt.Sprintf("%d trailing bytes", d.remaining()))
	}
	return maps, nil
}

func malformed(what string) error {
	return fmt.Errorf("%s: %w", what, ErrMalformed)
}

// decoder reads the canonical encoding from buf.
type decoder struct {
	buf []byte
	off int
}

func (d *decoder) remaining() int { return len(d.buf) - d.off }

// uvarint reads a minimal uvarint.
func (d *decoder) uvarint(what string) (uint64, error) {
	x, n := binary.Uvarint(d.buf[d.off:])
	if n <= 0 {
		return 0, malformed(what + ": truncated or overflowing uvarint")
	}
	if n > 1 && d.buf[d.off+n-1] == 0 {
		return 0, malformed(what + ": non-minimal uvarint")
	}
	d.off += n
	return x, nil
}

// bytes reads a length-prefixed byte string of min to max bytes. The result
// aliases buf, capped so that appending to it cannot overwrite what follows.
func (d *decoder) bytes(what string, minLen, maxLen int) ([]byte, error) {
	n, err := d.uvarint(what + " length")
	if err != nil {
		return nil, err
	}
	if n < uint64(minLen) || n > uint64(maxLen) {
		return nil, malformed(fmt.Sprintf("%s length %d not in [%d, %d]", what, n, minLen, maxLen))
	}
	if n > uint64(d.remaining()) {
		return nil, malformed(fmt.Sprintf("%s length %d exceeds remaining %d bytes", what, n, d.remaining()))
	}
	end := d.off + int(n)
	p := d.buf[d.off:end:end]
	d.off = end
	return p, nil
}
