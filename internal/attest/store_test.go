package attest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/node"
	"github.com/parleyhq/parley/internal/tee"
	"github.com/parleyhq/parley/internal/vfs"
)

func openEngine(t *testing.T) *engine.Engine {
	t.Helper()
	dir := t.TempDir()
	id, err := node.Init(vfs.OS{}, dir, node.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.Open(engine.Config{Dir: filepath.Join(dir, node.LedgerDir), Secret: id.Secret, NodeKey: id.NodeKey,
		NodeCertPEM: id.NodeCertPEM, SignatureInterval: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	return eng
}

func TestPolicyStore(t *testing.T) {
	eng := openEngine(t)
	src := LedgerPolicy(eng)
	p, d0, err := src()
	if err != nil {
		t.Fatal(err)
	}
	if p.AllowVirtual || p.SevSnp != nil || p.TDX != nil || p.Virtual != nil {
		t.Errorf("policy with none set = %+v, want the empty policy", p)
	}
	if _, err := WritePolicy(context.Background(), eng, virtualPolicy); err != nil {
		t.Fatalf("WritePolicy = %v", err)
	}
	p, d1, err := src()
	if err != nil {
		t.Fatal(err)
	}
	if !p.AllowVirtual || p.Virtual == nil || p.Virtual.Measurements[0] != tee.AnyMeasurement {
		t.Errorf("policy read back = %+v, want %+v", p, virtualPolicy)
	}
	if string(d0) == string(d1) {
		t.Error("the policy digest did not change")
	}
	bad := &tee.Policy{SevSnp: &tee.SevSnpPolicy{Measurements: []string{"zz"}}}
	if _, err := WritePolicy(context.Background(), eng, bad); err == nil {
		t.Error("WritePolicy(invalid) = nil, want an error")
	}
}
