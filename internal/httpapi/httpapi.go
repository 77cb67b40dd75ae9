// Package httpapi serves Parley's REST API: the Azure Confidential Ledger
// data plane (api-versions 2022-05-13 and 2026-02-23), the identity service
// endpoint, Parley's extensions, /health and /metrics. Each handler decodes
// the request, calls package app or the engine, and encodes the answer;
// errors become HTTP statuses and ACL error codes in one place, toAPIError.
// docs/api.md is the reference for every path, parameter and code.
//
// # Authentication
//
// Clients authenticate with a TLS client certificate, which the server
// requests but does not verify against a CA (tls.RequestClientCert): the
// user id is the lowercase hex SHA-256 of the certificate's DER, computed
// once per connection (see [ConnContext]), and the user's roles come from
// the ledger's users map. The TLS handshake proves the client holds the
// certificate's key. With an "Authorization: Bearer" header the client is
// instead the user named by a JWT from an issuer governance trusts (see
// gov.Service.VerifyBearer). Governance writes (/gov/…) authenticate by
// the member's signature on the request itself (package gov).
package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/parleyhq/parley/internal/app"
	"github.com/parleyhq/parley/internal/attest"
	"github.com/parleyhq/parley/internal/cleanroom"
	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/gov"
	"github.com/parleyhq/parley/internal/keyrelease"
	"github.com/parleyhq/parley/internal/ledger"
)

// API versions served.
const (
	Version20220513 = "2022-05-13"
	Version20260223 = "2026-02-23"
)

// TxIDHeader carries a transaction id on every response: the new
// transaction's for a write, the last applied one's otherwise.
const TxIDHeader = "x-ms-ccf-transaction-id"

// WaitHeader, set to "committed", asks a write to wait for commit (a
// Parley extension; the query parameter wait=committed does the same).
const WaitHeader = "x-parley-wait"

// Defaults for Config.
const (
	DefaultMaxRequestBytes = 1 << 20
	DefaultPageSize        = 100
	DefaultMaxBatch        = 1000
	DefaultWaitTimeout     = 30 * time.Second
)

// Config configures a Handler. Zero values take the defaults above.
type Config struct {
	App    *app.App
	Engine *engine.Engine
	// ServiceCertPEM is the service certificate, served by
	// /ledgerIdentity/{ledgerId}.
	ServiceCertPEM []byte
	Logger         *slog.Logger
	// MaxRequestBytes bounds a request body.
	MaxRequestBytes int64
	// PageSize bounds the entries of one page of GET /app/transactions.
	PageSize int
	// MaxBatch bounds the entries of one POST /app/transactions:batch.
	MaxBatch int
	// WaitTimeout bounds how long a write with wait=committed waits.
	WaitTimeout time.Duration
	// Attestation, when set, serves /attest/{platform}, /certs,
	// /.well-known/openid-configuration and /app/attestation/policy.
	Attestation *attest.Service
	// Keys, when set, serves /app/keys/{name}.
	Keys *keyrelease.Broker
	// Gov, when set, serves /gov/… and accepts JWT bearer tokens from the
	// issuers governance trusts.
	Gov *gov.Service
	// CleanRoom, when set, serves /cleanroom/… (cleanroom.go).
	CleanRoom *CleanRoomService
	// CleanRoomIndex, when set, gives the clean-room audit its
	// transaction ids.
	CleanRoomIndex *cleanroom.Index
}

// Handler is the REST API of one node. It is an http.Handler; the
// http.Server serving it should set ConnContext to [ConnContext].
type Handler struct {
	cfg     Config
	app     *app.App
	eng     *engine.Engine
	log     *slog.Logger
	mux     *http.ServeMux
	metrics *metrics
}

var _ http.Handler = (*Handler)(nil)

// endpoint is one route: the role it needs (RoleNone: no client certificate
// needed), whether it takes api-version, the oldest version serving it,
// and the handler.
type endpoint struct {
	role       app.Role
	versioned  bool
	newVersion bool // only api-version 2026-02-23
	fn         func(c *call) (any, int, error)
}

// call is one request being served.
type call struct {
	w       http.ResponseWriter
	r       *http.Request
	version string
	user    string // canonical id of the authenticated user
	role    app.Role
	txID    ledger.TxID // for the TxIDHeader
}

// New returns the API handler.
func New(cfg Config) *Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = DefaultPageSize
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.WaitTimeout <= 0 {
		cfg.WaitTimeout = DefaultWaitTimeout
	}
	h := &Handler{cfg: cfg, app: cfg.App, eng: cfg.Engine, log: cfg.Logger, mux: http.NewServeMux(), metrics: newMetrics()}
	routes := map[string]endpoint{
		"POST /app/transactions":                        {app.RoleContributor, true, false, h.postTransaction},
		"POST /app/transactions:batch":                  {app.RoleContributor, true, false, h.postBatch},
		"GET /app/transactions":                         {app.RoleReader, true, false, h.listTransactions},
		"GET /app/transactions/current":                 {app.RoleReader, true, false, h.currentTransaction},
		"GET /app/transactions/{transactionId}":         {app.RoleReader, true, false, h.getTransaction},
		"GET /app/transactions/{transactionId}/status":  {app.RoleReader, true, false, h.getStatus},
		"GET /app/transactions/{transactionId}/receipt": {app.RoleReader, true, false, h.getReceipt},
		"GET /app/collections":                          {app.RoleReader, true, false, h.listCollections},
		"GET /app/consistency":                          {app.RoleReader, true, false, h.getConsistency},
		"GET /app/users":                                {app.RoleAdministrator, true, true, h.listUsers},
		"GET /app/users/{userId}":                       {app.RoleAdministrator, true, false, h.getUser},
		"PATCH /app/users/{userId}":                     {app.RoleAdministrator, true, false, h.patchUser},
		"DELETE /app/users/{userId}":                    {app.RoleAdministrator, true, false, h.deleteUser},
		"GET /app/ledgerUsers":                          {app.RoleAdministrator, true, true, h.listLedgerUsers},
		"GET /app/ledgerUsers/{userId}":                 {app.RoleAdministrator, true, true, h.getLedgerUser},
		"PATCH /app/ledgerUsers/{userId}":               {app.RoleAdministrator, true, true, h.patchLedgerUser},
		"DELETE /app/ledgerUsers/{userId}":              {app.RoleAdministrator, true, true, h.deleteUser},
		"GET /app/governance/members":                   {app.RoleReader, true, false, h.listMembers},
		"GET /app/governance/constitution":              {app.RoleReader, true, false, h.getConstitution},
		"GET /app/enclaveQuotes":                        {app.RoleReader, true, false, h.getEnclaveQuotes},
		"GET /ledgerIdentity/{ledgerId}":                {app.RoleNone, true, false, h.getLedgerIdentity},
		"GET /health":                                   {app.RoleNone, false, false, h.getHealth},
	}
	h.attestRoutes(routes)
	h.govRoutes(routes)
	h.cleanroomRoutes(routes)
	for pattern, ep := range routes {
		h.mux.Handle(pattern, h.serve(ep))
	}
	h.mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		h.metrics.write(w, h.eng)
	})
	return h
}

// ServeHTTP serves one request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
	w = sw
	w.Header().Set(TxIDHeader, h.eng.Current().String())
	inner, pattern := h.mux.Handler(r)
	if pattern == "" {
		// No route: let the mux decide between 404 and 405, then answer
		// in JSON.
		probe := &statusWriter{ResponseWriter: discardWriter{header: make(http.Header)}, code: http.StatusOK}
		inner.ServeHTTP(probe, r)
		if probe.code == http.StatusMethodNotAllowed {
			w.Header()["Allow"] = probe.Header()["Allow"]
			writeError(w, newError(http.StatusMethodNotAllowed, CodeMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path))
		} else {
			writeError(w, newError(http.StatusNotFound, CodeResourceNotFound, "no such endpoint: "+r.URL.Path))
		}
		pattern = "unmatched"
	} else {
		h.mux.ServeHTTP(w, r)
	}
	d := time.Since(start)
	h.metrics.observe(pattern, sw.code, d)
	level := slog.LevelDebug
	if sw.code >= 500 {
		level = slog.LevelError
	}
	h.log.LogAttrs(r.Context(), level, "request",
		slog.String("method", r.Method),
		slog.String("route", pattern),
		slog.Int("status", sw.code),
		slog.Duration("duration", d),
		slog.String("txid", w.Header().Get(TxIDHeader)),
		slog.String("remote", r.RemoteAddr))
}

// serve wraps an endpoint: authentication, api-version, the body limit,
// the error seam and the response.
func (h *Handler) serve(ep endpoint) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := &call{w: w, r: r}
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, h.cfg.MaxRequestBytes)
		}
		body, status, err := h.dispatch(c, ep)
		if c.txID != (ledger.TxID{}) {
			w.Header().Set(TxIDHeader, c.txID.String())
		}
		if err != nil {
			ae := toAPIError(err)
			if ae.status >= 500 {
				h.log.LogAttrs(r.Context(), slog.LevelError, "request failed", slog.String("route", r.Pattern), slog.Any("error", err))
			}
			writeError(w, ae)
			return
		}
		if body == nil {
			w.WriteHeader(status)
			return
		}
		writeJSON(w, status, body)
	})
}

func (h *Handler) dispatch(c *call, ep endpoint) (any, int, error) {
	if ep.role != app.RoleNone {
		if err := h.authenticate(c); err != nil {
			return nil, 0, err
		}
		if c.role < ep.role {
			return nil, 0, newError(http.StatusForbidden, CodeAuthorizationFailed,
				"this call needs the "+ep.role.String()+" role; the client's is "+c.role.String())
		}
	}
	if ep.versioned {
		v := c.r.URL.Query().Get("api-version")
		switch v {
		case "":
			return nil, 0, newError(http.StatusBadRequest, CodeMissingAPIVersion, "the api-version query parameter is required (2022-05-13 or 2026-02-23)")
		case Version20220513, Version20260223:
		default:
			return nil, 0, newError(http.StatusBadRequest, CodeUnsupportedAPIVersion, "api-version "+truncate(v, 40)+" is not supported (2022-05-13 or 2026-02-23)")
		}
		if ep.newVersion && v != Version20260223 {
			return nil, 0, newError(http.StatusBadRequest, CodeUnsupportedAPIVersion, "this call needs api-version 2026-02-23")
		}
		c.version = v
	}
	return ep.fn(c)
}

// connKey keys the per-connection state in a request context.
type connKey struct{}

// connState caches a connection's user id: certificates do not change
// within a TLS connection (Go does not renegotiate as a server).
type connState struct {
	once sync.Once
	id   string
}

// ConnContext adds per-connection state to the context of a new
// connection, so that the client certificate is hashed once per connection
// rather than once per request. Set it as http.Server.ConnContext.
func ConnContext(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, &connState{})
}

// authenticate sets c.user and c.role from the client certificate.
func (h *Handler) authenticate(c *call) error {
	if tok, ok := bearerToken(c.r); ok {
		return h.authenticateBearer(c, tok)
	}
	if c.r.TLS == nil || len(c.r.TLS.PeerCertificates) == 0 {
		return newError(http.StatusUnauthorized, CodeInvalidAuthentication, "a client certificate is required")
	}
	hash := func() string {
		sum := sha256.Sum256(c.r.TLS.PeerCertificates[0].Raw)
		return hex.EncodeToString(sum[:])
	}
	if cs, ok := c.r.Context().Value(connKey{}).(*connState); ok {
		cs.once.Do(func() { cs.id = hash() })
		c.user = cs.id
	} else {
		c.user = hash()
	}
	c.role = h.app.Role(c.user)
	if c.role == app.RoleNone {
		return newError(http.StatusUnauthorized, CodeInvalidAuthentication, "the client certificate "+c.user+" is not a user of this ledger")
	}
	return nil
}

// readBody reads the request body within the configured limit.
func readBody(c *call) ([]byte, error) {
	if c.r.Body == nil {
		return nil, nil
	}
	return io.ReadAll(c.r.Body)
}

// errorBody is the ACL error response.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.status, errorBody{Error: errorDetail{Code: e.code, Message: e.msg}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"InternalError","message":"encode response"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

// statusWriter records the status code written.
type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wrote {
		s.code, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// discardWriter is a ResponseWriter that keeps only headers.
type discardWriter struct{ header http.Header }

func (d discardWriter) Header() http.Header         { return d.header }
func (d discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d discardWriter) WriteHeader(int)             {}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
