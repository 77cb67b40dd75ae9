package identity

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

const day = 24 * time.Hour

func newService(t *testing.T) *Service {
	t.Helper()
	s, err := NewService("", 365*day)
	if err != nil {
		t.Fatalf("NewService: %v", err)
	}
	return s
}

func TestNewService(t *testing.T) {
	s := newService(t)
	c := s.Cert
	if got, want := c.Subject.CommonName, DefaultServiceName; got != want {
		t.Errorf("CommonName = %q, want %q", got, want)
	}
	if !c.IsCA || !c.BasicConstraintsValid {
		t.Errorf("IsCA = %v, BasicConstraintsValid = %v, want both true", c.IsCA, c.BasicConstraintsValid)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("KeyUsage = %v, want CertSign", c.KeyUsage)
	}
	if got, want := c.SignatureAlgorithm, x509.ECDSAWithSHA384; got != want {
		t.Errorf("SignatureAlgorithm = %v, want %v", got, want)
	}
	if got, want := s.Key.Curve, elliptic.P384(); got != want {
		t.Errorf("curve = %v, want P-384", got.Params().Name)
	}
	if !bytes.Equal(c.Raw, s.CertDER) {
		t.Error("Cert.Raw != CertDER")
	}
	if !s.Key.PublicKey.Equal(c.PublicKey) {
		t.Error("certificate public key does not match Key")
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("self-signature: %v", err)
	}
	if got, want := c.NotAfter.Sub(c.NotBefore), 365*day; got != want {
		t.Errorf("validity = %v, want %v", got, want)
	}
	if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %v is not a positive 128-bit number", c.SerialNumber)
	}
	s2 := newService(t)
	if s2.Cert.SerialNumber.Cmp(c.SerialNumber) == 0 {
		t.Error("two services got the same serial number")
	}

	named, err := NewService("Contoso Ledger", day)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := named.Cert.Subject.CommonName, "Contoso Ledger"; got != want {
		t.Errorf("CommonName = %q, want %q", got, want)
	}
}

func TestBadValidity(t *testing.T) {
	if _, err := NewService("", 0); err == nil {
		t.Error("NewService with zero validity: got nil error")
	}
	s := newService(t)
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := s.EndorseNode(&key.PublicKey, nil, -time.Hour); err == nil {
		t.Error("EndorseNode with negative validity: got nil error")
	}
	if _, _, err := NewClientCert("user0", 0); err == nil {
		t.Error("NewClientCert with zero validity: got nil error")
	}
	if _, _, err := NewClientCert("", day); err == nil {
		t.Error("NewClientCert with empty name: got nil error")
	}
	if _, err := NewService(strings.Repeat("x", 65), day); err == nil {
		t.Error("NewService with 65-byte name: got nil error")
	}
}

func TestEndorseNode(t *testing.T) {
	s := newService(t)
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := s.EndorseNode(&key.PublicKey, []string{"127.0.0.1", "localhost", "::1", "node-1.parley.example"}, 30*day)
	if err != nil {
		t.Fatalf("EndorseNode: %v", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Subject.CommonName, NodeName; got != want {
		t.Errorf("CommonName = %q, want %q", got, want)
	}
	if got, want := c.Issuer.CommonName, DefaultServiceName; got != want {
		t.Errorf("Issuer = %q, want %q", got, want)
	}
	if c.IsCA {
		t.Error("node certificate is a CA")
	}
	if !key.PublicKey.Equal(c.PublicKey) {
		t.Error("node certificate public key does not match")
	}
	if err := c.CheckSignatureFrom(s.Cert); err != nil {
		t.Errorf("CheckSignatureFrom(service) = %v", err)
	}
	wantIPs := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	if !slices.EqualFunc(c.IPAddresses, wantIPs, net.IP.Equal) {
		t.Errorf("IPAddresses = %v, want %v", c.IPAddresses, wantIPs)
	}
	if got, want := c.DNSNames, []string{"localhost", "node-1.parley.example"}; !slices.Equal(got, want) {
		t.Errorf("DNSNames = %v, want %v", got, want)
	}
	if got, want := c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}; !slices.Equal(got, want) {
		t.Errorf("ExtKeyUsage = %v, want %v", got, want)
	}

	// The node certificate is usable for TLS under the service root.
	roots := x509.NewCertPool()
	roots.AddCert(s.Cert)
	for _, name := range []string{"127.0.0.1", "localhost"} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("Verify(%s) = %v", name, err)
		}
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: "other.example"}); err == nil {
		t.Error("Verify(other.example) = nil, want error")
	}
}

func TestEndorseNodeBadSANs(t *testing.T) {
	s := newService(t)
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for _, san := range []string{"", "bad name", "a..b", "-a.b", "a-.b", "a.b.", "exa_mple.com", strings.Repeat("a", 64) + ".com"} {
		if _, err := s.EndorseNode(&key.PublicKey, []string{san}, day); err == nil {
			t.Errorf("EndorseNode(SAN %q) = nil error, want error", san)
		}
	}
	if _, err := s.EndorseNode(nil, nil, day); err == nil {
		t.Error("EndorseNode(nil key) = nil error, want error")
	}
	many := make([]string, maxSANs+1)
	for i := range many {
		many[i] = "localhost"
	}
	if _, err := s.EndorseNode(&key.PublicKey, many, day); err == nil {
		t.Error("EndorseNode with too many SANs = nil error, want error")
	}
}

func TestEndorseService(t *testing.T) {
	current, previous := newService(t), newService(t)
	der, err := current.EndorseService(&previous.Key.PublicKey, day)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if !c.IsCA {
		t.Error("service endorsement is not a CA")
	}
	if err := c.CheckSignatureFrom(current.Cert); err != nil {
		t.Errorf("CheckSignatureFrom(current) = %v", err)
	}
	// A node certificate issued by the previous service verifies under
	// the endorsement.
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	nodeDER, err := previous.EndorseNode(&key.PublicKey, nil, day)
	if err != nil {
		t.Fatal(err)
	}
	node, _ := x509.ParseCertificate(nodeDER)
	if err := node.CheckSignatureFrom(c); err != nil {
		t.Errorf("node.CheckSignatureFrom(endorsement) = %v", err)
	}
}

func TestNewClientCert(t *testing.T) {
	der, key, err := NewClientCert("user0", day)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Subject.CommonName, "user0"; got != want {
		t.Errorf("CommonName = %q, want %q", got, want)
	}
	if !key.PublicKey.Equal(c.PublicKey) || key.Curve != elliptic.P384() {
		t.Error("client key does not match the certificate or is not P-384")
	}
	if c.IsCA {
		t.Error("client certificate is a CA")
	}
	if got, want := c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}; !slices.Equal(got, want) {
		t.Errorf("ExtKeyUsage = %v, want %v", got, want)
	}
}

func TestNodeIDAndFingerprint(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(spki)
	got, err := NodeID(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if want := hex.EncodeToString(sum[:]); got != want {
		t.Errorf("NodeID = %s, want %s", got, want)
	}
	if _, err := NodeID(struct{}{}); err == nil {
		t.Error("NodeID(struct{}{}) = nil error, want error")
	}

	// Known answer: the node of real Azure receipt 2 has this id.
	const azureNode = "-----BEGIN CERTIFICATE-----\nMIIBzzCCAXWgAwIBAgIQIqJhTJJl+Oxf8Fl0oH622TAKBggqhkjOPQQDAjAWMRQw\nEgYDVQQDDAtDQ0YgTmV0d29yazAeFw0yMjEwMjUxMjMwNTZaFw0yMzAxMjMxMjMw\nNTVaMBMxETAPBgNVBAMMCENDRiBOb2RlMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcD\nQgAEqmsG0x22ZuFBjDItZruC+jVJza8qpXh/HKeX5yG/0/HKyjMOEce2g/C7Z/fi\nbf/bYXiCbz4WP/YbU3crQUtc7qOBpzCBpDAJBgNVHRMEAjAAMB0GA1UdDgQWBBSY\nw8oZLUv/qjpB/u0uaJyEGsMM9zAfBgNVHSMEGDAWgBRK2CouVttJOtybCzI92Rv3\n/z2mcDBXBgNVHREEUDBOghNhcC10ZXN0LWxlZGdlci1wcml2gjFhcC10ZXN0LWxl\nZGdlci1wcml2LmNvbmZpZGVudGlhbC1sZWRnZXIuYXp1cmUuY29thwQK8Eq3MAoG\nCCqGSM49BAMCA0gAMEUCIQCbokInYEKX7ItmjJDlnG/0EbIwgcCCGnRubIzHYhiX\n8gIgbqhPG68pxR43ZhJy6y6JeWuB+kSXsqRmQdYP3UMkzXg=\n-----END CERTIFICATE-----\n"
	c, err := ParseCertPEM([]byte(azureNode))
	if err != nil {
		t.Fatal(err)
	}
	got, err = NodeID(c.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if want := "a16d14661618d220365594fc4986f4401ff74785b70818b00e6590bb3c1a1a5d"; got != want {
		t.Errorf("NodeID(azure node) = %s, want %s", got, want)
	}

	der := []byte("not really a certificate")
	fsum := sha256.Sum256(der)
	if got, want := Fingerprint(der), hex.EncodeToString(fsum[:]); got != want {
		t.Errorf("Fingerprint = %s, want %s", got, want)
	}
}

func TestPEMRoundTrip(t *testing.T) {
	s := newService(t)
	certPEM := EncodeCertPEM(s.CertDER)
	keyPEM, err := EncodeKeyPEM(s.Key)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(keyPEM, []byte("-----BEGIN PRIVATE KEY-----")) {
		t.Errorf("EncodeKeyPEM = %.30q…, want a PRIVATE KEY block", keyPEM)
	}
	c, err := ParseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Equal(s.Cert) {
		t.Error("ParseCertPEM(EncodeCertPEM) differs")
	}
	k, err := ParseKeyPEM(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !k.Equal(s.Key) {
		t.Error("ParseKeyPEM(EncodeKeyPEM) differs")
	}

	// SEC 1 keys load too.
	sec1, err := x509.MarshalECPrivateKey(s.Key)
	if err != nil {
		t.Fatal(err)
	}
	k, err = ParseKeyPEM(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}))
	if err != nil {
		t.Fatalf("ParseKeyPEM(SEC 1) = %v", err)
	}
	if !k.Equal(s.Key) {
		t.Error("ParseKeyPEM(SEC 1) differs")
	}

	// A key after a certificate in the same file is found.
	both := append(append([]byte{}, certPEM...), keyPEM...)
	if _, err := ParseKeyPEM(both); err != nil {
		t.Errorf("ParseKeyPEM(cert+key) = %v", err)
	}

	loaded, err := LoadService(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("LoadService: %v", err)
	}
	if !loaded.Cert.Equal(s.Cert) || !loaded.Key.Equal(s.Key) || !bytes.Equal(loaded.CertDER, s.CertDER) {
		t.Error("LoadService differs from the service")
	}
}

func TestParseErrors(t *testing.T) {
	s := newService(t)
	other := newService(t)
	certPEM := EncodeCertPEM(s.CertDER)
	otherKeyPEM, _ := EncodeKeyPEM(other.Key)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	edDER, _ := x509.MarshalPKCS8PrivateKey(edKey)
	edPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: edDER})
	clientDER, clientKey, _ := NewClientCert("user0", day)
	clientKeyPEM, _ := EncodeKeyPEM(clientKey)

	if _, err := ParseCertPEM(nil); err == nil {
		t.Error("ParseCertPEM(nil) = nil error")
	}
	if _, err := ParseCertPEM(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}})); err == nil {
		t.Error("ParseCertPEM(garbage DER) = nil error")
	}
	if _, err := ParseCertPEM(bytes.Repeat(certPEM, maxPEMSize/len(certPEM)+1)); err == nil {
		t.Error("ParseCertPEM(oversized) = nil error")
	}
	if _, err := ParseKeyPEM(certPEM); err == nil {
		t.Error("ParseKeyPEM(certificate) = nil error")
	}
	if _, err := ParseKeyPEM(edPEM); err == nil {
		t.Error("ParseKeyPEM(Ed25519) = nil error")
	}
	if _, err := LoadService(certPEM, otherKeyPEM); err == nil {
		t.Error("LoadService with a mismatched key = nil error")
	}
	if _, err := LoadService(EncodeCertPEM(clientDER), clientKeyPEM); err == nil {
		t.Error("LoadService with a non-CA certificate = nil error")
	}
	if _, err := EncodeKeyPEM(nil); err == nil {
		t.Error("EncodeKeyPEM(nil) = nil error")
	}
}
