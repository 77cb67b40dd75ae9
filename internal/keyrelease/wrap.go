package keyrelease

import (
	"crypto/ecdsa"
	"crypto/hpke"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/go-jose/go-jose/v4"
)

// Wrapping algorithms, the enc of a released key.
const (
	// EncRSAOAEP256 is RSA-OAEP with SHA-256 and MGF1-SHA-256 of the key
	// bytes, with label WrapInfo(name), to an RSA runtime key of 2048 bits
	// or more.
	EncRSAOAEP256 = "RSA-OAEP-256"
	// EncHPKEP256 is HPKE (RFC 9180) base mode, DHKEM(P-256,
	// HKDF-SHA256), HKDF-SHA256, AES-256-GCM, to an EC P-256 runtime key;
	// the ciphertext is enc ‖ ct, info is WrapInfo(name).
	EncHPKEP256 = "HPKE-P256-SHA256-A256GCM"
	// EncHPKEP384 is the same with DHKEM(P-384, HKDF-SHA384) and
	// HKDF-SHA384.
	EncHPKEP384 = "HPKE-P384-SHA384-A256GCM"
)

// MinRSABits is the smallest RSA runtime key released to.
const MinRSABits = 2048

// ErrNoRuntimeKey is returned by Release when the token's x-ms-runtime
// claim holds no usable public key.
var ErrNoRuntimeKey = errors.New("no usable runtime key in the token")

// WrapInfo is the HPKE info of a release of key name: it binds the
// ciphertext to the key's name.
func WrapInfo(name string) []byte { return []byte("parley key release v1\x00" + name) }

// runtimeKey picks the public key to wrap to from the x-ms-runtime claim:
// the key with kid when kid is set, the first usable one otherwise.
func runtimeKey(claims map[string]any, kid string) (*jose.JSONWebKey, error) {
	rt, ok := claims["x-ms-runtime"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: no x-ms-runtime claim", ErrNoRuntimeKey)
	}
	keys, ok := rt["keys"].([]any)
	if !ok {
		return nil, fmt.Errorf("%w: no x-ms-runtime.keys", ErrNoRuntimeKey)
	}
	for _, k := range keys {
		b, err := json.Marshal(k)
		if err != nil {
			continue
		}
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(b); err != nil || !jwk.IsPublic() || !jwk.Valid() {
			continue
		}
		if kid != "" && jwk.KeyID != kid {
			continue
		}
		if _, err := encFor(&jwk); err != nil {
			continue
		}
		return &jwk, nil
	}
	if kid != "" {
		return nil, fmt.Errorf("%w: none with kid %q", ErrNoRuntimeKey, truncate(kid, 64))
	}
	return nil, fmt.Errorf("%w: want RSA (2048 bits or more) or EC P-256/P-384", ErrNoRuntimeKey)
}

func encFor(jwk *jose.JSONWebKey) (string, error) {
	switch k := jwk.Key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < MinRSABits {
			return "", fmt.Errorf("RSA key of %d bits", k.N.BitLen())
		}
		return EncRSAOAEP256, nil
	case *ecdsa.PublicKey:
		switch k.Curve.Params().Name {
		case "P-256":
			return EncHPKEP256, nil
		case "P-384":
			return EncHPKEP384, nil
		}
	}
	return "", fmt.Errorf("unsupported key type")
}

// wrap encrypts secret to jwk, returning the enc and the ciphertext.
func wrap(jwk *jose.JSONWebKey, name string, secret []byte) (string, []byte, error) {
	enc, err := encFor(jwk)
	if err != nil {
		return "", nil, err
	}
	switch k := jwk.Key.(type) {
	case *rsa.PublicKey:
		ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, k, secret, WrapInfo(name))
		if err != nil {
			return "", nil, fmt.Errorf("wrap: %w", err)
		}
		return enc, ct, nil
	case *ecdsa.PublicKey:
		pub, err := k.ECDH()
		if err != nil {
			return "", nil, fmt.Errorf("wrap: %w", err)
		}
		hpk, err := hpke.NewDHKEMPublicKey(pub)
		if err != nil {
			return "", nil, fmt.Errorf("wrap: %w", err)
		}
		kdf := hpke.HKDFSHA256()
		if enc == EncHPKEP384 {
			kdf = hpke.HKDFSHA384()
		}
		ct, err := hpke.Seal(hpk, kdf, hpke.AES256GCM(), WrapInfo(name), secret)
		if err != nil {
			return "", nil, fmt.Errorf("wrap: %w", err)
		}
		return enc, ct, nil
	}
	return "", nil, fmt.Errorf("wrap: unsupported key")
}

// Unwrap decrypts a released key with the attested runtime private key
// (*rsa.PrivateKey or *ecdsa.PrivateKey): the inverse of the broker's
// wrapping, for holders of the private key.
func Unwrap(priv any, enc, name string, ciphertext []byte) ([]byte, error) {
	switch k := priv.(type) {
	case *rsa.PrivateKey:
		if enc != EncRSAOAEP256 {
			return nil, fmt.Errorf("unwrap: enc %q does not fit an RSA key", enc)
		}
		pt, err := rsa.DecryptOAEP(sha256.New(), nil, k, ciphertext, WrapInfo(name))
		if err != nil {
			return nil, fmt.Errorf("unwrap: %w", err)
		}
		return pt, nil
	case *ecdsa.PrivateKey:
		var kdf hpke.KDF
		switch enc {
		case EncHPKEP256:
			kdf = hpke.HKDFSHA256()
		case EncHPKEP384:
			kdf = hpke.HKDFSHA384()
		default:
			return nil, fmt.Errorf("unwrap: enc %q does not fit an EC key", enc)
		}
		ek, err := k.ECDH()
		if err != nil {
			return nil, fmt.Errorf("unwrap: %w", err)
		}
		hk, err := hpke.NewDHKEMPrivateKey(ek)
		if err != nil {
			return nil, fmt.Errorf("unwrap: %w", err)
		}
		pt, err := hpke.Open(hk, kdf, hpke.AES256GCM(), WrapInfo(name), ciphertext)
		if err != nil {
			return nil, fmt.Errorf("unwrap: %w", err)
		}
		return pt, nil
	}
	return nil, fmt.Errorf("unwrap: unsupported private key %T", priv)
}
