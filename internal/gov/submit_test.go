package gov

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/app"
	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/node"
	"github.com/parleyhq/parley/internal/vfs"
)

// recoverFixture closes f's engine and opens a copy of its ledger as a
// recovered service, with governance over it.
func recoverFixture(t *testing.T, f *recoveryFixture) *recoveryFixture {
	t.Helper()
	if err := f.eng.Close(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	id, err := node.Init(vfs.OS{}, dir, node.InitOptions{SANs: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	ledgerDir := filepath.Join(dir, node.LedgerDir)
	if err := os.MkdirAll(ledgerDir, 0o700); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(f.dir, node.LedgerDir)
	ents, _ := os.ReadDir(src)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ledgerDir, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	last, err := engine.TruncateToLastSignature(vfs.OS{}, ledgerDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	idx := app.NewIndex()
	eng, err := engine.Open(engine.Config{Dir: ledgerDir, Secrets: []engine.Epoch{{From: last + 1, Secret: id.Secret}},
		NodeKey: id.NodeKey, NodeCertPEM: id.NodeCertPEM, Observer: idx, SignatureInterval: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	nf := &recoveryFixture{fixture: &fixture{eng: eng, app: app.New(eng, idx, app.Limits{}), now: f.now, members: f.members}, id: id, encKeys: f.encKeys, dir: dir}
	nf.gov = New(Config{Engine: eng, Now: nf.clock, Secrets: eng})
	return nf
}

func (f *recoveryFixture) submit(t *testing.T, i int, share []byte) (*RecoveryStatus, error) {
	t.Helper()
	st, _, err := f.gov.SubmitRecoveryShare(context.Background(), f.members[i].sign(t, TypeRecoveryShare, "", ShareBody{Share: share}, f.clock()))
	return st, err
}

// TestSubmitRecoveryShares: shares are refused by an open service and when
// malformed; one share of two leaves the private state closed; a wrong
// share fails the restore cleanly and discards every share; two right
// shares restore the private state and open the service with new shares;
// no submitted share is on the ledger.
func TestSubmitRecoveryShares(t *testing.T) {
	f := newRecoveryFixture(t, 3)
	if p := f.accept(t, thresholdAction(2)); p.State != StateAccepted {
		t.Fatalf("set_recovery_threshold 2: %s %s", p.State, p.FailureReason)
	}
	if p := f.accept(t, Action{Name: "rotate_ledger_secret"}); p.State != StateAccepted {
		t.Fatalf("rotate_ledger_secret: %s %s", p.State, p.FailureReason)
	}
	tx := f.eng.Begin()
	tx.Put("private:secrets", "k", []byte("private value"))
	id, err := f.eng.Commit(context.Background(), tx, engine.CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.eng.WaitCommitted(ctx, id); err != nil {
		t.Fatal(err)
	}
	shares := [][]byte{f.share(t, 0), f.share(t, 1), f.share(t, 2)}
	if _, err := f.submit(t, 0, shares[0]); !errors.Is(err, ErrNotRecovering) {
		t.Fatalf("share to an open service: err = %v, want ErrNotRecovering", err)
	}

	r := recoverFixture(t, f)
	if r.eng.PrivateOpen() {
		t.Fatal("the recovered engine's private state is open")
	}
	history := func() int {
		n := 0
		r.eng.Begin().Foreach(HistoryMap, func(string, []byte) bool { n++; return true })
		return n
	}
	historyBefore := history()
	if _, err := r.submit(t, 0, shares[0][:10]); !errors.Is(err, ErrMalformedRequest) {
		t.Errorf("short share: err = %v, want ErrMalformedRequest", err)
	}
	st, err := r.submit(t, 0, shares[0])
	if err != nil || st.SubmittedShares != 1 || st.Threshold != 2 || st.ServiceStatus != ServiceRecovering {
		t.Fatalf("first share: %+v, %v", st, err)
	}
	wrong := make([]byte, ShareSize)
	rand.Read(wrong)
	wrong[ShareSize-1] = shares[1][ShareSize-1] // a distinct x coordinate
	if _, err := r.submit(t, 1, wrong); !errors.Is(err, ErrRecoveryFailed) {
		t.Fatalf("wrong share at the threshold: err = %v, want ErrRecoveryFailed", err)
	}
	if r.eng.PrivateOpen() {
		t.Fatal("a wrong share opened the private state")
	}
	n := 0
	r.eng.Begin().Foreach(SubmittedSharesMap, func(string, []byte) bool { n++; return true })
	if n != 0 {
		t.Errorf("%d submissions recorded after a failed restore, want 0", n)
	}
	// Discarded: one share again is not enough.
	if st, err := r.submit(t, 2, shares[2]); err != nil || st.SubmittedShares != 1 {
		t.Fatalf("share after the failure: %+v, %v", st, err)
	}
	st, err = r.submit(t, 1, shares[1])
	if err != nil || st.ServiceStatus != ServiceOpen {
		t.Fatalf("second right share: %+v, %v", st, err)
	}
	if !r.eng.PrivateOpen() {
		t.Fatal("private state still closed after the threshold")
	}
	if v, _ := r.eng.Begin().Get("private:secrets", "k"); string(v) != "private value" {
		t.Errorf("restored private value = %q", v)
	}
	if si := r.gov.ServiceInfo(); si.Status != ServiceOpen {
		t.Errorf("service status %q, want Open", si.Status)
	}
	// New shares wrap the recovered service's latest secret.
	got, err := UnwrapLedgerSecret(r.wrapped(t).WrappedLedgerSecret, [][]byte{r.share(t, 0), r.share(t, 2)})
	if err != nil || !bytes.Equal(got, r.eng.LedgerSecret()) {
		t.Fatalf("new shares unwrap to the latest secret: %v", err)
	}
	// No share is anywhere on the ledger, public or private, and no
	// submission request (which holds one) is in the history.
	if got := history(); got != historyBefore {
		t.Errorf("the history grew by %d requests with the share submissions, want 0", got-historyBefore)
	}
	for seqno := uint64(1); seqno <= r.eng.Current().Seqno; seqno++ {
		rec, err := r.eng.Read(ledger.TxID{View: viewOf(t, r.eng, seqno), Seqno: seqno})
		if err != nil {
			continue
		}
		for _, m := range rec.WriteSet.Maps {
			for _, w := range m.Writes {
				for _, s := range append(shares, wrong) {
					if bytes.Contains(w.Value, s) {
						t.Fatalf("a submitted share is in %s/%s at %d", m.Map, w.Key, seqno)
					}
				}
			}
		}
	}
}

// viewOf finds the view of seqno on e (one node: views only grow).
func viewOf(t *testing.T, e *engine.Engine, seqno uint64) uint64 {
	t.Helper()
	for v := e.View(); v > 0; v-- {
		if e.Status(ledger.TxID{View: v, Seqno: seqno}) == engine.StatusCommitted || e.Status(ledger.TxID{View: v, Seqno: seqno}) == engine.StatusPending {
			return v
		}
	}
	return 0
}
