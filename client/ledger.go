package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/parleyhq/parley/api"
)

// maxPages bounds how many pages one listing follows, so that a server that
// links pages in a cycle cannot keep a client busy forever.
const maxPages = 1 << 20

// Append writes contents to collectionID (empty means the default collection)
// with optional tags, and returns the transaction id of the write. The write
// is not yet committed when Append returns: see [Client.WaitCommitted] and
// [Client.AppendAndWait].
func (c *Client) Append(ctx context.Context, collectionID, contents string, tags []string) (string, error) {
	r, _, err := c.postEntry(ctx, collectionID, contents, tags, false)
	if err != nil {
		return "", err
	}
	return r.TransactionID, nil
}

// Committed is the result of [Client.AppendAndWait].
type Committed struct {
	TransactionID string `json:"transactionId"`
	CollectionID  string `json:"collectionId,omitempty"`
	// Receipt is the transaction's receipt when the server returned it with
	// the write (Parley's wait=committed extension); nil otherwise.
	Receipt *api.TransactionReceipt `json:"receipt,omitempty"`
}

// AppendAndWait writes an entry like [Client.Append] and returns once it is
// committed. It uses Parley's wait=committed extension, which commits the
// write and returns its receipt in one round trip; against a server without
// the extension (or when the server's wait times out) it polls the
// transaction's status, and Receipt is nil.
func (c *Client) AppendAndWait(ctx context.Context, collectionID, contents string, tags []string) (*Committed, error) {
	wait := c.waitExt.Load() != 2
	r, state, err := c.postEntry(ctx, collectionID, contents, tags, wait)
	if err != nil {
		return nil, err
	}
	if wait {
		if state == "" {
			// The server ignored wait=committed.
			c.waitExt.Store(2)
		} else {
			c.waitExt.Store(1)
		}
	}
	if state == api.TxCommitted && r.Receipt != nil {
		return r, nil
	}
	if err := c.WaitCommitted(ctx, r.TransactionID); err != nil {
		return nil, err
	}
	return r, nil
}

// WaitExtension reports whether the server is known to honour the
// wait=committed extension: known is false until AppendAndWait has asked.
func (c *Client) WaitExtension() (supported, known bool) {
	switch c.waitExt.Load() {
	case 1:
		return true, true
	case 2:
		return false, true
	}
	return false, false
}

func (c *Client) entryQuery(collectionID string, tags []string, wait bool) (url.Values, error) {
	q := url.Values{}
	if collectionID != "" {
		q.Set("collectionId", collectionID)
	}
	if len(tags) > 0 {
		for _, t := range tags {
			if t == "" || strings.Contains(t, ",") {
				return nil, fmt.Errorf("tag %q: empty or contains a comma", t)
			}
		}
		q.Set("tags", strings.Join(tags, ","))
	}
	if wait {
		q.Set("wait", api.WaitCommitted)
	}
	return q, nil
}

// postEntry writes one entry and returns it with the extension's state
// (empty when the server did not wait).
func (c *Client) postEntry(ctx context.Context, collectionID, contents string, tags []string, wait bool) (*Committed, string, error) {
	q, err := c.entryQuery(collectionID, tags, wait)
	if err != nil {
		return nil, "", err
	}
	body, err := json.Marshal(api.LedgerEntry{Contents: contents})
	if err != nil {
		return nil, "", fmt.Errorf("encode entry: %w", err)
	}
	r, err := c.do(ctx, http.MethodPost, "/app/transactions", q, "application/json", body, http.StatusOK)
	if err != nil {
		return nil, "", err
	}
	var w api.WriteResult
	if err := json.Unmarshal(r.body, &w); err != nil {
		return nil, "", fmt.Errorf("decode write result: %w", err)
	}
	id := r.header.Get(api.TransactionIDHeader)
	if id == "" {
		id = w.TransactionID
	}
	if id == "" {
		return nil, "", errors.New("write response has no transaction id")
	}
	out := &Committed{TransactionID: id, CollectionID: w.CollectionID}
	if wait && w.State == api.TxCommitted && w.Receipt != nil {
		if w.Receipt.TransactionID != "" && w.Receipt.TransactionID != id {
			return nil, "", fmt.Errorf("write %s returned the receipt of %s", id, w.Receipt.TransactionID)
		}
		out.Receipt = w.Receipt
	}
	return out, w.State, nil
}

// AppendBatch writes entries as separate transactions in one request
// (Parley's POST /app/transactions:batch extension). Entries without a
// collection go to collectionID. With wait, the call returns once every
// written entry is committed. A result per entry, in order, says its
// transaction id or its error.
func (c *Client) AppendBatch(ctx context.Context, collectionID string, entries []api.BatchEntry, wait bool) ([]api.BatchResult, error) {
	q, err := c.entryQuery(collectionID, nil, wait)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(api.BatchRequest{Entries: entries})
	if err != nil {
		return nil, fmt.Errorf("encode batch: %w", err)
	}
	r, err := c.do(ctx, http.MethodPost, "/app/transactions:batch", q, "application/json", body, http.StatusOK)
	if err != nil {
		return nil, err
	}
	var br api.BatchResponse
	if err := json.Unmarshal(r.body, &br); err != nil {
		return nil, fmt.Errorf("decode batch result: %w", err)
	}
	if len(br.Results) != len(entries) {
		return nil, fmt.Errorf("batch of %d entries: %d results", len(entries), len(br.Results))
	}
	if wait && br.State != api.TxCommitted {
		// The server's wait timed out, or it ignored wait: poll the last
		// transaction of the batch.
		last := ""
		var lastSeq uint64
		for _, res := range br.Results {
			if res.TransactionID == "" {
				continue
			}
			if s := seqnoOf(res.TransactionID); s >= lastSeq {
				last, lastSeq = res.TransactionID, s
			}
		}
		if last != "" {
			if err := c.WaitCommitted(ctx, last); err != nil {
				return br.Results, err
			}
		}
	}
	return br.Results, nil
}

// seqnoOf returns the seqno of a "view.seqno" transaction id, or 0.
func seqnoOf(txID string) uint64 {
	_, s, _ := strings.Cut(txID, ".")
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// Entry returns the entry written by transaction txID, polling while the
// service is loading it. collectionID must name the entry's collection
// (empty means the default collection).
func (c *Client) Entry(ctx context.Context, txID, collectionID string) (*api.LedgerEntry, error) {
	p, err := txPath(txID, "")
	if err != nil {
		return nil, err
	}
	q := url.Values{}
	if collectionID != "" {
		q.Set("collectionId", collectionID)
	}
	pl := c.newPoller()
	defer pl.stop()
	for {
		var res api.LedgerQueryResult
		if _, err := c.getJSON(ctx, p, q, &res); err != nil {
			return nil, err
		}
		switch res.State {
		case api.StateReady:
			if res.Entry == nil {
				return nil, fmt.Errorf("entry %s: Ready without an entry", txID)
			}
			return res.Entry, nil
		case api.StateLoading:
		default:
			return nil, fmt.Errorf("entry %s: unknown state %q", txID, res.State)
		}
		if err := pl.wait(ctx); err != nil {
			return nil, fmt.Errorf("entry %s: %w", txID, err)
		}
	}
}

// ListOptions select the entries [Client.List] returns. Zero fields select
// everything: the default collection, from the first to the latest entry.
type ListOptions struct {
	CollectionID string
	From, To     string // transaction ids, inclusive
	Tag          string // 2026-02-23: only entries with this tag
}

// List returns the entries selected by opts, in transaction order, following
// nextLink from page to page and polling pages that are still loading. The
// iteration stops at the first error, which it yields.
func (c *Client) List(ctx context.Context, opts ListOptions) iter.Seq2[api.LedgerEntry, error] {
	q := url.Values{}
	if opts.CollectionID != "" {
		q.Set("collectionId", opts.CollectionID)
	}
	if opts.From != "" {
		q.Set("fromTransactionId", opts.From)
	}
	if opts.To != "" {
		q.Set("toTransactionId", opts.To)
	}
	if opts.Tag != "" {
		q.Set("tag", opts.Tag)
	}
	return func(yield func(api.LedgerEntry, error) bool) {
		link := "/app/transactions"
		if len(q) > 0 {
			link += "?" + q.Encode()
		}
		pl := c.newPoller()
		defer pl.stop()
		for pages := 0; link != ""; pages++ {
			if pages >= maxPages {
				yield(api.LedgerEntry{}, fmt.Errorf("list: more than %d pages", maxPages))
				return
			}
			var page api.PagedLedgerEntries
			if _, err := c.getJSON(ctx, link, nil, &page); err != nil {
				yield(api.LedgerEntry{}, fmt.Errorf("list: %w", err))
				return
			}
			switch page.State {
			case api.StateReady, "":
			case api.StateLoading:
				if len(page.Entries) == 0 {
					if err := pl.wait(ctx); err != nil {
						yield(api.LedgerEntry{}, fmt.Errorf("list: %w", err))
						return
					}
					if page.NextLink != "" {
						link = page.NextLink
					}
					continue // the page again, or where the server points
				}
			default:
				yield(api.LedgerEntry{}, fmt.Errorf("list: unknown state %q", page.State))
				return
			}
			pl.reset(c.minPoll)
			for _, e := range page.Entries {
				if !yield(e, nil) {
					return
				}
			}
			link = page.NextLink
		}
	}
}

// Current returns the latest entry of collectionID (empty means the default
// collection) as the answering node knows it.
func (c *Client) Current(ctx context.Context, collectionID string) (*api.LedgerEntry, error) {
	q := url.Values{}
	if collectionID != "" {
		q.Set("collectionId", collectionID)
	}
	var e api.LedgerEntry
	if _, err := c.getJSON(ctx, "/app/transactions/current", q, &e); err != nil {
		return nil, err
	}
	return &e, nil
}

// Status returns whether transaction txID is committed.
func (c *Client) Status(ctx context.Context, txID string) (*api.TransactionStatus, error) {
	p, err := txPath(txID, "/status")
	if err != nil {
		return nil, err
	}
	var s api.TransactionStatus
	if _, err := c.getJSON(ctx, p, nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// WaitCommitted polls the status of txID until it is Committed. Like the
// Azure SDK it tolerates a few 404s, since the answering node may not have
// the transaction yet.
func (c *Client) WaitCommitted(ctx context.Context, txID string) error {
	pl := c.newPoller()
	defer pl.stop()
	notFound := 0
	for {
		s, err := c.Status(ctx, txID)
		var e *Error
		switch {
		case errors.As(err, &e) && e.StatusCode == http.StatusNotFound && notFound < maxNotFoundPolls:
			notFound++
		case err != nil:
			return fmt.Errorf("wait for %s: %w", txID, err)
		case s.State == api.TxCommitted:
			return nil
		case s.State != api.TxPending:
			return fmt.Errorf("wait for %s: transaction is %s", txID, s.State)
		}
		if err := pl.wait(ctx); err != nil {
			return fmt.Errorf("wait for %s: %w", txID, err)
		}
	}
}

// Receipt returns the receipt of transaction txID, polling while it is
// loading. The receipt is not verified: see package receipt, or the
// service certificate from [Client.ServiceCertificate].
func (c *Client) Receipt(ctx context.Context, txID string) (*api.TransactionReceipt, error) {
	p, err := txPath(txID, "/receipt")
	if err != nil {
		return nil, err
	}
	pl := c.newPoller()
	defer pl.stop()
	for {
		var tr api.TransactionReceipt
		if _, err := c.getJSON(ctx, p, nil, &tr); err != nil {
			return nil, err
		}
		switch tr.State {
		case api.StateReady:
			if tr.Receipt == nil {
				return nil, fmt.Errorf("receipt %s: Ready without a receipt", txID)
			}
			return &tr, nil
		case api.StateLoading:
		default:
			return nil, fmt.Errorf("receipt %s: unknown state %q", txID, tr.State)
		}
		if err := pl.wait(ctx); err != nil {
			return nil, fmt.Errorf("receipt %s: %w", txID, err)
		}
	}
}

// Collections returns the ledger's collections, following nextLink.
func (c *Client) Collections(ctx context.Context) iter.Seq2[api.Collection, error] {
	return pages(ctx, c, "/app/collections", func(b []byte) ([]api.Collection, string, error) {
		var p api.PagedCollections
		err := json.Unmarshal(b, &p)
		return p.Collections, p.NextLink, err
	})
}

// Consistency fetches a Parley consistency proof (an extension) that the
// tree signed at transaction to extends the tree signed at from. Verify it
// with package receipt.
func (c *Client) Consistency(ctx context.Context, from, to string) (*api.ConsistencyProof, error) {
	q := url.Values{"from": {from}, "to": {to}}
	var p api.ConsistencyProof
	if _, err := c.getJSON(ctx, "/app/consistency", q, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// LedgerIdentity fetches the identity service's answer for ledgerID from
// this endpoint: the service certificate, as Azure's identity service
// serves it. The connection itself is still pinned to the configured
// service certificate.
func (c *Client) LedgerIdentity(ctx context.Context, ledgerID string) (*api.LedgerIdentityInformation, error) {
	if ledgerID == "" || len(ledgerID) > 256 {
		return nil, fmt.Errorf("ledger id %q: bad length", ledgerID)
	}
	var li api.LedgerIdentityInformation
	if _, err := c.getJSON(ctx, "/ledgerIdentity/"+url.PathEscape(ledgerID), nil, &li); err != nil {
		return nil, err
	}
	return &li, nil
}

// pages iterates a pageable list, decoding each page with decode.
func pages[T any](ctx context.Context, c *Client, link string, decode func([]byte) ([]T, string, error)) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		var zero T
		for n := 0; link != ""; n++ {
			if n >= maxPages {
				yield(zero, fmt.Errorf("list %s: more than %d pages", link, maxPages))
				return
			}
			r, err := c.do(ctx, http.MethodGet, link, nil, "", nil, http.StatusOK)
			if err != nil {
				yield(zero, err)
				return
			}
			items, next, err := decode(r.body)
			if err != nil {
				yield(zero, fmt.Errorf("decode %s: %w", link, err))
				return
			}
			for _, it := range items {
				if !yield(it, nil) {
					return
				}
			}
			if next == link {
				yield(zero, fmt.Errorf("list %s: page links to itself", link))
				return
			}
			link = next
		}
	}
}
