// Package attest is Parley's attestation service: it takes evidence of a
// TEE (package tee), verifies and appraises it against the policy held in
// the ledger, and issues a short-lived JWT whose claims are named as
// Microsoft Azure Attestation (MAA) names them (x-ms-attestation-type,
// x-ms-sevsnpvm-launchmeasurement, x-ms-runtime, nonce, …). It publishes
// its signing key as a JWKS and OpenID metadata, and verifies tokens for
// relying parties such as the key broker (package keyrelease).
//
// # Signing key
//
// Tokens are signed with ES256 by a P-256 key derived from the service key
// (see [DeriveSigningKey]): every node of a service holds the service key,
// so every node issues tokens under the same key, and the key needs no
// storage of its own. It is a separate key from the service key, so a
// token signature can never be mistaken for a certificate signature. Its
// JWK carries an x5c certificate issued by the service key, so a verifier
// that trusts the service certificate can check the token key offline.
// MAA signs with RS256; verifiers take the algorithm from the JWKS.
//
// # Report data
//
// When runtime data is given, the evidence's report data must be
// SHA-256(runtime data) followed by 32 zero bytes, as MAA checks; the
// runtime data, a JSON object, becomes the x-ms-runtime claim (with the
// attester's public keys in x-ms-runtime.keys). Without runtime data the
// report data is only reported.
package attest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/parleyhq/parley/internal/tee"
)

// Defaults and limits.
const (
	DefaultLifetime    = 5 * time.Minute
	MaxRuntimeDataSize = 16 << 10
	MaxNonceSize       = 256
	MaxAudienceSize    = 512
	// Version is the x-ms-ver claim.
	Version = "1.0"
)

// Errors returned by Attest; each wraps the cause.
var (
	// ErrInvalidRequest is returned for a request that is malformed: bad
	// runtime data, nonce or audience.
	ErrInvalidRequest = errors.New("invalid attestation request")
	// ErrReportData is returned when the evidence's report data is not
	// SHA-256 of the runtime data followed by zeros.
	ErrReportData = errors.New("report data does not bind the runtime data")
	// ErrNoPolicy is returned when the policy cannot be read.
	ErrNoPolicy = errors.New("no appraisal policy")
)

// PolicySource returns the appraisal policy in force and a digest of its
// encoding (the x-ms-policy-hash claim).
type PolicySource func() (*tee.Policy, []byte, error)

// Config configures a Service.
type Config struct {
	// Issuer is the iss claim; the JWKS is served at Issuer+"/certs".
	Issuer string
	// Key signs tokens (ECDSA P-256, ES256).
	Key *ecdsa.PrivateKey
	// CertDER, when set, is the key's certificate, published as x5c.
	CertDER []byte
	// Policy returns the appraisal policy in force.
	Policy PolicySource
	// Lifetime of a token, DefaultLifetime when zero.
	Lifetime time.Duration
	// Now is the clock, time.Now when nil.
	Now func() time.Time
	// Logger warns of every token issued for virtual evidence.
	Logger *slog.Logger
}

// Service issues attestation tokens. It is safe for concurrent use.
type Service struct {
	cfg    Config
	signer jose.Signer
	jwk    jose.JSONWebKey
}

// New returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Key == nil || cfg.Key.Curve.Params().Name != "P-256" {
		return nil, fmt.Errorf("attestation service: the signing key must be ECDSA P-256")
	}
	if cfg.Issuer == "" || cfg.Policy == nil {
		return nil, fmt.Errorf("attestation service: issuer and policy are required")
	}
	if cfg.Lifetime <= 0 {
		cfg.Lifetime = DefaultLifetime
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	jwk, err := PublicJWK(&cfg.Key.PublicKey, cfg.CertDER)
	if err != nil {
		return nil, fmt.Errorf("attestation service: %w", err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: cfg.Key, KeyID: jwk.KeyID}},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("jku", cfg.Issuer+"/certs"))
	if err != nil {
		return nil, fmt.Errorf("attestation service: signer: %w", err)
	}
	return &Service{cfg: cfg, signer: signer, jwk: jwk}, nil
}

// PublicJWK returns the JWK of a token signing key: kid is its RFC 7638
// SHA-256 thumbprint, and certDER, when given, is its x5c.
func PublicJWK(pub *ecdsa.PublicKey, certDER []byte) (jose.JSONWebKey, error) {
	jwk := jose.JSONWebKey{Key: pub, Algorithm: string(jose.ES256), Use: "sig"}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return jose.JSONWebKey{}, fmt.Errorf("key thumbprint: %w", err)
	}
	jwk.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	if len(certDER) > 0 {
		c, err := parseCert(certDER)
		if err != nil {
			return jose.JSONWebKey{}, err
		}
		jwk.Certificates = append(jwk.Certificates, c)
	}
	return jwk, nil
}

// Issuer is the service's iss.
func (s *Service) Issuer() string { return s.cfg.Issuer }

// JWKS returns the token signing keys.
func (s *Service) JWKS() jose.JSONWebKeySet {
	return jose.JSONWebKeySet{Keys: []jose.JSONWebKey{s.jwk}}
}

// OpenIDConfiguration is the document served at
// /.well-known/openid-configuration.
type OpenIDConfiguration struct {
	Issuer                 string   `json:"issuer"`
	JWKSURI                string   `json:"jwks_uri"`
	SigningAlgs            []string `json:"id_token_signing_alg_values_supported"`
	ResponseTypes          []string `json:"response_types_supported"`
	ClaimsSupported        []string `json:"claims_supported"`
	TokenEndpointAuthMeths []string `json:"token_endpoint_auth_methods_supported"`
}

// OpenIDConfiguration returns the OpenID metadata.
func (s *Service) OpenIDConfiguration() OpenIDConfiguration {
	return OpenIDConfiguration{
		Issuer:                 s.cfg.Issuer,
		JWKSURI:                s.cfg.Issuer + "/certs",
		SigningAlgs:            []string{string(jose.ES256)},
		ResponseTypes:          []string{"token"},
		ClaimsSupported:        []string{"iss", "iat", "exp", "nbf", "jti", "aud", "nonce", "x-ms-ver", "x-ms-attestation-type", "x-ms-policy-hash", "x-ms-runtime", "x-parley-measurement", "x-parley-virtual", "x-ms-sevsnpvm-launchmeasurement", "x-ms-sevsnpvm-is-debuggable", "x-ms-sevsnpvm-hostdata", "x-ms-sevsnpvm-reportdata", "tdx_mrtd", "tdx_rtmr0", "tdx_report_data", "dbgstat"},
		TokenEndpointAuthMeths: []string{"none"},
	}
}

// Request is one attestation request.
type Request struct {
	Platform tee.Platform
	// Evidence is the raw evidence (see tee.Evidence).
	Evidence []byte
	// VCEK is the SEV-SNP VCEK certificate.
	VCEK []byte
	// RuntimeData, when set, is a JSON object bound by the report data.
	RuntimeData []byte
	// Nonce, when set, is echoed in the nonce claim.
	Nonce string
	// Audience, when set, is the aud claim; the issuer otherwise, naming
	// this service's own key broker.
	Audience string
}

// Attest verifies and appraises the evidence and returns a signed token.
// Errors wrap tee.ErrMalformed, tee.ErrUnverified, tee.ErrRefused,
// tee.ErrUnknownPlatform, ErrReportData, ErrInvalidRequest or ErrNoPolicy.
func (s *Service) Attest(ctx context.Context, req Request) (string, error) {
	if len(req.Nonce) > MaxNonceSize || len(req.Audience) > MaxAudienceSize {
		return "", fmt.Errorf("%w: nonce or audience too long", ErrInvalidRequest)
	}
	var runtime map[string]any
	if len(req.RuntimeData) > 0 {
		if len(req.RuntimeData) > MaxRuntimeDataSize {
			return "", fmt.Errorf("%w: runtime data over %d bytes", ErrInvalidRequest, MaxRuntimeDataSize)
		}
		if err := json.Unmarshal(req.RuntimeData, &runtime); err != nil || runtime == nil {
			return "", fmt.Errorf("%w: runtime data is not a JSON object", ErrInvalidRequest)
		}
	}
	now := s.cfg.Now()
	report, err := tee.Verify(tee.Evidence{Platform: req.Platform, Raw: req.Evidence, VCEK: req.VCEK}, tee.VerifyOptions{Now: now})
	if err != nil {
		return "", err
	}
	if runtime != nil {
		var want [tee.ReportDataSize]byte
		sum := sha256.Sum256(req.RuntimeData)
		copy(want[:], sum[:])
		if subtle.ConstantTimeCompare(want[:], report.ReportData[:]) != 1 {
			return "", fmt.Errorf("%w: report data %x, want SHA-256(runtime data) %x followed by zeros", ErrReportData, report.ReportData[:32], sum)
		}
	}
	policy, digest, err := s.cfg.Policy()
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoPolicy, err)
	}
	if err := policy.Appraise(report); err != nil {
		return "", err
	}
	if report.Platform == tee.Virtual {
		s.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, tee.VirtualWarning, slog.String("signer", report.Signer))
	}
	claims := make(map[string]any, len(report.Claims)+12)
	for k, v := range report.Claims {
		claims[k] = v
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", fmt.Errorf("token id: %w", err)
	}
	aud := req.Audience
	if aud == "" {
		aud = s.cfg.Issuer
	}
	claims["iss"] = s.cfg.Issuer
	claims["aud"] = aud
	claims["iat"] = now.Unix()
	claims["nbf"] = now.Unix()
	claims["exp"] = now.Add(s.cfg.Lifetime).Unix()
	claims["jti"] = hex.EncodeToString(jti)
	claims["x-ms-ver"] = Version
	claims["x-ms-policy-hash"] = base64.RawURLEncoding.EncodeToString(digest)
	if req.Nonce != "" {
		claims["nonce"] = req.Nonce
	}
	if runtime != nil {
		claims["x-ms-runtime"] = runtime
	}
	tok, err := jwt.Signed(s.signer).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return tok, nil
}
