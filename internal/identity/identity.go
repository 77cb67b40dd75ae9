// Package identity makes and loads the keys and X.509 certificates of a
// Parley service, in the style of CCF: one P-384 service key whose
// self-signed certificate is the root clients pin and receipts chain to;
// node certificates issued by that key; self-signed client certificates for
// users and members.
//
// Identifiers are hashes: a node's id is [NodeID], the SHA-256 of its public
// key, and a user's or member's id is [Fingerprint], the SHA-256 of its DER
// certificate.
//
// The package does no file I/O. Callers write the PEM it returns, durably,
// themselves.
package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// Default subject common names.
const (
	DefaultServiceName = "Parley Service"
	NodeName           = "Parley Node"
)

// Bounds on certificate requests.
const (
	maxSANs      = 64
	maxSANLength = 253
	maxCNLength  = 64
	maxPEMSize   = 64 << 10
)

// Service is a service identity: the key that endorses node certificates,
// and its self-signed CA certificate.
type Service struct {
	Cert    *x509.Certificate
	CertDER []byte
	Key     *ecdsa.PrivateKey
}

// NewService makes a new P-384 service key and a self-signed CA certificate
// for it, valid from now for validity. An empty subject means
// [DefaultServiceName].
func NewService(subject string, validity time.Duration) (*Service, error) {
	if subject == "" {
		subject = DefaultServiceName
	}
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate service key: %w", err)
	}
	tmpl, err := template(subject, validity)
	if err != nil {
		return nil, err
	}
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create service certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse service certificate: %w", err)
	}
	return &Service{Cert: cert, CertDER: der, Key: key}, nil
}

// LoadService loads a service identity from its PEM certificate and PEM
// private key, checking that the key matches the certificate and that the
// certificate is a CA.
func LoadService(certPEM, keyPEM []byte) (*Service, error) {
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("load service certificate: %w", err)
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load service key: %w", err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("load service: key does not match certificate")
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, errors.New("load service: certificate is not a CA")
	}
	return &Service{Cert: cert, CertDER: cert.Raw, Key: key}, nil
}

// EndorseNode issues a node certificate (CN [NodeName]) for pub, signed by
// the service key and valid from now for validity. Each SAN is an IP
// address or a DNS name. The certificate is good for TLS server and client
// authentication.
func (s *Service) EndorseNode(pub *ecdsa.PublicKey, sans []string, validity time.Duration) (certDER []byte, err error) {
	if pub == nil {
		return nil, errors.New("endorse node: no public key")
	}
	if len(sans) > maxSANs {
		return nil, fmt.Errorf("endorse node: %d subject alternative names, at most %d allowed", len(sans), maxSANs)
	}
	tmpl, err := template(NodeName, validity)
	if err != nil {
		return nil, err
	}
	for _, san := range sans {
		if ip := net.ParseIP(san); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			continue
		}
		if !validDNSName(san) {
			return nil, fmt.Errorf("endorse node: subject alternative name %q is neither an IP address nor a DNS name", san)
		}
		tmpl.DNSNames = append(tmpl.DNSNames, san)
	}
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.Cert, pub, s.Key)
	if err != nil {
		return nil, fmt.Errorf("create node certificate: %w", err)
	}
	return der, nil
}

// EndorseService issues a CA certificate (CN [DefaultServiceName]) for the
// public key of a previous service identity, signed by this service's key.
// After disaster recovery such endorsements let receipts signed under the
// previous identity chain to the current one (a receipt's
// serviceEndorsements).
func (s *Service) EndorseService(pub *ecdsa.PublicKey, validity time.Duration) (certDER []byte, err error) {
	if pub == nil {
		return nil, errors.New("endorse service: no public key")
	}
	tmpl, err := template(DefaultServiceName, validity)
	if err != nil {
		return nil, err
	}
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.Cert, pub, s.Key)
	if err != nil {
		return nil, fmt.Errorf("create service endorsement: %w", err)
	}
	return der, nil
}

// NewClientCert makes a P-384 key and a self-signed client certificate with
// common name cn, valid from now for validity. In ACL a user's or member's
// id is the [Fingerprint] of that certificate.
func NewClientCert(cn string, validity time.Duration) (certDER []byte, key *ecdsa.PrivateKey, err error) {
	if cn == "" {
		return nil, nil, errors.New("new client certificate: empty common name")
	}
	key, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate client key: %w", err)
	}
	tmpl, err := template(cn, validity)
	if err != nil {
		return nil, nil, err
	}
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	certDER, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create client certificate: %w", err)
	}
	return certDER, key, nil
}

// NodeID returns the id of a node with public key pub: the lowercase hex
// SHA-256 of its DER SubjectPublicKeyInfo.
func NodeID(pub crypto.PublicKey) (string, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("node id: %w", err)
	}
	sum := sha256.Sum256(spki)
	return hex.EncodeToString(sum[:]), nil
}

// Fingerprint returns the lowercase hex SHA-256 of a DER certificate, which
// is a user's or member's id.
func Fingerprint(certDER []byte) string {
	sum := sha256.Sum256(certDER)
	return hex.EncodeToString(sum[:])
}

// EncodeCertPEM encodes a DER certificate as a PEM "CERTIFICATE" block.
func EncodeCertPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// EncodeKeyPEM encodes key as a PKCS#8 PEM "PRIVATE KEY" block.
func EncodeKeyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	if key == nil {
		return nil, errors.New("encode key: no key")
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCertPEM parses the first "CERTIFICATE" block of b. Other block types
// before it are skipped.
func ParseCertPEM(b []byte) (*x509.Certificate, error) {
	block, err := findBlock(b, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return cert, nil
}

// ParseKeyPEM parses the first ECDSA private key of b, either PKCS#8
// ("PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY").
func ParseKeyPEM(b []byte) (*ecdsa.PrivateKey, error) {
	block, err := findBlock(b, "PRIVATE KEY", "EC PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	if block.Type == "EC PRIVATE KEY" {
		key, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse EC private key: %w", err)
		}
		return key, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse PKCS#8 private key: %w", err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("parse PKCS#8 private key: %T is not an ECDSA key", k)
	}
	return key, nil
}

func findBlock(b []byte, types ...string) (*pem.Block, error) {
	if len(b) > maxPEMSize {
		return nil, fmt.Errorf("parse PEM: %d bytes, at most %d allowed", len(b), maxPEMSize)
	}
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, fmt.Errorf("parse PEM: no %q block", types[0])
		}
		for _, t := range types {
			if block.Type == t {
				return block, nil
			}
		}
	}
}

func template(cn string, validity time.Duration) (*x509.Certificate, error) {
	if validity <= 0 {
		return nil, fmt.Errorf("certificate for %q: validity %v is not positive", cn, validity)
	}
	if len(cn) > maxCNLength {
		return nil, fmt.Errorf("certificate for %q: common name longer than %d bytes", cn, maxCNLength)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("certificate serial: %w", err)
	}
	if serial.Sign() == 0 {
		serial.SetInt64(1)
	}
	now := time.Now().UTC().Truncate(time.Second)
	return &x509.Certificate{
		SerialNumber:       serial,
		Subject:            pkix.Name{CommonName: cn},
		NotBefore:          now,
		NotAfter:           now.Add(validity),
		SignatureAlgorithm: x509.ECDSAWithSHA384,
	}, nil
}

// validDNSName reports whether s is a plausible DNS name: dot-separated
// labels of letters, digits and hyphens, optionally with a leading "*."
// wildcard.
func validDNSName(s string) bool {
	if len(s) == 0 || len(s) > maxSANLength {
		return false
	}
	if len(s) > 2 && s[:2] == "*." {
		s = s[2:]
	}
	label := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if label == 0 || s[i-1] == '-' {
				return false
			}
			label = 0
		case c == '-':
			if label == 0 {
				return false
			}
			label++
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
			label++
		default:
			return false
		}
		if label > 63 {
			return false
		}
	}
	return label > 0 && s[len(s)-1] != '-'
}
