package kv

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// FuzzWriteSetDecode checks that UnmarshalBinary never panics, leaves the
// write set unchanged on error, and otherwise decodes something that
// MarshalBinary encodes back to exactly the same bytes.
func FuzzWriteSetDecode(f *testing.F) {
	seeds := []*WriteSet{
		{},
		{Maps: []MapWrites{{Map: "public:m", Writes: []Write{{Key: "k", Value: []byte("v")}, {Key: "x", Deleted: true}}}}},
		{Maps: []MapWrites{
			{Map: "a", Writes: []Write{{Key: "", Value: []byte{}}}},
			{Map: "public:ccf.gov.members", Writes: []Write{{Key: "m0", Value: bytes.Repeat([]byte{0xab}, 300)}}},
		}},
	}
	for _, ws := range seeds {
		b, err := ws.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	tx := NewStore().Begin()
	for i := range 40 {
		tx.Put("public:app", string(rune('a'+i%26))+string(rune('a'+i/26)), bytes.Repeat([]byte{byte(i)}, i*7))
		tx.Delete("private", string(rune('0'+i%10)))
	}
	b, err := tx.WriteSet().MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte{})
	f.Add([]byte{0x01, 0x80, 0x00})

	f.Fuzz(func(t *testing.T, in []byte) {
		sentinel := []MapWrites{{Map: "keep", Writes: []Write{{Key: "me"}}}}
		ws := &WriteSet{Maps: sentinel}
		if err := ws.UnmarshalBinary(in); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("UnmarshalBinary error = %v, want one wrapping %v", err, ErrMalformed)
			}
			if !reflect.DeepEqual(ws.Maps, sentinel) {
				t.Fatalf("UnmarshalBinary changed the write set on error to %+v", ws)
			}
			return
		}
		out, err := ws.MarshalBinary()
		if err != nil {
			t.Fatalf("MarshalBinary of a decoded write set error = %v", err)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("round trip = %x, want %x", out, in)
		}
		// Applying it must not panic either, and a snapshot of a fresh
		// store with only puts gives back the puts.
		s := NewStore()
		if err := s.Apply(ws, 1); err != nil {
			t.Fatalf("Apply error = %v", err)
		}
	})
}
