package receipt

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"testing"
	"time"

	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/internal/identity"
)

// azureVector is a receipt issued by a real ACL instance and the service
// certificate it chains to.
type azureVector struct {
	ServicePEM string          `json:"serviceCertificate"`
	Raw        json.RawMessage `json:"receipt"`
	service    *x509.Certificate
	receipt    api.Receipt
}

func loadAzure(t testing.TB) []azureVector {
	t.Helper()
	b, err := os.ReadFile("testdata/azure-receipts.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ Vectors []azureVector }
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Vectors) != 2 {
		t.Fatalf("got %d Azure vectors, want 2", len(f.Vectors))
	}
	for i := range f.Vectors {
		v := &f.Vectors[i]
		if v.service, err = identity.ParseCertPEM([]byte(v.ServicePEM)); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(v.Raw, &v.receipt); err != nil {
			t.Fatal(err)
		}
	}
	return f.Vectors
}

// node is a P-384 node identity endorsed by a service.
type node struct {
	key     *ecdsa.PrivateKey
	certPEM []byte
	id      string
}

func newService(t testing.TB) *identity.Service {
	t.Helper()
	s, err := identity.NewService("", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newNode(t testing.TB, s *identity.Service) *node {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := s.EndorseNode(&key.PublicKey, []string{"127.0.0.1", "localhost"}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := identity.NodeID(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return &node{key: key, certPEM: identity.EncodeCertPEM(der), id: id}
}

// endorse returns the PEM certificate of old's key issued by current.
func endorse(t testing.TB, current, old *identity.Service) string {
	t.Helper()
	der, err := current.EndorseService(&old.Key.PublicKey, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return string(identity.EncodeCertPEM(der))
}

func hashPair(l, r [32]byte) [32]byte {
	return sha256.Sum256(append(l[:], r[:]...))
}

// treeRoot is the root of the left-balanced tree over leaves, computed
// naively (RFC 6962 shape, no prefixes).
func treeRoot(leaves [][32]byte) [32]byte {
	if len(leaves) == 1 {
		return leaves[0]
	}
	k := split(len(leaves))
	return hashPair(treeRoot(leaves[:k]), treeRoot(leaves[k:]))
}

// treePath is the audit path of leaf m, leaf side first.
func treePath(m int, leaves [][32]byte) Proof {
	if len(leaves) == 1 {
		return nil
	}
	k := split(len(leaves))
	if m < k {
		return append(treePath(m, leaves[:k]), Right(treeRoot(leaves[k:])))
	}
	return append(treePath(m-k, leaves[k:]), Left(treeRoot(leaves[:k])))
}

// split is the largest power of two smaller than n.
func split(n int) int {
	k := 1
	for k*2 < n {
		k *= 2
	}
	return k
}

// leafParts returns made-up but well-formed leaf parts of transaction
// 3.seqno.
func leafParts(seqno int, claims [32]byte) LeafParts {
	var ws, secret [32]byte
	binary.BigEndian.PutUint64(ws[:], uint64(seqno))
	ws = sha256.Sum256(ws[:])
	secret = sha256.Sum256(ws[:])
	return LeafParts{
		WriteSetDigest: ws,
		CommitEvidence: fmt.Sprintf("ce:3.%d:%s", seqno, hex.EncodeToString(secret[:])),
		ClaimsDigest:   claims,
	}
}

// signedReceipt builds a tree of size leaves, signs its root with n's key
// and returns the receipt of leaf index (transaction 3.index+1) with the
// given claims digest and endorsements.
func signedReceipt(t testing.TB, n *node, size, index int, claims [32]byte, endorsements []string) *api.Receipt {
	t.Helper()
	leaves := make([][32]byte, size)
	var parts LeafParts
	for i := range leaves {
		p := leafParts(i+1, [32]byte{})
		if i == index {
			p = leafParts(i+1, claims)
			parts = p
		}
		leaves[i] = p.Leaf()
	}
	root := treeRoot(leaves)
	sig, err := ecdsa.SignASN1(rand.Reader, n.key, root[:])
	if err != nil {
		t.Fatal(err)
	}
	return New(n.certPEM, n.id, parts, treePath(index, leaves), sig, endorsements)
}

// generated is a set of P-384 receipts and their service certificate.
type generated struct {
	name    string
	receipt *api.Receipt
	service *x509.Certificate
}

// generatedReceipts returns a plain receipt and receipts with one and two
// service endorsements.
func generatedReceipts(t testing.TB) []generated {
	t.Helper()
	a, b, c := newService(t), newService(t), newService(t)
	return []generated{
		{"p384", signedReceipt(t, newNode(t, a), 11, 6, [32]byte{}, nil), a.Cert},
		{"p384-endorsed", signedReceipt(t, newNode(t, b), 5, 4, [32]byte{}, []string{endorse(t, a, b)}), a.Cert},
		{"p384-endorsed-twice", signedReceipt(t, newNode(t, c), 1, 0, [32]byte{}, []string{endorse(t, b, c), endorse(t, a, b)}), a.Cert},
	}
}

// clone deep-copies a receipt.
func clone(r *api.Receipt) *api.Receipt {
	c := *r
	if r.LeafComponents != nil {
		lc := *r.LeafComponents
		c.LeafComponents = &lc
	}
	c.Proof = append([]api.ProofElement(nil), r.Proof...)
	c.ServiceEndorsements = append([]string(nil), r.ServiceEndorsements...)
	return &c
}

// naiveLedgerEntryV1 computes SHA-256(HMAC(k, collection) ‖ HMAC(k, contents))
// the obvious way.
func naiveLedgerEntryV1(key []byte, collection, contents string) [32]byte {
	mac := func(s string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(s))
		return m.Sum(nil)
	}
	return sha256.Sum256(append(mac(collection), mac(contents)...))
}

// notCAReceipt returns a receipt whose node certificate is issued by a
// certificate that is not a CA, and that certificate.
func notCAReceipt(t testing.TB) (*api.Receipt, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "not a CA"},
		NotBefore:             time.Now(),
		NotAfter:              time.Now().Add(time.Hour),
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	fake := &identity.Service{Cert: cert, CertDER: der, Key: key}
	return signedReceipt(t, newNode(t, fake), 2, 0, [32]byte{}, nil), cert
}

func decodeBase64(s string) ([]byte, error) {
	return base64.StdEncoding.DecodeString(s)
}
