package httpapi

import (
	"errors"
	"net/http"

	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/internal/app"
	"github.com/parleyhq/parley/internal/cleanroom"
	"github.com/parleyhq/parley/internal/keyrelease"
)

// cleanroomRunnerRoutes adds the routes an attested runner calls. They take
// no client certificate: the caller is authenticated by an attestation
// token of this service (and its nonce), whose measurement the contract
// must allow.
func (h *Handler) cleanroomRunnerRoutes(routes map[string]endpoint) {
	if h.cfg.Keys == nil {
		return
	}
	routes["POST /cleanroom/rooms/{room}/contracts/{contract}/keys"] = endpoint{app.RoleNone, false, false, h.releaseDatasetKeys}
	routes["POST /cleanroom/rooms/{room}/jobs"] = endpoint{app.RoleNone, false, false, h.postCleanRoomJob}
}

// runnerAuth is the attestation a runner presents.
type runnerAuth struct {
	Token string `json:"token"`
	Nonce string `json:"nonce"`
	Kid   string `json:"kid"`
}

// releaseDatasetKeys releases the data keys of a contract's datasets to an
// attested runner (keyrelease.Broker.ReleaseDatasetKeys). It answers once
// the release is committed, with its receipt; a refusal is committed too
// and answered 403 KeyReleaseDenied with the reason, its transaction id in
// the x-ms-ccf-transaction-id header.
func (h *Handler) releaseDatasetKeys(c *call) (any, int, error) {
	b, err := readBody(c)
	if err != nil {
		return nil, 0, err
	}
	var body runnerAuth
	if err := decodeJSON(b, &body); err != nil {
		return nil, 0, err
	}
	if body.Token == "" || body.Nonce == "" {
		return nil, 0, newError(http.StatusBadRequest, CodeInvalidInput, "token and nonce are required")
	}
	keys, id, err := h.cfg.Keys.ReleaseDatasetKeys(c.r.Context(), h.cfg.CleanRoom, keyrelease.RoomReleaseRequest{
		Room: c.r.PathValue("room"), Contract: c.r.PathValue("contract"), Token: body.Token, Nonce: body.Nonce, KeyID: body.Kid,
	})
	c.txID = id
	if err != nil {
		var re *keyrelease.RefusedError
		if errors.As(err, &re) {
			return nil, 0, newError(http.StatusForbidden, CodeKeyReleaseDenied, truncate(re.Err.Error(), 1024))
		}
		if errors.Is(err, keyrelease.ErrTokenBinding) {
			return nil, 0, newError(http.StatusForbidden, CodeInvalidToken, err.Error())
		}
		return nil, 0, cleanroomError(err)
	}
	r, err := h.eng.Receipt(id)
	if err != nil {
		return nil, 0, err
	}
	// The runner needs the terms and the datasets' digests, schemas and
	// rules; all are immutable once recorded, so reading them after the
	// release reads what the release was decided on.
	ct, err := h.cfg.CleanRoom.Contract(keys.Room, keys.Contract)
	if err != nil {
		return nil, 0, cleanroomError(err)
	}
	ds := make([]*cleanroom.Dataset, 0, len(ct.Terms.Datasets))
	for _, name := range ct.Terms.Datasets {
		d, err := h.cfg.CleanRoom.Dataset(keys.Room, name)
		if err != nil {
			return nil, 0, cleanroomError(err)
		}
		ds = append(ds, d)
	}
	return ReleasedDatasetKeys{DatasetKeys: keys, Terms: ct.Terms, Datasets: ds, TransactionID: id.String(), Receipt: r}, http.StatusOK, nil
}

// ReleasedDatasetKeys is the answer to a granted data key release.
type ReleasedDatasetKeys struct {
	*keyrelease.DatasetKeys
	Terms         cleanroom.ContractTerms `json:"terms"`
	Datasets      []*cleanroom.Dataset    `json:"datasets"`
	TransactionID string                  `json:"transactionId"`
	// Receipt is the release transaction's receipt.
	Receipt *api.Receipt `json:"receipt"`
}

// jobBody is what a runner posts to record a job.
type jobBody struct {
	runnerAuth
	Job cleanroom.JobRecord `json:"job"`
}

// postCleanRoomJob records a job run by an attested runner: the
// measurement and runtime key recorded are the token's, never the body's;
// the token may be a fresh one attesting the runtime key the data keys
// were released to, so a run may outlast its first token.
func (h *Handler) postCleanRoomJob(c *call) (any, int, error) {
	b, err := readBody(c)
	if err != nil {
		return nil, 0, err
	}
	var body jobBody
	if err := decodeJSON(b, &body); err != nil {
		return nil, 0, err
	}
	claims, err := h.cfg.Keys.VerifyToken(body.Token, body.Nonce)
	if err != nil {
		return nil, 0, err
	}
	if err := keyrelease.BoundTo(claims, c.r.PathValue("room"), body.Job.Contract); err != nil {
		return nil, 0, newError(http.StatusForbidden, CodeInvalidToken, err.Error())
	}
	body.Job.Measurement = keyrelease.Measurement(claims)
	if body.Job.RuntimeKey, err = keyrelease.RuntimeKeyThumbprint(claims, body.Kid); err != nil {
		return nil, 0, err
	}
	j, id, err := h.cfg.CleanRoom.RecordJob(c.r.Context(), c.r.PathValue("room"), body.Job)
	if err != nil {
		return nil, 0, cleanroomError(err)
	}
	c.txID = id
	if err := h.eng.WaitCommitted(c.r.Context(), id); err != nil {
		return nil, 0, err
	}
	return struct {
		*cleanroom.JobRecord
		TransactionID string `json:"transactionId"`
	}{j, id.String()}, http.StatusOK, nil
}
