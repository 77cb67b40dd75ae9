// Package client is a Go client for Parley's REST API, which is the Azure
// Confidential Ledger (ACL) data plane plus a few Parley extensions.
//
// A [Client] talks HTTPS with mutual TLS: it trusts only the ledger's service
// certificate (pinned, as ACL clients do) and presents a user certificate.
// It keeps connections alive, uses HTTP/2 when the server offers it, and is
// safe for concurrent use by many goroutines.
//
// Historical queries (an entry, a receipt, a page of entries) may answer
// "Loading" at first; the client polls them until they are "Ready", as the
// Azure SDKs do. Errors from the service come back as [*Error].
//
// # Example
//
//	p, err := client.LoadProfile("parley-dev/profile.json")
//	if err != nil { … }
//	c, err := p.New()
//	if err != nil { … }
//	id, err := c.Append(ctx, "", "hello", nil)
//	if err != nil { … }
//	if err := c.WaitCommitted(ctx, id); err != nil { … }
//	r, err := c.Receipt(ctx, id)
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/parleyhq/parley/api"
)

// DefaultAPIVersion is the api-version a client sends when [Options] names
// none: the version every 1.x Azure SDK defaults to.
const DefaultAPIVersion = api.APIVersion2022

// Default polling bounds, used when [Options] leaves them zero.
const (
	DefaultMinPollInterval = 2 * time.Millisecond
	DefaultMaxPollInterval = 250 * time.Millisecond
)

// MaxResponseSize bounds the body of any response the client reads.
const MaxResponseSize = 32 << 20

// maxNotFoundPolls is how many 404s WaitCommitted tolerates before giving up:
// a transaction may not have replicated yet to the node that answers.
const maxNotFoundPolls = 3

// Options configure a [Client]. The zero value is not usable: the service
// certificate and a client certificate are required unless HTTPClient is set.
type Options struct {
	// CACertPEM is the ledger's service certificate, the only root the
	// client trusts for the server's TLS certificate.
	CACertPEM []byte
	// CertPEM and KeyPEM are the user's certificate and private key.
	// Certificate, when set, is used instead.
	CertPEM, KeyPEM []byte
	Certificate     *tls.Certificate
	// APIVersion is sent as the api-version query parameter of every
	// request; empty means DefaultAPIVersion.
	APIVersion string
	// HTTPClient, when set, is used as is: its transport is then
	// responsible for TLS, and CACertPEM only serves ServiceCertificate.
	HTTPClient *http.Client
	// MinPollInterval and MaxPollInterval bound the exponential backoff
	// used while polling a "Loading" query or a "Pending" transaction;
	// zero means DefaultMinPollInterval and DefaultMaxPollInterval.
	MinPollInterval, MaxPollInterval time.Duration
	// DisableHTTP2 keeps the client on HTTP/1.1 (one request per
	// connection at a time).
	DisableHTTP2 bool
}

// Client is a client of one Parley (or ACL) endpoint. It is safe for
// concurrent use.
type Client struct {
	base        *url.URL
	hc          *http.Client
	apiVersion  string
	minPoll     time.Duration
	maxPoll     time.Duration
	serviceCert *x509.Certificate

	// waitExt records whether the server honours wait=committed:
	// 0 unknown, 1 yes, 2 no.
	waitExt atomic.Int32
}

// New returns a client of the service at endpoint, an https URL such as
// "https://127.0.0.1:8443".
func New(endpoint string, opts Options) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(endpoint, "/"))
	if err != nil {
		return nil, fmt.Errorf("parse endpoint: %w", err)
	}
	if u.Scheme != "https" && !(u.Scheme == "http" && opts.HTTPClient != nil) {
		return nil, fmt.Errorf("endpoint %q: scheme must be https", endpoint)
	}
	if u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("endpoint %q: want scheme://host[:port][/path]", endpoint)
	}
	c := &Client{
		base:       u,
		apiVersion: opts.APIVersion,
		minPoll:    opts.MinPollInterval,
		maxPoll:    opts.MaxPollInterval,
	}
	if c.apiVersion == "" {
		c.apiVersion = DefaultAPIVersion
	}
	if c.minPoll <= 0 {
		c.minPoll = DefaultMinPollInterval
	}
	if c.maxPoll <= 0 {
		c.maxPoll = DefaultMaxPollInterval
	}
	if c.maxPoll < c.minPoll {
		c.maxPoll = c.minPoll
	}
	if len(opts.CACertPEM) > 0 {
		c.serviceCert, err = parseCert(opts.CACertPEM)
		if err != nil {
			return nil, fmt.Errorf("parse service certificate: %w", err)
		}
	}
	if opts.HTTPClient != nil {
		c.hc = opts.HTTPClient
		return c, nil
	}
	if c.serviceCert == nil {
		return nil, errors.New("no service certificate (CACertPEM) to pin")
	}
	tr, err := newTransport(c.serviceCert, opts)
	if err != nil {
		return nil, err
	}
	c.hc = &http.Client{Transport: tr}
	return c, nil
}

// newTransport returns a keep-alive transport that trusts only serviceCert
// and presents the user's certificate.
func newTransport(serviceCert *x509.Certificate, opts Options) (*http.Transport, error) {
	var cert tls.Certificate
	switch {
	case opts.Certificate != nil:
		cert = *opts.Certificate
	case len(opts.CertPEM) > 0 && len(opts.KeyPEM) > 0:
		var err error
		cert, err = tls.X509KeyPair(opts.CertPEM, opts.KeyPEM)
		if err != nil {
			return nil, fmt.Errorf("load client certificate: %w", err)
		}
	default:
		return nil, errors.New("no client certificate: set Certificate or CertPEM and KeyPEM")
	}
	roots := x509.NewCertPool()
	roots.AddCert(serviceCert)
	tlsConf := &tls.Config{
		RootCAs:      roots,
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
	}
	tr := &http.Transport{
		Proxy:                 nil, // a pinned, mutually authenticated ledger is never proxied
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   10 * time.Second,
		ForceAttemptHTTP2:     !opts.DisableHTTP2,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	if opts.DisableHTTP2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return tr, nil
}

func parseCert(b []byte) (*x509.Certificate, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no CERTIFICATE PEM block")
		}
		if blk.Type == "CERTIFICATE" {
			return x509.ParseCertificate(blk.Bytes)
		}
	}
}

// Endpoint returns the endpoint the client talks to.
func (c *Client) Endpoint() string { return c.base.String() }

// APIVersion returns the api-version the client sends.
func (c *Client) APIVersion() string { return c.apiVersion }

// ServiceCertificate returns the pinned service certificate, the trust root
// of receipts, or nil if the client was built without one.
func (c *Client) ServiceCertificate() *x509.Certificate { return c.serviceCert }

// CloseIdleConnections closes the client's idle connections.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// Error is an error response from the service: its HTTP status and the
// ACL error body {"error":{"code","message"}}. Code and Message are empty
// when the body was not an ACL error.
type Error struct {
	StatusCode int
	Code       string
	Message    string
	// TransactionID is the x-ms-ccf-transaction-id of the response, if any.
	TransactionID string
}

func (e *Error) Error() string {
	switch {
	case e.Code != "" && e.Message != "":
		return fmt.Sprintf("%d %s: %s", e.StatusCode, e.Code, e.Message)
	case e.Code != "":
		return fmt.Sprintf("%d %s", e.StatusCode, e.Code)
	case e.Message != "":
		return fmt.Sprintf("%d: %s", e.StatusCode, e.Message)
	}
	return fmt.Sprintf("%d %s", e.StatusCode, http.StatusText(e.StatusCode))
}

// response is a read, size-bounded HTTP response.
type response struct {
	status int
	header http.Header
	body   []byte
}

// url builds the URL of path (which may hold a query) with the api-version
// added unless already present.
func (c *Client) url(path string, q url.Values) (string, error) {
	ref, err := url.Parse(path)
	if err != nil {
		return "", fmt.Errorf("parse path %q: %w", path, err)
	}
	if ref.IsAbs() || ref.Host != "" {
		return "", fmt.Errorf("link %q leaves the endpoint", path)
	}
	u := *c.base
	u.Path = c.base.Path + ref.Path
	u.RawPath = ""
	if ref.RawPath != "" {
		u.RawPath = c.base.EscapedPath() + ref.RawPath
	}
	vals := ref.Query()
	for k, vs := range q {
		for _, v := range vs {
			vals.Add(k, v)
		}
	}
	if vals.Get("api-version") == "" {
		vals.Set("api-version", c.apiVersion)
	}
	u.RawQuery = vals.Encode()
	return u.String(), nil
}

// do sends one request and returns the response if its status is one of
// want; any other status becomes an *Error.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, contentType string, body []byte, want ...int) (*response, error) {
	u, err := c.url(path, q)
	if err != nil {
		return nil, err
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read response: %w", method, path, err)
	}
	if len(b) > MaxResponseSize {
		return nil, fmt.Errorf("%s %s: response larger than %d bytes", method, path, MaxResponseSize)
	}
	r := &response{status: resp.StatusCode, header: resp.Header, body: b}
	for _, w := range want {
		if resp.StatusCode == w {
			return r, nil
		}
	}
	return nil, newError(r)
}

func newError(r *response) *Error {
	e := &Error{StatusCode: r.status, TransactionID: r.header.Get(api.TransactionIDHeader)}
	var body api.ConfidentialLedgerError
	if json.Unmarshal(r.body, &body) == nil {
		e.Code, e.Message = body.Error.Code, body.Error.Message
	}
	if e.Code == "" && e.Message == "" && len(r.body) > 0 && len(r.body) <= 512 {
		e.Message = strings.TrimSpace(string(r.body))
	}
	return e
}

// Call sends one request to a Parley path outside the ledger data plane
// (attestation, keys, governance): in, when not nil, is sent as JSON; a 2xx
// JSON answer is decoded into out, when not nil. Path is relative to the
// endpoint and its segments must already be escaped; the api-version is
// added as on every call (those routes ignore it). A service error is an
// *Error.
func (c *Client) Call(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("encode %s %s: %w", method, path, err)
		}
	}
	r, err := c.do(ctx, method, path, nil, "application/json", body, http.StatusOK, http.StatusCreated, http.StatusNoContent)
	if err != nil {
		return err
	}
	if out == nil || len(r.body) == 0 {
		return nil
	}
	if err := json.Unmarshal(r.body, out); err != nil {
		return fmt.Errorf("decode %s %s: %w", method, path, err)
	}
	return nil
}

// getJSON GETs path and decodes a 200 response into v.
func (c *Client) getJSON(ctx context.Context, path string, q url.Values, v any) (*response, error) {
	r, err := c.do(ctx, http.MethodGet, path, q, "", nil, http.StatusOK)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(r.body, v); err != nil {
		return nil, fmt.Errorf("decode GET %s: %w", path, err)
	}
	return r, nil
}

// poller is an exponential backoff between polls.
type poller struct {
	next, max time.Duration
	timer     *time.Timer
}

func (c *Client) newPoller() *poller { return &poller{next: c.minPoll, max: c.maxPoll} }

// wait waits for the next poll, or returns ctx's error.
func (p *poller) wait(ctx context.Context) error {
	if p.timer == nil {
		p.timer = time.NewTimer(p.next)
	} else {
		p.timer.Reset(p.next)
	}
	p.next = min(2*p.next, p.max)
	select {
	case <-ctx.Done():
		p.timer.Stop()
		return ctx.Err()
	case <-p.timer.C:
		return nil
	}
}

// reset restarts the backoff at d after progress.
func (p *poller) reset(d time.Duration) { p.next = d }

func (p *poller) stop() {
	if p.timer != nil {
		p.timer.Stop()
	}
}

// txPath returns the escaped path of a transaction resource.
func txPath(txID, suffix string) (string, error) {
	if txID == "" || len(txID) > 64 {
		return "", fmt.Errorf("transaction id %q: bad length", txID)
	}
	return "/app/transactions/" + url.PathEscape(txID) + suffix, nil
}
