package app

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/identity"
	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/node"
	"github.com/parleyhq/parley/internal/vfs"
)

func TestNormalizeUserID(t *testing.T) {
	lower := strings.Repeat("5f", 31) + "b5"
	colon := strings.Repeat("5F:", 31) + "B5"
	tests := []struct {
		in, want string
		ok       bool
	}{
		{lower, lower, true},
		{strings.ToUpper(lower), lower, true},
		{colon, lower, true},
		{strings.ToLower(colon), lower, true},
		{lower[:62], "", false},
		{strings.Replace(colon, ":", "-", 1), "", false},
		{strings.Replace(lower, "5", "g", 1), "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, err := NormalizeUserID(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("NormalizeUserID(%q) = %q, %v; want %q, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestEntryEncoding(t *testing.T) {
	e := &Entry{CollectionID: "c", Contents: "hello\x00world", Tags: []string{"a", "bb"}, SecretKey: bytes.Repeat([]byte{7}, SecretKeySize)}
	got, err := decodeEntry("c", encodeEntry(e))
	if err != nil {
		t.Fatal(err)
	}
	if got.Contents != e.Contents || strings.Join(got.Tags, ",") != "a,bb" || !bytes.Equal(got.SecretKey, e.SecretKey) {
		t.Errorf("decode(encode(%+v)) = %+v", e, got)
	}
}

func FuzzDecodeEntryValue(f *testing.F) {
	f.Add(encodeEntry(&Entry{Contents: "x", Tags: []string{"t"}, SecretKey: make([]byte, SecretKeySize)}))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEntry("c", b)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeEntry(e), b) {
			t.Fatalf("re-encoding %x gives %x", b, encodeEntry(e))
		}
	})
}

func FuzzNormalizeUserID(f *testing.F) {
	f.Add(strings.Repeat("5f", 32))
	f.Add(strings.Repeat("5F:", 31) + "B5")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := NormalizeUserID(s)
		if err != nil {
			return
		}
		if again, err := NormalizeUserID(id); err != nil || again != id || len(id) != 64 || strings.ToLower(id) != id {
			t.Fatalf("NormalizeUserID(%q) = %q, not canonical", s, id)
		}
	})
}

type testLedger struct {
	dir string
	id  *node.Identity
}

func newTestLedger(t *testing.T) *testLedger {
	dir := t.TempDir()
	id, err := node.Init(vfs.OS{}, dir, node.InitOptions{SANs: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	return &testLedger{dir: dir, id: id}
}

func (l *testLedger) open(t *testing.T) (*App, *engine.Engine) {
	idx := NewIndex()
	eng, err := engine.Open(engine.Config{Dir: filepath.Join(l.dir, node.LedgerDir), Secret: l.id.Secret, NodeKey: l.id.NodeKey,
		NodeCertPEM: l.id.NodeCertPEM, Observer: idx, SignatureInterval: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return New(eng, idx, Limits{MaxCollections: 2}), eng
}

func TestReplayRebuildsIndex(t *testing.T) {
	l := newTestLedger(t)
	a, eng := l.open(t)
	ctx := context.Background()
	der, _, err := identity.NewClientCert("m", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteGenesis(ctx, Genesis{Members: map[string]string{identity.Fingerprint(der): "pem"}}); err != nil {
		t.Fatal(err)
	}
	var ids []ledger.TxID
	for _, c := range []string{"x", "y", "x"} {
		e, err := a.Append(ctx, &NewEntry{CollectionID: c, Contents: "in " + c, Tags: []string{"t"}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
	}
	if _, err := a.Append(ctx, &NewEntry{CollectionID: "z", Contents: "third collection"}); err == nil {
		t.Error("a third collection was accepted over MaxCollections 2")
	}
	if err := eng.WaitCommitted(ctx, ids[2]); err != nil {
		t.Fatal(err)
	}
	if err := eng.Close(); err != nil {
		t.Fatal(err)
	}

	a, eng = l.open(t)
	defer eng.Close()
	if a.NeedsGenesis() {
		t.Error("NeedsGenesis after replay")
	}
	if err := eng.WaitCommitted(ctx, ids[2]); err != nil {
		t.Fatal(err)
	}
	got, next, err := a.List(Query{CollectionID: "x", Tag: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != ids[0] || got[1].ID != ids[2] || next != (ledger.TxID{}) {
		t.Errorf("List(x, t) after replay = %v, want %s and %s", got, ids[0], ids[2])
	}
	cur, err := a.Current("y")
	if err != nil || cur.ID != ids[1] || cur.Contents != "in y" {
		t.Errorf("Current(y) = %+v, %v; want %s", cur, err, ids[1])
	}
	if cs := a.Collections(); strings.Join(cs, ",") != "x,y" {
		t.Errorf("Collections() = %v, want x,y", cs)
	}
}

func TestIndexRollback(t *testing.T) {
	x := NewIndex()
	put := func(seqno uint64, coll string) {
		ws := &kv.WriteSet{Maps: []kv.MapWrites{{Map: EntriesMap, Writes: []kv.Write{{Key: coll, Value: encodeEntry(&Entry{Tags: []string{"t"}, SecretKey: make([]byte, SecretKeySize)})}}}}}
		x.Applied(ledger.TxID{View: 1, Seqno: seqno}, ledger.KindTx, ws)
	}
	put(1, "a")
	put(3, "a") // 2 is a signature
	put(4, "b")
	x.RolledBack(2)
	if got := x.page("a", "", 0, 100, 10); len(got) != 1 || got[0].Seqno != 1 {
		t.Errorf("a after rollback = %v, want [1.1]", got)
	}
	if got := x.page("a", "t", 0, 100, 10); len(got) != 1 {
		t.Errorf("a/t after rollback = %v, want one", got)
	}
	if _, ok := x.last("b"); ok {
		t.Error("b survived the rollback")
	}
	if s, ok := x.signatureAtOrAfter(1); !ok || s != 2 {
		t.Errorf("signatureAtOrAfter(1) = %d, %v; want 2", s, ok)
	}
	put(3, "c")
	put(5, "c")
	if s, ok := x.signatureAtOrAfter(3); !ok || s != 4 {
		t.Errorf("signatureAtOrAfter(3) = %d, %v; want 4", s, ok)
	}
}
