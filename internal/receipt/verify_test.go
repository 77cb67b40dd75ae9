package receipt

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/internal/identity"
)

func TestLeafKnownAnswer(t *testing.T) {
	// Computed independently with Python's hashlib from Azure receipt 1.
	ws, _ := parseDigest("fef1aa22972daba05864a7e986c1bb94aa6b8fea43781cb48907c972e9761e71")
	ce := CommitEvidenceDigest("ce:2.35:fa08b4eae4a034971b97f0b21810951ec64b06fb2f4b5a1e80f6f4b83a23c719")
	if got, want := hex.EncodeToString(ce[:]), "8b27b65e024905818f335678b365d29c62c84afe5844190e995bd33adad14a82"; got != want {
		t.Errorf("CommitEvidenceDigest = %s, want %s", got, want)
	}
	leaf := Leaf(ws, ce, [32]byte{})
	if got, want := hex.EncodeToString(leaf[:]), "52ce29a3663b093b34c34bda0e8714b83015429577c00078eb73fdb13bb6e9b7"; got != want {
		t.Errorf("Leaf = %s, want %s", got, want)
	}
}

func TestAzureReceipts(t *testing.T) {
	for i, v := range loadAzure(t) {
		if err := Verify(&v.receipt, v.service); err != nil {
			t.Errorf("Azure receipt %d: Verify = %v, want nil", i+1, err)
		}
		// The Azure certificates have expired: Verify must not care.
		node, err := identity.ParseCertPEM([]byte(v.receipt.Cert))
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().Before(node.NotAfter) || time.Now().Before(v.service.NotAfter) {
			t.Errorf("Azure receipt %d: certificates have not expired; this test no longer checks that validity is ignored", i+1)
		}
		// Their service certificates are CAs, which Verify requires.
		if !v.service.IsCA {
			t.Errorf("Azure receipt %d: service certificate is not a CA", i+1)
		}
	}
}

func TestGeneratedReceipts(t *testing.T) {
	for _, g := range generatedReceipts(t) {
		t.Run(g.name, func(t *testing.T) {
			if err := Verify(g.receipt, g.service); err != nil {
				t.Errorf("Verify = %v, want nil", err)
			}
		})
	}
}

// TestEveryLeafOfATree checks proofs for every leaf of trees of many sizes.
func TestEveryLeafOfATree(t *testing.T) {
	s := newService(t)
	n := newNode(t, s)
	for size := 1; size <= 17; size++ {
		for index := range size {
			r := signedReceipt(t, n, size, index, [32]byte{}, nil)
			if err := Verify(r, s.Cert); err != nil {
				t.Errorf("tree of %d, leaf %d: Verify = %v", size, index, err)
			}
		}
	}
}

func TestWrongServiceCert(t *testing.T) {
	azure := loadAzure(t)
	gen := generatedReceipts(t)
	other := newService(t)
	for _, tt := range []struct {
		name    string
		r       *api.Receipt
		service *x509.Certificate
	}{
		{"azure1-with-azure2-cert", &azure[0].receipt, azure[1].service},
		{"azure2-with-azure1-cert", &azure[1].receipt, azure[0].service},
		{"azure1-with-p384-cert", &azure[0].receipt, other.Cert},
		{"p384-with-azure-cert", gen[0].receipt, azure[0].service},
		{"p384-with-other-cert", gen[0].receipt, other.Cert},
		{"endorsed-with-other-cert", gen[1].receipt, other.Cert},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(tt.r, tt.service)
			if !errors.Is(err, ErrInvalidReceipt) || !strings.Contains(err.Error(), "not endorsed by the service certificate") {
				t.Errorf("Verify = %v, want not endorsed by the service certificate", err)
			}
		})
	}
}

func TestEndorsements(t *testing.T) {
	a, b, c := newService(t), newService(t), newService(t)
	nb, nc := newNode(t, b), newNode(t, c)
	ab, bc := endorse(t, a, b), endorse(t, b, c)
	for _, tt := range []struct {
		name         string
		n            *node
		endorsements []string
		service      *x509.Certificate
		wantErr      string // "" for success
	}{
		{"previous-identity", nb, []string{ab}, a.Cert, ""},
		{"two-renewals", nc, []string{bc, ab}, a.Cert, ""},
		{"issuing-service-itself", nb, nil, b.Cert, ""},
		{"missing-endorsement", nb, nil, a.Cert, "node certificate not endorsed by the service certificate"},
		{"endorsement-but-old-service", nb, []string{ab}, b.Cert, "service endorsement 0 not endorsed by the service certificate"},
		{"wrong-order", nc, []string{ab, bc}, a.Cert, "node certificate not endorsed by service endorsement 0"},
		{"skipped-renewal", nc, []string{ab}, a.Cert, "node certificate not endorsed by service endorsement 0"},
		{"not-pem", nb, []string{"MIIB"}, a.Cert, "service endorsement 0: not a PEM certificate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := signedReceipt(t, tt.n, 3, 1, [32]byte{}, tt.endorsements)
			err := Verify(r, tt.service)
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("Verify = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidReceipt) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Verify = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// TestSignerMustBeCA checks that a certificate that is not a CA cannot
// endorse a node, even if its key signed the node certificate.
func TestSignerMustBeCA(t *testing.T) {
	r, notCA := notCAReceipt(t)
	err := Verify(r, notCA)
	if !errors.Is(err, ErrInvalidReceipt) || !strings.Contains(err.Error(), "not endorsed by the service certificate") {
		t.Errorf("Verify = %v, want not endorsed by the service certificate", err)
	}
}

func TestVerifyErrors(t *testing.T) {
	s := newService(t)
	n := newNode(t, s)
	good := signedReceipt(t, n, 4, 2, [32]byte{}, nil)
	if err := Verify(good, s.Cert); err != nil {
		t.Fatal(err)
	}
	leaf := leafParts(3, [32]byte{}).Leaf()
	root, err := Root(leaf, good.Proof)
	if err != nil {
		t.Fatal(err)
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p256Node, _ := s.EndorseNode(&p256.PublicKey, nil, time.Hour)
	p256ID, _ := identity.NodeID(&p256.PublicKey)
	p256Sig, _ := ecdsa.SignASN1(rand.Reader, p256, root[:])

	for _, tt := range []struct {
		name    string
		edit    func(r *api.Receipt)
		wantErr string // "" for success
	}{
		{"unchanged", func(r *api.Receipt) {}, ""},
		{"stated-leaf-and-root", func(r *api.Receipt) {
			r.Leaf = hex.EncodeToString(leaf[:])
			r.Root = strings.ToUpper(hex.EncodeToString(root[:]))
		}, ""},
		{"p256-node-key", func(r *api.Receipt) {
			r.Cert = string(identity.EncodeCertPEM(p256Node))
			r.NodeID = p256ID
			r.Signature = base64.StdEncoding.EncodeToString(p256Sig)
		}, ""},
		{"both-left-and-right", func(r *api.Receipt) { r.Proof[1].Right = r.Proof[1].Left }, "proof element 1 has both left and right"},
		{"neither-left-nor-right", func(r *api.Receipt) { r.Proof[0] = api.ProofElement{} }, "proof element 0 has neither left nor right"},
		{"short-proof-hash", func(r *api.Receipt) { r.Proof[0] = api.ProofElement{Left: "abcd"} }, "proof element 0: left: 4 hex characters, want 64"},
		{"bad-hex-proof-hash", func(r *api.Receipt) { r.Proof[1] = api.ProofElement{Right: strings.Repeat("zz", 32)} }, "proof element 1: right:"},
		{"proof-too-long", func(r *api.Receipt) { r.Proof = make(Proof, 65) }, "proof has 65 elements"},
		{"extra-proof-element", func(r *api.Receipt) { r.Proof = append(r.Proof, Left([32]byte{})) }, "signature does not verify"},
		{"missing-proof-element", func(r *api.Receipt) { r.Proof = r.Proof[:1] }, "signature does not verify"},
		{"no-leaf-components", func(r *api.Receipt) { r.LeafComponents = nil }, "receipt has no leaf components"},
		{"short-write-set-digest", func(r *api.Receipt) { r.LeafComponents.WriteSetDigest = "00" }, "write set digest: 2 hex characters"},
		{"empty-claims-digest", func(r *api.Receipt) { r.LeafComponents.ClaimsDigest = "" }, "claims digest: 0 hex characters"},
		{"commit-evidence-prefix", func(r *api.Receipt) {
			r.LeafComponents.CommitEvidence = "CE" + r.LeafComponents.CommitEvidence[2:]
		}, `does not start with "ce:"`},
		{"commit-evidence-short-secret", func(r *api.Receipt) { r.LeafComponents.CommitEvidence = "ce:3.3:abcd" }, "secret is 4 characters"},
		{"stated-leaf-mismatch", func(r *api.Receipt) { r.Leaf = strings.Repeat("00", 32) }, "leaf: receipt says 0000"},
		{"stated-root-mismatch", func(r *api.Receipt) { r.Root = strings.Repeat("11", 32) }, "root: receipt says 1111"},
		{"stated-root-bad", func(r *api.Receipt) { r.Root = "11" }, "root: 2 hex characters"},
		{"no-cert", func(r *api.Receipt) { r.Cert = "" }, "node certificate: missing"},
		{"cert-not-pem", func(r *api.Receipt) { r.Cert = "hello" }, "node certificate: not a PEM certificate"},
		{"cert-trailing-data", func(r *api.Receipt) { r.Cert += "junk" }, "node certificate: data after the PEM certificate"},
		{"cert-wrong-block", func(r *api.Receipt) { r.Cert = strings.ReplaceAll(r.Cert, "CERTIFICATE", "PUBLIC KEY") }, "node certificate: not a PEM certificate"},
		{"cert-of-other-node", func(r *api.Receipt) { r.Cert = string(newNode(t, s).certPEM) }, "node id: receipt says"},
		{"node-id-of-other-node", func(r *api.Receipt) { r.NodeID = newNode(t, s).id }, "node id: receipt says"},
		{"node-id-missing", func(r *api.Receipt) { r.NodeID = "" }, "node id: 0 hex characters"},
		{"signature-not-base64", func(r *api.Receipt) { r.Signature = "!!" }, "signature is not base64"},
		{"signature-too-long", func(r *api.Receipt) { r.Signature = strings.Repeat("A", 260) }, "signature is 260 characters"},
		{"signature-empty", func(r *api.Receipt) { r.Signature = "" }, "signature does not verify"},
		{"signature-of-other-root", func(r *api.Receipt) {
			sig, _ := ecdsa.SignASN1(rand.Reader, n.key, leaf[:])
			r.Signature = base64.StdEncoding.EncodeToString(sig)
		}, "signature does not verify"},
		{"too-many-endorsements", func(r *api.Receipt) { r.ServiceEndorsements = make([]string, 65) }, "65 service endorsements"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := clone(good)
			tt.edit(r)
			err := Verify(r, s.Cert)
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("Verify = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidReceipt) {
				t.Errorf("Verify = %v, want an error wrapping ErrInvalidReceipt", err)
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Verify = %v, want %q", err, tt.wantErr)
			}
		})
	}

	if err := Verify(nil, s.Cert); !errors.Is(err, ErrInvalidReceipt) {
		t.Errorf("Verify(nil) = %v, want ErrInvalidReceipt", err)
	}
	if err := Verify(good, nil); err == nil || errors.Is(err, ErrInvalidReceipt) {
		t.Errorf("Verify(no service cert) = %v, want a non-receipt error", err)
	}
}

func TestParseCommitEvidence(t *testing.T) {
	secret := strings.Repeat("ab", 32)
	for _, tt := range []struct {
		in          string
		view, seqno uint64
		ok          bool
	}{
		{"ce:2.35:" + secret, 2, 35, true},
		{"ce:0.0:" + strings.ToUpper(secret), 0, 0, true},
		{"ce:18446744073709551615.18446744073709551615:" + secret, 1<<64 - 1, 1<<64 - 1, true},
		{"ce:18446744073709551616.1:" + secret, 0, 0, false},
		{"ce:2.035:" + secret, 0, 0, false},
		{"ce:+2.35:" + secret, 0, 0, false},
		{"ce:2.-35:" + secret, 0, 0, false},
		{"ce:2:" + secret, 0, 0, false},
		{"ce:.35:" + secret, 0, 0, false},
		{"ce:2.:" + secret, 0, 0, false},
		{"ce:2.35" + secret, 0, 0, false},
		{"ce:2.35:" + secret[:63], 0, 0, false},
		{"ce:2.35:" + secret + "0", 0, 0, false},
		{"ce:2.35:" + secret[:62] + "zz", 0, 0, false},
		{"ce:2.3.5:" + secret, 0, 0, false},
		{"ce:2.35:" + secret[:32] + ":" + secret[33:], 0, 0, false},
		{"xe:2.35:" + secret, 0, 0, false},
		{"", 0, 0, false},
	} {
		view, seqno, err := ParseCommitEvidence(tt.in)
		if (err == nil) != tt.ok || view != tt.view || seqno != tt.seqno {
			t.Errorf("ParseCommitEvidence(%q) = %d, %d, %v; want %d, %d, ok %v", tt.in, view, seqno, err, tt.view, tt.seqno, tt.ok)
		}
	}
}

func TestNew(t *testing.T) {
	parts := leafParts(7, [32]byte{1})
	proof := Proof{Left([32]byte{2}), Right([32]byte{3})}
	endorsements := []string{"E"}
	r := New([]byte("CERT"), "id", parts, proof, []byte{0xde, 0xad}, endorsements)
	proof[0].Left = "changed"
	endorsements[0] = "changed"
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"cert":"CERT","leafComponents":{"claimsDigest":"01` + strings.Repeat("00", 31) +
		`","commitEvidence":"` + parts.CommitEvidence +
		`","writeSetDigest":"` + hex.EncodeToString(parts.WriteSetDigest[:]) +
		`"},"nodeId":"id","proof":[{"left":"02` + strings.Repeat("00", 31) + `"},{"right":"03` + strings.Repeat("00", 31) +
		`"}],"serviceEndorsements":["E"],"signature":"3q0="}`
	if string(b) != want {
		t.Errorf("New = %s\nwant %s", b, want)
	}
	empty := New(nil, "", LeafParts{}, nil, nil, nil)
	if empty.Proof == nil || empty.ServiceEndorsements == nil {
		t.Error("New with nil proof and endorsements gave nil slices, want empty")
	}
}

// forEachMutation calls f with copies of r in which one byte of one field
// (decoded: DER for certificates, raw bytes for hex and base64) is changed,
// for every byte of every field, each flipped with every mask. Under stride
// s > 1, only every s-th byte of a certificate is changed.
func forEachMutation(t *testing.T, r *api.Receipt, masks []byte, stride int, f func(name string, m *api.Receipt)) {
	t.Helper()
	flipPEM := func(name, s string, set func(m *api.Receipt, v string)) {
		block, _ := pem.Decode([]byte(s))
		if block == nil {
			t.Fatalf("%s is not PEM", name)
		}
		for i := 0; i < len(block.Bytes); i += stride {
			for _, mask := range masks {
				der := append([]byte(nil), block.Bytes...)
				der[i] ^= mask
				m := clone(r)
				set(m, string(pem.EncodeToMemory(&pem.Block{Type: block.Type, Bytes: der})))
				f(name, m)
			}
		}
	}
	flipHex := func(name, s string, set func(m *api.Receipt, v string)) {
		b, err := hex.DecodeString(s)
		if err != nil || len(b) != 32 {
			t.Fatalf("%s is not 32 bytes of hex", name)
		}
		for i := range b {
			for _, mask := range masks {
				c := append([]byte(nil), b...)
				c[i] ^= mask
				m := clone(r)
				set(m, hex.EncodeToString(c))
				f(name, m)
			}
		}
	}

	flipPEM("cert", r.Cert, func(m *api.Receipt, v string) { m.Cert = v })
	flipHex("nodeId", r.NodeID, func(m *api.Receipt, v string) { m.NodeID = v })
	for j, p := range r.Proof {
		if p.Left != "" {
			flipHex("proof left", p.Left, func(m *api.Receipt, v string) { m.Proof[j].Left = v })
		} else {
			flipHex("proof right", p.Right, func(m *api.Receipt, v string) { m.Proof[j].Right = v })
		}
	}
	sig, err := base64.StdEncoding.DecodeString(r.Signature)
	if err != nil {
		t.Fatal(err)
	}
	for i := range sig {
		for _, mask := range masks {
			c := append([]byte(nil), sig...)
			c[i] ^= mask
			m := clone(r)
			m.Signature = base64.StdEncoding.EncodeToString(c)
			f("signature", m)
		}
	}
	lc := r.LeafComponents
	flipHex("writeSetDigest", lc.WriteSetDigest, func(m *api.Receipt, v string) { m.LeafComponents.WriteSetDigest = v })
	flipHex("claimsDigest", lc.ClaimsDigest, func(m *api.Receipt, v string) { m.LeafComponents.ClaimsDigest = v })
	for i := range len(lc.CommitEvidence) {
		for _, mask := range masks {
			c := []byte(lc.CommitEvidence)
			c[i] ^= mask
			m := clone(r)
			m.LeafComponents.CommitEvidence = string(c)
			f("commitEvidence", m)
		}
	}
	for j, e := range r.ServiceEndorsements {
		flipPEM("serviceEndorsement", e, func(m *api.Receipt, v string) { m.ServiceEndorsements[j] = v })
	}
}

func TestEveryByteMatters(t *testing.T) {
	type receiptCase struct {
		name    string
		r       *api.Receipt
		service *x509.Certificate
		stride  int
	}
	// P-384 has no assembly and is slow under the race detector: there and
	// under -short, bytes are flipped with one mask rather than two, and
	// generated receipts have only every 8th certificate byte changed.
	// Otherwise every byte of every field is.
	masks, p384Stride := []byte{0x01, 0x80}, 1
	if raceEnabled || testing.Short() {
		masks, p384Stride = []byte{0x01}, 8
	}
	var cases []receiptCase
	for i, v := range loadAzure(t) {
		cases = append(cases, receiptCase{"azure" + string(rune('1'+i)), &v.receipt, v.service, 1})
	}
	for _, g := range generatedReceipts(t) {
		cases = append(cases, receiptCase{g.name, g.receipt, g.service, p384Stride})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if err := Verify(c.r, c.service); err != nil {
				t.Fatalf("unchanged receipt: Verify = %v", err)
			}
			count := map[string]int{}
			forEachMutation(t, c.r, masks, c.stride, func(name string, m *api.Receipt) {
				count[name]++
				err := Verify(m, c.service)
				if err == nil {
					t.Errorf("%s mutation %d: Verify = nil, want error", name, count[name])
				} else if !errors.Is(err, ErrInvalidReceipt) {
					t.Errorf("%s mutation %d: Verify = %v, want ErrInvalidReceipt", name, count[name], err)
				}
			})
			t.Logf("mutations: %v", count)
		})
	}
}
