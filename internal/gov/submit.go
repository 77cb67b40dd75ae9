package gov

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/strictjson"
)

// Maps of disaster recovery.
const (
	// SubmittedSharesMap records, by member id, that the member submitted
	// its share to the recovering service (JSON SubmittedShare); never the
	// share itself.
	SubmittedSharesMap = "public:ccf.gov.recovery.submitted_shares"
	// PreviousIdentitiesMap holds, by the last seqno the previous service
	// signed (decimal), that service's certificate and its endorsement by
	// the service that recovered its ledger (JSON PreviousIdentity).
	PreviousIdentitiesMap = "public:ccf.gov.service.previous_identities"
)

// Service statuses in ServiceInfoMap, as CCF names them.
const (
	ServiceOpen       = "Open"
	ServiceRecovering = "Recovering"
)

// Errors of disaster recovery.
var (
	// ErrNotRecovering is returned for a share submitted to a service
	// whose private state is open.
	ErrNotRecovering = errors.New("the service is not recovering")
	// ErrRecoveryFailed is returned when the submitted shares reach the
	// threshold but do not open the wrapped ledger secret (or the secret
	// does not open the ledger); the shares are discarded.
	ErrRecoveryFailed = errors.New("recovery failed")
)

// ShareSize is the size of a decrypted recovery share: the 32 bytes of the
// wrapping key's share and its x coordinate.
const ShareSize = wrapKeySize + 1

// SubmittedShare is the value of SubmittedSharesMap.
type SubmittedShare struct {
	SubmittedAt int64 `json:"submittedAt"`
}

// PreviousIdentity is the value of PreviousIdentitiesMap.
type PreviousIdentity struct {
	// Cert is the previous service certificate (PEM).
	Cert string `json:"cert"`
	// Endorsement is the previous service's public key certified by the
	// service that recovered it (PEM; identity.Service.EndorseService).
	Endorsement string `json:"endorsement"`
	// LastSeqno is the last seqno of the recovered ledger: every
	// transaction up to it was signed under the previous identity.
	LastSeqno uint64 `json:"lastSeqno"`
	// EndorsedBy is the certificate of the service that endorsed it (PEM).
	EndorsedBy string `json:"endorsedBy"`
}

// ShareBody is the body of a recovery_share request.
type ShareBody struct {
	Share []byte `json:"share"`
}

// RecoveryStatus is what a share submission answers.
type RecoveryStatus struct {
	MemberID        string `json:"memberId"`
	SubmittedShares int    `json:"submittedShares"`
	Threshold       int    `json:"threshold"`
	ServiceStatus   string `json:"serviceStatus"`
}

// submittedShares are the shares held in memory during recovery.
type submittedShares struct {
	mu     sync.Mutex
	shares map[string][]byte
}

func (s *submittedShares) discard() {
	for k, v := range s.shares {
		clear(v)
		delete(s.shares, k)
	}
}

// SubmitRecoveryShare takes a member's signed recovery_share request
// during recovery. The share stays in memory; the ledger records only
// that the member submitted (and its request counter). Once the recorded
// threshold of members have submitted, the shares are combined, the ledger
// secret unwrapped and the private state restored (engine.PrepareRestore)
// in a transaction that also makes new recovery shares for the recovered
// service and marks it Open. Shares that do not open the wrapped secret
// fail the restore with ErrRecoveryFailed and are all discarded, so
// members can submit again. The returned id is the last transaction
// written.
func (s *Service) SubmitRecoveryShare(ctx context.Context, body []byte) (*RecoveryStatus, ledger.TxID, error) {
	sr, err := ParseSigned(body)
	if err != nil {
		return nil, ledger.TxID{}, err
	}
	s.submitted.mu.Lock()
	defer s.submitted.mu.Unlock()
	var (
		share  []byte
		member string
		w      *WrappedSecret
	)
	defer func() { clear(share) }()
	id, err := s.run(ctx, func() (*kv.Tx, error) {
		if s.eng.PrivateOpen() {
			return nil, ErrNotRecovering
		}
		tx := s.eng.Begin()
		au, err := s.authenticate(tx, sr, TypeRecoveryShare, "")
		if err != nil {
			return nil, err
		}
		var b ShareBody
		if err := strictjson.Unmarshal(au.req.Body, &b); err != nil || len(b.Share) != ShareSize {
			clear(b.Share)
			return nil, fmt.Errorf(`recovery share: want {"share":"<base64 of %d bytes>"}: %w`, ShareSize, ErrMalformedRequest)
		}
		if _, ok := tx.Get(RecoverySharesMap, au.member); !ok {
			clear(b.Share)
			return nil, fmt.Errorf("member %s: %w", au.member, ErrNoRecoveryShare)
		}
		var ok bool
		if w, ok = readWrapped(tx); !ok {
			clear(b.Share)
			return nil, fmt.Errorf("wrapped ledger secret: %w", ErrNoRecoveryShare)
		}
		tx.Put(SubmittedSharesMap, au.member, mustJSON(SubmittedShare{SubmittedAt: au.req.CreatedAt}))
		clear(share)
		share, member = b.Share, au.member
		return tx, nil
	})
	if err != nil {
		return nil, ledger.TxID{}, err
	}
	if s.submitted.shares == nil {
		s.submitted.shares = map[string][]byte{}
	}
	clear(s.submitted.shares[member])
	s.submitted.shares[member] = share
	share = nil
	st := &RecoveryStatus{MemberID: member, SubmittedShares: len(s.submitted.shares), Threshold: w.Threshold, ServiceStatus: ServiceRecovering}
	s.log.Info("recovery share submitted", slog.String("member", member), slog.Int("submitted", st.SubmittedShares), slog.Int("threshold", w.Threshold))
	if st.SubmittedShares < w.Threshold {
		return st, id, nil
	}
	// The restore reads the whole old ledger: it must not stop, and lose
	// the shares, because the caller who happened to complete the
	// threshold went away.
	rctx := context.WithoutCancel(ctx)
	rid, err := s.restore(rctx, w)
	if err != nil {
		s.submitted.discard()
		s.log.Warn("recovery failed; the submitted shares were discarded", slog.Any("error", err))
		if _, cerr := s.clearSubmitted(rctx); cerr != nil {
			s.log.Warn("clear the submitted shares record", slog.Any("error", cerr))
		}
		return nil, ledger.TxID{}, fmt.Errorf("%w: %v; every submitted share was discarded: submit again", ErrRecoveryFailed, err)
	}
	s.submitted.discard()
	st.ServiceStatus = ServiceOpen
	return st, rid, nil
}

// restore combines the submitted shares and restores the private state.
func (s *Service) restore(ctx context.Context, w *WrappedSecret) (ledger.TxID, error) {
	shares := make([][]byte, 0, len(s.submitted.shares))
	for _, sh := range s.submitted.shares {
		shares = append(shares, sh)
	}
	secret, err := UnwrapLedgerSecret(w.WrappedLedgerSecret, shares)
	if err != nil {
		return ledger.TxID{}, err
	}
	defer clear(secret)
	for range maxRetries {
		tx := s.eng.Begin()
		rs, err := s.eng.PrepareRestore(tx, secret)
		if err != nil {
			return ledger.TxID{}, err
		}
		fresh := rs.NewSecret()
		err = s.reshareWith(tx, fresh)
		clear(fresh)
		if err != nil {
			return ledger.TxID{}, fmt.Errorf("new recovery shares: %w", err)
		}
		setServiceStatus(tx, ServiceOpen)
		clearMap(tx, SubmittedSharesMap)
		id, err := s.eng.CommitRestore(ctx, tx, rs)
		if errors.Is(err, kv.ErrConflict) {
			continue
		}
		if err != nil {
			return ledger.TxID{}, fmt.Errorf("commit the restore: %w", err)
		}
		s.log.Info("private state restored; the service is open", slog.String("txid", id.String()))
		return id, nil
	}
	return ledger.TxID{}, ErrTooManyConflicts
}

func (s *Service) clearSubmitted(ctx context.Context) (ledger.TxID, error) {
	return s.run(ctx, func() (*kv.Tx, error) {
		tx := s.eng.Begin()
		clearMap(tx, SubmittedSharesMap)
		return tx, nil
	})
}

func clearMap(tx *kv.Tx, m string) {
	var keys []string
	tx.Foreach(m, func(k string, _ []byte) bool { keys = append(keys, k); return true })
	for _, k := range keys {
		tx.Delete(m, k)
	}
}

// ServiceInfo is the value of ServiceInfoMap's key "".
type ServiceInfo struct {
	Status string `json:"status"`
	// Cert is the service certificate (PEM), recorded at start, so that a
	// service recovering this ledger can endorse it.
	Cert string `json:"cert,omitempty"`
}

func readServiceInfo(tx *kv.Tx) ServiceInfo {
	var si ServiceInfo
	if b, ok := tx.Get(ServiceInfoMap, ""); ok {
		_ = json.Unmarshal(b, &si)
	}
	return si
}

func setServiceStatus(tx *kv.Tx, status string) {
	si := readServiceInfo(tx)
	si.Status = status
	tx.Put(ServiceInfoMap, "", mustJSON(si))
}

// ServiceInfo returns the recorded service information.
func (s *Service) ServiceInfo() ServiceInfo { return readServiceInfo(s.eng.Begin()) }

// EnsureServiceInfo records the service certificate in ServiceInfoMap (as
// Open) if it is not recorded yet. It reports whether it wrote.
func (s *Service) EnsureServiceInfo(ctx context.Context, certPEM []byte) (bool, error) {
	_, err := s.run(ctx, func() (*kv.Tx, error) {
		tx := s.eng.Begin()
		si := readServiceInfo(tx)
		if subtle.ConstantTimeCompare([]byte(si.Cert), certPEM) == 1 {
			return nil, errNothingToDo
		}
		si.Cert = string(certPEM)
		if si.Status == "" {
			si.Status = ServiceOpen
		}
		tx.Put(ServiceInfoMap, "", mustJSON(si))
		return tx, nil
	})
	if errors.Is(err, errNothingToDo) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("service info: %w", err)
	}
	return true, nil
}

// RecordRecovery records, once, in the recovered ledger the new service's
// certificate (status Recovering) and prev, the previous identity it
// endorses. It reports whether it wrote.
func (s *Service) RecordRecovery(ctx context.Context, certPEM []byte, prev PreviousIdentity) (bool, ledger.TxID, error) {
	key := strconv.FormatUint(prev.LastSeqno, 10)
	id, err := s.run(ctx, func() (*kv.Tx, error) {
		tx := s.eng.Begin()
		if _, ok := tx.Get(PreviousIdentitiesMap, key); ok {
			return nil, errNothingToDo
		}
		tx.Put(PreviousIdentitiesMap, key, mustJSON(prev))
		status := ServiceRecovering
		if s.eng.PrivateOpen() {
			status = ServiceOpen
		}
		tx.Put(ServiceInfoMap, "", mustJSON(ServiceInfo{Status: status, Cert: string(certPEM)}))
		return tx, nil
	})
	if errors.Is(err, errNothingToDo) {
		return false, ledger.TxID{}, nil
	}
	if err != nil {
		return false, ledger.TxID{}, fmt.Errorf("record recovery: %w", err)
	}
	return true, id, nil
}

// PreviousIdentities returns the recorded previous service identities.
func (s *Service) PreviousIdentities() []PreviousIdentity {
	var out []PreviousIdentity
	s.eng.Begin().Foreach(PreviousIdentitiesMap, func(_ string, v []byte) bool {
		var p PreviousIdentity
		if json.Unmarshal(v, &p) == nil {
			out = append(out, p)
		}
		return true
	})
	return out
}

// Endorsements returns the recorded endorsements in the engine's form.
func (s *Service) Endorsements() []engine.ServiceEndorsement {
	var out []engine.ServiceEndorsement
	for _, p := range s.PreviousIdentities() {
		out = append(out, engine.ServiceEndorsement{Cert: p.Endorsement, LastSeqno: p.LastSeqno})
	}
	return out
}
