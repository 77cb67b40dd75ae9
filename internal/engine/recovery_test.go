package engine

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/identity"
	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/receipt"
	"github.com/parleyhq/parley/internal/verify"
	"github.com/parleyhq/parley/internal/vfs"
)

// copyDir copies the files of src into dst.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRecoveryRestore opens a copy of an old ledger (with a rotation in
// it) as a new service: the private domain stays closed (reads and private
// writes refused, public state there) until the latest old secret is
// given; a wrong secret changes nothing; after the restore every old
// entry reads back, private writes work, and a restart restores again from
// the ledger alone.
func TestRecoveryRestore(t *testing.T) {
	old := newTestNode(t, vfs.OS{}, t.TempDir())
	e := old.open(t)
	a := put(t, e, "private:m", "a", "before rotation")
	put(t, e, "public:p", "a", "public before")
	rotate(t, e)
	b := put(t, e, "private:m", "b", "after rotation")
	put(t, e, "private:m", "a", "overwritten")
	waitCommitted(t, e, put(t, e, "public:p", "b", "public after"))
	latest := e.LedgerSecret()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}

	neu := newTestNode(t, vfs.OS{}, t.TempDir())
	dir := neu.config().Dir
	copyDir(t, old.config().Dir, dir)
	last, err := TruncateToLastSignature(vfs.OS{}, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := neu.config()
	cfg.Secret = nil
	cfg.Secrets = []Epoch{{From: last + 1, Secret: neu.id.Secret}}
	r, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.PrivateOpen() || r.ClosedUpTo() != last {
		t.Fatalf("PrivateOpen() = %v, ClosedUpTo() = %d, want false, %d", r.PrivateOpen(), r.ClosedUpTo(), last)
	}
	if _, err := r.Read(a); !errors.Is(err, ErrPrivateClosed) {
		t.Errorf("Read(%s) while closed: err = %v, want ErrPrivateClosed", a, err)
	}
	if v, _ := r.Begin().Get("public:p", "b"); string(v) != "public after" {
		t.Errorf("public state while closed: %q", v)
	}
	if v, ok := r.Begin().Get("private:m", "b"); ok {
		t.Errorf("private state visible while closed: %q", v)
	}
	tx := r.Begin()
	tx.Put("private:m", "c", []byte("x"))
	if _, err := r.Commit(context.Background(), tx, CommitOptions{}); !errors.Is(err, ErrPrivateClosed) {
		t.Errorf("private write while closed: err = %v, want ErrPrivateClosed", err)
	}
	if _, err := r.PrepareRotation(r.Begin()); !errors.Is(err, ErrPrivateClosed) {
		t.Errorf("rotation while closed: err = %v, want ErrPrivateClosed", err)
	}
	waitCommitted(t, r, put(t, r, "public:p", "c", "written while recovering"))

	wrong := make([]byte, ledger.SecretSize)
	rand.Read(wrong)
	if _, err := r.PrepareRestore(r.Begin(), wrong); err == nil {
		t.Fatal("PrepareRestore with a wrong secret succeeded")
	}
	if r.PrivateOpen() {
		t.Fatal("a wrong secret opened the private state")
	}
	restore := func(r *Engine) ledger.TxID {
		tx := r.Begin()
		rs, err := r.PrepareRestore(tx, latest)
		if err != nil {
			t.Fatal(err)
		}
		tx.Put("public:p", "restored", []byte("yes"))
		id, err := r.CommitRestore(context.Background(), tx, rs)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	rid := restore(r)
	check := func(r *Engine, when string) {
		t.Helper()
		if !r.PrivateOpen() {
			t.Fatalf("%s: private state closed", when)
		}
		for _, c := range []struct {
			id         ledger.TxID
			key, value string
		}{{a, "a", "before rotation"}, {b, "b", "after rotation"}} {
			rec, err := r.Read(c.id)
			if err != nil || valueIn(rec.WriteSet, "private:m", c.key) != c.value {
				t.Errorf("%s: Read(%s) = %v, %v", when, c.id, rec, err)
			}
		}
		for key, want := range map[string]string{"a": "overwritten", "b": "after rotation"} {
			if v, _ := r.Begin().Get("private:m", key); string(v) != want {
				t.Errorf("%s: private:m/%s = %q, want %q", when, key, v, want)
			}
		}
	}
	check(r, "after restore")
	if got := froms(r.Epochs()); len(got) != 4 || got[2] != last+1 || got[3] != rid.Seqno+1 {
		t.Errorf("epochs after restore start at %v, want [1 rotation %d %d]", got, last+1, rid.Seqno+1)
	}
	waitCommitted(t, r, put(t, r, "private:m", "d", "new private write"))
	if _, err := r.PrepareRestore(r.Begin(), latest); !errors.Is(err, ErrNotRecovering) {
		t.Errorf("second restore: err = %v, want ErrNotRecovering", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	// A restart replays the restoring transaction: no secret needed again.
	r, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	check(r, "after restart")
	if v, _ := r.Begin().Get("private:m", "d"); string(v) != "new private write" {
		t.Errorf("after restart: private:m/d = %q", v)
	}
	// The restore's history holds every secret: its latest secret alone
	// recovers the whole ledger again.
	hist, _ := r.Begin().Get(HistoricalSecretsMap, "")
	eps, err := DecryptHistory(r.LedgerSecret(), hist)
	if err != nil || len(eps) != 3 {
		t.Errorf("history after restore: %d secrets, %v; want 3", len(eps), err)
	}

	// A second disaster: the recovered ledger, with its own rotation after
	// the restore, is recovered again from its latest secret alone.
	rotate(t, r)
	e2 := put(t, r, "private:m", "e", "after the second rotation")
	waitCommitted(t, r, e2)
	latest2 := r.LedgerSecret()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	third := newTestNode(t, vfs.OS{}, t.TempDir())
	copyDir(t, dir, third.config().Dir)
	last2, err := TruncateToLastSignature(vfs.OS{}, third.config().Dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg3 := third.config()
	cfg3.Secret = nil
	cfg3.Secrets = []Epoch{{From: last2 + 1, Secret: third.id.Secret}}
	r3, err := Open(cfg3)
	if err != nil {
		t.Fatal(err)
	}
	defer r3.Close()
	if r3.PrivateOpen() {
		t.Fatal("the second recovery opened with its private state open")
	}
	waitCommitted(t, r3, put(t, r3, "public:p", "d", "second recovery"))
	if _, err := r3.PrepareRestore(r3.Begin(), latest); err == nil {
		t.Fatal("the first disaster's secret restored the second recovery")
	}
	tx3 := r3.Begin()
	rs3, err := r3.PrepareRestore(tx3, latest2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r3.CommitRestore(context.Background(), tx3, rs3); err != nil {
		t.Fatal(err)
	}
	check(r3, "after the second recovery")
	for key, want := range map[string]string{"d": "new private write", "e": "after the second rotation"} {
		if v, _ := r3.Begin().Get("private:m", key); string(v) != want {
			t.Errorf("after the second recovery: private:m/%s = %q, want %q", key, v, want)
		}
	}
	if rec, err := r3.Read(e2); err != nil || valueIn(rec.WriteSet, "private:m", "e") != "after the second rotation" {
		t.Errorf("after the second recovery: Read(%s) = %v, %v", e2, rec, err)
	}
}

// TestEndorsementsFor: a receipt carries, oldest first, the endorsements
// of every identity whose last seqno is at or after its signature.
func TestEndorsementsFor(t *testing.T) {
	e := &Engine{cfg: Config{ServiceEndorsements: []string{"static"}}}
	e.SetServiceEndorsements([]ServiceEndorsement{{Cert: "second", LastSeqno: 200}, {Cert: "first", LastSeqno: 100}})
	cases := []struct {
		sig  uint64
		want string
	}{
		{1, "[first second static]"},
		{100, "[first second static]"},
		{101, "[second static]"},
		{200, "[second static]"},
		{201, "[static]"},
	}
	for _, c := range cases {
		if got := fmt.Sprint(e.endorsementsFor(c.sig)); got != c.want {
			t.Errorf("endorsementsFor(%d) = %s, want %s", c.sig, got, c.want)
		}
	}
}

// TestVerifyRecoveredLedger: a recovered ledger verifies against the new
// service certificate once it records the new service's endorsement of
// the old identity, and not before; a receipt of an old transaction
// carries the endorsement and verifies against the new certificate.
func TestVerifyRecoveredLedger(t *testing.T) {
	old := newTestNode(t, vfs.OS{}, t.TempDir())
	e := old.open(t)
	a := put(t, e, "private:m", "a", "old")
	waitCommitted(t, e, a)
	latest := e.LedgerSecret()
	e.Close()

	neu := newTestNode(t, vfs.OS{}, t.TempDir())
	dir := neu.config().Dir
	copyDir(t, old.config().Dir, dir)
	last, err := TruncateToLastSignature(vfs.OS{}, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := neu.config()
	cfg.Secret, cfg.Secrets = nil, []Epoch{{From: last + 1, Secret: neu.id.Secret}}
	r, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitCommitted(t, r, put(t, r, "public:p", "x", "recovering"))
	r.Close()
	if _, err := verify.Ledger(vfs.OS{}, dir, neu.id.Service.Cert, verify.Options{}); err == nil {
		t.Fatal("a recovered ledger without an endorsement verifies against the new certificate")
	}

	r, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	der, err := neu.id.Service.EndorseService(old.id.Service.Cert.PublicKey.(*ecdsa.PublicKey), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	endorsement := string(identity.EncodeCertPEM(der))
	rec, _ := json.Marshal(map[string]any{"endorsement": endorsement, "lastSeqno": last})
	waitCommitted(t, r, put(t, r, verify.PreviousIdentitiesMap, strconv.FormatUint(last, 10), string(rec)))
	r.SetServiceEndorsements([]ServiceEndorsement{{Cert: endorsement, LastSeqno: last}})
	tx := r.Begin()
	rs, err := r.PrepareRestore(tx, latest)
	if err != nil {
		t.Fatal(err)
	}
	waitCommitted(t, r, mustCommitRestore(t, r, tx, rs))
	rc, err := r.Receipt(a)
	if err != nil {
		t.Fatal(err)
	}
	if len(rc.ServiceEndorsements) != 1 {
		t.Fatalf("receipt of an old transaction has %d endorsements, want 1", len(rc.ServiceEndorsements))
	}
	if err := receipt.Verify(rc, neu.id.Service.Cert); err != nil {
		t.Errorf("receipt of an old transaction against the new certificate: %v", err)
	}
	r.Close()
	rep, err := verify.Ledger(vfs.OS{}, dir, neu.id.Service.Cert, verify.Options{})
	if err != nil {
		t.Fatalf("recovered ledger with its endorsement: %v", err)
	}
	if rep.PreviousIdentities != 1 {
		t.Errorf("report counts %d previous-identity signers, want 1", rep.PreviousIdentities)
	}
	if _, err := verify.Ledger(vfs.OS{}, dir, old.id.Service.Cert, verify.Options{}); err == nil {
		t.Error("the recovered ledger verifies against the old certificate, which did not sign its new part")
	}
}

func mustCommitRestore(t testing.TB, e *Engine, tx *kv.Tx, rs *Restoration) ledger.TxID {
	t.Helper()
	id, err := e.CommitRestore(context.Background(), tx, rs)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// BenchmarkRestore measures the restore of a recovered ledger of 10,000
// private transactions of 100 bytes (one rotation among them): opening
// every entry with the old secrets and applying the private state in one
// transaction. Run with -benchtime=1x.
func BenchmarkRestore(b *testing.B) {
	old := newTestNode(b, vfs.OS{}, b.TempDir())
	e := old.open(b)
	value := string(make([]byte, 100))
	var last ledger.TxID
	for i := range 10000 {
		if i == 5000 {
			rotate(b, e)
		}
		tx := e.Begin()
		tx.Put("private:m", strconv.Itoa(i), []byte(value))
		id, err := e.Commit(context.Background(), tx, CommitOptions{})
		if err != nil {
			b.Fatal(err)
		}
		last = id
	}
	waitCommitted(b, e, last)
	latest := e.LedgerSecret()
	e.Close()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		neu := newTestNode(b, vfs.OS{}, b.TempDir())
		dir := neu.config().Dir
		if err := os.MkdirAll(dir, 0o700); err != nil {
			b.Fatal(err)
		}
		ents, _ := os.ReadDir(old.config().Dir)
		for _, ent := range ents {
			data, _ := os.ReadFile(filepath.Join(old.config().Dir, ent.Name()))
			os.WriteFile(filepath.Join(dir, ent.Name()), data, 0o600)
		}
		end, err := TruncateToLastSignature(vfs.OS{}, dir, nil)
		if err != nil {
			b.Fatal(err)
		}
		cfg := neu.config()
		cfg.Secret, cfg.Secrets = nil, []Epoch{{From: end + 1, Secret: neu.id.Secret}}
		r, err := Open(cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		tx := r.Begin()
		rs, err := r.PrepareRestore(tx, latest)
		if err != nil {
			b.Fatal(err)
		}
		id := mustCommitRestore(b, r, tx, rs)
		waitCommitted(b, r, id)
		b.StopTimer()
		r.Close()
		b.StartTimer()
	}
}
