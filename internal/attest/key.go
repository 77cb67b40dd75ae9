package attest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"time"
)

// signingKeyInfo separates the derived key from any other use of the
// service key.
const signingKeyInfo = "parley attestation token signing key v1"

// DeriveSigningKey derives the token signing key (P-256) from the service
// key: HKDF-SHA-256 of the service key's private scalar with a fixed label,
// retried with a counter in the rare case the output is not a valid
// scalar. The same service key always gives the same signing key.
func DeriveSigningKey(serviceKey *ecdsa.PrivateKey) (*ecdsa.PrivateKey, error) {
	secret, err := serviceKey.Bytes()
	if err != nil {
		return nil, fmt.Errorf("derive signing key: %w", err)
	}
	for i := range 16 {
		b, err := hkdf.Key(sha256.New, secret, nil, fmt.Sprintf("%s %d", signingKeyInfo, i), 32)
		if err != nil {
			return nil, fmt.Errorf("derive signing key: %w", err)
		}
		if k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), b); err == nil {
			return k, nil
		}
	}
	return nil, fmt.Errorf("derive signing key: no valid scalar")
}

// NewSigningCertificate issues a certificate for the token signing key,
// signed by the service key, so that its x5c chains to the service
// certificate.
func NewSigningCertificate(serviceCert *x509.Certificate, serviceKey *ecdsa.PrivateKey, pub *ecdsa.PublicKey, validity time.Duration) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("signing certificate: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "Parley attestation token signer"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, serviceCert, pub, serviceKey)
	if err != nil {
		return nil, fmt.Errorf("signing certificate: %w", err)
	}
	return der, nil
}
