package node

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/identity"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/ledgertest/lazyfs"
	"github.com/parleyhq/parley/internal/vfs"
)

func TestInitLoad(t *testing.T) {
	dir := t.TempDir()
	id, err := Init(vfs.OS{}, dir, InitOptions{SANs: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	again, err := Load(vfs.OS{}, dir)
	if err != nil {
		t.Fatal(err)
	}
	if !again.NodeKey.Equal(id.NodeKey) || !again.Service.Key.Equal(id.Service.Key) || !bytes.Equal(again.NodeCertPEM, id.NodeCertPEM) {
		t.Errorf("Load returned another identity than Init created")
	}
	node, err := identity.ParseCertPEM(id.NodeCertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := node.CheckSignatureFrom(id.Service.Cert); err != nil {
		t.Errorf("node certificate not endorsed by the service: %v", err)
	}
	if _, err := Init(vfs.OS{}, dir, InitOptions{}); err == nil {
		t.Errorf("Init over an existing node succeeded")
	}
	// No private key is in the clear on disk.
	keyPEM, _ := identity.EncodeKeyPEM(id.NodeKey)
	svcPEM, _ := identity.EncodeKeyPEM(id.Service.Key)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		if bytes.Contains(b, keyPEM) || bytes.Contains(b, svcPEM) || bytes.Contains(b, []byte("PRIVATE KEY")) {
			t.Errorf("%s holds a private key in the clear", e.Name())
		}
	}
}

func TestLoadRefusesTamperedSeal(t *testing.T) {
	dir := t.TempDir()
	if _, err := Init(vfs.OS{}, dir, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, ledgerSecretFile)
	b, _ := os.ReadFile(p)
	b[len(b)-1] ^= 1
	os.WriteFile(p, b, 0o600)
	if _, err := Load(vfs.OS{}, dir); err == nil {
		t.Errorf("Load with a tampered sealed ledger secret succeeded")
	}
}

func TestLoadEmptyDir(t *testing.T) {
	if _, err := Load(vfs.OS{}, t.TempDir()); !errors.Is(err, ErrNotInitialized) {
		t.Errorf("Load of an empty directory: err = %v, want ErrNotInitialized", err)
	}
}

// TestInitDurable cuts power right after Init returns: the node survives.
func TestInitDurable(t *testing.T) {
	fsys := lazyfs.New()
	id, err := Init(fsys, "/data/node", InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fsys.Crash()
	again, err := Load(fsys, "/data/node")
	if err != nil {
		t.Fatalf("after a power cut: %v", err)
	}
	if !again.NodeKey.Equal(id.NodeKey) {
		t.Errorf("node key changed across the power cut")
	}
}

func TestLedgerSecret(t *testing.T) {
	dir := t.TempDir()
	id, err := Init(vfs.OS{}, dir, InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	again, err := Load(vfs.OS{}, dir)
	if err != nil {
		t.Fatal(err)
	}
	raw := id.LedgerSecret()
	if len(raw) != 32 || bytes.Equal(raw, make([]byte, 32)) {
		t.Fatalf("LedgerSecret() = %d bytes %x, want 32 random bytes", len(raw), raw)
	}
	if !bytes.Equal(again.LedgerSecret(), raw) {
		t.Errorf("LedgerSecret differs across Load")
	}
	clear(raw)
	if bytes.Equal(id.LedgerSecret(), raw) {
		t.Errorf("clearing the returned copy cleared the identity's secret")
	}
	// The derived secret is the one the raw bytes give.
	want, err := ledger.NewSecret(id.LedgerSecret())
	if err != nil {
		t.Fatal(err)
	}
	id0 := ledger.TxID{View: 2, Seqno: 5}
	if got, want := id.Secret.CommitEvidence(id0), want.CommitEvidence(id0); got != want {
		t.Errorf("Identity.Secret commit evidence %s, want %s (from LedgerSecret)", got, want)
	}
}

// TestInitSharedService creates two nodes of one service: same service key
// and ledger secret, different node keys, both endorsed by the service.
func TestInitSharedService(t *testing.T) {
	svc, err := identity.NewService("Parley Service", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	secret := bytes.Repeat([]byte{7}, ledger.SecretSize)
	a, err := Init(vfs.OS{}, t.TempDir(), InitOptions{SANs: []string{"127.0.0.1"}, Service: svc, LedgerSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Init(vfs.OS{}, t.TempDir(), InitOptions{SANs: []string{"127.0.0.1"}, Service: svc, LedgerSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	if !a.Service.Key.Equal(svc.Key) || !b.Service.Key.Equal(svc.Key) {
		t.Errorf("nodes do not hold the given service key")
	}
	if !bytes.Equal(a.LedgerSecret(), secret) || !bytes.Equal(b.LedgerSecret(), secret) {
		t.Errorf("nodes do not hold the given ledger secret")
	}
	if a.NodeKey.Equal(b.NodeKey) {
		t.Errorf("two nodes got the same node key")
	}
	for _, id := range []*Identity{a, b} {
		c, err := identity.ParseCertPEM(id.NodeCertPEM)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.CheckSignatureFrom(svc.Cert); err != nil {
			t.Errorf("node certificate not endorsed by the shared service: %v", err)
		}
	}
	if _, err := Init(vfs.OS{}, t.TempDir(), InitOptions{Service: svc}); err == nil {
		t.Errorf("Init with a service but no ledger secret succeeded")
	}
	if _, err := Init(vfs.OS{}, t.TempDir(), InitOptions{Service: svc, LedgerSecret: []byte{1}}); err == nil {
		t.Errorf("Init with a short ledger secret succeeded")
	}
}

func TestInitJoined(t *testing.T) {
	svc, err := identity.NewService("Parley Service", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := identity.NewService("Other", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	svcKeyPEM, err := identity.EncodeKeyPEM(svc.Key)
	if err != nil {
		t.Fatal(err)
	}
	_, nodeKey, err := identity.NewClientCert("n", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	endorse := func(s *identity.Service) []byte {
		der, err := s.EndorseNode(&nodeKey.PublicKey, []string{"127.0.0.1"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return identity.EncodeCertPEM(der)
	}
	secret := bytes.Repeat([]byte{7}, ledger.SecretSize)
	older := bytes.Repeat([]byte{6}, ledger.SecretSize)
	good := Joined{
		NodeKey: nodeKey, NodeCertPEM: endorse(svc),
		ServiceCertPEM: identity.EncodeCertPEM(svc.CertDER), ServiceKeyPEM: svcKeyPEM,
		LedgerSecrets: []SecretEpoch{{From: 1, Secret: older}, {From: 40, Secret: secret}},
		Info:          JoinInfo{RaftID: 2, Voters: []uint64{1}, Peers: []JoinPeer{{RaftID: 1, NodeID: "x", Address: "127.0.0.1:1"}}},
	}
	tests := []struct {
		name   string
		change func(j *Joined)
	}{
		{"certificate of another service", func(j *Joined) { j.NodeCertPEM = endorse(other) }},
		{"short secret", func(j *Joined) { j.LedgerSecrets = []SecretEpoch{{From: 1, Secret: secret[:8]}} }},
		{"no secret", func(j *Joined) { j.LedgerSecrets = nil }},
		{"secrets out of order", func(j *Joined) {
			j.LedgerSecrets = []SecretEpoch{{From: 40, Secret: secret}, {From: 1, Secret: older}}
		}},
		{"secret from seqno 0", func(j *Joined) { j.LedgerSecrets = []SecretEpoch{{From: 0, Secret: secret}} }},
		{"no raft id", func(j *Joined) { j.Info.RaftID = 0 }},
	}
	for _, tt := range tests {
		j := good
		tt.change(&j)
		dir := t.TempDir()
		if _, err := InitJoined(vfs.OS{}, dir, j); err == nil {
			t.Errorf("%s: InitJoined succeeded", tt.name)
		}
		if Exists(vfs.OS{}, dir) {
			t.Errorf("%s: a refused join left a node behind", tt.name)
		}
	}
	dir := t.TempDir()
	id, err := InitJoined(vfs.OS{}, dir, good)
	if err != nil {
		t.Fatal(err)
	}
	if !id.NodeKey.Equal(nodeKey) || !id.Service.Key.Equal(svc.Key) || !bytes.Equal(id.LedgerSecret(), secret) {
		t.Errorf("the joined node's identity differs from what it received")
	}
	if len(id.Epochs) != 2 || id.Epochs[0].From != 1 || id.Epochs[1].From != 40 ||
		!bytes.Equal(id.Epochs[0].Secret.Raw(), older) || !bytes.Equal(id.Epochs[1].Secret.Raw(), secret) {
		t.Errorf("the joined node's ledger secrets differ from what it received: %+v", id.Epochs)
	}
	if sealed, err := os.ReadFile(filepath.Join(dir, ledgerSecretsFile)); err != nil || bytes.Contains(sealed, older) {
		t.Errorf("%s: %v, or it holds a secret in the clear", ledgerSecretsFile, err)
	}
	info, ok, err := LoadJoinInfo(vfs.OS{}, dir)
	if err != nil || !ok || info.RaftID != 2 || len(info.Peers) != 1 {
		t.Errorf("LoadJoinInfo = %+v, %v, %v", info, ok, err)
	}
	if _, err := InitJoined(vfs.OS{}, dir, good); err == nil {
		t.Errorf("InitJoined over an existing node succeeded")
	}
	if _, ok, err := LoadJoinInfo(vfs.OS{}, t.TempDir()); ok || err != nil {
		t.Errorf("LoadJoinInfo of an empty directory: %v, %v", ok, err)
	}
}
