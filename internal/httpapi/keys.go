package httpapi

import (
	"encoding/json"
	"net/http"

	"github.com/parleyhq/parley/internal/keyrelease"
)

// keyBody is the body of PUT /app/keys/{name}. release_policy is either the
// policy itself or, as Key Vault takes it, {"contentType": …, "data":
// base64url(policy)}; key, when set, is base64url key bytes to import.
type keyBody struct {
	ReleasePolicy json.RawMessage `json:"release_policy"`
	Key           string          `json:"key"`
}

// decodeKey decodes a key creation request.
func decodeKey(b []byte) (keyrelease.CreateRequest, error) {
	var body keyBody
	if err := decodeJSON(b, &body); err != nil {
		return keyrelease.CreateRequest{}, err
	}
	if len(body.ReleasePolicy) == 0 {
		return keyrelease.CreateRequest{}, newError(http.StatusBadRequest, CodeInvalidInput, "release_policy is required")
	}
	req := keyrelease.CreateRequest{Policy: body.ReleasePolicy}
	var wrapped struct {
		ContentType string  `json:"contentType"`
		Data        *string `json:"data"`
	}
	if json.Unmarshal(body.ReleasePolicy, &wrapped) == nil && wrapped.Data != nil {
		p, err := decodeB64URL("release_policy.data", *wrapped.Data)
		if err != nil {
			return keyrelease.CreateRequest{}, err
		}
		req.Policy = p
	}
	if body.Key != "" {
		k, err := decodeB64URL("key", body.Key)
		if err != nil {
			return keyrelease.CreateRequest{}, err
		}
		req.Material = k
	}
	return req, nil
}

func (h *Handler) putKey(c *call) (any, int, error) {
	b, err := readBody(c)
	if err != nil {
		return nil, 0, err
	}
	req, err := decodeKey(b)
	if err != nil {
		return nil, 0, err
	}
	k, id, err := h.cfg.Keys.Create(c.r.Context(), c.r.PathValue("name"), req, c.user)
	if err != nil {
		return nil, 0, err
	}
	c.txID = id
	return k, http.StatusCreated, nil
}

func (h *Handler) getKey(c *call) (any, int, error) {
	k, err := h.cfg.Keys.Show(c.r.PathValue("name"))
	if err != nil {
		return nil, 0, err
	}
	return k, http.StatusOK, nil
}

// releaseBody is Key Vault's release request: target is the attestation
// token. kid (a Parley extension) picks the runtime key.
type releaseBody struct {
	Target string `json:"target"`
	Nonce  string `json:"nonce"`
	Enc    string `json:"enc"`
	Kid    string `json:"kid"`
}

// releaseKey releases a key. It answers once the release is committed,
// with the release's receipt.
func (h *Handler) releaseKey(c *call) (any, int, error) {
	b, err := readBody(c)
	if err != nil {
		return nil, 0, err
	}
	var body releaseBody
	if err := decodeJSON(b, &body); err != nil {
		return nil, 0, err
	}
	if body.Target == "" {
		return nil, 0, newError(http.StatusBadRequest, CodeInvalidInput, "target (the attestation token) is required")
	}
	rel, id, err := h.cfg.Keys.Release(c.r.Context(), c.r.PathValue("name"), keyrelease.ReleaseRequest{Token: body.Target, Nonce: body.Nonce, KeyID: body.Kid}, c.user)
	if err != nil {
		return nil, 0, err
	}
	c.txID = id
	r, err := h.eng.Receipt(id)
	if err != nil {
		return nil, 0, err
	}
	return struct {
		*keyrelease.Released
		TransactionID string `json:"transactionId"`
		Receipt       any    `json:"receipt"`
	}{rel, id.String(), r}, http.StatusOK, nil
}
