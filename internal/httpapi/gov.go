package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"

	"github.com/parleyhq/parley/internal/app"
	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/gov"
	"github.com/parleyhq/parley/internal/ledger"
)

// Governance error codes (CCF's names where CCF has one).
const (
	CodeInvalidGovRequest     = "InvalidGovernanceRequest"
	CodeRequestExpired        = "RequestExpired"
	CodeRequestReplayed       = "RequestReplayed"
	CodeProposalFailedToValid = "ProposalFailedToValidate"
	CodeProposalNotFound      = "ProposalNotFound"
	CodeProposalNotOpen       = "ProposalNotOpen"
	CodeVoteAlreadyExists     = "VoteAlreadyExists"
	CodeRecoveryShareNotFound = "RecoveryShareNotFound"
	// CodeServiceRecovering answers what needs the private state while a
	// recovered service waits for its members' recovery shares.
	CodeServiceRecovering = "ServiceRecovering"
	CodeServiceNotRecover = "ServiceNotRecovering"
	CodeRecoveryFailed    = "RecoveryFailed"
)

// govRoutes adds the governance endpoints when governance is configured.
// Writes authenticate by their signature (package gov), not by a client
// certificate; reads take a member's or user's client certificate.
func (h *Handler) govRoutes(routes map[string]endpoint) {
	if h.cfg.Gov == nil {
		return
	}
	routes["POST /gov/proposals"] = endpoint{app.RoleNone, false, false, h.postProposal}
	routes["POST /gov/proposals/{proposalAction}"] = endpoint{app.RoleNone, false, false, h.postProposalAction}
	routes["POST /gov/proposals/{proposalId}/ballots"] = endpoint{app.RoleNone, false, false, h.postBallot}
	routes["GET /gov/proposals"] = endpoint{app.RoleNone, false, false, h.listProposals}
	routes["GET /gov/proposals/{proposalId}"] = endpoint{app.RoleNone, false, false, h.getProposal}
	routes["GET /gov/members"] = endpoint{app.RoleNone, false, false, h.listGovMembers}
	routes["GET /gov/recovery/share"] = endpoint{app.RoleNone, false, false, h.getRecoveryShare}
	routes["POST /gov/recovery/share"] = endpoint{app.RoleNone, false, false, h.postRecoveryShare}
	routes["GET /gov/service/previous_identities"] = endpoint{app.RoleNone, false, false, h.listPreviousIdentities}
}

// govWrite runs a signed governance write and waits until it is committed.
func (h *Handler) govWrite(c *call, fn func(ctx context.Context, body []byte) (*gov.Proposal, ledger.TxID, error)) (any, int, error) {
	body, err := readBody(c)
	if err != nil {
		return nil, 0, err
	}
	p, id, err := fn(c.r.Context(), body)
	if err != nil {
		return nil, 0, err
	}
	c.txID = id
	ctx, cancel := context.WithTimeout(c.r.Context(), h.cfg.WaitTimeout)
	defer cancel()
	if err := h.eng.WaitCommitted(ctx, id); err != nil {
		return nil, 0, err
	}
	return p, http.StatusOK, nil
}

func (h *Handler) postProposal(c *call) (any, int, error) {
	return h.govWrite(c, h.cfg.Gov.Propose)
}

// postProposalAction serves POST /gov/proposals/{id}:withdraw (a wildcard
// cannot end before a literal in a ServeMux segment).
func (h *Handler) postProposalAction(c *call) (any, int, error) {
	id, ok := strings.CutSuffix(c.r.PathValue("proposalAction"), ":withdraw")
	if !ok {
		return nil, 0, newError(http.StatusNotFound, CodeResourceNotFound, "no such endpoint: "+truncate(c.r.URL.Path, 200))
	}
	return h.govWrite(c, func(ctx context.Context, body []byte) (*gov.Proposal, ledger.TxID, error) {
		return h.cfg.Gov.Withdraw(ctx, id, body)
	})
}

func (h *Handler) postBallot(c *call) (any, int, error) {
	id := c.r.PathValue("proposalId")
	return h.govWrite(c, func(ctx context.Context, body []byte) (*gov.Proposal, ledger.TxID, error) {
		return h.cfg.Gov.Vote(ctx, id, body)
	})
}

// authenticateGovReader admits a member's or a user's client certificate.
func (h *Handler) authenticateGovReader(c *call) error {
	if c.r.TLS != nil && len(c.r.TLS.PeerCertificates) > 0 {
		sum := sha256.Sum256(c.r.TLS.PeerCertificates[0].Raw)
		if h.cfg.Gov.IsMember(hex.EncodeToString(sum[:])) {
			return nil
		}
	}
	return h.authenticate(c)
}

func (h *Handler) listProposals(c *call) (any, int, error) {
	if err := h.authenticateGovReader(c); err != nil {
		return nil, 0, err
	}
	return struct {
		Proposals []*gov.Proposal `json:"proposals"`
	}{h.cfg.Gov.Proposals()}, http.StatusOK, nil
}

func (h *Handler) getProposal(c *call) (any, int, error) {
	if err := h.authenticateGovReader(c); err != nil {
		return nil, 0, err
	}
	p, err := h.cfg.Gov.Proposal(c.r.PathValue("proposalId"))
	if err != nil {
		return nil, 0, err
	}
	return p, http.StatusOK, nil
}

func (h *Handler) listGovMembers(c *call) (any, int, error) {
	if err := h.authenticateGovReader(c); err != nil {
		return nil, 0, err
	}
	return struct {
		Members []gov.Member `json:"members"`
	}{h.cfg.Gov.Members()}, http.StatusOK, nil
}

// RecoveryShare is the answer of GET /gov/recovery/share: the calling
// member's share of the ledger secret wrapping key, encrypted to its
// encryption key (RSA-OAEP-256), base64 in JSON.
type RecoveryShare struct {
	MemberID       string `json:"memberId"`
	EncryptedShare []byte `json:"encryptedShare"`
}

// getRecoveryShare serves the calling member's encrypted recovery share;
// only a member's client certificate is admitted.
func (h *Handler) getRecoveryShare(c *call) (any, int, error) {
	var id string
	if c.r.TLS != nil && len(c.r.TLS.PeerCertificates) > 0 {
		sum := sha256.Sum256(c.r.TLS.PeerCertificates[0].Raw)
		id = hex.EncodeToString(sum[:])
	}
	if id == "" || !h.cfg.Gov.IsMember(id) {
		return nil, 0, newError(http.StatusUnauthorized, CodeInvalidAuthentication, "recovery shares are served to members, by their client certificate")
	}
	s, err := h.cfg.Gov.RecoveryShare(id)
	if err != nil {
		return nil, 0, err
	}
	return RecoveryShare{MemberID: id, EncryptedShare: s.EncryptedShare}, http.StatusOK, nil
}

// authenticateBearer sets c.user and c.role from a JWT bearer token of an
// issuer governance trusts.
func (h *Handler) authenticateBearer(c *call, token string) error {
	if h.cfg.Gov == nil {
		return newError(http.StatusUnauthorized, CodeInvalidAuthentication, "bearer tokens are not accepted by this service")
	}
	id, err := h.cfg.Gov.VerifyBearer(token)
	if err != nil {
		return newError(http.StatusUnauthorized, CodeInvalidAuthentication, err.Error())
	}
	c.user = id
	c.role = h.app.Role(id)
	if c.role == app.RoleNone {
		return newError(http.StatusUnauthorized, CodeInvalidAuthentication, "the token's user "+truncate(id, 100)+" is not a user of this ledger")
	}
	return nil
}

// bearerToken returns the token of an "Authorization: Bearer" header.
func bearerToken(r *http.Request) (string, bool) {
	v := r.Header.Get("Authorization")
	if len(v) < 7 || !strings.EqualFold(v[:7], "bearer ") {
		return "", false
	}
	return strings.TrimSpace(v[7:]), true
}

// govAPIError maps governance errors; nil for any other error.
func govAPIError(err error) *apiError {
	table := []struct {
		target error
		status int
		code   string
	}{
		{gov.ErrMalformedRequest, http.StatusBadRequest, CodeInvalidGovRequest},
		{gov.ErrWrongEndpoint, http.StatusBadRequest, CodeInvalidGovRequest},
		{gov.ErrUnknownMember, http.StatusUnauthorized, CodeInvalidAuthentication},
		{gov.ErrBadSignature, http.StatusUnauthorized, CodeInvalidAuthentication},
		{gov.ErrStaleRequest, http.StatusUnauthorized, CodeRequestExpired},
		{gov.ErrReplay, http.StatusConflict, CodeRequestReplayed},
		{gov.ErrInvalidProposal, http.StatusBadRequest, CodeProposalFailedToValid},
		{gov.ErrProposalNotFound, http.StatusNotFound, CodeProposalNotFound},
		{gov.ErrProposalNotOpen, http.StatusConflict, CodeProposalNotOpen},
		{gov.ErrAlreadyVoted, http.StatusConflict, CodeVoteAlreadyExists},
		{gov.ErrNotProposer, http.StatusForbidden, CodeAuthorizationFailed},
		{gov.ErrTooManyConflicts, http.StatusServiceUnavailable, CodeServiceUnavailable},
		{gov.ErrInvalidToken, http.StatusUnauthorized, CodeInvalidAuthentication},
		{gov.ErrNoRecoveryShare, http.StatusNotFound, CodeRecoveryShareNotFound},
		{gov.ErrNotRecovering, http.StatusConflict, CodeServiceNotRecover},
		{gov.ErrRecoveryFailed, http.StatusConflict, CodeRecoveryFailed},
		{engine.ErrPrivateClosed, http.StatusServiceUnavailable, CodeServiceRecovering},
	}
	for _, t := range table {
		if errors.Is(err, t.target) {
			return newError(t.status, t.code, err.Error())
		}
	}
	return nil
}
