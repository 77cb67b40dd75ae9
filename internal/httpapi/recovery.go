package httpapi

import (
	"context"
	"net/http"

	"github.com/parleyhq/parley/internal/gov"
)

// postRecoveryShare serves POST /gov/recovery/share: a member's signed
// recovery_share request (JWS, the decrypted share in its body) to a
// recovering service. It answers the recovery's progress once the
// submission (and, at the threshold, the restore) is committed.
func (h *Handler) postRecoveryShare(c *call) (any, int, error) {
	body, err := readBody(c)
	if err != nil {
		return nil, 0, err
	}
	st, id, err := h.cfg.Gov.SubmitRecoveryShare(c.r.Context(), body)
	if err != nil {
		return nil, 0, err
	}
	c.txID = id
	ctx, cancel := context.WithTimeout(c.r.Context(), h.cfg.WaitTimeout)
	defer cancel()
	if err := h.eng.WaitCommitted(ctx, id); err != nil {
		return nil, 0, err
	}
	return st, http.StatusOK, nil
}

// listPreviousIdentities serves GET /gov/service/previous_identities: the
// previous service identities a recovered service endorses, with their
// endorsements, for verifying receipts issued before a recovery
// (`parley receipt verify --service-endorsements`). Members and users.
func (h *Handler) listPreviousIdentities(c *call) (any, int, error) {
	if err := h.authenticateGovReader(c); err != nil {
		return nil, 0, err
	}
	ids := h.cfg.Gov.PreviousIdentities()
	if ids == nil {
		ids = []gov.PreviousIdentity{}
	}
	return struct {
		PreviousIdentities []gov.PreviousIdentity `json:"previousIdentities"`
	}{ids}, http.StatusOK, nil
}
