package strictjson

import (
	"encoding/json"
	"errors"
	"testing"
)

type point struct {
	X int `json:"x"`
	Y int `json:"y"`
}

func TestUnmarshal(t *testing.T) {
	tests := []struct {
		in      string
		want    point
		wantErr bool
	}{
		{in: `{"x":1,"y":2}`, want: point{1, 2}},
		{in: " {\"x\":1}\n\t ", want: point{X: 1}},
		{in: `{"x":1,"z":3}`, wantErr: true},   // unknown field
		{in: `{"x":1}}`, wantErr: true},        // a stray brace: Decoder.More misses it
		{in: `{"x":1}]`, wantErr: true},        // likewise a bracket
		{in: `{"x":1} {"y":2}`, wantErr: true}, // two values
		{in: `{"x":1} x`, wantErr: true},
		{in: `{"x":"1"}`, wantErr: true},
		{in: ``, wantErr: true},
	}
	for _, tt := range tests {
		var got point
		err := Unmarshal([]byte(tt.in), &got)
		if (err != nil) != tt.wantErr {
			t.Errorf("Unmarshal(%q): error %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil && got != tt.want {
			t.Errorf("Unmarshal(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
	var p point
	if err := Unmarshal([]byte(`{"x":1}}`), &p); !errors.Is(err, ErrTrailingData) {
		t.Errorf("got %v, want ErrTrailingData", err)
	}
}

// FuzzUnmarshal: whatever Unmarshal accepts is one JSON value that
// encoding/json accepts too, and decodes to the same thing.
func FuzzUnmarshal(f *testing.F) {
	for _, s := range []string{`{"x":1,"y":2}`, `{"x":1}}`, ` {} `, `{"z":1}`, `null`, `{"x":1} {}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var got point
		if Unmarshal(b, &got) != nil {
			return
		}
		if !json.Valid(b) {
			t.Fatalf("accepted invalid JSON %q", b)
		}
		var want point
		if err := json.Unmarshal(b, &want); err != nil || want != got {
			t.Fatalf("%q: got %+v, encoding/json %+v (%v)", b, got, want, err)
		}
	})
}
