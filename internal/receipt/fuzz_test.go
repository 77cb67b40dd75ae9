package receipt

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"testing"

	"github.com/parleyhq/parley/api"
)

// FuzzReceiptJSON decodes arbitrary bytes as a receipt and verifies it
// against one of three service certificates. Nothing may panic, and a
// decoded receipt must survive an encode/decode round trip unchanged in
// both its encoding and its verdict.
func FuzzReceiptJSON(f *testing.F) {
	azure := loadAzure(f)
	gen := generatedReceipts(f)
	services := []*x509.Certificate{azure[0].service, azure[1].service, gen[0].service}
	f.Add([]byte(azure[0].Raw), uint8(0))
	f.Add([]byte(azure[1].Raw), uint8(1))
	for _, g := range gen {
		b, err := json.Marshal(g.receipt)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(2))
	}
	f.Add([]byte(`{"proof":[{"left":"00","right":"11"}],"leafComponents":{}}`), uint8(0))

	f.Fuzz(func(t *testing.T, data []byte, which uint8) {
		service := services[int(which)%len(services)]
		var r api.Receipt
		if err := json.Unmarshal(data, &r); err != nil {
			return
		}
		err1 := Verify(&r, service)
		enc1, err := json.Marshal(&r)
		if err != nil {
			t.Fatalf("Marshal of a decoded receipt: %v", err)
		}
		var r2 api.Receipt
		if err := json.Unmarshal(enc1, &r2); err != nil {
			t.Fatalf("Unmarshal(Marshal(r)): %v\n%s", err, enc1)
		}
		enc2, err := json.Marshal(&r2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc1, enc2) {
			t.Fatalf("round trip changed the encoding:\n%s\n%s", enc1, enc2)
		}
		if err2 := Verify(&r2, service); (err1 == nil) != (err2 == nil) {
			t.Fatalf("round trip changed the verdict: %v, then %v", err1, err2)
		}
	})
}

// FuzzClaimsDigest decodes arbitrary bytes as application claims and
// digests them. Nothing may panic, and replacing each LedgerEntry claim by
// its ClaimDigest form, computed naively, must not change the digest.
func FuzzClaimsDigest(f *testing.F) {
	b, err := json.Marshal(loadClaimsVectors(f)[0].ApplicationClaims)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	b, err = json.Marshal(loadClaimsVectors(f)[1].ApplicationClaims)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`[{"kind":"LedgerEntry","ledgerEntry":{"collectionId":"","contents":"","protocol":"LedgerEntryV1","secretKey":""}},{"kind":"ClaimDigest","digest":{"protocol":"LedgerEntryV1","value":"00"}}]`))

	f.Fuzz(func(t *testing.T, data []byte) {
		var claims []api.ApplicationClaim
		if err := json.Unmarshal(data, &claims); err != nil {
			return
		}
		got, err := ClaimsDigest(claims)
		if err != nil {
			return
		}
		digested := make([]api.ApplicationClaim, len(claims))
		for i, c := range claims {
			digested[i] = c
			if c.Kind != api.ClaimKindLedgerEntry {
				continue
			}
			key, err := decodeBase64(c.LedgerEntry.SecretKey)
			if err != nil {
				t.Fatalf("ClaimsDigest accepted secret key %q: %v", c.LedgerEntry.SecretKey, err)
			}
			d := naiveLedgerEntryV1(key, c.LedgerEntry.CollectionID, c.LedgerEntry.Contents)
			digested[i] = api.ApplicationClaim{
				Kind:   api.ClaimKindClaimDigest,
				Digest: &api.ClaimDigest{Protocol: c.LedgerEntry.Protocol, Value: hex.EncodeToString(d[:])},
			}
		}
		want, err := ClaimsDigest(digested)
		if err != nil {
			t.Fatalf("ClaimsDigest of the digested form: %v", err)
		}
		if got != want {
			t.Fatalf("ClaimsDigest = %x, digested form gives %x", got, want)
		}
	})
}
