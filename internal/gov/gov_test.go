package gov

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/parleyhq/parley/internal/app"
	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/identity"
	"github.com/parleyhq/parley/internal/node"
	"github.com/parleyhq/parley/internal/vfs"
)

// testMember is a member's identity and its request counter.
type testMember struct {
	id      string
	certPEM string
	key     *ecdsa.PrivateKey
	counter uint64
}

func newTestMember(t testing.TB, cn string) *testMember {
	t.Helper()
	der, key, err := identity.NewClientCert(cn, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &testMember{id: identity.Fingerprint(der), certPEM: string(identity.EncodeCertPEM(der)), key: key}
}

// sign signs a request of typ for pid with body, at now.
func (m *testMember) sign(t testing.TB, typ, pid string, body any, now time.Time) []byte {
	t.Helper()
	m.counter++
	r := &Request{Type: typ, ProposalID: pid, CreatedAt: now.Unix(), Counter: m.counter}
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r.Body = b
	}
	out, err := Sign(m.key, m.id, r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var (
	encKeyOnce sync.Once
	encKeyPEM  string
)

// testEncKey returns one RSA-2048 public key in PEM (generated once).
func testEncKey(t testing.TB) string {
	encKeyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		encKeyPEM = string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	})
	return encKeyPEM
}

// fixture is a one-node ledger with n members and governance over it.
type fixture struct {
	eng     *engine.Engine
	app     *app.App
	gov     *Service
	members []*testMember
	now     time.Time
	mu      sync.Mutex
}

func newFixture(t testing.TB, n int) *fixture {
	t.Helper()
	dir := t.TempDir()
	id, err := node.Init(vfs.OS{}, dir, node.InitOptions{SANs: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	idx := app.NewIndex()
	eng, err := engine.Open(engine.Config{Dir: filepath.Join(dir, node.LedgerDir), Secret: id.Secret, NodeKey: id.NodeKey,
		NodeCertPEM: id.NodeCertPEM, Observer: idx, SignatureInterval: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	f := &fixture{eng: eng, app: app.New(eng, idx, app.Limits{}), now: time.Unix(1_800_000_000, 0)}
	f.gov = New(Config{Engine: eng, Now: f.clock})
	g := app.Genesis{Members: map[string]string{}, MemberEncryptionKeys: map[string]string{},
		Users: map[string][]app.Role{strings.Repeat("ab", 32): {app.RoleAdministrator}}}
	for i := range n {
		m := newTestMember(t, fmt.Sprintf("member%d", i))
		f.members = append(f.members, m)
		g.Members[m.id] = m.certPEM
		g.MemberEncryptionKeys[m.id] = testEncKey(t)
	}
	if _, err := f.app.WriteGenesis(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fixture) advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

func (f *fixture) propose(t *testing.T, m *testMember, actions ...Action) (*Proposal, error) {
	t.Helper()
	p, _, err := f.gov.Propose(context.Background(), m.sign(t, TypeProposal, "", ProposalBody{Actions: actions}, f.clock()))
	return p, err
}

func (f *fixture) vote(t *testing.T, m *testMember, pid, ballot string) (*Proposal, error) {
	t.Helper()
	p, _, err := f.gov.Vote(context.Background(), pid, m.sign(t, TypeBallot, pid, Ballot{Ballot: ballot}, f.clock()))
	return p, err
}

func setUserAction(t testing.TB, id, role string) Action {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"user_id": id, "role": role})
	return Action{Name: "set_user", Args: b}
}

func TestProposalNeedsMajority(t *testing.T) {
	f := newFixture(t, 3)
	user := strings.Repeat("cd", 32)
	p, err := f.propose(t, f.members[0], setUserAction(t, user, "Contributor"))
	if err != nil {
		t.Fatal(err)
	}
	if p.State != StateOpen || p.Threshold != 2 {
		t.Fatalf("new proposal: state %s threshold %d, want Open 2", p.State, p.Threshold)
	}
	p, err = f.vote(t, f.members[0], p.ProposalID, BallotAccept)
	if err != nil {
		t.Fatal(err)
	}
	if p.State != StateOpen {
		t.Fatalf("after one of three accepts: state %s, want Open", p.State)
	}
	if got := f.app.Role(user); got != app.RoleNone {
		t.Fatalf("user role after one vote = %s, want none", got)
	}
	if _, err := f.vote(t, f.members[0], p.ProposalID, BallotAccept); !errors.Is(err, ErrAlreadyVoted) {
		t.Fatalf("second ballot of member0: %v, want ErrAlreadyVoted", err)
	}
	p, err = f.vote(t, f.members[2], p.ProposalID, BallotAccept)
	if err != nil {
		t.Fatal(err)
	}
	if p.State != StateAccepted {
		t.Fatalf("after two of three accepts: state %s, want Accepted", p.State)
	}
	if got := f.app.Role(user); got != app.RoleContributor {
		t.Errorf("user role after acceptance = %s, want Contributor", got)
	}
	if _, err := f.vote(t, f.members[1], p.ProposalID, BallotReject); !errors.Is(err, ErrProposalNotOpen) {
		t.Errorf("ballot on an accepted proposal: %v, want ErrProposalNotOpen", err)
	}
	got, err := f.gov.Proposal(p.ProposalID)
	if err != nil || got.State != StateAccepted || len(got.Ballots) != 2 || len(got.Actions) != 1 {
		t.Errorf("Proposal() = %+v, %v; want Accepted with 2 ballots and 1 action", got, err)
	}
}

func TestRejectedAndWithdrawnHaveNoEffect(t *testing.T) {
	f := newFixture(t, 3)
	user := strings.Repeat("ef", 32)
	p, err := f.propose(t, f.members[1], setUserAction(t, user, "Reader"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.vote(t, f.members[0], p.ProposalID, BallotReject); err != nil {
		t.Fatal(err)
	}
	p, err = f.vote(t, f.members[2], p.ProposalID, BallotReject)
	if err != nil {
		t.Fatal(err)
	}
	if p.State != StateRejected {
		t.Fatalf("after two of three rejects: %s, want Rejected", p.State)
	}
	q, err := f.propose(t, f.members[1], setUserAction(t, user, "Reader"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.vote(t, f.members[1], q.ProposalID, BallotAccept); err != nil {
		t.Fatal(err)
	}
	wbody := f.members[0].sign(t, TypeWithdrawal, q.ProposalID, nil, f.clock())
	if _, _, err := f.gov.Withdraw(context.Background(), q.ProposalID, wbody); !errors.Is(err, ErrNotProposer) {
		t.Fatalf("withdrawal by another member: %v, want ErrNotProposer", err)
	}
	w, _, err := f.gov.Withdraw(context.Background(), q.ProposalID, f.members[1].sign(t, TypeWithdrawal, q.ProposalID, nil, f.clock()))
	if err != nil {
		t.Fatal(err)
	}
	if w.State != StateWithdrawn {
		t.Fatalf("withdrawn state = %s", w.State)
	}
	if _, err := f.vote(t, f.members[2], q.ProposalID, BallotAccept); !errors.Is(err, ErrProposalNotOpen) {
		t.Fatalf("ballot on a withdrawn proposal: %v, want ErrProposalNotOpen", err)
	}
	if got := f.app.Role(user); got != app.RoleNone {
		t.Errorf("user role = %s, want none", got)
	}
}

func TestRequestsRefused(t *testing.T) {
	f := newFixture(t, 3)
	m := f.members[0]
	ctx := context.Background()
	body := ProposalBody{Actions: []Action{setUserAction(t, strings.Repeat("01", 32), "Reader")}}
	good := m.sign(t, TypeProposal, "", body, f.clock())
	if _, _, err := f.gov.Propose(ctx, good); err != nil {
		t.Fatal(err)
	}
	outsider := newTestMember(t, "outsider")
	forged := func() []byte {
		// member0's id with the outsider's key.
		outsider.counter = 100
		r := &Request{Type: TypeProposal, CreatedAt: f.clock().Unix(), Counter: 1 << 40}
		r.Body, _ = json.Marshal(body)
		b, err := Sign(outsider.key, m.id, r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}()
	tampered := []byte(strings.Replace(string(m.sign(t, TypeProposal, "", body, f.clock())), ".", ".e", 1))
	staleMember := f.members[1]
	stale := staleMember.sign(t, TypeProposal, "", body, f.clock().Add(-10*time.Minute))
	future := staleMember.sign(t, TypeProposal, "", body, f.clock().Add(10*time.Minute))
	unknown := m.sign(t, TypeProposal, "", ProposalBody{Actions: []Action{{Name: "launch_rockets"}}}, f.clock())
	badArgs := m.sign(t, TypeProposal, "", ProposalBody{Actions: []Action{{Name: "set_user", Args: json.RawMessage(`{"user_id":"x","role":"King"}`)}}}, f.clock())
	wrongType := m.sign(t, TypeBallot, strings.Repeat("00", 32), Ballot{BallotAccept}, f.clock())
	tests := []struct {
		name string
		body []byte
		want error
	}{
		{"replayed", good, ErrReplay},
		{"unsigned", []byte(`{"actions":[]}`), ErrMalformedRequest},
		{"empty", nil, ErrMalformedRequest},
		{"forged", forged, ErrBadSignature},
		{"tampered", tampered, ErrMalformedRequest},
		{"non-member", outsider.sign(t, TypeProposal, "", body, f.clock()), ErrUnknownMember},
		{"expired", stale, ErrStaleRequest},
		{"future", future, ErrStaleRequest},
		{"unknown action", unknown, ErrInvalidProposal},
		{"bad args", badArgs, ErrInvalidProposal},
		{"ballot sent as proposal", wrongType, ErrWrongEndpoint},
	}
	before := f.eng.Current()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := f.gov.Propose(ctx, tt.body)
			if !errors.Is(err, tt.want) {
				// A tampered signature may fail to parse or to verify.
				if !(tt.name == "tampered" && errors.Is(err, ErrBadSignature)) {
					t.Errorf("Propose(%s) = %v, want %v", tt.name, err, tt.want)
				}
			}
		})
	}
	if got := f.eng.Current(); got != before {
		t.Errorf("refused requests wrote transactions: current %s, was %s", got, before)
	}
	if n := len(f.gov.Proposals()); n != 1 {
		t.Errorf("proposals = %d, want 1", n)
	}
	// The clock moves on: a request signed now is accepted again.
	f.advance(time.Hour)
	if _, err := f.propose(t, staleMember, body.Actions...); err != nil {
		t.Errorf("fresh request after the clock moved: %v", err)
	}
}

func TestFailedProposalAppliesNothing(t *testing.T) {
	f := newFixture(t, 1)
	user := strings.Repeat("aa", 32)
	rm, _ := json.Marshal(map[string]string{"user_id": strings.Repeat("99", 32)})
	p, err := f.propose(t, f.members[0], setUserAction(t, user, "Reader"), Action{Name: "remove_user", Args: rm})
	if err != nil {
		t.Fatal(err)
	}
	p, err = f.vote(t, f.members[0], p.ProposalID, BallotAccept)
	if err != nil {
		t.Fatal(err)
	}
	if p.State != StateFailed || !strings.Contains(p.FailureReason, "does not exist") {
		t.Fatalf("state %s reason %q, want Failed: does not exist", p.State, p.FailureReason)
	}
	if got := f.app.Role(user); got != app.RoleNone {
		t.Errorf("role of user from a failed proposal = %s, want none", got)
	}
	if got, _ := f.gov.Proposal(p.ProposalID); got.State != StateFailed {
		t.Errorf("stored state %s, want Failed", got.State)
	}
}

func TestConstitutionThresholds(t *testing.T) {
	f := newFixture(t, 3)
	c, _ := json.Marshal(map[string]any{"constitution": Constitution{Thresholds: map[string]int{"set_user": 3, "set_constitution": 3}}})
	p, _ := f.propose(t, f.members[0], Action{Name: "set_constitution", Args: c})
	for _, m := range f.members[:2] {
		if _, err := f.vote(t, m, p.ProposalID, BallotAccept); err != nil {
			t.Fatal(err)
		}
	}
	// Accepted by majority (the old constitution decides its own change).
	if got, _ := f.gov.Proposal(p.ProposalID); got.State != StateAccepted {
		t.Fatalf("state %s, want Accepted", got.State)
	}
	if got := f.gov.Constitution(); got.Thresholds["set_user"] != 3 {
		t.Fatalf("thresholds = %v", got.Thresholds)
	}
	user := strings.Repeat("bb", 32)
	q, _ := f.propose(t, f.members[0], setUserAction(t, user, "Reader"))
	for i, m := range f.members {
		q, _ = f.vote(t, m, q.ProposalID, BallotAccept)
		want := StateOpen
		if i == 2 {
			want = StateAccepted
		}
		if q.State != want {
			t.Fatalf("after %d accepts: %s, want %s", i+1, q.State, want)
		}
	}
	r, _ := f.propose(t, f.members[0], setUserAction(t, user, "Contributor"))
	r, _ = f.vote(t, f.members[1], r.ProposalID, BallotReject)
	if r.State != StateRejected {
		t.Errorf("unanimity needed and one reject: %s, want Rejected", r.State)
	}
}

func TestActions(t *testing.T) {
	f := newFixture(t, 1)
	m := f.members[0]
	newM := newTestMember(t, "member1")
	issuerKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &issuerKey.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	args := func(v any) json.RawMessage { b, _ := json.Marshal(v); return b }
	acts := []Action{
		{Name: "set_member", Args: args(map[string]string{"cert": newM.certPEM, "encryption_pub_key": testEncKey(t)})},
		{Name: "add_measurement", Args: args(map[string]string{"platform": "sev-snp", "measurement": strings.Repeat("AB", 48)})},
		{Name: "set_jwt_issuer", Args: args(map[string]any{"issuer": "https://issuer.test", "jwks": json.RawMessage(jwks), "user_id_claim": "oid"})},
		{Name: "set_recovery_threshold", Args: args(map[string]int{"recovery_threshold": 2})},
		{Name: "trust_node", Args: args(map[string]string{"node_id": strings.Repeat("0f", 32)})},
		{Name: "transition_service_to_open"},
		{Name: "rotate_ledger_secret"},
	}
	f.putNode(t, strings.Repeat("0f", 32), NodeInfo{Status: NodePending, RaftID: 2})
	p, err := f.propose(t, m, acts...)
	if err != nil {
		t.Fatal(err)
	}
	if p, err = f.vote(t, m, p.ProposalID, BallotAccept); err != nil || p.State != StateAccepted {
		t.Fatalf("vote: %+v, %v", p, err)
	}
	ms := f.gov.Members()
	if len(ms) != 2 {
		t.Fatalf("members = %d, want 2", len(ms))
	}
	if got := f.gov.Measurements(); len(got) != 1 || got[0] != "sev-snp:"+strings.Repeat("ab", 48) {
		t.Errorf("measurements = %v", got)
	}
	tx := f.eng.Begin()
	for _, kv := range []struct{ m, k, want string }{
		{ServiceConfigMap, "", `{"recoveryThreshold":2}`},
		{NodesInfoMap, strings.Repeat("0f", 32), `{"status":"Trusted","raft_id":2}`},
		{ServiceInfoMap, "", `{"status":"Open"}`},
		{RekeysMap, p.ProposalID, `{"status":"Applied"}`},
	} {
		if got, _ := tx.Get(kv.m, kv.k); string(got) != kv.want {
			t.Errorf("%s[%q] = %s, want %s", kv.m, kv.k, got, kv.want)
		}
	}
	// Removing a member below the recovery threshold fails.
	q, _ := f.propose(t, m, Action{Name: "remove_member", Args: args(map[string]string{"member_id": newM.id})})
	q, _ = f.vote(t, m, q.ProposalID, BallotAccept)
	if q.State != StateOpen {
		t.Fatalf("two members now: one vote should leave it Open, got %s", q.State)
	}
	q, _ = f.vote(t, newM, q.ProposalID, BallotAccept)
	if q.State != StateFailed {
		t.Errorf("removing a recovery member under the threshold: %s, want Failed", q.State)
	}

	// JWT users of the issuer.
	sign := func(claims map[string]any, kid string) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: issuerKey, KeyID: kid}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.Signed(s).Claims(claims).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	now := f.clock()
	good := map[string]any{"iss": "https://issuer.test", "oid": "alice", "exp": now.Add(time.Hour).Unix()}
	if id, err := f.gov.VerifyBearer(sign(good, "k1")); err != nil || id != "alice" {
		t.Errorf("VerifyBearer(good) = %q, %v", id, err)
	}
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s2, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: otherKey, KeyID: "k1"}}, nil)
	forged, _ := jwt.Signed(s2).Claims(good).Serialize()
	bad := map[string]string{
		"expired":      sign(map[string]any{"iss": "https://issuer.test", "oid": "alice", "exp": now.Add(-time.Hour).Unix()}, "k1"),
		"no exp":       sign(map[string]any{"iss": "https://issuer.test", "oid": "alice"}, "k1"),
		"other issuer": sign(map[string]any{"iss": "https://evil.test", "oid": "alice", "exp": now.Add(time.Hour).Unix()}, "k1"),
		"unknown kid":  sign(good, "k2"),
		"no user id":   sign(map[string]any{"iss": "https://issuer.test", "exp": now.Add(time.Hour).Unix()}, "k1"),
		"forged":       forged,
		"garbage":      "a.b.c",
	}
	for name, tok := range bad {
		if id, err := f.gov.VerifyBearer(tok); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("VerifyBearer(%s) = %q, %v; want ErrInvalidToken", name, id, err)
		}
	}
}

func TestParseProposal(t *testing.T) {
	tests := []struct {
		body string
		ok   bool
	}{
		{`{"actions":[{"name":"set_user","args":{"user_id":"` + strings.Repeat("ab", 32) + `","role":"Contributor"}}]}`, true},
		{`{"actions":[{"name":"rotate_ledger_secret"}]}`, true},
		{`{"actions":[]}`, false},
		{`{"actions":[{"name":"nope"}]}`, false},
		{`{"actions":[{"name":"set_user","args":{"role":"Reader"}}]}`, false},
		{`{"actions":[{"name":"set_user","args":{"user_id":"u","role":"Reader","extra":1}}]}`, false},
		{`{"actions":[{"name":"rotate_ledger_secret","args":{"x":1}}]}`, false},
		{`{"actions":[{"name":"set_recovery_threshold","args":{"recovery_threshold":0}}]}`, false},
		{`{"actions":[{"name":"set_constitution","args":{"constitution":{"thresholds":{"nope":1}}}}]}`, false},
		{`{"actions":[{"name":"add_measurement","args":{"platform":"sgx","measurement":"ab"}}]}`, false},
		{`{"actions":[{"name":"trust_node","args":{"node_id":"AB"}}]}`, false},
		{`{"actions":[]} {}`, false},
		{`{"actions":[{"name":"set_member","args":{"cert":"not pem"}}]}`, false},
	}
	for _, tt := range tests {
		_, err := ParseProposal([]byte(tt.body))
		if (err == nil) != tt.ok {
			t.Errorf("ParseProposal(%s) = %v, want ok %v", tt.body, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidProposal) {
			t.Errorf("ParseProposal(%s) error %v does not wrap ErrInvalidProposal", tt.body, err)
		}
	}
}

func TestConcurrentBallots(t *testing.T) {
	f := newFixture(t, 5)
	user := strings.Repeat("dd", 32)
	p, err := f.propose(t, f.members[0], setUserAction(t, user, "Reader"))
	if err != nil {
		t.Fatal(err)
	}
	bodies := make([][]byte, len(f.members))
	for i, m := range f.members {
		bodies[i] = m.sign(t, TypeBallot, p.ProposalID, Ballot{BallotAccept}, f.clock())
	}
	var wg sync.WaitGroup
	errs := make([]error, len(bodies))
	for i, b := range bodies {
		wg.Go(func() { _, _, errs[i] = f.gov.Vote(context.Background(), p.ProposalID, b) })
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrProposalNotOpen):
			t.Errorf("ballot %d: %v", i, err)
		}
	}
	got, _ := f.gov.Proposal(p.ProposalID)
	if got.State != StateAccepted || ok != 3 || len(got.Ballots) != 3 {
		t.Errorf("state %s with %d ballots, %d accepted calls; want Accepted, 3, 3", got.State, len(got.Ballots), ok)
	}
}
