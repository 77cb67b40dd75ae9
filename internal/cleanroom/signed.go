package cleanroom

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/json"
	"errors"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
)

const jwsType = "parley-cleanroom+jws"

// Sign signs r with a party's P-384 key as a compact JWS whose kid is
// partyID.
func Sign(k *ecdsa.PrivateKey, partyID string, r *Request) ([]byte, error) {
	if k == nil || k.Curve != elliptic.P384() {
		return nil, errors.New("sign request: want a P-384 key")
	}
	payload, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	opts := (&jose.SignerOptions{}).WithType(jwsType)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES384, Key: jose.JSONWebKey{Key: k, KeyID: partyID}}, opts)
	if err != nil {
		return nil, fmt.Errorf("new signer: %w", err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		return nil, fmt.Errorf("sign request: %w", err)
	}
	s, err := obj.CompactSerialize()
	if err != nil {
		return nil, fmt.Errorf("serialize request: %w", err)
	}
	return []byte(s), nil
}

// signed is a parsed request whose signature is not checked yet.
type signed struct {
	kid  string
	room string // from the unverified payload, to find the key
	raw  string
	jws  *jose.JSONWebSignature
}

func parseSigned(b []byte) (*signed, error) {
	if len(b) == 0 || len(b) > MaxRequestBytes {
		return nil, fmt.Errorf("request of %d bytes, want 1..%d: %w", len(b), MaxRequestBytes, ErrMalformed)
	}
	s := string(bytes.TrimSpace(b))
	jws, err := jose.ParseSignedCompact(s, []jose.SignatureAlgorithm{jose.ES384})
	if err != nil {
		return nil, fmt.Errorf("parse JWS: %v: %w", err, ErrMalformed)
	}
	if len(jws.Signatures) != 1 {
		return nil, fmt.Errorf("want one signature, got %d: %w", len(jws.Signatures), ErrMalformed)
	}
	h := jws.Signatures[0].Protected
	if h.JSONWebKey != nil || !hexID.MatchString(h.KeyID) {
		return nil, fmt.Errorf("kid %.80q: want a party id (64 lowercase hex digits) and no embedded key: %w", h.KeyID, ErrMalformed)
	}
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != jwsType {
		return nil, fmt.Errorf("typ %.40q, want %s: %w", typ, jwsType, ErrMalformed)
	}
	var peek struct {
		Room string `json:"room"`
	}
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &peek); err != nil || !nameRE.MatchString(peek.Room) {
		return nil, fmt.Errorf("room %.80q: want a lowercase identifier: %w", peek.Room, ErrMalformed)
	}
	return &signed{kid: h.KeyID, room: peek.Room, raw: s, jws: jws}, nil
}

func (sr *signed) verify(pub *ecdsa.PublicKey) (*Request, error) {
	payload, err := sr.jws.Verify(pub)
	if err != nil {
		return nil, fmt.Errorf("party %s: %w", sr.kid, ErrBadSignature)
	}
	var r Request
	if err := strict(payload, &r); err != nil {
		return nil, fmt.Errorf("request payload: %v: %w", err, ErrMalformed)
	}
	if r.Room != sr.room || r.Counter == 0 {
		return nil, fmt.Errorf("request room %q counter %d: %w", r.Room, r.Counter, ErrMalformed)
	}
	return &r, nil
}

// strict decodes JSON refusing unknown fields and trailing data.
func strict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}
