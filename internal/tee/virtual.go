package tee

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/parleyhq/parley/internal/strictjson"
	"io"
	"os"
)

// virtualDomain separates the virtual evidence signature from any other use
// of the key.
const virtualDomain = "parley virtual evidence v1\x00"

// VirtualWarning is logged and printed wherever virtual evidence is made or
// trusted.
const VirtualWarning = "VIRTUAL TEE: this evidence is signed by a software key, not by hardware; it proves nothing about the code that runs. For development and CI only."

// virtualEnvelope is the serialized virtual evidence.
type virtualEnvelope struct {
	// Payload is the base64 of the JSON virtualPayload.
	Payload string `json:"payload"`
	// PublicKey is the base64 DER SubjectPublicKeyInfo of the ECDSA
	// P-256 or P-384 signing key.
	PublicKey string `json:"publicKey"`
	// Signature is the base64 ASN.1 ECDSA signature of
	// SHA-256(virtualDomain ‖ payload bytes).
	Signature string `json:"signature"`
}

// virtualPayload is what virtual evidence claims.
type virtualPayload struct {
	Platform    string `json:"platform"`
	Measurement string `json:"measurement"` // hex SHA-256 of the binary
	ReportData  string `json:"reportData"`  // hex, 64 bytes
}

// MeasureExecutable returns the SHA-256 of the running binary
// (os.Executable), the measurement of virtual evidence.
func MeasureExecutable() ([]byte, error) {
	path, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("measure executable: %w", err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("measure executable: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("measure executable: %w", err)
	}
	return h.Sum(nil), nil
}

// NewVirtualKey makes a software key for virtual evidence.
func NewVirtualKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// VirtualEvidence makes virtual evidence binding measurement and reportData,
// signed by key (P-256 or P-384). It is not hardware evidence: see
// VirtualWarning.
func VirtualEvidence(key *ecdsa.PrivateKey, measurement []byte, reportData [ReportDataSize]byte) ([]byte, error) {
	if key == nil || (key.Curve != elliptic.P256() && key.Curve != elliptic.P384()) {
		return nil, fmt.Errorf("virtual evidence: key must be ECDSA P-256 or P-384")
	}
	if len(measurement) != sha256.Size {
		return nil, fmt.Errorf("virtual evidence: measurement is %d bytes, want %d", len(measurement), sha256.Size)
	}
	payload, err := json.Marshal(virtualPayload{
		Platform:    string(Virtual),
		Measurement: hex.EncodeToString(measurement),
		ReportData:  hex.EncodeToString(reportData[:]),
	})
	if err != nil {
		return nil, fmt.Errorf("virtual evidence: %w", err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("virtual evidence: public key: %w", err)
	}
	digest := virtualDigest(payload)
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		return nil, fmt.Errorf("virtual evidence: sign: %w", err)
	}
	return json.Marshal(virtualEnvelope{
		Payload:   base64.StdEncoding.EncodeToString(payload),
		PublicKey: base64.StdEncoding.EncodeToString(spki),
		Signature: base64.StdEncoding.EncodeToString(sig),
	})
}

func virtualDigest(payload []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(virtualDomain))
	h.Write(payload)
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// canonicalBase64 decodes standard padded base64 and refuses any other
// spelling of the same bytes, so that one byte string has one encoding.
func canonicalBase64(s string) ([]byte, error) {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, err
	}
	if base64.StdEncoding.EncodeToString(b) != s {
		return nil, fmt.Errorf("non-canonical base64")
	}
	return b, nil
}

func verifyVirtual(raw []byte) (*Report, error) {
	var env virtualEnvelope
	if err := strictjson.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("%w: virtual: %w", ErrMalformed, err)
	}
	payload, err := canonicalBase64(env.Payload)
	if err != nil {
		return nil, fmt.Errorf("%w: virtual payload: %w", ErrMalformed, err)
	}
	spki, err := canonicalBase64(env.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: virtual public key: %w", ErrMalformed, err)
	}
	sig, err := canonicalBase64(env.Signature)
	if err != nil {
		return nil, fmt.Errorf("%w: virtual signature: %w", ErrMalformed, err)
	}
	pk, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		return nil, fmt.Errorf("%w: virtual public key: %w", ErrMalformed, err)
	}
	ek, ok := pk.(*ecdsa.PublicKey)
	if !ok || (ek.Curve != elliptic.P256() && ek.Curve != elliptic.P384()) {
		return nil, fmt.Errorf("%w: virtual public key is not ECDSA P-256 or P-384", ErrMalformed)
	}
	digest := virtualDigest(payload)
	if !ecdsa.VerifyASN1(ek, digest[:], sig) {
		return nil, fmt.Errorf("%w: virtual signature", ErrUnverified)
	}
	var p virtualPayload
	if err := strictjson.Unmarshal(payload, &p); err != nil {
		return nil, fmt.Errorf("%w: virtual payload: %w", ErrMalformed, err)
	}
	if p.Platform != string(Virtual) {
		return nil, fmt.Errorf("%w: virtual payload names platform %q", ErrMalformed, p.Platform)
	}
	m, err := hex.DecodeString(p.Measurement)
	if err != nil || len(m) != sha256.Size || hex.EncodeToString(m) != p.Measurement {
		return nil, fmt.Errorf("%w: virtual measurement is not 32 bytes of lowercase hex", ErrMalformed)
	}
	rd, err := hex.DecodeString(p.ReportData)
	if err != nil || len(rd) != ReportDataSize || hex.EncodeToString(rd) != p.ReportData {
		return nil, fmt.Errorf("%w: virtual report data is not 64 bytes of lowercase hex", ErrMalformed)
	}
	signer := sha256.Sum256(spki)
	r := &Report{
		Platform:    Virtual,
		Measurement: m,
		Debug:       true,
		Signer:      hex.EncodeToString(signer[:]),
	}
	copy(r.ReportData[:], rd)
	r.Claims = map[string]any{
		"x-ms-attestation-type":        Virtual.AttestationType(),
		"x-parley-virtual":             true,
		"x-parley-virtual-warning":     VirtualWarning,
		"x-parley-virtual-signer":      r.Signer,
		"x-parley-virtual-measurement": p.Measurement,
		"x-parley-virtual-reportdata":  p.ReportData,
	}
	return r, nil
}
