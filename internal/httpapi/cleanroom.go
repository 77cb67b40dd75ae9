package httpapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/parleyhq/parley/internal/app"
	"github.com/parleyhq/parley/internal/cleanroom"
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
		fn = adapt(s.RegisterDataset)
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
