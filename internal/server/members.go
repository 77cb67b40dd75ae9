package server

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"path/filepath"

	"github.com/parleyhq/parley/internal/vfs"
)

// MaxMembers bounds Config.Members.
const MaxMembers = 64

// encryptionKeyBits is the size of the RSA encryption keys made for
// members, as CCF's sandbox makes them.
const encryptionKeyBits = 2048

// MemberFiles names member i's files in a data directory, as CCF's sandbox
// names them: member<i>_cert.pem, member<i>_privk.pem (signing key),
// member<i>_enc_privk.pem and member<i>_enc_pubk.pem (encryption key pair
// for recovery shares).
func MemberFiles(dir string, i int) (cert, key, encKey, encPub string) {
	p := filepath.Join(dir, fmt.Sprintf("member%d", i))
	return p + "_cert.pem", p + "_privk.pem", p + "_enc_privk.pem", p + "_enc_pubk.pem"
}

// ensureEncryptionKey returns the PEM public key of the RSA key pair in
// privPath, making and writing a new pair first if privPath does not
// exist. The private key is written before the public one.
func ensureEncryptionKey(fsys vfs.FS, privPath, pubPath string) (string, error) {
	var key *rsa.PrivateKey
	if b, err := fsys.ReadFile(privPath); err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil {
			return "", fmt.Errorf("%s: no PEM block", privPath)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return "", fmt.Errorf("%s: %w", privPath, err)
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return "", fmt.Errorf("%s: not an RSA key", privPath)
		}
		key = rk
	} else {
		k, err := rsa.GenerateKey(rand.Reader, encryptionKeyBits)
		if err != nil {
			return "", fmt.Errorf("encryption key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return "", fmt.Errorf("encryption key: %w", err)
		}
		if err := vfs.WriteFileDurable(fsys, privPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return "", fmt.Errorf("write %s: %w", privPath, err)
		}
		key = k
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return "", fmt.Errorf("encryption public key: %w", err)
	}
	pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	if err := vfs.WriteFileDurable(fsys, pubPath, pub, 0o644); err != nil {
		return "", fmt.Errorf("write %s: %w", pubPath, err)
	}
	return string(pub), nil
}
