package receipt

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/parleyhq/parley/api"
)

type claimsVector struct {
	ApplicationClaims []api.ApplicationClaim `json:"applicationClaims"`
	ClaimsDigest      string                 `json:"claimsDigest"`
}

func loadClaimsVectors(t testing.TB) []claimsVector {
	t.Helper()
	b, err := os.ReadFile("testdata/claims-digests.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ Vectors []claimsVector }
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Vectors) == 0 {
		t.Fatal("no claims vectors")
	}
	return f.Vectors
}

func TestClaimsDigestVectors(t *testing.T) {
	for i, v := range loadClaimsVectors(t) {
		got, err := ClaimsDigest(v.ApplicationClaims)
		if err != nil {
			t.Errorf("vector %d: ClaimsDigest: %v", i, err)
			continue
		}
		if hex.EncodeToString(got[:]) != v.ClaimsDigest {
			t.Errorf("vector %d: ClaimsDigest = %x, want %s", i, got, v.ClaimsDigest)
		}
	}
}

func TestLedgerEntryClaim(t *testing.T) {
	key, _ := base64.StdEncoding.DecodeString("Jde/VvaIfyrjQ/B19P+UJCBwmcrgN7sERStoyHnYO0M=")
	c := LedgerEntryClaim("subledger:0", "Hello world", key)
	want := loadClaimsVectors(t)[0].ApplicationClaims[0]
	if c.Kind != want.Kind || *c.LedgerEntry != *want.LedgerEntry || c.Digest != nil {
		t.Errorf("LedgerEntryClaim = %+v %+v, want %+v %+v", c, c.LedgerEntry, want, want.LedgerEntry)
	}
}

func TestClaimsDigestMany(t *testing.T) {
	// Two claims: the count prefix is 2 and both claim digests follow.
	key := []byte("k")
	a, b := LedgerEntryClaim("c", "x", key), LedgerEntryClaim("c", "y", key)
	got, err := ClaimsDigest([]api.ApplicationClaim{a, b})
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	h.Write([]byte{2, 0, 0, 0})
	for _, c := range []api.ApplicationClaim{a, b} {
		d := naiveLedgerEntryV1(key, c.LedgerEntry.CollectionID, c.LedgerEntry.Contents)
		claim := sha256.Sum256(append([]byte("LedgerEntryV1"), d[:]...))
		h.Write(claim[:])
	}
	if want := h.Sum(nil); hex.EncodeToString(got[:]) != hex.EncodeToString(want) {
		t.Errorf("ClaimsDigest = %x, want %x", got, want)
	}
}

func TestClaimsDigestErrors(t *testing.T) {
	okEntry := func() *api.LedgerEntryClaim {
		return &api.LedgerEntryClaim{CollectionID: "c", Contents: "x", Protocol: api.ProtocolLedgerEntryV1, SecretKey: "AAAA"}
	}
	okDigest := func() *api.ClaimDigest {
		return &api.ClaimDigest{Protocol: api.ProtocolLedgerEntryV1, Value: strings.Repeat("00", 32)}
	}
	for _, tt := range []struct {
		name    string
		claims  []api.ApplicationClaim
		wantErr string
	}{
		{"none", nil, "no application claims"},
		{"too-many", make([]api.ApplicationClaim, MaxClaims+1), "1025 application claims"},
		{"unknown-kind", []api.ApplicationClaim{{Kind: "Other"}}, `claim 0: unknown kind "Other"`},
		{"entry-missing", []api.ApplicationClaim{{Kind: api.ClaimKindLedgerEntry}}, "without ledgerEntry"},
		{"digest-missing", []api.ApplicationClaim{{Kind: api.ClaimKindClaimDigest}}, "without digest"},
		{"entry-with-digest", []api.ApplicationClaim{{Kind: api.ClaimKindLedgerEntry, LedgerEntry: okEntry(), Digest: okDigest()}}, "with a digest"},
		{"digest-with-entry", []api.ApplicationClaim{{Kind: api.ClaimKindClaimDigest, LedgerEntry: okEntry(), Digest: okDigest()}}, "with a ledgerEntry"},
		{"entry-protocol", []api.ApplicationClaim{{Kind: api.ClaimKindLedgerEntry, LedgerEntry: &api.LedgerEntryClaim{Protocol: "LedgerEntryV2"}}}, `unknown protocol "LedgerEntryV2"`},
		{"digest-protocol", []api.ApplicationClaim{{Kind: api.ClaimKindClaimDigest, Digest: &api.ClaimDigest{Protocol: ""}}}, `unknown protocol ""`},
		{"bad-secret", []api.ApplicationClaim{{Kind: api.ClaimKindLedgerEntry, LedgerEntry: &api.LedgerEntryClaim{Protocol: api.ProtocolLedgerEntryV1, SecretKey: "!"}}}, "secret key"},
		{"short-value", []api.ApplicationClaim{{Kind: api.ClaimKindClaimDigest, Digest: &api.ClaimDigest{Protocol: api.ProtocolLedgerEntryV1, Value: "00"}}}, "digest value: 2 hex characters"},
		{"second-bad", []api.ApplicationClaim{{Kind: api.ClaimKindClaimDigest, Digest: okDigest()}, {Kind: "x"}}, "claim 1:"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ClaimsDigest(tt.claims)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ClaimsDigest = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestVerifyTransactionReceipt(t *testing.T) {
	s := newService(t)
	n := newNode(t, s)
	claim := LedgerEntryClaim("subledger:0", "Hello world", []byte("0123456789abcdef0123456789abcdef"))
	digest, err := ClaimsDigest([]api.ApplicationClaim{claim})
	if err != nil {
		t.Fatal(err)
	}
	r := signedReceipt(t, n, 6, 3, digest, nil) // transaction 3.4
	azure := loadAzure(t)

	for _, tt := range []struct {
		name    string
		tr      *api.TransactionReceipt
		service *x509.Certificate // nil for s.Cert
		wantErr string
	}{
		{"claims", &api.TransactionReceipt{ApplicationClaims: []api.ApplicationClaim{claim}, Receipt: r, State: api.StateReady, TransactionID: "3.4"}, nil, ""},
		{"no-claims-no-id", &api.TransactionReceipt{Receipt: r}, nil, ""},
		{"azure", &api.TransactionReceipt{Receipt: &azure[0].receipt, State: api.StateReady, TransactionID: "2.35"}, azure[0].service, ""},
		{"wrong-contents", &api.TransactionReceipt{ApplicationClaims: []api.ApplicationClaim{LedgerEntryClaim("subledger:0", "Hello world!", []byte("0123456789abcdef0123456789abcdef"))}, Receipt: r, TransactionID: "3.4"}, nil, "does not match the receipt's claims digest"},
		{"bad-claim", &api.TransactionReceipt{ApplicationClaims: []api.ApplicationClaim{{Kind: "x"}}, Receipt: r}, nil, `application claims: claims digest: claim 0: unknown kind "x"`},
		{"wrong-id", &api.TransactionReceipt{Receipt: r, TransactionID: "3.5"}, nil, `transaction id "3.5" does not match the commit evidence's 3.4`},
		{"no-receipt", &api.TransactionReceipt{State: api.StateLoading, TransactionID: "3.4"}, nil, "no receipt"},
		{"nil", nil, nil, "no receipt"},
		{"bad-receipt", &api.TransactionReceipt{Receipt: &azure[1].receipt}, nil, "not endorsed by the service certificate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			service := s.Cert
			if tt.service != nil {
				service = tt.service
			}
			err := VerifyTransactionReceipt(tt.tr, service)
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("VerifyTransactionReceipt = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidReceipt) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("VerifyTransactionReceipt = %v, want %q wrapping ErrInvalidReceipt", err, tt.wantErr)
			}
		})
	}
}
