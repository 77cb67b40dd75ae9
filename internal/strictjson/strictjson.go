// Package strictjson decodes JSON from outside the service strictly: one
// value, no unknown fields, nothing after it. Signed requests, evidence and
// configuration use it so that two readers cannot see different things in
// the same bytes.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
)

// ErrTrailingData is returned for input with more than white space after
// the JSON value.
var ErrTrailingData = errors.New("data after the JSON value")

// Unmarshal decodes the one JSON value in b into v, refusing fields v does
// not have and anything but white space after the value.
func Unmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	// Decoder.More is false before a stray '}' or ']': look at the bytes.
	if len(bytes.TrimSpace(b[dec.InputOffset():])) != 0 {
		return ErrTrailingData
	}
	return nil
}
