package httpapi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
)

func (h *Handler) listMembers(c *call) (any, int, error) {
	type member struct {
		Certificate string `json:"certificate"`
		ID          string `json:"id"`
	}
	ms := h.app.Members()
	out := make([]member, len(ms))
	for i, m := range ms {
		out[i] = member{Certificate: m.CertPEM, ID: m.ID}
	}
	return struct {
		Members []member `json:"members"`
	}{out}, http.StatusOK, nil
}

func (h *Handler) getConstitution(c *call) (any, int, error) {
	script := h.app.Constitution()
	sum := sha256.Sum256([]byte(script))
	return struct {
		Digest string `json:"digest"`
		Script string `json:"script"`
	}{hex.EncodeToString(sum[:]), script}, http.StatusOK, nil
}

// QuoteVersionVirtual labels the software evidence a node without a TEE
// serves in place of a hardware quote.
const QuoteVersionVirtual = "virtual"

// getEnclaveQuotes serves this node's evidence. There is no TEE, so the
// evidence is "virtual": hex of a JSON document binding the node id, signed
// by no hardware and proving nothing about the code that runs.
func (h *Handler) getEnclaveQuotes(c *call) (any, int, error) {
	type quote struct {
		NodeID       string `json:"nodeId"`
		QuoteVersion string `json:"quoteVersion"`
		Raw          string `json:"raw"`
	}
	id := h.eng.NodeID()
	ev, _ := json.Marshal(struct {
		Platform   string `json:"platform"`
		NodeID     string `json:"nodeId"`
		ReportData string `json:"reportData"`
		Note       string `json:"note"`
	}{"virtual", id, id, "no TEE: this evidence is not signed by hardware and proves nothing about the code running"})
	return struct {
		CurrentNodeID string           `json:"currentNodeId"`
		EnclaveQuotes map[string]quote `json:"enclaveQuotes"`
	}{id, map[string]quote{id: {NodeID: id, QuoteVersion: QuoteVersionVirtual, Raw: hex.EncodeToString(ev)}}}, http.StatusOK, nil
}

// getLedgerIdentity serves the Azure identity service's answer for this
// ledger, whatever the ledger id asked: the service certificate.
func (h *Handler) getLedgerIdentity(c *call) (any, int, error) {
	return struct {
		LedgerID             string `json:"ledgerId"`
		LedgerTLSCertificate string `json:"ledgerTlsCertificate"`
	}{c.r.PathValue("ledgerId"), string(h.cfg.ServiceCertPEM)}, http.StatusOK, nil
}

func (h *Handler) getHealth(c *call) (any, int, error) {
	return struct {
		Status                 string `json:"status"`
		NodeID                 string `json:"nodeId"`
		Primary                bool   `json:"primary"`
		CurrentTransactionID   string `json:"currentTransactionId"`
		CommittedTransactionID string `json:"committedTransactionId"`
	}{"ok", h.eng.NodeID(), h.eng.IsPrimary(), h.eng.Current().String(), h.eng.CommittedID().String()}, http.StatusOK, nil
}
