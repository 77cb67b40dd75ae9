package attest

import (
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// MaxTokenSize bounds a token a Verifier accepts.
const MaxTokenSize = 64 << 10

// DefaultLeeway is the clock skew a Verifier tolerates on exp, nbf and iat.
const DefaultLeeway = 10 * time.Second

// ErrInvalidToken is returned by Verifier.Verify for a token that does not
// parse, is not signed by a known key with ES256, is expired or not yet
// valid, or names another issuer or audience.
var ErrInvalidToken = errors.New("invalid attestation token")

// Verifier checks tokens of one issuer for one audience.
type Verifier struct {
	// Keys are the issuer's signing keys (its JWKS). Only ECDSA P-256 keys
	// are used, with ES256.
	Keys jose.JSONWebKeySet
	// Issuer is the iss every token must carry.
	Issuer string
	// Audience must be one of a token's aud values.
	Audience string
	// Now is the clock, time.Now when nil.
	Now func() time.Time
	// Leeway is the tolerated clock skew, DefaultLeeway when zero.
	Leeway time.Duration
}

// Verify checks token and returns its claims. It refuses tokens without
// exp or iat, and any algorithm but ES256 (so "none" and HMAC tokens).
func (v *Verifier) Verify(token string) (map[string]any, error) {
	if len(token) > MaxTokenSize {
		return nil, fmt.Errorf("%w: over %d bytes", ErrInvalidToken, MaxTokenSize)
	}
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if len(tok.Headers) != 1 {
		return nil, fmt.Errorf("%w: %d signatures, want 1", ErrInvalidToken, len(tok.Headers))
	}
	kid := tok.Headers[0].KeyID
	var key *ecdsa.PublicKey
	for _, k := range v.Keys.Key(kid) {
		if pk, ok := k.Key.(*ecdsa.PublicKey); ok && pk.Curve.Params().Name == "P-256" {
			key = pk
			break
		}
	}
	if key == nil {
		return nil, fmt.Errorf("%w: no ES256 key with kid %q", ErrInvalidToken, truncate(kid, 64))
	}
	var std jwt.Claims
	var all map[string]any
	if err := tok.Claims(key, &std, &all); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if std.Expiry == nil || std.IssuedAt == nil {
		return nil, fmt.Errorf("%w: exp and iat are required", ErrInvalidToken)
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	leeway := v.Leeway
	if leeway <= 0 {
		leeway = DefaultLeeway
	}
	if err := std.ValidateWithLeeway(jwt.Expected{Issuer: v.Issuer, AnyAudience: jwt.Audience{v.Audience}, Time: now()}, leeway); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	return all, nil
}

// ClaimsUnverified returns a token's claims without checking anything: for
// display only.
func ClaimsUnverified(token string) (map[string]any, error) {
	if len(token) > MaxTokenSize {
		return nil, fmt.Errorf("%w: over %d bytes", ErrInvalidToken, MaxTokenSize)
	}
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256, jose.RS256, jose.ES384, jose.PS256})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	var all map[string]any
	if err := tok.UnsafeClaimsWithoutVerification(&all); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	return all, nil
}

func parseCert(der []byte) (*x509.Certificate, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("signing certificate: %w", err)
	}
	return c, nil
}

// NormalizeIssuer strips a scheme and trailing slashes, so that an SKR
// authority "host" matches the issuer "https://host/".
func NormalizeIssuer(s string) string {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://")
	return strings.TrimRight(s, "/")
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
