package httpapi

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/parleyhq/parley/internal/app"
	"github.com/parleyhq/parley/internal/ledger"
)

// checkDecodeError fails unless err is nil or an apiError with a 4xx
// status: a decoder never fails with an internal error.
func checkDecodeError(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var ae *apiError
	if !errors.As(err, &ae) || ae.status < 400 || ae.status >= 500 {
		t.Fatalf("error %v is not a client error", err)
	}
}

func FuzzDecodeEntry(f *testing.F) {
	for _, s := range []string{`{"contents":"x"}`, `{"contents":""}`, `{"contents":"\u00e9","preHooks":[]}`, `{"contents":5}`, `{`, `null`, `{"contents":"a"} 1`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		contents, err := decodeEntry(b)
		checkDecodeError(t, err)
		if err != nil {
			if contents != "" {
				t.Fatalf("contents %q returned with error", contents)
			}
			return
		}
		// What was accepted round-trips.
		again, err := decodeEntry(mustJSON(t, map[string]string{"contents": contents}))
		if err != nil || again != contents {
			t.Fatalf("round trip %q: %q, %v", contents, again, err)
		}
	})
}

func FuzzDecodeBatch(f *testing.F) {
	for _, s := range []string{`{"entries":[{"contents":"x"}]}`, `{"entries":[{"contents":"x","collectionId":"c","tags":["a"]}]}`, `{"entries":[]}`, `{"entries":[{}]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := decodeBatch(b, "d", 10)
		checkDecodeError(t, err)
		if err == nil && (len(es) == 0 || len(es) > 10) {
			t.Fatalf("%d entries accepted", len(es))
		}
	})
}

func FuzzParseTxID(f *testing.F) {
	for _, s := range []string{"2.15", "0.1", "1.0", "01.2", "18446744073709551615.18446744073709551615", "1.18446744073709551616", "", ".", "1.2.3", "-1.2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := parseTxID(s)
		checkDecodeError(t, err)
		if err == nil && id.String() != s {
			t.Fatalf("parseTxID(%q) = %s, not canonical", s, id)
		}
		if err == nil && id == (ledger.TxID{}) {
			t.Fatalf("parseTxID(%q) accepted the zero id", s)
		}
	})
}

func FuzzDecodeRolePatch(f *testing.F) {
	for _, s := range []string{`{"assignedRole":"Reader"}`, `{"assignedRoles":["Reader","Administrator"]}`, `{"assignedRole":null}`, `{}`, `{"assignedRoles":[]}`, `{"assignedRole":5}`} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, b []byte, multi bool) {
		roles, err := decodeRolePatch(b, multi)
		var ae *apiError
		if err != nil && !errors.As(err, &ae) && !errors.Is(err, app.ErrInvalidRole) {
			t.Fatalf("unexpected error %v", err)
		}
		for _, r := range roles {
			if r < app.RoleReader || r > app.RoleAdministrator {
				t.Fatalf("role %d accepted", r)
			}
		}
		if err != nil && roles != nil {
			t.Fatal("roles returned with an error")
		}
	})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
