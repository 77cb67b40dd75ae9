package gov

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// ErrInvalidToken is returned by VerifyBearer for a token that does not
// authenticate a user: malformed, from an issuer governance has not set,
// signed by a key not in its JWKS, expired, or without the user id claim.
var ErrInvalidToken = errors.New("invalid bearer token")

// MaxTokenBytes bounds a bearer token.
const MaxTokenBytes = 16 << 10

// tokenLeeway is the clock skew allowed on exp, nbf and iat.
const tokenLeeway = time.Minute

// tokenAlgorithms are the JWS algorithms accepted in bearer tokens.
var tokenAlgorithms = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512, jose.ES256, jose.ES384, jose.ES512}

// VerifyBearer authenticates a JWT bearer token against the issuers
// governance set (JWTIssuersMap) and returns the user id: the issuer's
// user id claim. The token must name a key of the issuer's JWKS in its
// "kid", carry "exp", and be within its validity (one minute of leeway);
// when the issuer has an audience, "aud" must include it. Errors wrap
// ErrInvalidToken.
func (s *Service) VerifyBearer(token string) (string, error) {
	if len(token) > MaxTokenBytes {
		return "", fmt.Errorf("token of %d bytes: %w", len(token), ErrInvalidToken)
	}
	tok, err := jwt.ParseSigned(token, tokenAlgorithms)
	if err != nil {
		return "", fmt.Errorf("parse token: %v: %w", err, ErrInvalidToken)
	}
	if len(tok.Headers) != 1 || tok.Headers[0].KeyID == "" {
		return "", fmt.Errorf("token names no kid: %w", ErrInvalidToken)
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return "", fmt.Errorf("token claims: %v: %w", err, ErrInvalidToken)
	}
	b, ok := s.eng.Begin().Get(JWTIssuersMap, unverified.Issuer)
	if !ok {
		return "", fmt.Errorf("issuer %.100q is not trusted: %w", unverified.Issuer, ErrInvalidToken)
	}
	var iss Issuer
	if err := json.Unmarshal(b, &iss); err != nil {
		return "", fmt.Errorf("issuer %.100q record: %v: %w", unverified.Issuer, err, ErrInvalidToken)
	}
	ks, err := parseJWKS(iss.JWKS)
	if err != nil {
		return "", fmt.Errorf("issuer %.100q: %v: %w", unverified.Issuer, err, ErrInvalidToken)
	}
	keys := ks.Key(tok.Headers[0].KeyID)
	if len(keys) == 0 {
		return "", fmt.Errorf("kid %.80q is not in the JWKS of %.100q: %w", tok.Headers[0].KeyID, unverified.Issuer, ErrInvalidToken)
	}
	var claims jwt.Claims
	var extra map[string]any
	if err := tok.Claims(keys[0].Key, &claims, &extra); err != nil {
		return "", fmt.Errorf("token signature: %v: %w", err, ErrInvalidToken)
	}
	if claims.Expiry == nil {
		return "", fmt.Errorf("token has no exp: %w", ErrInvalidToken)
	}
	exp := jwt.Expected{Issuer: unverified.Issuer, Time: s.now()}
	if err := claims.ValidateWithLeeway(exp, tokenLeeway); err != nil {
		return "", fmt.Errorf("token: %v: %w", err, ErrInvalidToken)
	}
	if iss.Audience != "" && !slices.Contains([]string(claims.Audience), iss.Audience) {
		return "", fmt.Errorf("token audience %v lacks %.100q: %w", []string(claims.Audience), iss.Audience, ErrInvalidToken)
	}
	id, ok := extra[iss.UserIDClaim].(string)
	if !ok || id == "" || len(id) > maxIDLen {
		return "", fmt.Errorf("token has no string claim %.40q: %w", iss.UserIDClaim, ErrInvalidToken)
	}
	return id, nil
}
