package kv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

func TestWriteSetEncoding(t *testing.T) {
	tests := []struct {
		name string
		ws   *WriteSet
		want []byte
	}{
		{"nil", nil, []byte{0x01, 0x00}},
		{"empty", &WriteSet{}, []byte{0x01, 0x00}},
		{
			"doc example",
			&WriteSet{Maps: []MapWrites{{Map: "public:m", Writes: []Write{
				{Key: "k", Value: []byte("v")},
				{Key: "x", Deleted: true},
			}}}},
			[]byte("\x01\x01\x08public:m\x02\x01k\x00\x01v\x01x\x01"),
		},
		{
			"empty key and value, two maps",
			&WriteSet{Maps: []MapWrites{
				{Map: "a", Writes: []Write{{Key: "", Value: []byte{}}}},
				{Map: "b", Writes: []Write{{Key: "k", Deleted: true, Value: []byte("ignored")}}},
			}},
			[]byte("\x01\x02\x01a\x01\x00\x00\x00\x01b\x01\x01k\x01"),
		},
		{
			"long value uses a multi-byte uvarint",
			&WriteSet{Maps: []MapWrites{{Map: "m", Writes: []Write{{Key: "k", Value: bytes.Repeat([]byte{7}, 300)}}}}},
			append([]byte("\x01\x01\x01m\x01\x01k\x00\xac\x02"), bytes.Repeat([]byte{7}, 300)...),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.ws.MarshalBinary()
			if err != nil {
				t.Fatalf("MarshalBinary() error = %v", err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("MarshalBinary() = %x, want %x", got, tt.want)
			}
			prefix := []byte("prefix")
			got, err = tt.ws.AppendBinary(prefix)
			if err != nil {
				t.Fatalf("AppendBinary() error = %v", err)
			}
			if !bytes.Equal(got, append([]byte("prefix"), tt.want...)) {
				t.Errorf("AppendBinary(prefix) = %x, want prefix then %x", got, tt.want)
			}

			var dec WriteSet
			if err := dec.UnmarshalBinary(tt.want); err != nil {
				t.Fatalf("UnmarshalBinary() error = %v", err)
			}
			again, err := dec.MarshalBinary()
			if err != nil {
				t.Fatalf("MarshalBinary() of decoded error = %v", err)
			}
			if !bytes.Equal(again, tt.want) {
				t.Errorf("round trip = %x, want %x", again, tt.want)
			}
		})
	}
}

func TestUnmarshalDoesNotAliasInput(t *testing.T) {
	b := []byte("\x01\x01\x01m\x01\x01k\x00\x01v")
	var ws WriteSet
	if err := ws.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] = 'X'
	if got := string(ws.Maps[0].Writes[0].Value); got != "v" {
		t.Errorf("value after modifying input = %q, want %q", got, "v")
	}
}

func uv(n uint64) string { return string(binary.AppendUvarint(nil, n)) }

func TestUnmarshalRejects(t *testing.T) {
	longName := string(bytes.Repeat([]byte{'n'}, MaxMapNameLen+1))
	longKey := string(bytes.Repeat([]byte{'k'}, MaxKeyLen+1))
	tests := []struct {
		name string
		in   string
	}{
		{"empty input", ""},
		{"unknown version", "\x02\x00"},
		{"version only", "\x01"},
		{"trailing byte", "\x01\x00\x00"},
		{"non-minimal map count", "\x01\x80\x00"},
		{"overflowing uvarint", "\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f"},
		{"map count beyond input", "\x01\x05\x01m\x01\x01k\x01"},
		{"empty map name", "\x01\x01\x00\x01\x01k\x01"},
		{"map name too long", "\x01\x01" + uv(uint64(len(longName))) + longName + "\x01\x01k\x01"},
		{"map name truncated", "\x01\x01\x05ab"},
		{"empty map", "\x01\x01\x01m\x00"},
		{"write count beyond input", "\x01\x01\x01m\x09\x01k\x01"},
		{"non-minimal write count", "\x01\x01\x01m\x81\x00\x01k\x01"},
		{"maps unsorted", "\x01\x02\x01b\x01\x01k\x01\x01a\x01\x01k\x01"},
		{"maps duplicated", "\x01\x02\x01a\x01\x01k\x01\x01a\x01\x01k\x01"},
		{"keys unsorted", "\x01\x01\x01m\x02\x01b\x01\x01a\x01"},
		{"keys duplicated", "\x01\x01\x01m\x02\x01a\x01\x01a\x01"},
		{"key too long", "\x01\x01\x01m\x01" + uv(uint64(len(longKey))) + longKey + "\x01"},
		{"non-minimal key length", "\x01\x01\x01m\x01\x81\x00k\x01"},
		{"missing flag", "\x01\x01\x01m\x01\x01k"},
		{"unknown flag", "\x01\x01\x01m\x01\x01k\x02"},
		{"value too long", "\x01\x01\x01m\x01\x01k\x00" + uv(MaxValueLen+1) + "v"},
		{"value truncated", "\x01\x01\x01m\x01\x01k\x00\x03ab"},
		{"missing value length", "\x01\x01\x01m\x01\x01k\x00"},
		{"trailing after maps", "\x01\x01\x01m\x01\x01k\x01\x00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := &WriteSet{Maps: []MapWrites{{Map: "keep", Writes: []Write{{Key: "me", Value: []byte("1")}}}}}
			ws := &WriteSet{Maps: before.Maps}
			err := ws.UnmarshalBinary([]byte(tt.in))
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("UnmarshalBinary(%q) error = %v, want %v", tt.in, err, ErrMalformed)
			}
			if !reflect.DeepEqual(ws, before) {
				t.Errorf("UnmarshalBinary changed the write set on error: got %+v, want %+v", ws, before)
			}
		})
	}
}

func TestMarshalRejects(t *testing.T) {
	put := []Write{{Key: "k", Value: []byte("v")}}
	tests := []struct {
		name string
		ws   *WriteSet
	}{
		{"maps unsorted", &WriteSet{Maps: []MapWrites{{Map: "b", Writes: put}, {Map: "a", Writes: put}}}},
		{"maps duplicated", &WriteSet{Maps: []MapWrites{{Map: "a", Writes: put}, {Map: "a", Writes: put}}}},
		{"empty map", &WriteSet{Maps: []MapWrites{{Map: "a"}}}},
		{"empty map name", &WriteSet{Maps: []MapWrites{{Map: "", Writes: put}}}},
		{"map name too long", &WriteSet{Maps: []MapWrites{{Map: string(make([]byte, MaxMapNameLen+1)), Writes: put}}}},
		{"keys unsorted", &WriteSet{Maps: []MapWrites{{Map: "a", Writes: []Write{{Key: "b"}, {Key: "a"}}}}}},
		{"keys duplicated", &WriteSet{Maps: []MapWrites{{Map: "a", Writes: []Write{{Key: "a"}, {Key: "a", Deleted: true}}}}}},
		{"key too long", &WriteSet{Maps: []MapWrites{{Map: "a", Writes: []Write{{Key: string(make([]byte, MaxKeyLen+1))}}}}}},
		{"value too long", &WriteSet{Maps: []MapWrites{{Map: "a", Writes: []Write{{Key: "k", Value: make([]byte, MaxValueLen+1)}}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := tt.ws.MarshalBinary(); !errors.Is(err, ErrMalformed) {
				t.Errorf("MarshalBinary() = %x, %v, want error %v", got, err, ErrMalformed)
			}
			prefix := []byte("p")
			got, err := tt.ws.AppendBinary(prefix)
			if err == nil || !bytes.Equal(got, prefix) {
				t.Errorf("AppendBinary(%q) = %q, %v, want %q and an error", prefix, got, err, prefix)
			}
		})
	}
}

func TestIsPublic(t *testing.T) {
	tests := []struct {
		m    string
		want bool
	}{
		{"public:ccf.gov.members", true},
		{"public:", true},
		{"ccf.internal.secrets", false},
		{"Public:x", false},
		{"xpublic:", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := IsPublic(tt.m); got != tt.want {
			t.Errorf("IsPublic(%q) = %v, want %v", tt.m, got, tt.want)
		}
	}
}

func TestSplitMerge(t *testing.T) {
	w := func(k string) []Write { return []Write{{Key: k, Value: []byte(k)}} }
	ws := &WriteSet{Maps: []MapWrites{
		{Map: "a.private", Writes: w("1")},
		{Map: "public:b", Writes: w("2")},
		{Map: "public:c", Writes: w("3")},
		{Map: "z.private", Writes: w("4")},
	}}
	pub, priv := ws.Split()
	wantPub := &WriteSet{Maps: []MapWrites{ws.Maps[1], ws.Maps[2]}}
	wantPriv := &WriteSet{Maps: []MapWrites{ws.Maps[0], ws.Maps[3]}}
	if !reflect.DeepEqual(pub, wantPub) {
		t.Errorf("Split() public = %+v, want %+v", pub, wantPub)
	}
	if !reflect.DeepEqual(priv, wantPriv) {
		t.Errorf("Split() private = %+v, want %+v", priv, wantPriv)
	}
	if got := Merge(pub, priv); !reflect.DeepEqual(got, ws) {
		t.Errorf("Merge(Split()) = %+v, want %+v", got, ws)
	}
	if got := Merge(priv, pub); !reflect.DeepEqual(got, ws) {
		t.Errorf("Merge(private, public) = %+v, want %+v", got, ws)
	}

	var nilWS *WriteSet
	pub, priv = nilWS.Split()
	if pub == nil || priv == nil || !pub.Empty() || !priv.Empty() {
		t.Errorf("nil.Split() = %+v, %+v, want two empty write sets", pub, priv)
	}
	if got := Merge(nil, nil); !got.Empty() {
		t.Errorf("Merge(nil, nil) = %+v, want empty", got)
	}
}

func TestMergeSameMap(t *testing.T) {
	a := &WriteSet{Maps: []MapWrites{{Map: "m", Writes: []Write{
		{Key: "a", Value: []byte("a1")}, {Key: "b", Value: []byte("b1")},
	}}}}
	b := &WriteSet{Maps: []MapWrites{{Map: "m", Writes: []Write{
		{Key: "b", Deleted: true}, {Key: "c", Value: []byte("c2")},
	}}}}
	want := &WriteSet{Maps: []MapWrites{{Map: "m", Writes: []Write{
		{Key: "a", Value: []byte("a1")}, {Key: "b", Deleted: true}, {Key: "c", Value: []byte("c2")},
	}}}}
	if got := Merge(a, b); !reflect.DeepEqual(got, want) {
		t.Errorf("Merge() = %+v, want %+v", got, want)
	}
}

func TestEmpty(t *testing.T) {
	var nilWS *WriteSet
	tests := []struct {
		name string
		ws   *WriteSet
		want bool
	}{
		{"nil", nilWS, true},
		{"zero", &WriteSet{}, true},
		{"one map", &WriteSet{Maps: []MapWrites{{Map: "m", Writes: []Write{{Key: "k"}}}}}, false},
	}
	for _, tt := range tests {
		if got := tt.ws.Empty(); got != tt.want {
			t.Errorf("%s: Empty() = %v, want %v", tt.name, got, tt.want)
		}
	}
}
