package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/parleyhq/parley/internal/app"
	"github.com/parleyhq/parley/internal/ledger"
)

// decodeJSON decodes exactly one JSON value from b into v.
func decodeJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return newError(http.StatusBadRequest, CodeInvalidInput, "malformed JSON body: "+err.Error())
	}
	if dec.More() {
		return newError(http.StatusBadRequest, CodeInvalidInput, "malformed JSON body: data after the JSON value")
	}
	if _, err := dec.Token(); err == nil {
		return newError(http.StatusBadRequest, CodeInvalidInput, "malformed JSON body: data after the JSON value")
	}
	return nil
}

// entryBody is the body of POST /app/transactions (ACL LedgerEntry). The
// read-only fields collectionId and transactionId are ignored, as ACL
// does.
type entryBody struct {
	Contents  *string           `json:"contents"`
	PreHooks  []json.RawMessage `json:"preHooks"`
	PostHooks []json.RawMessage `json:"postHooks"`
}

// decodeEntry decodes a LedgerEntry request body and returns its contents.
func decodeEntry(b []byte) (string, error) {
	var e entryBody
	if err := decodeJSON(b, &e); err != nil {
		return "", err
	}
	if e.Contents == nil {
		return "", newError(http.StatusBadRequest, CodeInvalidInput, `the body must be a JSON object with a string "contents"`)
	}
	if len(e.PreHooks) > 0 || len(e.PostHooks) > 0 {
		return "", newError(http.StatusBadRequest, CodeInvalidInput, "user-defined function hooks are not supported")
	}
	return *e.Contents, nil
}

// batchBody is the body of POST /app/transactions:batch.
type batchBody struct {
	Entries []batchEntry `json:"entries"`
}

type batchEntry struct {
	Contents     *string  `json:"contents"`
	CollectionID *string  `json:"collectionId"`
	Tags         []string `json:"tags"`
}

// decodeBatch decodes a batch body, each entry's collection defaulting to
// collectionID.
func decodeBatch(b []byte, collectionID string, maxEntries int) ([]app.NewEntry, error) {
	var body batchBody
	if err := decodeJSON(b, &body); err != nil {
		return nil, err
	}
	if len(body.Entries) == 0 {
		return nil, newError(http.StatusBadRequest, CodeInvalidInput, `the body must be {"entries":[{"contents":…},…]} with at least one entry`)
	}
	if len(body.Entries) > maxEntries {
		return nil, newError(http.StatusBadRequest, CodeInvalidInput, fmt.Sprintf("%d entries in one batch, the limit is %d", len(body.Entries), maxEntries))
	}
	out := make([]app.NewEntry, len(body.Entries))
	for i, e := range body.Entries {
		if e.Contents == nil {
			return nil, newError(http.StatusBadRequest, CodeInvalidInput, fmt.Sprintf(`entry %d has no string "contents"`, i))
		}
		out[i] = app.NewEntry{CollectionID: collectionID, Contents: *e.Contents, Tags: e.Tags}
		if e.CollectionID != nil {
			out[i].CollectionID = *e.CollectionID
		}
	}
	return out, nil
}

// parseTxID parses a transaction id from a path or query parameter.
func parseTxID(s string) (ledger.TxID, error) {
	id, err := ledger.ParseTxID(s)
	if err != nil {
		return ledger.TxID{}, newError(http.StatusBadRequest, CodeInvalidTransactionID, fmt.Sprintf("transaction id %.64q: want <view>.<seqno>", s))
	}
	return id, nil
}

// parseTags parses the comma-separated tags query parameter. Spaces around
// a tag are dropped; an empty tag is an error.
func parseTags(s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(p)
		if parts[i] == "" {
			return nil, newError(http.StatusBadRequest, CodeInvalidTag, "empty tag in the tags parameter")
		}
	}
	return parts, nil
}

// rolePatch is a merge-patch of a user: assignedRole (ACL LedgerUser) or
// assignedRoles (LedgerUserMultipleRoles). A member set to null is a
// request to remove it, which the required role field does not allow.
type rolePatch struct {
	Role  json.RawMessage `json:"assignedRole"`
	Roles json.RawMessage `json:"assignedRoles"`
}

// decodeRolePatch decodes a user merge-patch body. multi selects the
// multi-role form. It returns nil roles when the patch leaves the roles
// alone.
func decodeRolePatch(b []byte, multi bool) ([]app.Role, error) {
	var p rolePatch
	if err := decodeJSON(b, &p); err != nil {
		return nil, err
	}
	field, raw := "assignedRole", p.Role
	if multi {
		field, raw = "assignedRoles", p.Roles
	}
	if raw == nil {
		return nil, nil
	}
	bad := func(msg string) error {
		return newError(http.StatusBadRequest, CodeInvalidInput, fmt.Sprintf("%s: %s", field, msg))
	}
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, bad("cannot be removed")
	}
	var names []string
	if multi {
		if err := json.Unmarshal(raw, &names); err != nil {
			return nil, bad("want an array of role names")
		}
		if len(names) == 0 {
			return nil, bad("want at least one role")
		}
		if len(names) > 3 {
			return nil, bad("at most three roles")
		}
	} else {
		var name string
		if err := json.Unmarshal(raw, &name); err != nil {
			return nil, bad("want a role name")
		}
		names = []string{name}
	}
	roles := make([]app.Role, len(names))
	for i, n := range names {
		r, err := app.ParseRole(n)
		if err != nil {
			return nil, err
		}
		roles[i] = r
	}
	return roles, nil
}
