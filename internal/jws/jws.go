// Package jws signs and parses the compact JWS (RFC 7515) that Parley's
// signed requests travel in — governance proposals and ballots, clean-room
// requests: ES384 over a P-384 key named by "kid", with a "typ" that says
// which kind of request it is, and never an embedded key (the verifier looks
// the key up on the ledger by kid). Callers check what the kid and the
// payload must be; this package only gets the JWS right.
package jws

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"errors"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
)

// ErrMalformed is wrapped by Parse's errors.
var ErrMalformed = errors.New("malformed JWS")

// ErrBadSignature is wrapped by Verify's error.
var ErrBadSignature = errors.New("signature does not verify")

// Sign returns payload signed with ES384 by key, a P-384 key, as a compact
// JWS whose protected header names kid and typ.
func Sign(key *ecdsa.PrivateKey, kid, typ string, payload []byte) ([]byte, error) {
	if key == nil || key.Curve != elliptic.P384() {
		return nil, errors.New("sign request: want a P-384 key")
	}
	opts := (&jose.SignerOptions{}).WithType(jose.ContentType(typ))
	opts.EmbedJWK = false
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES384, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, opts)
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

// Object is a parsed JWS whose signature is not checked yet.
type Object struct {
	KeyID string // the protected header's kid
	Type  string // the protected header's typ ("" when absent)
	Raw   string // the compact serialization as received, trimmed
	jws   *jose.JSONWebSignature
}

// Parse parses a compact JWS of at most maxBytes bytes with exactly one
// ES384 signature and no embedded key. It fails with an error wrapping
// ErrMalformed.
func Parse(b []byte, maxBytes int) (*Object, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("empty request body: %w", ErrMalformed)
	}
	if len(b) > maxBytes {
		return nil, fmt.Errorf("request of %d bytes over %d: %w", len(b), maxBytes, ErrMalformed)
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
	if h.JSONWebKey != nil {
		return nil, fmt.Errorf("the protected header must name the signer by kid, not carry a key: %w", ErrMalformed)
	}
	typ, _ := h.ExtraHeaders[jose.HeaderType].(string)
	return &Object{KeyID: h.KeyID, Type: typ, Raw: s, jws: jws}, nil
}

// UnsafePayload returns the payload without checking the signature, to find
// out whose key to check it with.
func (o *Object) UnsafePayload() []byte { return o.jws.UnsafePayloadWithoutVerification() }

// Verify checks the signature with pub and returns the payload. It fails
// with an error wrapping ErrBadSignature.
func (o *Object) Verify(pub *ecdsa.PublicKey) ([]byte, error) {
	payload, err := o.jws.Verify(pub)
	if err != nil {
		return nil, ErrBadSignature
	}
	return payload, nil
}
