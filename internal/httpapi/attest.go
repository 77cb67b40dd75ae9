package httpapi

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/parleyhq/parley/internal/app"
	"github.com/parleyhq/parley/internal/attest"
	"github.com/parleyhq/parley/internal/keyrelease"
	"github.com/parleyhq/parley/internal/tee"
)

// Error codes of the attestation service and the key broker (docs/api.md).
const (
	CodeInvalidEvidence      = "InvalidEvidence"
	CodeEvidenceNotVerified  = "EvidenceNotVerified"
	CodeEvidenceRefused      = "AttestationPolicyNotSatisfied"
	CodeInvalidReleasePolicy = "InvalidReleasePolicy"
	CodeKeyAlreadyExists     = "KeyAlreadyExists"
	CodeKeyNotFound          = "KeyNotFound"
	CodeInvalidToken         = "InvalidAttestationToken"
	CodeKeyReleaseDenied     = "KeyReleaseDenied"
)

// attestRoutes adds the attestation service's and the key broker's routes
// when the handler has them.
func (h *Handler) attestRoutes(routes map[string]endpoint) {
	if h.cfg.Attestation != nil {
		routes["POST /attest/{platform}"] = endpoint{app.RoleNone, false, false, h.postAttest}
		routes["GET /certs"] = endpoint{app.RoleNone, false, false, h.getCerts}
		routes["GET /.well-known/openid-configuration"] = endpoint{app.RoleNone, false, false, h.getOpenIDConfiguration}
		routes["GET /app/attestation/policy"] = endpoint{app.RoleReader, false, false, h.getAttestationPolicy}
		// Temporary: governance proposals replace this (issue 5).
		routes["PUT /app/attestation/policy"] = endpoint{app.RoleAdministrator, false, false, h.putAttestationPolicy}
	}
	if h.cfg.Keys != nil {
		routes["PUT /app/keys/{name}"] = endpoint{app.RoleContributor, false, false, h.putKey}
		routes["GET /app/keys/{name}"] = endpoint{app.RoleReader, false, false, h.getKey}
		routes["POST /app/keys/{name}/release"] = endpoint{app.RoleReader, false, false, h.releaseKey}
	}
}

// attestAPIError maps the attestation and key broker errors; nil for any
// other error.
func attestAPIError(err error) *apiError {
	table := []struct {
		target error
		status int
		code   string
	}{
		{tee.ErrUnknownPlatform, http.StatusNotFound, CodeResourceNotFound},
		{tee.ErrMalformed, http.StatusBadRequest, CodeInvalidEvidence},
		{tee.ErrUnverified, http.StatusBadRequest, CodeEvidenceNotVerified},
		{tee.ErrRefused, http.StatusBadRequest, CodeEvidenceRefused},
		{attest.ErrReportData, http.StatusBadRequest, CodeInvalidEvidence},
		{attest.ErrInvalidRequest, http.StatusBadRequest, CodeInvalidInput},
		{keyrelease.ErrInvalidPolicy, http.StatusBadRequest, CodeInvalidReleasePolicy},
		{keyrelease.ErrInvalidName, http.StatusBadRequest, CodeInvalidInput},
		{keyrelease.ErrInvalidKey, http.StatusBadRequest, CodeInvalidInput},
		{keyrelease.ErrKeyExists, http.StatusConflict, CodeKeyAlreadyExists},
		{keyrelease.ErrKeyNotFound, http.StatusNotFound, CodeKeyNotFound},
		{attest.ErrInvalidToken, http.StatusForbidden, CodeInvalidToken},
		{keyrelease.ErrNonceMismatch, http.StatusForbidden, CodeInvalidToken},
		{keyrelease.ErrPolicyNotSatisfied, http.StatusForbidden, CodeKeyReleaseDenied},
		{keyrelease.ErrNoRuntimeKey, http.StatusBadRequest, CodeInvalidToken},
	}
	for _, t := range table {
		if errors.Is(err, t.target) {
			return newError(t.status, t.code, err.Error())
		}
	}
	return nil
}

// attestBody is MAA's attest request. For SevSnpVm, report is base64url of
// the JSON {"SnpReport": base64url, "VcekCertChain": base64url(PEM)}; for
// TdxVm the quote is in quote (or report); for Virtual, report is base64url
// of the virtual evidence. audience is a Parley extension.
type attestBody struct {
	Report      string           `json:"report"`
	Quote       string           `json:"quote"`
	RuntimeData *attestDataField `json:"runtimeData"`
	Nonce       string           `json:"nonce"`
	Audience    string           `json:"audience"`
	// Ignored MAA fields.
	InitTimeData              json.RawMessage `json:"initTimeData"`
	DraftPolicyForAttestation json.RawMessage `json:"draftPolicyForAttestation"`
}

type attestDataField struct {
	Data     string `json:"data"`
	DataType string `json:"dataType"`
}

type snpReportField struct {
	SnpReport     string `json:"SnpReport"`
	VcekCertChain string `json:"VcekCertChain"`
}

// decodeB64URL accepts base64url with or without padding.
func decodeB64URL(field, s string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, newError(http.StatusBadRequest, CodeInvalidInput, field+" is not base64url")
	}
	return b, nil
}

// decodeAttest decodes an attest request for platform.
func decodeAttest(p tee.Platform, b []byte) (attest.Request, error) {
	var body attestBody
	if err := decodeJSON(b, &body); err != nil {
		return attest.Request{}, err
	}
	req := attest.Request{Platform: p, Nonce: body.Nonce, Audience: body.Audience}
	report := body.Report
	if p == tee.TDX && body.Quote != "" {
		report = body.Quote
	}
	if report == "" {
		return attest.Request{}, newError(http.StatusBadRequest, CodeInvalidInput, "report (or quote) is required")
	}
	raw, err := decodeB64URL("report", report)
	if err != nil {
		return attest.Request{}, err
	}
	req.Evidence = raw
	if p == tee.SevSnp {
		var snp snpReportField
		if err := decodeJSON(raw, &snp); err != nil {
			return attest.Request{}, newError(http.StatusBadRequest, CodeInvalidInput, `a SevSnpVm report is base64url of {"SnpReport","VcekCertChain"}`)
		}
		if req.Evidence, err = decodeB64URL("SnpReport", snp.SnpReport); err != nil {
			return attest.Request{}, err
		}
		if req.VCEK, err = decodeB64URL("VcekCertChain", snp.VcekCertChain); err != nil {
			return attest.Request{}, err
		}
	}
	if rd := body.RuntimeData; rd != nil {
		if rd.DataType != "" && !strings.EqualFold(rd.DataType, "JSON") {
			return attest.Request{}, newError(http.StatusBadRequest, CodeInvalidInput, "runtimeData.dataType must be JSON")
		}
		if req.RuntimeData, err = decodeB64URL("runtimeData.data", rd.Data); err != nil {
			return attest.Request{}, err
		}
	}
	return req, nil
}

func (h *Handler) postAttest(c *call) (any, int, error) {
	p, err := tee.ParsePlatform(c.r.PathValue("platform"))
	if err != nil {
		return nil, 0, err
	}
	b, err := readBody(c)
	if err != nil {
		return nil, 0, err
	}
	req, err := decodeAttest(p, b)
	if err != nil {
		return nil, 0, err
	}
	tok, err := h.cfg.Attestation.Attest(c.r.Context(), req)
	if err != nil {
		return nil, 0, err
	}
	return struct {
		Token string `json:"token"`
	}{tok}, http.StatusOK, nil
}

func (h *Handler) getCerts(c *call) (any, int, error) {
	return h.cfg.Attestation.JWKS(), http.StatusOK, nil
}

func (h *Handler) getOpenIDConfiguration(c *call) (any, int, error) {
	return h.cfg.Attestation.OpenIDConfiguration(), http.StatusOK, nil
}

func (h *Handler) getAttestationPolicy(c *call) (any, int, error) {
	p, _, err := attest.ReadPolicy(h.eng.Begin())
	if err != nil {
		return nil, 0, err
	}
	return p, http.StatusOK, nil
}

func (h *Handler) putAttestationPolicy(c *call) (any, int, error) {
	b, err := readBody(c)
	if err != nil {
		return nil, 0, err
	}
	p, err := tee.ParsePolicy(b)
	if err != nil {
		return nil, 0, newError(http.StatusBadRequest, CodeInvalidInput, err.Error())
	}
	id, err := attest.WritePolicy(c.r.Context(), h.eng, p)
	if err != nil {
		return nil, 0, err
	}
	c.txID = id
	return p, http.StatusOK, nil
}
