package cleanroom

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/parleyhq/parley/internal/cleanroom/dataset"
	"github.com/parleyhq/parley/internal/cleanroom/runner"
	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
)

// Map names.
const (
	RoomsMap     = "public:parley.cleanroom.rooms"
	PartiesMap   = "public:parley.cleanroom.parties"
	DatasetsMap  = "public:parley.cleanroom.datasets"
	ContractsMap = "public:parley.cleanroom.contracts"
	JobsMap      = "public:parley.cleanroom.jobs"
	CountersMap  = "public:parley.cleanroom.counters"
	HistoryMap   = "public:parley.cleanroom.history"
	// ReleasesMap maps "room/runtime key thumbprint" to the JSON
	// ReleaseRecord of a granted data key release, so that a job is
	// recorded only by the runner the keys went to, once.
	ReleasesMap = "public:parley.cleanroom.releases"
)

// Errors, returned wrapped. The HTTP layer maps them to status codes.
var (
	// ErrMalformed: the request or its body does not parse or is out of bounds.
	ErrMalformed = errors.New("malformed clean-room request")
	// ErrBadSignature: the signature does not verify with the party's key.
	ErrBadSignature = errors.New("bad signature")
	// ErrStale: createdAt is outside the clock-skew window.
	ErrStale = errors.New("request outside the clock-skew window")
	// ErrReplay: the counter is not above the party's last accepted one.
	ErrReplay = errors.New("request replayed")
	// ErrNotFound: the room, party, dataset or contract does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: the room, party, dataset or contract already exists.
	ErrExists = errors.New("already exists")
	// ErrForbidden: the signer may not do this (not a party, not an owner, ...).
	ErrForbidden = errors.New("forbidden")
	// ErrState: the contract is not in a state that allows this.
	ErrState = errors.New("wrong state")
	// ErrTooManyConflicts: the transaction kept conflicting with others.
	ErrTooManyConflicts = engine.ErrTooManyConflicts
)

// Request types.
const (
	TypeCreateRoom      = "create_room"
	TypeInvite          = "invite"
	TypeJoin            = "join"
	TypeRegisterDataset = "register_dataset"
	TypeProposeContract = "propose_contract"
	TypeApprove         = "approve"
	TypeSuspend         = "suspend"
)

// Party states.
const (
	PartyInvited = "Invited"
	PartyActive  = "Active"
)

// Contract states.
const (
	ContractProposed  = "Proposed"
	ContractApproved  = "Approved"
	ContractSuspended = "Suspended"
)

// Limits.
const (
	MaxRequestBytes = 256 << 10
	MaxDatasets     = runner.MaxTables
	MaxRecipients   = runner.MaxRecipients
	MaxMeasurements = 64
	// DefaultMaxClockSkew bounds |createdAt − now|.
	DefaultMaxClockSkew = 5 * time.Minute
)

// Request is the payload of a signed clean-room request.
type Request struct {
	Type      string          `json:"type"`
	Room      string          `json:"room"`
	CreatedAt int64           `json:"createdAt"`
	Counter   uint64          `json:"counter"`
	Body      json.RawMessage `json:"body,omitempty"`
}

// Room is a clean room.
type Room struct {
	Name      string `json:"name"`
	CreatedBy string `json:"createdBy"`
	CreatedAt int64  `json:"createdAt"`
	// Events is the number of steps recorded in EventsMap.
	Events uint64 `json:"events"`
}

// Party is a participant of a room.
type Party struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	PublicKey string `json:"publicKey"` // P-384 PKIX, PEM
	State     string `json:"state"`
	InvitedBy string `json:"invitedBy,omitempty"`
}

// Dataset is a registered encrypted dataset. Its ciphertext lives in a blob
// store; the ledger holds its digest.
type Dataset struct {
	Name   string         `json:"name"`
	Owner  string         `json:"owner"`
	Digest string         `json:"digest"` // hex SHA-256 of the ciphertext
	Size   int64          `json:"size"`
	Schema dataset.Schema `json:"schema"`
	Rules  runner.Rules   `json:"rules"`
	// KeyCommitment is KeyCommitment(data key) when the data key was
	// handed to the key broker with the registration.
	KeyCommitment string `json:"keyCommitment,omitempty"`
}

// Recipient names a party that receives a contract's output, and the
// HPKE public key (X25519 or P-256, raw, base64 in JSON) it is sealed to.
type Recipient struct {
	Party string `json:"party"`
	Curve string `json:"curve"` // "X25519" or "P-256"
	Key   []byte `json:"key"`
}

// ContractTerms are what a contract's proposer signs and its approvers approve.
type ContractTerms struct {
	Name       string      `json:"name"`
	SQL        string      `json:"sql"`
	Datasets   []string    `json:"datasets"`
	Recipients []Recipient `json:"recipients"`
	// Measurements are the runner measurements (hex) allowed to run it.
	Measurements []string `json:"measurements"`
}

// Contract is a proposed contract and its approvals.
type Contract struct {
	ID         string        `json:"id"`
	Terms      ContractTerms `json:"terms"`
	ProposedBy string        `json:"proposedBy"`
	State      string        `json:"state"`
	// Approvals maps each owner that approved to the createdAt of its approval.
	Approvals   map[string]int64 `json:"approvals"`
	SuspendedBy string           `json:"suspendedBy,omitempty"`
}

// JobRecord is the ledger's record of one run of a contract.
type JobRecord struct {
	ID          string            `json:"id"`
	Contract    string            `json:"contract"`
	Inputs      map[string]string `json:"inputs"` // dataset -> hex digest
	Measurement string            `json:"measurement"`
	Output      string            `json:"output"` // hex SHA-256 of the stored sealed output
	Rows        int               `json:"rows"`
	Suppressed  int               `json:"suppressed"`
	// Release is the transaction id of the key release the runner used,
	// as the runner reports it.
	Release string `json:"release,omitempty"`
	// RuntimeKey is the hex RFC 7638 thumbprint of the attested runtime
	// key the data keys were wrapped to; the runner records the job with
	// a token attesting the same key.
	RuntimeKey string `json:"runtimeKey"`
	// Refused, when set, says why the runner refused to run the query
	// (the analysis rule broken); Output is then empty.
	Refused string `json:"refused,omitempty"`
}

// JobContext is the context a job's result is sealed under (see
// runner.Job.Context): the room, the contract and the transaction id of
// the key release the run used, so a result cannot pass for another run's.
func JobContext(room, contract, release string) []byte {
	return []byte("room=" + room + "\x00contract=" + contract + "\x00release=" + release)
}

// ReleaseRecord is what ReleasesMap keeps of a granted release.
type ReleaseRecord struct {
	Contract    string   `json:"contract"`
	Measurement string   `json:"measurement"`
	Datasets    []string `json:"datasets"`
	// Job is the job recorded by the release's runner, once there is one.
	Job string `json:"job,omitempty"`
}

// Ledger is what the service needs of the engine.
type Ledger interface {
	Begin() *kv.Tx
	Commit(ctx context.Context, tx *kv.Tx, opts engine.CommitOptions) (ledger.TxID, error)
}

var _ Ledger = (*engine.Engine)(nil)

// Service runs clean-room requests over a ledger. It is safe for concurrent use.
type Service struct {
	l    Ledger
	now  func() time.Time
	skew time.Duration
}

// New returns a service over l; now is the clock (time.Now when nil).
func New(l Ledger, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{l: l, now: now, skew: DefaultMaxClockSkew}
}

var (
	nameRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
	// contractNameRE: contract names are labels, never SQL or paths.
	contractNameRE = regexp.MustCompile(`^[a-z0-9_][a-z0-9_.-]{0,62}$`)
	hexID          = regexp.MustCompile(`^[0-9a-f]{64}$`)
	measRE         = regexp.MustCompile(`^[0-9a-f]{64,128}$`)
)

// PartyID returns the party id of a P-384 public key.
func PartyID(pub *ecdsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("encode public key: %w", err)
	}
	d := sha256.Sum256(der)
	return hex.EncodeToString(d[:]), nil
}

// EncodePublicKey returns pub as PEM.
func EncodePublicKey(pub *ecdsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("encode public key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

// ParsePublicKey parses a party's P-384 public key PEM.
func ParsePublicKey(s string) (*ecdsa.PublicKey, error) { return parsePublicKey(s) }

func parsePublicKey(s string) (*ecdsa.PublicKey, error) {
	b, _ := pem.Decode([]byte(s))
	if b == nil || b.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("public key: want a PEM PUBLIC KEY: %w", ErrMalformed)
	}
	k, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key: %v: %w", err, ErrMalformed)
	}
	pub, ok := k.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P384() {
		return nil, fmt.Errorf("public key: want P-384 ECDSA: %w", ErrMalformed)
	}
	return pub, nil
}

func key(room, id string) string { return room + "/" + id }

func getJSON(tx *kv.Tx, m, k string, v any) (bool, error) {
	b, ok := tx.Get(m, k)
	if !ok {
		return false, nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return true, fmt.Errorf("decode %s %s: %w", m, k, err)
	}
	return true, nil
}

func putJSON(tx *kv.Tx, m, k string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s %s: %w", m, k, err)
	}
	tx.Put(m, k, b)
	return nil
}

// authenticate verifies sr within tx: the signer is a party of the room in
// one of states (or, for create_room, the key in the body), the request is
// fresh and not replayed. It records the new counter and the request.
func (s *Service) authenticate(tx *kv.Tx, sr *signed, typ string, pub *ecdsa.PublicKey, states ...string) (*Request, error) {
	if pub == nil {
		var p Party
		ok, err := getJSON(tx, PartiesMap, key(sr.room, sr.kid), &p)
		if err != nil {
			return nil, err
		}
		if !ok || !slices.Contains(states, p.State) {
			return nil, fmt.Errorf("signer %s in room %s: %w", sr.kid, sr.room, ErrForbidden)
		}
		if pub, err = parsePublicKey(p.PublicKey); err != nil {
			return nil, err
		}
	}
	req, err := sr.verify(pub)
	if err != nil {
		return nil, err
	}
	if req.Type != typ {
		return nil, fmt.Errorf("request is a %s, sent as a %s: %w", req.Type, typ, ErrMalformed)
	}
	created := time.Unix(req.CreatedAt, 0)
	if now := s.now(); created.Before(now.Add(-s.skew)) || created.After(now.Add(s.skew)) {
		return nil, fmt.Errorf("created at %s, service time %s: %w", created.UTC(), now.UTC(), ErrStale)
	}
	var last uint64
	if b, ok := tx.Get(CountersMap, sr.kid); ok {
		last, _ = strconv.ParseUint(string(b), 10, 64)
	}
	if req.Counter <= last {
		return nil, fmt.Errorf("party %s counter %d, last accepted %d: %w", sr.kid, req.Counter, last, ErrReplay)
	}
	tx.Put(CountersMap, sr.kid, strconv.AppendUint(nil, req.Counter, 10))
	d := sha256.Sum256([]byte(sr.raw))
	tx.Put(HistoryMap, hex.EncodeToString(d[:]), []byte(sr.raw))
	return req, nil
}
