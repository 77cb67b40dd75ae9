package cleanroom

import (
	"context"
	"crypto/ecdh"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/parleyhq/parley/internal/cleanroom/runner"
	"github.com/parleyhq/parley/internal/keyrelease"
	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/strictjson"
)

// CreateRoomBody is the body of a create_room request.
type CreateRoomBody struct {
	Name      string `json:"name"`      // the creator's party name
	PublicKey string `json:"publicKey"` // the creator's P-384 key, PEM; must match the kid
}

// InviteBody is the body of an invite request.
type InviteBody struct {
	Name      string `json:"name"`
	PublicKey string `json:"publicKey"`
}

// ContractRef is the body of approve and suspend requests.
type ContractRef struct {
	Contract string `json:"contract"`
}

// RegisterDatasetBody is the body of a register_dataset request.
type RegisterDatasetBody = Dataset

func decodeBody(req *Request, v any) error {
	if err := strictjson.Unmarshal(req.Body, v); err != nil {
		return fmt.Errorf("%s body: %v: %w", req.Type, err, ErrMalformed)
	}
	return nil
}

// CreateRoom creates a room whose first, active party is the signer.
func (s *Service) CreateRoom(ctx context.Context, body []byte) (*Room, ledger.TxID, error) {
	sr, err := parseSigned(body)
	if err != nil {
		return nil, ledger.TxID{}, err
	}
	var peek struct {
		Body CreateRoomBody `json:"body"`
	}
	if err := json.Unmarshal(sr.obj.UnsafePayload(), &peek); err != nil {
		return nil, ledger.TxID{}, fmt.Errorf("create_room body: %v: %w", err, ErrMalformed)
	}
	pub, err := parsePublicKey(peek.Body.PublicKey)
	if err != nil {
		return nil, ledger.TxID{}, err
	}
	if id, err := PartyID(pub); err != nil || id != sr.kid {
		return nil, ledger.TxID{}, fmt.Errorf("kid %s is not the id of the key in the body: %w", sr.kid, ErrMalformed)
	}
	var out *Room
	id, err := s.run(ctx, func(tx *kv.Tx) ([32]byte, error) {
		req, err := s.authenticate(tx, sr, TypeCreateRoom, pub)
		if err != nil {
			return [32]byte{}, err
		}
		var b CreateRoomBody
		if err := decodeBody(req, &b); err != nil {
			return [32]byte{}, err
		}
		if !nameRE.MatchString(b.Name) {
			return [32]byte{}, fmt.Errorf("party name %.80q: %w", b.Name, ErrMalformed)
		}
		if _, ok := tx.Get(RoomsMap, req.Room); ok {
			return [32]byte{}, fmt.Errorf("room %s: %w", req.Room, ErrExists)
		}
		out = &Room{Name: req.Room, CreatedBy: sr.kid, CreatedAt: req.CreatedAt}
		if err := putJSON(tx, RoomsMap, req.Room, out); err != nil {
			return [32]byte{}, err
		}
		if err := putJSON(tx, PartiesMap, key(req.Room, sr.kid), Party{ID: sr.kid, Name: b.Name, PublicKey: b.PublicKey, State: PartyActive}); err != nil {
			return [32]byte{}, err
		}
		out.Events = 1
		return appendEvent(tx, sr.event(StepCreateRoom, sr.kid, map[string]any{"name": b.Name}))
	})
	return out, id, err
}

// Invite adds a party to the room, invited by an active party.
func (s *Service) Invite(ctx context.Context, body []byte) (*Party, ledger.TxID, error) {
	sr, err := parseSigned(body)
	if err != nil {
		return nil, ledger.TxID{}, err
	}
	var out *Party
	id, err := s.run(ctx, func(tx *kv.Tx) ([32]byte, error) {
		req, err := s.authenticate(tx, sr, TypeInvite, nil, PartyActive)
		if err != nil {
			return [32]byte{}, err
		}
		var b InviteBody
		if err := decodeBody(req, &b); err != nil {
			return [32]byte{}, err
		}
		if !nameRE.MatchString(b.Name) {
			return [32]byte{}, fmt.Errorf("party name %.80q: %w", b.Name, ErrMalformed)
		}
		pub, err := parsePublicKey(b.PublicKey)
		if err != nil {
			return [32]byte{}, err
		}
		pid, err := PartyID(pub)
		if err != nil {
			return [32]byte{}, err
		}
		if _, ok := tx.Get(PartiesMap, key(req.Room, pid)); ok {
			return [32]byte{}, fmt.Errorf("party %s: %w", pid, ErrExists)
		}
		out = &Party{ID: pid, Name: b.Name, PublicKey: b.PublicKey, State: PartyInvited, InvitedBy: sr.kid}
		if err := putJSON(tx, PartiesMap, key(req.Room, pid), out); err != nil {
			return [32]byte{}, err
		}
		return appendEvent(tx, sr.event(StepInvite, pid, map[string]any{"name": b.Name}))
	})
	return out, id, err
}

// Join makes an invited party active.
func (s *Service) Join(ctx context.Context, body []byte) (*Party, ledger.TxID, error) {
	sr, err := parseSigned(body)
	if err != nil {
		return nil, ledger.TxID{}, err
	}
	var out Party
	id, err := s.run(ctx, func(tx *kv.Tx) ([32]byte, error) {
		req, err := s.authenticate(tx, sr, TypeJoin, nil, PartyInvited)
		if err != nil {
			return [32]byte{}, err
		}
		if _, err := getJSON(tx, PartiesMap, key(req.Room, sr.kid), &out); err != nil {
			return [32]byte{}, err
		}
		out.State = PartyActive
		if err := putJSON(tx, PartiesMap, key(req.Room, sr.kid), out); err != nil {
			return [32]byte{}, err
		}
		return appendEvent(tx, sr.event(StepJoin, sr.kid, map[string]any{"name": out.Name}))
	})
	if err != nil {
		return nil, id, err
	}
	return &out, id, nil
}

// RegisterDataset records a dataset owned by the signer, without a data
// key: no runner can ever read it. Use RegisterDatasetWithKey. Datasets are
// immutable: a new version is a new name.
func (s *Service) RegisterDataset(ctx context.Context, body []byte) (*Dataset, ledger.TxID, error) {
	return s.RegisterDatasetWithKey(ctx, body, nil, nil)
}

// KeyStore holds data keys for the key broker; *keyrelease.Broker is one.
type KeyStore interface {
	// DepositDatasetKey stores dataset's data key, writing into tx, under
	// a release policy bound to the room's approved contracts. It fails if
	// the dataset already has a key.
	DepositDatasetKey(tx *kv.Tx, room, dataset string, key []byte, owner string) error
}

// KeyCommitment is the commitment to a data key that register_dataset
// carries (Dataset.KeyCommitment): hex SHA-256 of a fixed label and the
// key. The key is 32 random bytes, so the commitment reveals nothing.
func KeyCommitment(key []byte) string {
	h := sha256.New()
	h.Write([]byte("parley cleanroom data key v1\x00"))
	h.Write(key)
	return hex.EncodeToString(h.Sum(nil))
}

// RegisterDatasetWithKey records a dataset owned by the signer and, in the
// same transaction, hands its data key to keys (the key broker). The
// signed body's keyCommitment must be KeyCommitment(dataKey), so the key
// is the one the owner meant. With a nil dataKey the dataset is
// registered without a key.
func (s *Service) RegisterDatasetWithKey(ctx context.Context, body, dataKey []byte, keys KeyStore) (*Dataset, ledger.TxID, error) {
	sr, err := parseSigned(body)
	if err != nil {
		return nil, ledger.TxID{}, err
	}
	if dataKey != nil && keys == nil {
		return nil, ledger.TxID{}, fmt.Errorf("no key broker to hold the data key: %w", ErrMalformed)
	}
	var out Dataset
	id, err := s.run(ctx, func(tx *kv.Tx) ([32]byte, error) {
		req, err := s.authenticate(tx, sr, TypeRegisterDataset, nil, PartyActive)
		if err != nil {
			return [32]byte{}, err
		}
		out = Dataset{}
		if err := decodeBody(req, &out); err != nil {
			return [32]byte{}, err
		}
		if out.Owner != "" && out.Owner != sr.kid {
			return [32]byte{}, fmt.Errorf("dataset owner %s is not the signer: %w", out.Owner, ErrForbidden)
		}
		out.Owner = sr.kid
		if err := validateDataset(&out); err != nil {
			return [32]byte{}, err
		}
		if _, ok := tx.Get(DatasetsMap, key(req.Room, out.Name)); ok {
			return [32]byte{}, fmt.Errorf("dataset %s: %w", out.Name, ErrExists)
		}
		if dataKey != nil {
			if out.KeyCommitment != KeyCommitment(dataKey) {
				return [32]byte{}, fmt.Errorf("the data key is not the one keyCommitment names: %w", ErrMalformed)
			}
			if err := keys.DepositDatasetKey(tx, req.Room, out.Name, dataKey, sr.kid); err != nil {
				return [32]byte{}, fmt.Errorf("deposit the data key: %v: %w", err, ErrMalformed)
			}
		} else if out.KeyCommitment != "" {
			return [32]byte{}, fmt.Errorf("keyCommitment without a data key: %w", ErrMalformed)
		}
		if err := putJSON(tx, DatasetsMap, key(req.Room, out.Name), out); err != nil {
			return [32]byte{}, err
		}
		return appendEvent(tx, sr.event(StepRegisterDataset, out.Name, map[string]any{
			"digest": out.Digest, "size": out.Size, "keyDeposited": dataKey != nil, "rules": out.Rules,
		}))
	})
	if err != nil {
		return nil, id, err
	}
	return &out, id, nil
}

func validateDataset(d *Dataset) error {
	if !nameRE.MatchString(d.Name) {
		return fmt.Errorf("dataset name %.80q: %w", d.Name, ErrMalformed)
	}
	if !hexID.MatchString(d.Digest) || d.Size <= 0 {
		return fmt.Errorf("dataset digest %.80q size %d: want a hex SHA-256 and a positive size: %w", d.Digest, d.Size, ErrMalformed)
	}
	if err := d.Schema.Validate(); err != nil {
		return fmt.Errorf("dataset schema: %v: %w", err, ErrMalformed)
	}
	// The runner validates rules against the schema the same way.
	t := runner.Table{Name: d.Name, Schema: d.Schema, Rules: d.Rules}
	if err := runner.ValidateTable(t); err != nil {
		return fmt.Errorf("dataset rules: %v: %w", err, ErrMalformed)
	}
	return nil
}

// ProposeContract records a contract in state Proposed. Its id is the hex
// SHA-256 of the body as signed.
func (s *Service) ProposeContract(ctx context.Context, body []byte) (*Contract, ledger.TxID, error) {
	sr, err := parseSigned(body)
	if err != nil {
		return nil, ledger.TxID{}, err
	}
	var out *Contract
	id, err := s.run(ctx, func(tx *kv.Tx) ([32]byte, error) {
		req, err := s.authenticate(tx, sr, TypeProposeContract, nil, PartyActive)
		if err != nil {
			return [32]byte{}, err
		}
		var t ContractTerms
		if err := decodeBody(req, &t); err != nil {
			return [32]byte{}, err
		}
		if err := s.validateTerms(tx, req.Room, &t); err != nil {
			return [32]byte{}, err
		}
		d := sha256.Sum256(req.Body)
		cid := hex.EncodeToString(d[:])
		if _, ok := tx.Get(ContractsMap, key(req.Room, cid)); ok {
			return [32]byte{}, fmt.Errorf("contract %s: %w", cid, ErrExists)
		}
		out = &Contract{ID: cid, Terms: t, ProposedBy: sr.kid, State: ContractProposed, Approvals: map[string]int64{}}
		if err := putJSON(tx, ContractsMap, key(req.Room, cid), out); err != nil {
			return [32]byte{}, err
		}
		return appendEvent(tx, sr.event(StepProposeContract, cid, map[string]any{
			"name": t.Name, "datasets": t.Datasets, "measurements": t.Measurements, "state": out.State,
		}))
	})
	return out, id, err
}

func (s *Service) validateTerms(tx *kv.Tx, room string, t *ContractTerms) error {
	if !contractNameRE.MatchString(t.Name) {
		return fmt.Errorf("contract name %.80q: want lowercase letters, digits, '_', '-' or '.': %w", t.Name, ErrMalformed)
	}
	if len(t.SQL) == 0 || len(t.SQL) > runner.MaxSQLSize {
		return fmt.Errorf("query of %d bytes: %w", len(t.SQL), ErrMalformed)
	}
	if len(t.Datasets) == 0 || len(t.Datasets) > MaxDatasets {
		return fmt.Errorf("contract reads %d datasets, want 1..%d: %w", len(t.Datasets), MaxDatasets, ErrMalformed)
	}
	for i, name := range t.Datasets {
		if slices.Contains(t.Datasets[:i], name) {
			return fmt.Errorf("dataset %s listed twice: %w", name, ErrMalformed)
		}
		if _, ok := tx.Get(DatasetsMap, key(room, name)); !ok {
			return fmt.Errorf("dataset %.80q: %w", name, ErrNotFound)
		}
	}
	if len(t.Recipients) == 0 || len(t.Recipients) > MaxRecipients {
		return fmt.Errorf("contract has %d recipients, want 1..%d: %w", len(t.Recipients), MaxRecipients, ErrMalformed)
	}
	for _, r := range t.Recipients {
		var p Party
		ok, err := getJSON(tx, PartiesMap, key(room, r.Party), &p)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("recipient %.80q: %w", r.Party, ErrNotFound)
		}
		if _, err := r.PublicKey(); err != nil {
			return err
		}
	}
	if len(t.Measurements) == 0 || len(t.Measurements) > MaxMeasurements {
		return fmt.Errorf("contract allows %d measurements, want 1..%d: %w", len(t.Measurements), MaxMeasurements, ErrMalformed)
	}
	for _, m := range t.Measurements {
		if !measRE.MatchString(m) {
			return fmt.Errorf("measurement %.80q: want lowercase hex: %w", m, ErrMalformed)
		}
	}
	return nil
}

// PublicKey parses the recipient's HPKE key.
func (r Recipient) PublicKey() (*ecdh.PublicKey, error) {
	var c ecdh.Curve
	switch r.Curve {
	case "X25519":
		c = ecdh.X25519()
	case "P-256":
		c = ecdh.P256()
	default:
		return nil, fmt.Errorf("recipient %s curve %.20q: want X25519 or P-256: %w", r.Party, r.Curve, ErrMalformed)
	}
	k, err := c.NewPublicKey(r.Key)
	if err != nil {
		return nil, fmt.Errorf("recipient %s key: %v: %w", r.Party, err, ErrMalformed)
	}
	return k, nil
}

// owners returns the owners of the contract's datasets.
func owners(tx *kv.Tx, room string, t ContractTerms) (map[string]bool, error) {
	out := map[string]bool{}
	for _, name := range t.Datasets {
		var d Dataset
		ok, err := getJSON(tx, DatasetsMap, key(room, name), &d)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("dataset %s: %w", name, ErrNotFound)
		}
		out[d.Owner] = true
	}
	return out, nil
}

// Approve records the signer's approval of a contract. The signer must own
// a dataset the contract reads. Once every owner approved, the contract is
// Approved.
func (s *Service) Approve(ctx context.Context, body []byte) (*Contract, ledger.TxID, error) {
	return s.contractChange(ctx, body, TypeApprove, func(tx *kv.Tx, room, signer string, createdAt int64, c *Contract) error {
		if c.State != ContractProposed {
			return fmt.Errorf("contract %s is %s: %w", c.ID, c.State, ErrState)
		}
		own, err := owners(tx, room, c.Terms)
		if err != nil {
			return err
		}
		if !own[signer] {
			return fmt.Errorf("party %s owns no dataset of contract %s: %w", signer, c.ID, ErrForbidden)
		}
		if _, ok := c.Approvals[signer]; ok {
			return fmt.Errorf("approval of %s by %s: %w", c.ID, signer, ErrExists)
		}
		c.Approvals[signer] = createdAt
		for o := range own {
			if _, ok := c.Approvals[o]; !ok {
				return nil
			}
		}
		c.State = ContractApproved
		return nil
	})
}

// Suspend suspends a contract; any active party of the room may.
func (s *Service) Suspend(ctx context.Context, body []byte) (*Contract, ledger.TxID, error) {
	return s.contractChange(ctx, body, TypeSuspend, func(_ *kv.Tx, _, signer string, _ int64, c *Contract) error {
		if c.State == ContractSuspended {
			return fmt.Errorf("contract %s is %s: %w", c.ID, c.State, ErrState)
		}
		c.State = ContractSuspended
		c.SuspendedBy = signer
		return nil
	})
}

func (s *Service) contractChange(ctx context.Context, body []byte, typ string, change func(tx *kv.Tx, room, signer string, createdAt int64, c *Contract) error) (*Contract, ledger.TxID, error) {
	sr, err := parseSigned(body)
	if err != nil {
		return nil, ledger.TxID{}, err
	}
	var out *Contract
	id, err := s.run(ctx, func(tx *kv.Tx) ([32]byte, error) {
		req, err := s.authenticate(tx, sr, typ, nil, PartyActive)
		if err != nil {
			return [32]byte{}, err
		}
		var ref ContractRef
		if err := decodeBody(req, &ref); err != nil {
			return [32]byte{}, err
		}
		c, err := readContract(tx, req.Room, ref.Contract)
		if err != nil {
			return [32]byte{}, err
		}
		if err := change(tx, req.Room, sr.kid, req.CreatedAt, c); err != nil {
			return [32]byte{}, err
		}
		out = c
		if err := putJSON(tx, ContractsMap, key(req.Room, c.ID), c); err != nil {
			return [32]byte{}, err
		}
		return appendEvent(tx, sr.event(typ, c.ID, map[string]any{"state": c.State}))
	})
	return out, id, err
}

func readContract(tx *kv.Tx, room, id string) (*Contract, error) {
	if !hexID.MatchString(id) {
		return nil, fmt.Errorf("contract id %.80q: %w", id, ErrMalformed)
	}
	var c Contract
	ok, err := getJSON(tx, ContractsMap, key(room, id), &c)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("contract %s: %w", id, ErrNotFound)
	}
	if c.Approvals == nil {
		c.Approvals = map[string]int64{}
	}
	return &c, nil
}

// Runnable returns the contract and its datasets if the contract is
// Approved and measurement is one it allows: the check a key release for a
// runner makes. It fails with ErrState or ErrForbidden otherwise.
func (s *Service) Runnable(room, contract, measurement string) (*Contract, []Dataset, error) {
	return runnable(s.l.Begin(), room, contract, measurement)
}

func runnable(tx *kv.Tx, room, contract, measurement string) (*Contract, []Dataset, error) {
	c, err := readContract(tx, room, contract)
	if err != nil {
		return nil, nil, err
	}
	if c.State != ContractApproved {
		reason := ""
		if c.State == ContractProposed {
			own, err := owners(tx, room, c.Terms)
			if err != nil {
				return nil, nil, err
			}
			var missing []string
			for o := range own {
				if _, ok := c.Approvals[o]; !ok {
					missing = append(missing, o)
				}
			}
			slices.Sort(missing)
			reason = fmt.Sprintf(" (not approved by %v)", missing)
		}
		return nil, nil, fmt.Errorf("contract %s is %s%s: %w", c.ID, c.State, reason, ErrState)
	}
	if !slices.Contains(c.Terms.Measurements, measurement) {
		return nil, nil, fmt.Errorf("runner measurement %.80q is not allowed by contract %s: %w", measurement, c.ID, ErrForbidden)
	}
	var ds []Dataset
	for _, name := range c.Terms.Datasets {
		var d Dataset
		ok, err := getJSON(tx, DatasetsMap, key(room, name), &d)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			return nil, nil, fmt.Errorf("dataset %s: %w", name, ErrNotFound)
		}
		ds = append(ds, d)
	}
	return c, ds, nil
}

var _ keyrelease.RoomGate = (*Service)(nil)

// AuthorizeRelease is the clean-room release policy, checked by the key
// broker within its release transaction: the contract must be Approved by
// every owner of every dataset it reads, not suspended, and allow
// measurement. It returns the datasets whose keys the runner gets. A
// refusal wraps keyrelease.ErrPolicyNotSatisfied and says why; an unknown
// room or contract is ErrNotFound.
func (s *Service) AuthorizeRelease(tx *kv.Tx, room, contract, measurement string) ([]string, error) {
	if !nameRE.MatchString(room) {
		return nil, fmt.Errorf("room %.80q: %w", room, ErrMalformed)
	}
	_, ds, err := runnable(tx, room, contract, measurement)
	if errors.Is(err, ErrState) || errors.Is(err, ErrForbidden) {
		return nil, fmt.Errorf("%w: %w", keyrelease.ErrPolicyNotSatisfied, err)
	}
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ds))
	for i, d := range ds {
		names[i] = d.Name
	}
	return names, nil
}

// RecordRelease writes the event of a key release or refusal into tx and
// returns the claims digest to commit it with.
func (s *Service) RecordRelease(tx *kv.Tx, r keyrelease.RoomRelease) ([32]byte, error) {
	step := StepKeyRelease
	detail := map[string]any{
		"measurement": r.Measurement, "runtimeKey": r.RuntimeKey, "tokenSha256": r.TokenSHA256, "attestationType": r.AttestationType,
	}
	if r.Refused != "" {
		step = StepKeyRefusal
		detail["reason"] = r.Refused
	} else {
		detail["datasets"] = r.Datasets
		if !hexID.MatchString(r.RuntimeKey) {
			return [32]byte{}, fmt.Errorf("release runtime key %.80q: %w", r.RuntimeKey, ErrMalformed)
		}
		k := key(r.Room, r.RuntimeKey)
		if _, ok := tx.Get(ReleasesMap, k); ok {
			return [32]byte{}, fmt.Errorf("a release to runtime key %s: %w", r.RuntimeKey, ErrExists)
		}
		if err := putJSON(tx, ReleasesMap, k, ReleaseRecord{Contract: r.Contract, Measurement: r.Measurement, Datasets: r.Datasets}); err != nil {
			return [32]byte{}, err
		}
	}
	return appendEvent(tx, Event{Room: r.Room, Step: step, By: "runner", Subject: r.Contract, Detail: detail})
}

// RecordJob records a run of an approved contract, or the runner's refusal
// to run it (j.Refused set, no output). The caller has verified the
// runner's attestation token, which gives j.Measurement and
// j.RuntimeKey; RecordJob checks that the keys were released to that
// runtime key for this contract and measurement and no job was recorded
// with it yet, that the contract is still approved, and that the inputs are
// exactly the contract's datasets at their registered digests. The job id
// is the hex SHA-256 of the record's JSON without the id.
func (s *Service) RecordJob(ctx context.Context, room string, j JobRecord) (*JobRecord, ledger.TxID, error) {
	if j.Refused == "" && !hexID.MatchString(j.Output) || j.Refused != "" && (j.Output != "" || len(j.Refused) > 1024) || j.Rows < 0 || j.Suppressed < 0 {
		return nil, ledger.TxID{}, fmt.Errorf("job output %.80q refused %.80q: %w", j.Output, j.Refused, ErrMalformed)
	}
	if !nameRE.MatchString(room) || len(j.Release) > 64 || !hexID.MatchString(j.RuntimeKey) {
		return nil, ledger.TxID{}, fmt.Errorf("room %.80q release %.80q runtime key %.80q: %w", room, j.Release, j.RuntimeKey, ErrMalformed)
	}
	j.ID = ""
	var out JobRecord
	id, err := s.run(ctx, func(tx *kv.Tx) ([32]byte, error) {
		if _, _, err := runnable(tx, room, j.Contract, j.Measurement); err != nil {
			return [32]byte{}, err
		}
		var rel ReleaseRecord
		ok, err := getJSON(tx, ReleasesMap, key(room, j.RuntimeKey), &rel)
		if err != nil {
			return [32]byte{}, err
		}
		if !ok || rel.Contract != j.Contract || rel.Measurement != j.Measurement {
			return [32]byte{}, fmt.Errorf("no key release of contract %s to this runner's runtime key: %w", j.Contract, ErrForbidden)
		}
		if rel.Job != "" {
			return [32]byte{}, fmt.Errorf("job %s was already recorded by this runner: %w", rel.Job, ErrExists)
		}
		c, err := readContract(tx, room, j.Contract)
		if err != nil {
			return [32]byte{}, err
		}
		if !slices.Equal(slices.Sorted(maps.Keys(j.Inputs)), slices.Sorted(slices.Values(c.Terms.Datasets))) {
			return [32]byte{}, fmt.Errorf("job inputs are not the contract's datasets: %w", ErrMalformed)
		}
		for name, digest := range j.Inputs {
			var d Dataset
			if _, err := getJSON(tx, DatasetsMap, key(room, name), &d); err != nil {
				return [32]byte{}, err
			}
			if d.Digest != digest {
				return [32]byte{}, fmt.Errorf("input %s digest %.80q, registered %s: %w", name, digest, d.Digest, ErrForbidden)
			}
		}
		b, err := json.Marshal(j)
		if err != nil {
			return [32]byte{}, fmt.Errorf("encode job: %w", err)
		}
		d := sha256.Sum256(b)
		out = j
		out.ID = hex.EncodeToString(d[:])
		if _, ok := tx.Get(JobsMap, key(room, out.ID)); ok {
			return [32]byte{}, fmt.Errorf("job %s: %w", out.ID, ErrExists)
		}
		if err := putJSON(tx, JobsMap, key(room, out.ID), out); err != nil {
			return [32]byte{}, err
		}
		rel.Job = out.ID
		if err := putJSON(tx, ReleasesMap, key(room, j.RuntimeKey), rel); err != nil {
			return [32]byte{}, err
		}
		step, detail := StepJob, map[string]any{
			"job": out.ID, "inputs": out.Inputs, "measurement": out.Measurement, "output": out.Output,
			"rows": out.Rows, "suppressed": out.Suppressed, "release": out.Release,
		}
		if out.Refused != "" {
			step = StepJobRefusal
			detail = map[string]any{"job": out.ID, "inputs": out.Inputs, "measurement": out.Measurement, "reason": out.Refused, "release": out.Release}
		}
		return appendEvent(tx, Event{Room: room, Step: step, By: "runner", Subject: j.Contract, Detail: detail})
	})
	if err != nil {
		return nil, id, err
	}
	return &out, id, nil
}

// Job returns a job record of a room.
func (s *Service) Job(room, id string) (*JobRecord, error) {
	var j JobRecord
	ok, err := getJSON(s.l.Begin(), JobsMap, key(room, id), &j)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("job %.80q: %w", id, ErrNotFound)
	}
	return &j, nil
}

// Contract returns a contract of a room.
func (s *Service) Contract(room, id string) (*Contract, error) {
	return readContract(s.l.Begin(), room, id)
}

// Dataset returns a dataset of a room.
func (s *Service) Dataset(room, name string) (*Dataset, error) {
	var d Dataset
	ok, err := getJSON(s.l.Begin(), DatasetsMap, key(room, name), &d)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("dataset %.80q: %w", name, ErrNotFound)
	}
	return &d, nil
}
