// Package node assembles one Parley node from its data directory: the
// service and node identities, the sealed ledger secret, and the ledger
// engine over DIR/ledger.
//
// # Where the secrets live without a TEE
//
// In CCF the ledger secret and the service key never leave the enclave. With
// no TEE (every platform Parley runs on today, and the `virtual` platform),
// Parley seals them with AES-256-GCM under a random key kept in
// DIR/sealing.key, mode 0600. That protects against a copy of the ledger
// files alone, and against nothing else: anyone who can read the data
// directory can decrypt the ledger. Parley logs a warning saying so at every
// start. A TEE platform replaces the sealing key with one derived by the
// hardware.
package node

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/parleyhq/parley/internal/identity"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/vfs"
)

// File names inside a node's data directory.
const (
	ServiceCertFile  = "service_cert.pem"
	serviceKeyFile   = "service_privk.sealed"
	NodeCertFile     = "node_cert.pem"
	nodeKeyFile      = "node_privk.sealed"
	ledgerSecretFile = "ledger_secret.sealed"
	// ledgerSecretsFile holds, sealed, the ledger secrets by first seqno
	// of a node that joined a service (JSON []SecretEpoch).
	ledgerSecretsFile = "ledger_secrets.sealed"
	sealingKeyFile    = "sealing.key"
	// JoinFile records, for a node that joined a service, its raft id and
	// the service's initial voters (public, not sealed).
	JoinFile = "join.json"
	// LedgerDir is the ledger's directory inside the data directory.
	LedgerDir = "ledger"
)

// ErrNotInitialized is returned by Load for a directory without a node.
var ErrNotInitialized = errors.New("data directory holds no node")

// Identity is what a node keeps in its data directory.
type Identity struct {
	Service     *identity.Service // the service key pair shared by trusted nodes
	NodeKey     *ecdsa.PrivateKey
	NodeCertPEM []byte
	Secret      *ledger.Secret
	// Epochs, for a node that joined a service, are the service's ledger
	// secrets by first seqno as it received them (Secret is the last);
	// nil for a node that started its service (Secret seals from seqno 1).
	Epochs []Epoch
}

// Epoch is a ledger secret and the first seqno it seals.
type Epoch struct {
	From   uint64
	Secret *ledger.Secret
}

// SecretEpoch is a raw ledger secret and the first seqno it seals, as a
// joining node receives and keeps it.
type SecretEpoch struct {
	From   uint64 `json:"from"`
	Secret []byte `json:"secret"`
}

// LedgerSecret returns a copy of the raw ledger secret (Secret's); the
// caller clears it after use.
func (id *Identity) LedgerSecret() []byte { return id.Secret.Raw() }

// InitOptions configures a new service's first node.
type InitOptions struct {
	// SANs are the host names and IP addresses the node's certificate covers.
	SANs []string
	// Validity of the certificates; one year when zero.
	Validity time.Duration
	// Service, when set, is an existing service identity that endorses
	// this node instead of a new one, and LedgerSecret (SecretSize bytes)
	// the service's ledger secret. Both are for the development bootstrap
	// of a static cluster (parley node init-cluster), which hands every
	// node the same secrets out of band; the attested join protocol is
	// the way to do this in production.
	Service      *identity.Service
	LedgerSecret []byte
}

// Init creates a new service identity, node identity and ledger secret in
// dir, durably. It refuses a directory that already holds a node.
func Init(fsys vfs.FS, dir string, opts InitOptions) (*Identity, error) {
	if _, err := fsys.ReadFile(filepath.Join(dir, ServiceCertFile)); err == nil {
		return nil, fmt.Errorf("init %s: already holds a node", dir)
	}
	if opts.Validity == 0 {
		opts.Validity = 365 * 24 * time.Hour
	}
	if err := vfs.MkdirAllDurable(fsys, dir, 0o700); err != nil {
		return nil, fmt.Errorf("init %s: %w", dir, err)
	}
	if (opts.Service == nil) != (opts.LedgerSecret == nil) {
		return nil, errors.New("init: Service and LedgerSecret go together")
	}
	svc := opts.Service
	if svc == nil {
		var err error
		if svc, err = identity.NewService("Parley Service", opts.Validity); err != nil {
			return nil, fmt.Errorf("init: %w", err)
		}
	}
	nodeKey, err := ecdsa.GenerateKey(svc.Key.Curve, rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("init: node key: %w", err)
	}
	nodeDER, err := svc.EndorseNode(&nodeKey.PublicKey, opts.SANs, opts.Validity)
	if err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	secret := make([]byte, ledger.SecretSize)
	if opts.LedgerSecret != nil {
		if len(opts.LedgerSecret) != ledger.SecretSize {
			return nil, fmt.Errorf("init: ledger secret of %d bytes, want %d", len(opts.LedgerSecret), ledger.SecretSize)
		}
		copy(secret, opts.LedgerSecret)
	} else if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("init: ledger secret: %w", err)
	}
	defer clear(secret)
	if err := writeNode(fsys, dir, svc, nodeKey, identity.EncodeCertPEM(nodeDER), secret, nil, nil); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	return Load(fsys, dir)
}

// writeNode seals and writes a node's files into dir, durably. The service
// certificate goes last: its presence marks a complete node.
func writeNode(fsys vfs.FS, dir string, svc *identity.Service, nodeKey *ecdsa.PrivateKey, nodeCertPEM, secret, secretsJSON, joinJSON []byte) error {
	sealKey := make([]byte, 32)
	if _, err := rand.Read(sealKey); err != nil {
		return fmt.Errorf("sealing key: %w", err)
	}
	svcKeyPEM, err := identity.EncodeKeyPEM(svc.Key)
	if err != nil {
		return err
	}
	nodeKeyPEM, err := identity.EncodeKeyPEM(nodeKey)
	if err != nil {
		return err
	}
	sealedSecret, err := seal(sealKey, secret, ledgerSecretFile)
	if err != nil {
		return err
	}
	sealedSvc, err := seal(sealKey, svcKeyPEM, serviceKeyFile)
	if err != nil {
		return err
	}
	sealedNode, err := seal(sealKey, nodeKeyPEM, nodeKeyFile)
	if err != nil {
		return err
	}
	type file struct {
		name string
		data []byte
		perm fs.FileMode
	}
	files := []file{
		{sealingKeyFile, sealKey, 0o600},
		{ledgerSecretFile, sealedSecret, 0o600},
		{serviceKeyFile, sealedSvc, 0o600},
		{nodeKeyFile, sealedNode, 0o600},
		{NodeCertFile, nodeCertPEM, 0o644},
	}
	if secretsJSON != nil {
		sealedSecrets, err := seal(sealKey, secretsJSON, ledgerSecretsFile)
		if err != nil {
			return err
		}
		files = append(files, file{ledgerSecretsFile, sealedSecrets, 0o600})
	}
	if joinJSON != nil {
		files = append(files, file{JoinFile, joinJSON, 0o644})
	}
	files = append(files, file{ServiceCertFile, identity.EncodeCertPEM(svc.CertDER), 0o644})
	for _, f := range files {
		if err := vfs.WriteFileDurable(fsys, filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	return nil
}

// JoinInfo is what a node that joined a service keeps of its admission
// (DIR/join.json): the raft id the primary gave it, the service's
// initial voters (the raft membership before the first ledger entry), and
// the nodes it was told of, to reach before it has read them from the
// ledger.
type JoinInfo struct {
	RaftID uint64     `json:"raftId"`
	Voters []uint64   `json:"voters"`
	Peers  []JoinPeer `json:"peers"`
}

// JoinPeer is a node of the service as a joining node first learns it.
type JoinPeer struct {
	RaftID  uint64 `json:"raftId"`
	NodeID  string `json:"nodeId"`
	Address string `json:"address"`
}

// Joined is what a node receives when it is admitted to a service.
type Joined struct {
	// NodeKey is the key the node made and joined with.
	NodeKey *ecdsa.PrivateKey
	// NodeCertPEM is its certificate, endorsed by the service key.
	NodeCertPEM []byte
	// ServiceCertPEM and ServiceKeyPEM are the service identity.
	ServiceCertPEM, ServiceKeyPEM []byte
	// LedgerSecrets are the service's ledger secrets by first seqno,
	// ascending (ledger.SecretSize bytes each); the last is the current one.
	LedgerSecrets []SecretEpoch
	Info          JoinInfo
}

// InitJoined writes, durably and sealed, the data directory of a node that
// was admitted to a service. It refuses a directory that already holds a
// node.
func InitJoined(fsys vfs.FS, dir string, j Joined) (*Identity, error) {
	if Exists(fsys, dir) {
		return nil, fmt.Errorf("init joined node %s: already holds a node", dir)
	}
	svc, err := identity.LoadService(j.ServiceCertPEM, j.ServiceKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("init joined node: service identity: %w", err)
	}
	cert, err := identity.ParseCertPEM(j.NodeCertPEM)
	if err != nil {
		return nil, fmt.Errorf("init joined node: node certificate: %w", err)
	}
	if j.NodeKey == nil || !j.NodeKey.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("init joined node: the certificate does not hold the node key")
	}
	if err := cert.CheckSignatureFrom(svc.Cert); err != nil {
		return nil, fmt.Errorf("init joined node: the certificate is not endorsed by the service: %w", err)
	}
	if err := checkEpochs(j.LedgerSecrets); err != nil {
		return nil, fmt.Errorf("init joined node: %w", err)
	}
	secretsJSON, err := json.Marshal(j.LedgerSecrets)
	if err != nil {
		return nil, fmt.Errorf("init joined node: %w", err)
	}
	defer clear(secretsJSON)
	if j.Info.RaftID == 0 || len(j.Info.Voters) == 0 {
		return nil, errors.New("init joined node: raft id and voters are required")
	}
	info, err := json.MarshalIndent(j.Info, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("init joined node: %w", err)
	}
	if err := vfs.MkdirAllDurable(fsys, dir, 0o700); err != nil {
		return nil, fmt.Errorf("init joined node %s: %w", dir, err)
	}
	latest := j.LedgerSecrets[len(j.LedgerSecrets)-1].Secret
	if err := writeNode(fsys, dir, svc, j.NodeKey, j.NodeCertPEM, latest, secretsJSON, append(info, '\n')); err != nil {
		return nil, fmt.Errorf("init joined node: %w", err)
	}
	return Load(fsys, dir)
}

// LoadJoinInfo reads DIR/join.json; ok is false for a node that did not
// join (it started its service).
func LoadJoinInfo(fsys vfs.FS, dir string) (info JoinInfo, ok bool, err error) {
	b, err := fsys.ReadFile(filepath.Join(dir, JoinFile))
	if errors.Is(err, fs.ErrNotExist) {
		return JoinInfo{}, false, nil
	}
	if err != nil {
		return JoinInfo{}, false, fmt.Errorf("load %s: %w", JoinFile, err)
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return JoinInfo{}, false, fmt.Errorf("load %s: %w", JoinFile, err)
	}
	if info.RaftID == 0 || len(info.Voters) == 0 {
		return JoinInfo{}, false, fmt.Errorf("load %s: raft id and voters are required", JoinFile)
	}
	return info, true, nil
}

// Load reads the identity of the node in dir.
func Load(fsys vfs.FS, dir string) (*Identity, error) {
	read := func(name string) ([]byte, error) {
		b, err := fsys.ReadFile(filepath.Join(dir, name))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && name == ServiceCertFile {
				return nil, fmt.Errorf("load %s: %w", dir, ErrNotInitialized)
			}
			return nil, fmt.Errorf("load %s: %w", name, err)
		}
		return b, nil
	}
	svcCert, err := read(ServiceCertFile)
	if err != nil {
		return nil, err
	}
	sealKey, err := read(sealingKeyFile)
	if err != nil {
		return nil, err
	}
	if len(sealKey) != 32 {
		return nil, fmt.Errorf("load %s: %d bytes, want 32", sealingKeyFile, len(sealKey))
	}
	unseal := func(name string) ([]byte, error) {
		b, err := read(name)
		if err != nil {
			return nil, err
		}
		return open(sealKey, b, name)
	}
	svcKeyPEM, err := unseal(serviceKeyFile)
	if err != nil {
		return nil, err
	}
	svc, err := identity.LoadService(svcCert, svcKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("load service identity: %w", err)
	}
	nodeKeyPEM, err := unseal(nodeKeyFile)
	if err != nil {
		return nil, err
	}
	nodeKey, err := identity.ParseKeyPEM(nodeKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("load node key: %w", err)
	}
	nodeCert, err := read(NodeCertFile)
	if err != nil {
		return nil, err
	}
	raw, err := unseal(ledgerSecretFile)
	if err != nil {
		return nil, err
	}
	secret, err := ledger.NewSecret(raw) // keeps its own copy
	clear(raw)
	if err != nil {
		return nil, fmt.Errorf("load ledger secret: %w", err)
	}
	id := &Identity{Service: svc, NodeKey: nodeKey, NodeCertPEM: nodeCert, Secret: secret}
	if id.Epochs, err = loadEpochs(fsys, dir, sealKey); err != nil {
		return nil, err
	}
	return id, nil
}

// checkEpochs checks a joining node's ledger secrets: at least one, each
// of the right size, first seqnos ascending from 1 or later.
func checkEpochs(eps []SecretEpoch) error {
	if len(eps) == 0 {
		return errors.New("no ledger secret")
	}
	for i, ep := range eps {
		if len(ep.Secret) != ledger.SecretSize {
			return fmt.Errorf("ledger secret %d of %d bytes, want %d", i, len(ep.Secret), ledger.SecretSize)
		}
		if ep.From == 0 || (i > 0 && ep.From <= eps[i-1].From) {
			return fmt.Errorf("ledger secret %d: first seqnos must ascend from 1", i)
		}
	}
	return nil
}

// loadEpochs reads a joined node's ledger secrets, nil if it has none.
func loadEpochs(fsys vfs.FS, dir string, sealKey []byte) ([]Epoch, error) {
	b, err := fsys.ReadFile(filepath.Join(dir, ledgerSecretsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", ledgerSecretsFile, err)
	}
	plain, err := open(sealKey, b, ledgerSecretsFile)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	var raw []SecretEpoch
	if err := json.Unmarshal(plain, &raw); err != nil {
		return nil, fmt.Errorf("load %s: %w", ledgerSecretsFile, err)
	}
	defer func() {
		for _, ep := range raw {
			clear(ep.Secret)
		}
	}()
	if err := checkEpochs(raw); err != nil {
		return nil, fmt.Errorf("load %s: %w", ledgerSecretsFile, err)
	}
	eps := make([]Epoch, len(raw))
	for i, ep := range raw {
		sec, err := ledger.NewSecret(ep.Secret)
		if err != nil {
			return nil, fmt.Errorf("load %s: %w", ledgerSecretsFile, err)
		}
		eps[i] = Epoch{From: ep.From, Secret: sec}
	}
	return eps, nil
}

// WarnNoTEE logs, loudly, where the secrets are.
func WarnNoTEE(logger *slog.Logger, dir string) {
	logger.Warn("NO TEE: the ledger secret and the service and node keys are sealed to a key file in the data directory; anyone who can read it can decrypt the ledger. For development only.",
		slog.String("sealing_key", filepath.Join(dir, sealingKeyFile)))
}

func seal(key, plaintext []byte, label string) ([]byte, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal %s: %w", label, err)
	}
	return aead.Seal(nonce, nonce, plaintext, []byte("parley sealed v1 "+label)), nil
}

func open(key, sealed []byte, label string) ([]byte, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	if len(sealed) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("unseal %s: too short", label)
	}
	n := aead.NonceSize()
	plain, err := aead.Open(nil, sealed[:n], sealed[n:], []byte("parley sealed v1 "+label))
	if err != nil {
		return nil, fmt.Errorf("unseal %s: does not authenticate under %s", label, sealingKeyFile)
	}
	return plain, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("sealing key: %w", err)
	}
	return cipher.NewGCM(block)
}

// Exists reports whether dir holds a node.
func Exists(fsys vfs.FS, dir string) bool {
	_, err := fsys.ReadFile(filepath.Join(dir, ServiceCertFile))
	return err == nil
}
