package receipt

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"

	"github.com/parleyhq/parley/api"
)

// MaxClaims is the most application claims [ClaimsDigest] accepts.
const MaxClaims = 1024

// ClaimsDigest returns the digest of a list of application claims, as ACL
// computes it:
//
//	digest = SHA-256(uint32_le(n) ‖ claim_1 ‖ … ‖ claim_n)
//
// where a LedgerEntry claim (protocol LedgerEntryV1, k = base64 secretKey)
// is
//
//	SHA-256("LedgerEntryV1" ‖ SHA-256(HMAC(k, collectionId) ‖ HMAC(k, contents)))
//
// and a ClaimDigest claim is SHA-256(protocol ‖ value as bytes). The list
// must not be empty: a transaction without claims has the zero claims
// digest instead.
func ClaimsDigest(claims []api.ApplicationClaim) ([32]byte, error) {
	var out [32]byte
	if len(claims) == 0 {
		return out, errors.New("claims digest: no application claims")
	}
	if len(claims) > MaxClaims {
		return out, fmt.Errorf("claims digest: %d application claims, at most %d allowed", len(claims), MaxClaims)
	}
	h := sha256.New()
	h.Write(binary.LittleEndian.AppendUint32(nil, uint32(len(claims))))
	for i, c := range claims {
		d, err := claimDigest(c)
		if err != nil {
			return out, fmt.Errorf("claims digest: claim %d: %w", i, err)
		}
		h.Write(d[:])
	}
	h.Sum(out[:0])
	return out, nil
}

func claimDigest(c api.ApplicationClaim) ([32]byte, error) {
	switch c.Kind {
	case api.ClaimKindLedgerEntry:
		e := c.LedgerEntry
		if e == nil {
			return [32]byte{}, errors.New("kind LedgerEntry without ledgerEntry")
		}
		if c.Digest != nil {
			return [32]byte{}, errors.New("kind LedgerEntry with a digest")
		}
		if e.Protocol != api.ProtocolLedgerEntryV1 {
			return [32]byte{}, fmt.Errorf("unknown protocol %q", e.Protocol)
		}
		key, err := base64.StdEncoding.Strict().DecodeString(e.SecretKey)
		if err != nil {
			return [32]byte{}, fmt.Errorf("secret key: %w", err)
		}
		d := ledgerEntryV1(key, e.CollectionID, e.Contents)
		return protocolDigest(e.Protocol, d[:]), nil
	case api.ClaimKindClaimDigest:
		d := c.Digest
		if d == nil {
			return [32]byte{}, errors.New("kind ClaimDigest without digest")
		}
		if c.LedgerEntry != nil {
			return [32]byte{}, errors.New("kind ClaimDigest with a ledgerEntry")
		}
		if d.Protocol != api.ProtocolLedgerEntryV1 {
			return [32]byte{}, fmt.Errorf("unknown protocol %q", d.Protocol)
		}
		v, err := parseDigest(d.Value)
		if err != nil {
			return [32]byte{}, fmt.Errorf("digest value: %w", err)
		}
		return protocolDigest(d.Protocol, v[:]), nil
	default:
		return [32]byte{}, fmt.Errorf("unknown kind %q", c.Kind)
	}
}

// ledgerEntryV1 is SHA-256(HMAC(k, collectionID) ‖ HMAC(k, contents)).
func ledgerEntryV1(key []byte, collectionID, contents string) [32]byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(collectionID))
	var b [64]byte
	m.Sum(b[:0])
	m.Reset()
	m.Write([]byte(contents))
	m.Sum(b[32:32])
	return sha256.Sum256(b[:])
}

func protocolDigest(protocol string, d []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(protocol))
	h.Write(d)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// LedgerEntryClaim returns the LedgerEntryV1 application claim of a ledger
// entry with the given per-entry secret key.
func LedgerEntryClaim(collectionID, contents string, secretKey []byte) api.ApplicationClaim {
	return api.ApplicationClaim{
		Kind: api.ClaimKindLedgerEntry,
		LedgerEntry: &api.LedgerEntryClaim{
			CollectionID: collectionID,
			Contents:     contents,
			Protocol:     api.ProtocolLedgerEntryV1,
			SecretKey:    base64.StdEncoding.EncodeToString(secretKey),
		},
	}
}

// VerifyTransactionReceipt verifies tr.Receipt with [Verify]. If tr has
// application claims, their [ClaimsDigest] must equal the receipt's claims
// digest; if tr names a transaction id, it must be the one in the commit
// evidence. Every failure wraps [ErrInvalidReceipt].
func VerifyTransactionReceipt(tr *api.TransactionReceipt, serviceCert *x509.Certificate) error {
	if tr == nil || tr.Receipt == nil {
		return invalidf("no receipt")
	}
	if err := Verify(tr.Receipt, serviceCert); err != nil {
		return err
	}
	lc := tr.Receipt.LeafComponents
	if tr.TransactionID != "" {
		view, seqno, _ := ParseCommitEvidence(lc.CommitEvidence) // checked by Verify
		if want := strconv.FormatUint(view, 10) + "." + strconv.FormatUint(seqno, 10); tr.TransactionID != want {
			return invalidf("transaction id %q does not match the commit evidence's %s", tr.TransactionID, want)
		}
	}
	if len(tr.ApplicationClaims) == 0 {
		return nil
	}
	got, err := ClaimsDigest(tr.ApplicationClaims)
	if err != nil {
		return invalidf("application claims: %w", err)
	}
	want, _ := parseDigest(lc.ClaimsDigest) // checked by Verify
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return invalidf("application claims digest %s does not match the receipt's claims digest %s", hex.EncodeToString(got[:]), lc.ClaimsDigest)
	}
	return nil
}
