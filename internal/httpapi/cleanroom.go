package httpapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/internal/app"
	"github.com/parleyhq/parley/internal/cleanroom"
	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/ledger"
)

// CleanRoomService is the clean-room service Config.CleanRoom takes.
type CleanRoomService = cleanroom.Service

// Clean-room error codes.
const (
	CodeInvalidCleanRoomRequest = "InvalidCleanRoomRequest"
	CodeCleanRoomConflict       = "CleanRoomConflict"
	CodeCleanRoomWrongState     = "CleanRoomWrongState"
)

// cleanroomRoutes adds the clean-room endpoints when Config.CleanRoom is set.
// Writes authenticate by their party signature (package cleanroom): the
// action in the path must match the signed request's type.
func (h *Handler) cleanroomRoutes(routes map[string]endpoint) {
	if h.cfg.CleanRoom == nil {
		return
	}
	routes["POST /cleanroom/{action}"] = endpoint{app.RoleNone, false, false, h.postCleanRoom}
	// Room terms (contract SQL, dataset schemas and rules) are business
	// information: reading them takes an authenticated ledger user.
	routes["GET /cleanroom/rooms/{room}/contracts/{contract}"] = endpoint{app.RoleReader, false, false, h.getCleanRoomContract}
	routes["GET /cleanroom/rooms/{room}/datasets/{dataset}"] = endpoint{app.RoleReader, false, false, h.getCleanRoomDataset}
	routes["GET /cleanroom/rooms/{room}/jobs/{job}"] = endpoint{app.RoleReader, false, false, h.getCleanRoomJob}
	routes["GET /cleanroom/rooms/{room}/audit"] = endpoint{app.RoleReader, false, false, h.getCleanRoomAudit}
	h.cleanroomRunnerRoutes(routes)
}

func (h *Handler) postCleanRoom(c *call) (any, int, error) {
	s := h.cfg.CleanRoom
	var fn func(ctx context.Context, body []byte) (any, ledger.TxID, error)
	switch c.r.PathValue("action") {
	case cleanroom.TypeCreateRoom:
		fn = adapt(s.CreateRoom)
	case cleanroom.TypeInvite:
		fn = adapt(s.Invite)
	case cleanroom.TypeJoin:
		fn = adapt(s.Join)
	case cleanroom.TypeRegisterDataset:
		fn = h.registerDataset
	case cleanroom.TypeProposeContract:
		fn = adapt(s.ProposeContract)
	case cleanroom.TypeApprove:
		fn = adapt(s.Approve)
	case cleanroom.TypeSuspend:
		fn = adapt(s.Suspend)
	default:
		return nil, 0, newError(http.StatusNotFound, CodeResourceNotFound, "no such endpoint: "+truncate(c.r.URL.Path, 200))
	}
	body, err := readBody(c)
	if err != nil {
		return nil, 0, err
	}
	v, id, err := fn(c.r.Context(), body)
	if err != nil {
		return nil, 0, cleanroomError(err)
	}
	c.txID = id
	ctx, cancel := context.WithTimeout(c.r.Context(), h.cfg.WaitTimeout)
	defer cancel()
	if err := h.eng.WaitCommitted(ctx, id); err != nil {
		return nil, 0, err
	}
	return v, http.StatusOK, nil
}

// registerBody is the body of POST /cleanroom/register_dataset that hands
// the data key to the key broker with the registration: the signed request
// and the key, base64. The key is never logged nor kept in clear: it goes
// to the broker's private map, encrypted in the ledger.
type registerBody struct {
	Request string `json:"request"`
	DataKey []byte `json:"dataKey"`
}

// registerDataset takes either the bare signed request (no data key) or a
// registerBody.
func (h *Handler) registerDataset(ctx context.Context, body []byte) (any, ledger.TxID, error) {
	if len(body) == 0 || body[0] != '{' {
		return h.cfg.CleanRoom.RegisterDataset(ctx, body)
	}
	var b registerBody
	if err := decodeJSON(body, &b); err != nil {
		return nil, ledger.TxID{}, err
	}
	defer clear(b.DataKey)
	if h.cfg.Keys == nil {
		return nil, ledger.TxID{}, newError(http.StatusBadRequest, CodeInvalidCleanRoomRequest, "this service has no key broker to hold the data key")
	}
	if len(b.DataKey) == 0 {
		return nil, ledger.TxID{}, newError(http.StatusBadRequest, CodeInvalidCleanRoomRequest, "dataKey is required")
	}
	return h.cfg.CleanRoom.RegisterDatasetWithKey(ctx, []byte(b.Request), b.DataKey, h.cfg.Keys)
}

func (h *Handler) getCleanRoomJob(c *call) (any, int, error) {
	j, err := h.cfg.CleanRoom.Job(c.r.PathValue("room"), c.r.PathValue("job"))
	if err != nil {
		return nil, 0, cleanroomError(err)
	}
	return j, http.StatusOK, nil
}

// getCleanRoomAudit lists every step of a room with the transaction that
// recorded it; each transaction's claims digest is SHA-256 of the event.
func (h *Handler) getCleanRoomAudit(c *call) (any, int, error) {
	list, err := h.cfg.CleanRoom.Audit(c.r.PathValue("room"), h.cfg.CleanRoomIndex)
	if err != nil {
		return nil, 0, cleanroomError(err)
	}
	out := CleanRoomAudit{Room: c.r.PathValue("room"), Steps: make([]CleanRoomAuditStep, len(list))}
	for i, e := range list {
		out.Steps[i].AuditEntry = e
		id, err := ledger.ParseTxID(e.TransactionID)
		if err != nil || h.eng.Status(id) != engine.StatusCommitted {
			continue
		}
		if out.Steps[i].Receipt, err = h.eng.Receipt(id); err != nil {
			return nil, 0, err
		}
	}
	return out, http.StatusOK, nil
}

// CleanRoomAudit is the answer of GET /cleanroom/rooms/{room}/audit.
type CleanRoomAudit struct {
	Room  string               `json:"room"`
	Steps []CleanRoomAuditStep `json:"steps"`
}

// CleanRoomAuditStep is one step with the receipt of its transaction, once
// committed (none before).
type CleanRoomAuditStep struct {
	cleanroom.AuditEntry
	Receipt *api.Receipt `json:"receipt,omitempty"`
}

func adapt[T any](fn func(context.Context, []byte) (T, ledger.TxID, error)) func(context.Context, []byte) (any, ledger.TxID, error) {
	return func(ctx context.Context, b []byte) (any, ledger.TxID, error) {
		return fn(ctx, b)
	}
}

func (h *Handler) getCleanRoomContract(c *call) (any, int, error) {
	ct, err := h.cfg.CleanRoom.Contract(c.r.PathValue("room"), c.r.PathValue("contract"))
	if err != nil {
		return nil, 0, cleanroomError(err)
	}
	return ct, http.StatusOK, nil
}

func (h *Handler) getCleanRoomDataset(c *call) (any, int, error) {
	d, err := h.cfg.CleanRoom.Dataset(c.r.PathValue("room"), c.r.PathValue("dataset"))
	if err != nil {
		return nil, 0, cleanroomError(err)
	}
	return d, http.StatusOK, nil
}

// cleanroomError maps package cleanroom's errors to API errors.
func cleanroomError(err error) error {
	msg := truncate(err.Error(), 400)
	switch {
	case errors.Is(err, cleanroom.ErrMalformed):
		return newError(http.StatusBadRequest, CodeInvalidCleanRoomRequest, msg)
	case errors.Is(err, cleanroom.ErrBadSignature), errors.Is(err, cleanroom.ErrForbidden):
		return newError(http.StatusForbidden, CodeAuthorizationFailed, msg)
	case errors.Is(err, cleanroom.ErrStale):
		return newError(http.StatusBadRequest, CodeRequestExpired, msg)
	case errors.Is(err, cleanroom.ErrReplay):
		return newError(http.StatusBadRequest, CodeRequestReplayed, msg)
	case errors.Is(err, cleanroom.ErrNotFound):
		return newError(http.StatusNotFound, CodeResourceNotFound, msg)
	case errors.Is(err, cleanroom.ErrExists):
		return newError(http.StatusConflict, CodeCleanRoomConflict, msg)
	case errors.Is(err, cleanroom.ErrState):
		return newError(http.StatusConflict, CodeCleanRoomWrongState, msg)
	}
	return err
}
