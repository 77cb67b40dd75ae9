package gov

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/parleyhq/parley/internal/app"
	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/identity"
	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/strictjson"
)

// Map names; see the package documentation for their keys and values.
const (
	MembersMap        = app.MembersMap
	EncryptionKeysMap = app.MemberEncryptionKeysMap
	MembersInfoMap    = "public:ccf.gov.members.info"
	CountersMap       = "public:ccf.gov.members.request_counters"
	ProposalsMap      = "public:ccf.gov.proposals"
	ProposalsInfoMap  = "public:ccf.gov.proposals_info"
	HistoryMap        = "public:ccf.gov.history"
	MeasurementsMap   = "public:ccf.gov.nodes.measurements"
	NodesInfoMap      = "public:ccf.gov.nodes.info"
	JWTIssuersMap     = "public:ccf.gov.jwt.issuers"
	ServiceConfigMap  = "public:ccf.gov.service.config"
	ServiceInfoMap    = "public:ccf.gov.service.info"
	RekeysMap         = "public:ccf.gov.ledger_secret.rekeys"
	// ConstitutionRulesKey is the key of app.ConstitutionMap holding the
	// Constitution (JSON); key "" holds the descriptive script.
	ConstitutionRulesKey = "rules"
)

// DefaultMaxClockSkew is how far a request's createdAt may be from the
// service's clock.
const DefaultMaxClockSkew = 5 * time.Minute

const maxRetries = 16

// Errors returned by Service methods. httpapi maps each to a status and a
// code.
var (
	// ErrMalformedRequest is returned for a body that is not a well-formed
	// signed request (JWS ES384 compact, known fields, right type).
	ErrMalformedRequest = errors.New("malformed governance request")
	// ErrUnknownMember is returned when the signer is not a member.
	ErrUnknownMember = errors.New("not a member")
	// ErrBadSignature is returned when the signature does not verify with
	// the member's certificate.
	ErrBadSignature = errors.New("signature does not verify")
	// ErrStaleRequest is returned for a request created outside the
	// service's clock-skew window.
	ErrStaleRequest = errors.New("request expired or from the future")
	// ErrReplay is returned for a request whose counter is not above the
	// member's last accepted one.
	ErrReplay = errors.New("request replayed")
	// ErrWrongEndpoint is returned for a request signed for another
	// endpoint or proposal than the one it was sent to.
	ErrWrongEndpoint = errors.New("request signed for another endpoint")
	// ErrInvalidProposal is returned for a proposal with an unknown action
	// or bad arguments, or a malformed ballot.
	ErrInvalidProposal = errors.New("invalid proposal")
	// ErrProposalNotFound is returned for an unknown proposal id.
	ErrProposalNotFound = errors.New("proposal not found")
	// ErrProposalNotOpen is returned for a ballot or withdrawal on a
	// proposal that is no longer Open.
	ErrProposalNotOpen = errors.New("proposal not open")
	// ErrAlreadyVoted is returned for a second ballot of a member.
	ErrAlreadyVoted = errors.New("member already voted")
	// ErrNotProposer is returned when someone else than the proposer
	// withdraws a proposal.
	ErrNotProposer = errors.New("only the proposer may withdraw")
	// ErrTooManyConflicts is returned when a transaction conflicted
	// maxRetries times in a row.
	ErrTooManyConflicts = errors.New("too many conflicting transactions")
)

// State is a proposal's state.
type State string

// Proposal states, as CCF names them.
const (
	StateOpen      State = "Open"
	StateAccepted  State = "Accepted"
	StateRejected  State = "Rejected"
	StateWithdrawn State = "Withdrawn"
	StateFailed    State = "Failed"
)

// Ballots a member may cast.
const (
	BallotAccept = "accept"
	BallotReject = "reject"
)

// Ballot is the body of a ballot request.
type Ballot struct {
	Ballot string `json:"ballot"`
}

// Member statuses.
const MemberActive = "Active"

// MemberInfo is the value of MembersInfoMap.
type MemberInfo struct {
	Status     string          `json:"status"`
	MemberData json.RawMessage `json:"memberData,omitempty"`
}

// ProposalInfo is the value of ProposalsInfoMap.
type ProposalInfo struct {
	ProposerID string `json:"proposerId"`
	State      State  `json:"state"`
	// Ballots maps member ids to BallotAccept or BallotReject.
	Ballots map[string]string `json:"ballots"`
	// FailureReason says why a Failed proposal's actions did not apply.
	FailureReason string `json:"failureReason,omitempty"`
	// CreatedAt is the proposal request's createdAt (Unix seconds).
	CreatedAt int64 `json:"createdAt"`
	// Threshold is the number of accepting ballots the proposal needed
	// when last resolved.
	Threshold int `json:"threshold"`
}

// Proposal is a proposal as served: its id, info and actions.
type Proposal struct {
	ProposalID string `json:"proposalId"`
	ProposalInfo
	Actions []Action `json:"actions"`
}

// Constitution decides when a proposal is accepted: a proposal needs, for
// each of its actions, that action's threshold of accepting ballots from
// current members (the largest over its actions), and a strict majority of
// the current members where no threshold is set. It is rejected once
// enough members reject that the threshold can no longer be reached.
type Constitution struct {
	// Thresholds maps action names to the number of accepting ballots
	// they need.
	Thresholds map[string]int `json:"thresholds,omitempty"`
}

func (c Constitution) validate() error {
	if len(c.Thresholds) > len(parsers) {
		return fmt.Errorf("constitution: too many thresholds")
	}
	for name, n := range c.Thresholds {
		if _, ok := parsers[name]; !ok {
			return fmt.Errorf("constitution: unknown action %.60q", name)
		}
		if n < 1 || n > 1000 {
			return fmt.Errorf("constitution: threshold of %s is %d, want 1 to 1000", name, n)
		}
	}
	return nil
}

// threshold returns the accepting ballots p needs among members members.
func (c Constitution) threshold(acts []Action, members int) int {
	need := 0
	for _, a := range acts {
		n, ok := c.Thresholds[a.Name]
		if !ok {
			n = members/2 + 1
		}
		need = max(need, n)
	}
	return need
}

// Config configures a Service.
type Config struct {
	Engine *engine.Engine
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// MaxClockSkew bounds |createdAt − now| (DefaultMaxClockSkew).
	MaxClockSkew time.Duration
	Logger       *slog.Logger
	// Secrets gives the ledger secret to wrap for recovery. Without it, no
	// recovery shares are written.
	Secrets SecretSource
}

// Service runs governance over one engine. It is safe for concurrent use.
type Service struct {
	eng  *engine.Engine
	now  func() time.Time
	skew time.Duration
	log  *slog.Logger
	// secrets is nil when recovery shares are not kept.
	secrets SecretSource
	// submitted holds the shares members submitted during recovery, in
	// memory only.
	submitted submittedShares
}

// New returns the governance service over cfg.Engine.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxClockSkew <= 0 {
		cfg.MaxClockSkew = DefaultMaxClockSkew
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{eng: cfg.Engine, now: cfg.Now, skew: cfg.MaxClockSkew, log: cfg.Logger, secrets: cfg.Secrets}
}

// authenticated is a verified request within a transaction.
type authenticated struct {
	member string
	req    *Request
	raw    string
}

// authenticate checks, within tx, that sr is signed by a member, fresh,
// of type typ (for proposal id, when set) and not replayed, and records
// the member's new counter and the request in the history.
func (s *Service) authenticate(tx *kv.Tx, sr *SignedRequest, typ, id string) (*authenticated, error) {
	certPEM, ok := tx.Get(MembersMap, sr.MemberID)
	if !ok {
		return nil, fmt.Errorf("signer %s: %w", sr.MemberID, ErrUnknownMember)
	}
	cert, err := identity.ParseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("member %s certificate: %w", sr.MemberID, err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("member %s has no ECDSA key: %w", sr.MemberID, ErrBadSignature)
	}
	req, err := sr.Verify(pub)
	if err != nil {
		return nil, err
	}
	if req.Type != typ || req.ProposalID != id {
		return nil, fmt.Errorf("request is a %s for %q, sent as a %s for %q: %w", req.Type, req.ProposalID, typ, id, ErrWrongEndpoint)
	}
	if err := checkFresh(req, s.now(), s.skew); err != nil {
		return nil, err
	}
	var last uint64
	if b, ok := tx.Get(CountersMap, sr.MemberID); ok {
		last, _ = strconv.ParseUint(string(b), 10, 64)
	}
	if req.Counter <= last {
		return nil, fmt.Errorf("member %s counter %d, last accepted %d: %w", sr.MemberID, req.Counter, last, ErrReplay)
	}
	tx.Put(CountersMap, sr.MemberID, strconv.AppendUint(nil, req.Counter, 10))
	if typ == TypeRecoveryShare {
		// The request holds a plaintext share: it is never written to
		// the ledger (SubmitRecoveryShare records who submitted).
		return &authenticated{member: sr.MemberID, req: req}, nil
	}
	digest := sha256.Sum256([]byte(sr.Raw))
	tx.Put(HistoryMap, hex.EncodeToString(digest[:]), mustJSON(struct {
		MemberID string `json:"memberId"`
		Request  string `json:"request"`
	}{sr.MemberID, sr.Raw}))
	return &authenticated{member: sr.MemberID, req: req, raw: sr.Raw}, nil
}

// Propose records a new proposal from a signed request and resolves it at
// once (a threshold the members cannot reach rejects it). It returns the
// proposal and the id of its transaction.
func (s *Service) Propose(ctx context.Context, body []byte) (*Proposal, ledger.TxID, error) {
	sr, err := ParseSigned(body)
	if err != nil {
		return nil, ledger.TxID{}, err
	}
	var out *Proposal
	id, err := s.run(ctx, func() (*kv.Tx, error) {
		tx := s.eng.Begin()
		au, err := s.authenticate(tx, sr, TypeProposal, "")
		if err != nil {
			return nil, err
		}
		p, _, err := parseProposal(au.req.Body)
		if err != nil {
			return nil, err
		}
		digest := sha256.Sum256([]byte(sr.Raw))
		pid := hex.EncodeToString(digest[:])
		if _, ok := tx.Get(ProposalsInfoMap, pid); ok {
			return nil, fmt.Errorf("proposal %s exists: %w", pid, ErrReplay)
		}
		tx.Put(ProposalsMap, pid, au.req.Body)
		info := ProposalInfo{ProposerID: au.member, State: StateOpen, Ballots: map[string]string{}, CreatedAt: au.req.CreatedAt}
		restart := func() (*kv.Tx, error) {
			ntx, err := s.redo(sr, TypeProposal, "")
			if err == nil {
				ntx.Put(ProposalsMap, pid, au.req.Body)
			}
			return ntx, err
		}
		out, tx, err = s.resolve(tx, restart, pid, p.Actions, info)
		return tx, err
	})
	if err != nil {
		return nil, ledger.TxID{}, err
	}
	return out, id, nil
}

// redo begins a new transaction that records only the request, for a
// proposal whose actions failed to apply.
func (s *Service) redo(sr *SignedRequest, typ, id string) (*kv.Tx, error) {
	tx := s.eng.Begin()
	if _, err := s.authenticate(tx, sr, typ, id); err != nil {
		return nil, err
	}
	return tx, nil
}

// resolve counts the ballots of info against the constitution and writes
// the proposal's info to tx. An accepted proposal's actions apply in tx;
// if one fails, the proposal is Failed and tx is replaced by a fresh one
// from restart holding only the request and the Failed info.
func (s *Service) resolve(tx *kv.Tx, restart func() (*kv.Tx, error), pid string, acts []Action, info ProposalInfo) (*Proposal, *kv.Tx, error) {
	members := map[string]bool{}
	tx.Foreach(MembersMap, func(k string, _ []byte) bool { members[k] = true; return true })
	c := s.constitution(tx)
	need := c.threshold(acts, len(members))
	yes, no := 0, 0
	for m, b := range info.Ballots {
		if !members[m] {
			continue
		}
		if b == BallotAccept {
			yes++
		} else {
			no++
		}
	}
	info.Threshold = need
	switch {
	case yes >= need:
		info.State = StateAccepted
	case no > len(members)-need:
		info.State = StateRejected
	}
	if info.State == StateAccepted {
		if err := s.apply(tx, pid, acts); err != nil {
			ntx, rerr := restart()
			if rerr != nil {
				return nil, nil, rerr
			}
			tx = ntx
			info.State = StateFailed
			info.FailureReason = err.Error()
			s.log.Info("proposal failed", slog.String("proposal", pid), slog.Any("error", err))
		}
	}
	tx.Put(ProposalsInfoMap, pid, mustJSON(info))
	return &Proposal{ProposalID: pid, ProposalInfo: info, Actions: acts}, tx, nil
}

// apply applies the actions of proposal pid in tx.
func (s *Service) apply(tx *kv.Tx, pid string, acts []Action) error {
	st := &state{tx: tx, proposalID: pid, svc: s}
	defer func() { clear(st.newSecret) }()
	body := mustJSON(ProposalBody{Actions: acts})
	_, parsed, err := parseProposal(body)
	if err != nil {
		return err
	}
	for i, a := range parsed {
		if err := a.apply(st); err != nil {
			return fmt.Errorf("action %d (%s): %w", i, acts[i].Name, err)
		}
	}
	// Recovery members or the threshold may have changed, or the secret
	// rotated: re-share in the same transaction.
	if st.newSecret != nil {
		if s.secrets == nil {
			return nil
		}
		if err := s.reshareWith(tx, st.newSecret); err != nil {
			return fmt.Errorf("recovery shares: %w", err)
		}
		return nil
	}
	if err := s.reshareIfStale(tx); err != nil {
		return fmt.Errorf("recovery shares: %w", err)
	}
	return nil
}

// constitution reads the constitution's rules; the zero Constitution
// (strict majority for every action) when none is set.
func (s *Service) constitution(tx *kv.Tx) Constitution {
	var c Constitution
	if b, ok := tx.Get(app.ConstitutionMap, ConstitutionRulesKey); ok {
		_ = json.Unmarshal(b, &c)
	}
	return c
}

// Vote records a member's signed ballot on proposal pid and resolves the
// proposal; if it is accepted, its actions apply in the same transaction.
func (s *Service) Vote(ctx context.Context, pid string, body []byte) (*Proposal, ledger.TxID, error) {
	sr, err := ParseSigned(body)
	if err != nil {
		return nil, ledger.TxID{}, err
	}
	var out *Proposal
	id, err := s.run(ctx, func() (*kv.Tx, error) {
		tx := s.eng.Begin()
		au, err := s.authenticate(tx, sr, TypeBallot, pid)
		if err != nil {
			return nil, err
		}
		var b Ballot
		if err := strictjson.Unmarshal(au.req.Body, &b); err != nil || (b.Ballot != BallotAccept && b.Ballot != BallotReject) {
			return nil, fmt.Errorf(`ballot: want {"ballot":"accept"} or {"ballot":"reject"}: %w`, ErrInvalidProposal)
		}
		p, err := readProposal(tx, pid)
		if err != nil {
			return nil, err
		}
		if p.State != StateOpen {
			return nil, fmt.Errorf("proposal %s is %s: %w", pid, p.State, ErrProposalNotOpen)
		}
		if _, ok := p.Ballots[au.member]; ok {
			return nil, fmt.Errorf("member %s on proposal %s: %w", au.member, pid, ErrAlreadyVoted)
		}
		orig, _ := tx.Get(ProposalsInfoMap, pid)
		restart := func() (*kv.Tx, error) {
			ntx, err := s.redo(sr, TypeBallot, pid)
			if err != nil {
				return nil, err
			}
			// The fresh transaction must see the proposal as the ballot did.
			if cur, _ := ntx.Get(ProposalsInfoMap, pid); !bytes.Equal(cur, orig) {
				return nil, fmt.Errorf("proposal %s changed: %w", pid, kv.ErrConflict)
			}
			return ntx, nil
		}
		p.Ballots[au.member] = b.Ballot
		out, tx, err = s.resolve(tx, restart, pid, p.Actions, p.ProposalInfo)
		return tx, err
	})
	if err != nil {
		return nil, ledger.TxID{}, err
	}
	return out, id, nil
}

// Withdraw withdraws an Open proposal at its proposer's signed request.
func (s *Service) Withdraw(ctx context.Context, pid string, body []byte) (*Proposal, ledger.TxID, error) {
	sr, err := ParseSigned(body)
	if err != nil {
		return nil, ledger.TxID{}, err
	}
	var out *Proposal
	id, err := s.run(ctx, func() (*kv.Tx, error) {
		tx := s.eng.Begin()
		au, err := s.authenticate(tx, sr, TypeWithdrawal, pid)
		if err != nil {
			return nil, err
		}
		p, err := readProposal(tx, pid)
		if err != nil {
			return nil, err
		}
		if p.ProposerID != au.member {
			return nil, fmt.Errorf("proposal %s was proposed by %s: %w", pid, p.ProposerID, ErrNotProposer)
		}
		if p.State != StateOpen {
			return nil, fmt.Errorf("proposal %s is %s: %w", pid, p.State, ErrProposalNotOpen)
		}
		p.State = StateWithdrawn
		tx.Put(ProposalsInfoMap, pid, mustJSON(p.ProposalInfo))
		out = p
		return tx, nil
	})
	if err != nil {
		return nil, ledger.TxID{}, err
	}
	return out, id, nil
}

// run builds a transaction with build and commits it, building it again
// on conflict.
func (s *Service) run(ctx context.Context, build func() (*kv.Tx, error)) (ledger.TxID, error) {
	for range maxRetries {
		tx, err := build()
		if errors.Is(err, kv.ErrConflict) {
			continue
		}
		if err != nil {
			return ledger.TxID{}, err
		}
		id, err := s.eng.Commit(ctx, tx, engine.CommitOptions{})
		if errors.Is(err, kv.ErrConflict) {
			continue
		}
		if err != nil {
			return ledger.TxID{}, fmt.Errorf("commit: %w", err)
		}
		return id, nil
	}
	return ledger.TxID{}, ErrTooManyConflicts
}

func readProposal(tx *kv.Tx, pid string) (*Proposal, error) {
	if !validProposalID(pid) {
		return nil, fmt.Errorf("proposal id %.80q: %w", pid, ErrProposalNotFound)
	}
	ib, ok := tx.Get(ProposalsInfoMap, pid)
	if !ok {
		return nil, fmt.Errorf("proposal %s: %w", pid, ErrProposalNotFound)
	}
	p := &Proposal{ProposalID: pid}
	if err := json.Unmarshal(ib, &p.ProposalInfo); err != nil {
		return nil, fmt.Errorf("proposal %s info: %w", pid, err)
	}
	if p.Ballots == nil {
		p.Ballots = map[string]string{}
	}
	if bb, ok := tx.Get(ProposalsMap, pid); ok {
		var body ProposalBody
		if err := json.Unmarshal(bb, &body); err != nil {
			return nil, fmt.Errorf("proposal %s: %w", pid, err)
		}
		p.Actions = body.Actions
	}
	return p, nil
}

// Proposal returns proposal pid, or an error wrapping ErrProposalNotFound.
func (s *Service) Proposal(pid string) (*Proposal, error) {
	return readProposal(s.eng.Begin(), pid)
}

// Proposals returns every proposal, by id.
func (s *Service) Proposals() []*Proposal {
	tx := s.eng.Begin()
	var ids []string
	tx.Foreach(ProposalsInfoMap, func(k string, _ []byte) bool { ids = append(ids, k); return true })
	out := make([]*Proposal, 0, len(ids))
	for _, id := range ids {
		if p, err := readProposal(tx, id); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// Member is a consortium member as served.
type Member struct {
	MemberID            string          `json:"memberId"`
	Certificate         string          `json:"certificate"`
	EncryptionPublicKey string          `json:"encryptionPublicKey,omitempty"`
	Status              string          `json:"status"`
	MemberData          json.RawMessage `json:"memberData,omitempty"`
}

// Members returns the consortium members, by id.
func (s *Service) Members() []Member {
	tx := s.eng.Begin()
	var out []Member
	tx.Foreach(MembersMap, func(k string, v []byte) bool {
		m := Member{MemberID: k, Certificate: string(v), Status: MemberActive}
		if e, ok := tx.Get(EncryptionKeysMap, k); ok {
			m.EncryptionPublicKey = string(e)
		}
		if ib, ok := tx.Get(MembersInfoMap, k); ok {
			var mi MemberInfo
			if json.Unmarshal(ib, &mi) == nil {
				m.Status, m.MemberData = mi.Status, mi.MemberData
			}
		}
		out = append(out, m)
		return true
	})
	return out
}

// IsMember reports whether id is a current member's id.
func (s *Service) IsMember(id string) bool {
	_, ok := s.eng.Begin().Get(MembersMap, id)
	return ok
}

// Constitution returns the rules in force.
func (s *Service) Constitution() Constitution { return s.constitution(s.eng.Begin()) }

// Measurements returns the allowed code measurements, "platform:hex",
// sorted.
func (s *Service) Measurements() []string {
	var out []string
	s.eng.Begin().Foreach(MeasurementsMap, func(k string, _ []byte) bool { out = append(out, k); return true })
	slices.Sort(out)
	return out
}
