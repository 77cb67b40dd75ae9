package httpapi

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"sync"

	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/internal/app"
	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/ledger"
)

// ledgerEntry is ACL's LedgerEntry in responses.
type ledgerEntry struct {
	Contents      string `json:"contents"`
	CollectionID  string `json:"collectionId"`
	TransactionID string `json:"transactionId"`
}

func toLedgerEntry(e *app.Entry) ledgerEntry {
	return ledgerEntry{Contents: e.Contents, CollectionID: e.CollectionID, TransactionID: e.ID.String()}
}

// writeResult is ACL's LedgerWriteResult, with Parley's wait=committed
// extension fields.
type writeResult struct {
	CollectionID  string                  `json:"collectionId"`
	TransactionID string                  `json:"transactionId,omitempty"`
	State         string                  `json:"state,omitempty"`
	Receipt       *api.TransactionReceipt `json:"receipt,omitempty"`
}

// waitRequested reports whether the client asked a write to wait for
// commit.
func waitRequested(c *call) bool {
	return c.r.URL.Query().Get("wait") == "committed" || c.r.Header.Get(WaitHeader) == "committed"
}

// tagsParam returns the query parameter name (tags or tag), refusing it on
// api-version 2022-05-13, which has no tags.
func tagsParam(c *call, name string) (string, error) {
	v := c.r.URL.Query().Get(name)
	if v != "" && c.version == Version20220513 {
		return "", newError(http.StatusBadRequest, CodeInvalidQueryParameter, "the "+name+" parameter needs api-version 2026-02-23")
	}
	return v, nil
}

func (h *Handler) postTransaction(c *call) (any, int, error) {
	b, err := readBody(c)
	if err != nil {
		return nil, 0, err
	}
	contents, err := decodeEntry(b)
	if err != nil {
		return nil, 0, err
	}
	tagStr, err := tagsParam(c, "tags")
	if err != nil {
		return nil, 0, err
	}
	tags, err := parseTags(tagStr)
	if err != nil {
		return nil, 0, err
	}
	e, err := h.app.Append(c.r.Context(), &app.NewEntry{CollectionID: c.r.URL.Query().Get("collectionId"), Contents: contents, Tags: tags})
	if err != nil {
		return nil, 0, err
	}
	c.txID = e.ID
	res := writeResult{CollectionID: e.CollectionID}
	if !waitRequested(c) {
		return res, http.StatusOK, nil
	}
	res.TransactionID = e.ID.String()
	res.State = "Pending"
	ctx, cancel := context.WithTimeout(c.r.Context(), h.cfg.WaitTimeout)
	defer cancel()
	if err := h.eng.WaitCommitted(ctx, e.ID); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return res, http.StatusOK, nil
		}
		return nil, 0, err
	}
	r, err := h.eng.Receipt(e.ID)
	if err != nil {
		return nil, 0, err
	}
	res.State = "Committed"
	res.Receipt = &api.TransactionReceipt{
		Receipt:           r,
		State:             api.StateReady,
		TransactionID:     e.ID.String(),
		ApplicationClaims: []api.ApplicationClaim{e.Claim()},
	}
	return res, http.StatusOK, nil
}

// batchResult is one entry's outcome in a batch.
type batchResult struct {
	CollectionID  string       `json:"collectionId"`
	TransactionID string       `json:"transactionId,omitempty"`
	Error         *errorDetail `json:"error,omitempty"`
}

func (h *Handler) postBatch(c *call) (any, int, error) {
	b, err := readBody(c)
	if err != nil {
		return nil, 0, err
	}
	entries, err := decodeBatch(b, c.r.URL.Query().Get("collectionId"), h.cfg.MaxBatch)
	if err != nil {
		return nil, 0, err
	}
	for i := range entries {
		if err := h.app.Validate(&entries[i]); err != nil {
			return nil, 0, err
		}
	}
	// Each entry is its own transaction, committed concurrently so that
	// they share fsyncs; their ids are not in request order.
	results := make([]batchResult, len(entries))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var last ledger.TxID
	for i := range entries {
		wg.Go(func() {
			results[i].CollectionID = entries[i].CollectionID
			e, err := h.app.Append(c.r.Context(), &entries[i])
			if err != nil {
				ae := toAPIError(err)
				results[i].Error = &errorDetail{Code: ae.code, Message: ae.msg}
				return
			}
			results[i].CollectionID = e.CollectionID
			results[i].TransactionID = e.ID.String()
			mu.Lock()
			if e.ID.Seqno > last.Seqno {
				last = e.ID
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	c.txID = last
	resp := struct {
		Results []batchResult `json:"results"`
		State   string        `json:"state,omitempty"`
	}{Results: results}
	if waitRequested(c) && last.Seqno != 0 {
		resp.State = "Pending"
		ctx, cancel := context.WithTimeout(c.r.Context(), h.cfg.WaitTimeout)
		defer cancel()
		switch err := h.eng.WaitCommitted(ctx, last); {
		case err == nil:
			resp.State = "Committed"
		case !errors.Is(err, context.DeadlineExceeded):
			return nil, 0, err
		}
	}
	return resp, http.StatusOK, nil
}

// pagedEntries is ACL's PagedLedgerEntries.
type pagedEntries struct {
	State    string        `json:"state"`
	Entries  []ledgerEntry `json:"entries"`
	NextLink string        `json:"nextLink,omitempty"`
}

func (h *Handler) listTransactions(c *call) (any, int, error) {
	q := c.r.URL.Query()
	var query app.Query
	query.CollectionID = q.Get("collectionId")
	if err := h.app.ValidateCollectionID(query.CollectionID); err != nil {
		return nil, 0, err
	}
	var err error
	if query.Tag, err = tagsParam(c, "tag"); err != nil {
		return nil, 0, err
	}
	if s := q.Get("fromTransactionId"); s != "" {
		if query.From, err = parseTxID(s); err != nil {
			return nil, 0, err
		}
	}
	if s := q.Get("toTransactionId"); s != "" {
		if query.To, err = parseTxID(s); err != nil {
			return nil, 0, err
		}
	}
	query.Limit = h.cfg.PageSize
	entries, next, err := h.app.List(query)
	if err != nil {
		return nil, 0, err
	}
	resp := pagedEntries{State: api.StateReady, Entries: make([]ledgerEntry, len(entries))}
	for i, e := range entries {
		resp.Entries[i] = toLedgerEntry(e)
	}
	if next.Seqno != 0 {
		v := url.Values{"api-version": {c.version}, "fromTransactionId": {next.String()}}
		for _, k := range []string{"collectionId", "toTransactionId", "tag"} {
			if s := q.Get(k); s != "" {
				v.Set(k, s)
			}
		}
		resp.NextLink = "/app/transactions?" + v.Encode()
	}
	return resp, http.StatusOK, nil
}

func (h *Handler) currentTransaction(c *call) (any, int, error) {
	cid := c.r.URL.Query().Get("collectionId")
	if err := h.app.ValidateCollectionID(cid); err != nil {
		return nil, 0, err
	}
	e, err := h.app.Current(cid)
	if err != nil {
		return nil, 0, err
	}
	return toLedgerEntry(e), http.StatusOK, nil
}

// txStatus returns the engine's status of the path's transaction, failing
// for ids the node does not hold.
func (h *Handler) txStatus(c *call) (ledger.TxID, engine.Status, error) {
	id, err := parseTxID(c.r.PathValue("transactionId"))
	if err != nil {
		return id, 0, err
	}
	switch st := h.eng.Status(id); st {
	case engine.StatusCommitted, engine.StatusPending:
		return id, st, nil
	case engine.StatusInvalid:
		return id, st, newError(http.StatusNotFound, CodeTransactionInvalid, "transaction "+id.String()+" was discarded by a view change")
	default:
		return id, st, newError(http.StatusNotFound, CodeTransactionNotFound, "transaction "+id.String()+" is unknown to this node")
	}
}

func (h *Handler) getTransaction(c *call) (any, int, error) {
	id, st, err := h.txStatus(c)
	if err != nil {
		return nil, 0, err
	}
	e, err := h.app.Entry(id)
	if err != nil {
		return nil, 0, err
	}
	if cid := c.r.URL.Query().Get("collectionId"); cid != "" && cid != e.CollectionID {
		return nil, 0, newError(http.StatusNotFound, CodeLedgerEntryNotFound, "transaction "+id.String()+" is not an entry of that collection")
	}
	if st != engine.StatusCommitted {
		return struct {
			State string `json:"state"`
		}{api.StateLoading}, http.StatusOK, nil
	}
	return struct {
		State string      `json:"state"`
		Entry ledgerEntry `json:"entry"`
	}{api.StateReady, toLedgerEntry(e)}, http.StatusOK, nil
}

func (h *Handler) getStatus(c *call) (any, int, error) {
	id, st, err := h.txStatus(c)
	if err != nil {
		return nil, 0, err
	}
	state := "Pending"
	if st == engine.StatusCommitted {
		state = "Committed"
	}
	return struct {
		State         string `json:"state"`
		TransactionID string `json:"transactionId"`
	}{state, id.String()}, http.StatusOK, nil
}

func (h *Handler) getReceipt(c *call) (any, int, error) {
	id, st, err := h.txStatus(c)
	if err != nil {
		return nil, 0, err
	}
	e, err := h.app.Entry(id)
	if err != nil {
		return nil, 0, err
	}
	if st != engine.StatusCommitted {
		return api.TransactionReceipt{State: api.StateLoading, TransactionID: id.String()}, http.StatusOK, nil
	}
	r, err := h.eng.Receipt(id)
	if err != nil {
		return nil, 0, err
	}
	tr := api.TransactionReceipt{Receipt: r, State: api.StateReady, TransactionID: id.String()}
	if c.version == Version20260223 {
		tr.ApplicationClaims = []api.ApplicationClaim{e.Claim()}
	}
	return tr, http.StatusOK, nil
}

func (h *Handler) listCollections(c *call) (any, int, error) {
	type collection struct {
		CollectionID string `json:"collectionId"`
	}
	ids := h.app.Collections()
	out := make([]collection, len(ids))
	for i, id := range ids {
		out[i].CollectionID = id
	}
	return struct {
		Collections []collection `json:"collections"`
	}{out}, http.StatusOK, nil
}

// getConsistency serves the consistency-proof extension: from and to are
// transaction ids, each standing for the first committed signature
// transaction at or after it; to defaults to the latest committed one.
func (h *Handler) getConsistency(c *call) (any, int, error) {
	q := c.r.URL.Query()
	if q.Get("from") == "" {
		return nil, 0, newError(http.StatusBadRequest, CodeInvalidQueryParameter, "the from parameter (a transaction id) is required")
	}
	from, err := parseTxID(q.Get("from"))
	if err != nil {
		return nil, 0, err
	}
	to := h.eng.CommittedID()
	if s := q.Get("to"); s != "" {
		if to, err = parseTxID(s); err != nil {
			return nil, 0, err
		}
	}
	if from.Seqno > to.Seqno {
		return nil, 0, newError(http.StatusBadRequest, CodeInvalidQueryParameter, "from is after to")
	}
	oldSig, ok1 := h.app.SignatureAtOrAfter(from.Seqno)
	newSig, ok2 := h.app.SignatureAtOrAfter(to.Seqno)
	if !ok1 || !ok2 {
		return nil, 0, newError(http.StatusBadRequest, CodeNotCommitted, "no committed signature covers the range yet")
	}
	p, err := h.eng.Consistency(oldSig, newSig)
	if err != nil {
		return nil, 0, err
	}
	return p, http.StatusOK, nil
}
