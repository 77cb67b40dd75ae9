package api

import "encoding/json"

// Transaction states (ACL TransactionState) returned by
// GET /app/transactions/{id}/status. ACL enumerates only Committed and
// Pending; CCF also knows Unknown and Invalid, which a client may see as a
// 404 or a non-2xx error instead.
const (
	TxCommitted = "Committed"
	TxPending   = "Pending"
)

// User roles (ACL LedgerUserRole). Each role includes the ones after it:
// Administrator ⊃ Contributor ⊃ Reader.
const (
	RoleAdministrator = "Administrator"
	RoleContributor   = "Contributor"
	RoleReader        = "Reader"
)

// APIVersion2022 and APIVersion2026 are the stable ACL api-versions Parley
// serves. Every request carries one in the api-version query parameter.
const (
	APIVersion2022 = "2022-05-13"
	APIVersion2026 = "2026-02-23"
)

// TransactionIDHeader is the response header carrying the transaction id of
// a write (and, on every response, the id the response was read at).
const TransactionIDHeader = "x-ms-ccf-transaction-id"

// LedgerEntry is an entry in the ledger: the request body of
// POST /app/transactions (Contents only) and an element of query results.
type LedgerEntry struct {
	Contents      string `json:"contents"`
	CollectionID  string `json:"collectionId,omitempty"`
	TransactionID string `json:"transactionId,omitempty"`
	// PreHooks and PostHooks name user-defined functions to run around the
	// write (2026-02-23). Parley accepts only empty lists.
	PreHooks  []UserDefinedFunctionHook `json:"preHooks,omitempty"`
	PostHooks []UserDefinedFunctionHook `json:"postHooks,omitempty"`
}

// UserDefinedFunctionHook names a user-defined function run around a write
// (2026-02-23). Properties is kept as raw JSON.
type UserDefinedFunctionHook struct {
	FunctionID string          `json:"functionId"`
	Properties json.RawMessage `json:"properties,omitempty"`
}

// LedgerWriteResult is the body of a successful POST /app/transactions. The
// transaction id is in the [TransactionIDHeader] response header.
type LedgerWriteResult struct {
	CollectionID string `json:"collectionId"`
}

// LedgerQueryResult is the response of GET /app/transactions/{id}. Entry is
// set only when State is [StateReady].
type LedgerQueryResult struct {
	State string       `json:"state"`
	Entry *LedgerEntry `json:"entry,omitempty"`
}

// PagedLedgerEntries is one page of GET /app/transactions. A page may be
// [StateLoading] with no entries; NextLink, when set, is the path (and
// query) of the next page, without the api-version.
type PagedLedgerEntries struct {
	State    string        `json:"state"`
	Entries  []LedgerEntry `json:"entries"`
	NextLink string        `json:"nextLink,omitempty"`
}

// TransactionStatus is the response of GET /app/transactions/{id}/status.
type TransactionStatus struct {
	State         string `json:"state"` // TxCommitted or TxPending
	TransactionID string `json:"transactionId"`
}

// LedgerUser is a user with one role: the body and response of
// /app/users/{userId}. UserID is read-only: it is ignored in a PATCH body.
type LedgerUser struct {
	AssignedRole string `json:"assignedRole"`
	UserID       string `json:"userId,omitempty"`
}

// LedgerUserMultipleRoles is a user with several roles: the body and
// response of /app/ledgerUsers/{userId} (2026-02-23).
type LedgerUserMultipleRoles struct {
	AssignedRoles []string `json:"assignedRoles"`
	UserID        string   `json:"userId,omitempty"`
}

// PagedUsers is one page of GET /app/users.
type PagedUsers struct {
	LedgerUsers []LedgerUser `json:"ledgerUsers"`
	NextLink    string       `json:"nextLink,omitempty"`
}

// PagedLedgerUsers is one page of GET /app/ledgerUsers (2026-02-23).
type PagedLedgerUsers struct {
	LedgerUsers []LedgerUserMultipleRoles `json:"ledgerUsers"`
	NextLink    string                    `json:"nextLink,omitempty"`
}

// Collection names one collection.
type Collection struct {
	CollectionID string `json:"collectionId"`
}

// PagedCollections is one page of GET /app/collections.
type PagedCollections struct {
	Collections []Collection `json:"collections"`
	NextLink    string       `json:"nextLink,omitempty"`
}

// ConsortiumMember is a governance member.
type ConsortiumMember struct {
	Certificate string `json:"certificate"` // PEM
	ID          string `json:"id"`
}

// Consortium is one page of GET /app/governance/members.
type Consortium struct {
	Members  []ConsortiumMember `json:"members"`
	NextLink string             `json:"nextLink,omitempty"`
}

// Constitution is the response of GET /app/governance/constitution.
type Constitution struct {
	Digest string `json:"digest"` // hex SHA-256 of Script
	Script string `json:"script"`
}

// EnclaveQuote is one node's TEE evidence.
type EnclaveQuote struct {
	NodeID       string `json:"nodeId"`
	QuoteVersion string `json:"quoteVersion"`
	Raw          string `json:"raw"`
	MREnclave    string `json:"mrenclave,omitempty"`
}

// ConfidentialLedgerEnclaves is the response of GET /app/enclaveQuotes,
// keyed by node id.
type ConfidentialLedgerEnclaves struct {
	CurrentNodeID string                  `json:"currentNodeId"`
	EnclaveQuotes map[string]EnclaveQuote `json:"enclaveQuotes"`
}

// LedgerIdentityInformation is the response of the identity service's
// GET /ledgerIdentity/{ledgerId}: the service certificate clients pin.
type LedgerIdentityInformation struct {
	LedgerID             string `json:"ledgerId,omitempty"`
	LedgerTLSCertificate string `json:"ledgerTlsCertificate"` // PEM
}

// ConfidentialLedgerError is the body of every non-2xx response.
type ConfidentialLedgerError struct {
	Error ConfidentialLedgerErrorBody `json:"error"`
}

// ConfidentialLedgerErrorBody is the code and message of an error response.
type ConfidentialLedgerErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Parley extensions: not part of ACL, offered by Parley on request.

// WaitCommitted is the value of the wait query parameter (or the
// x-parley-wait header) that makes a write or a batch answer only once it
// is committed, or once the server's wait timeout passes.
const WaitCommitted = "committed"

// WriteResult is the body of a POST /app/transactions with wait=committed:
// ACL's [LedgerWriteResult] plus the transaction id, its state
// ([TxCommitted], or [TxPending] if the wait timed out) and, once
// committed, its receipt.
type WriteResult struct {
	CollectionID  string              `json:"collectionId"`
	TransactionID string              `json:"transactionId,omitempty"`
	State         string              `json:"state,omitempty"`
	Receipt       *TransactionReceipt `json:"receipt,omitempty"`
}

// BatchRequest is the body of POST /app/transactions:batch: entries written
// as separate transactions in one request. An entry without a collection
// goes to the request's collectionId query parameter, or the default one.
type BatchRequest struct {
	Entries []BatchEntry `json:"entries"`
}

// BatchEntry is one entry of a [BatchRequest].
type BatchEntry struct {
	Contents     string   `json:"contents"`
	CollectionID string   `json:"collectionId,omitempty"`
	Tags         []string `json:"tags,omitempty"`
}

// BatchResponse answers a [BatchRequest], one result per entry in request
// order. With wait=committed, State says whether every entry committed.
type BatchResponse struct {
	Results []BatchResult `json:"results"`
	State   string        `json:"state,omitempty"`
}

// BatchResult is one entry's outcome: its transaction id, or an error.
type BatchResult struct {
	CollectionID  string                       `json:"collectionId"`
	TransactionID string                       `json:"transactionId,omitempty"`
	Error         *ConfidentialLedgerErrorBody `json:"error,omitempty"`
}
