package runner

import (
	"crypto/ecdh"
	"crypto/hpke"
	"fmt"
)

// Sealed is a job's CSV output sealed to one recipient with HPKE
// (RFC 9180, base mode): DHKEM(X25519 or P-256, HKDF-SHA256), HKDF-SHA256,
// AES-256-GCM, with info = "parley cleanroom result v1" ‖ the job context.
type Sealed struct {
	Recipient string
	// Ciphertext is the encapsulated key followed by the AEAD ciphertext.
	Ciphertext []byte
}

const infoPrefix = "parley cleanroom result v1"

func info(jobContext []byte) []byte {
	return append([]byte(infoPrefix), jobContext...)
}

func seal(r Recipient, jobContext, plaintext []byte) (Sealed, error) {
	pk, err := hpke.NewDHKEMPublicKey(r.Key)
	if err != nil {
		return Sealed{}, fmt.Errorf("recipient key: %w", err)
	}
	ct, err := hpke.Seal(pk, hpke.HKDFSHA256(), hpke.AES256GCM(), info(jobContext), plaintext)
	if err != nil {
		return Sealed{}, fmt.Errorf("hpke seal: %w", err)
	}
	return Sealed{Recipient: r.ID, Ciphertext: ct}, nil
}

// Open decrypts a sealed result with the recipient's private key and the
// job context it was sealed under, returning the CSV output.
func Open(key *ecdh.PrivateKey, jobContext, ciphertext []byte) ([]byte, error) {
	sk, err := hpke.NewDHKEMPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("recipient key: %w", err)
	}
	pt, err := hpke.Open(sk, hpke.HKDFSHA256(), hpke.AES256GCM(), info(jobContext), ciphertext)
	if err != nil {
		return nil, fmt.Errorf("hpke open: %w", err)
	}
	return pt, nil
}
