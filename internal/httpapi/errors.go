package httpapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/parleyhq/parley/internal/app"
	"github.com/parleyhq/parley/internal/engine"
)

// Error codes Parley returns, each documented in docs/api.md with its
// status. Where ACL or CCF has a code for the case, it is that code.
const (
	CodeMissingAPIVersion     = "MissingApiVersionParameter"
	CodeUnsupportedAPIVersion = "UnsupportedApiVersionValue"
	CodeInvalidAuthentication = "InvalidAuthenticationInfo"
	CodeAuthorizationFailed   = "AuthorizationFailed"
	CodeInvalidInput          = "InvalidInput"
	CodeInvalidQueryParameter = "InvalidQueryParameterValue"
	CodeInvalidTransactionID  = "InvalidTransactionId"
	CodeInvalidUserID         = "InvalidUserId"
	CodeUnsupportedMediaType  = "UnsupportedContentType"
	CodeRequestBodyTooLarge   = "RequestBodyTooLarge"
	CodeEntryTooLarge         = "EntrySizeCapacityExceeded"
	CodeCollectionIDTooLong   = "CollectionIdTooLong"
	CodeCollectionCapacity    = "CollectionCapacityExceeded"
	CodeTagCapacity           = "TagCapacityExceeded"
	CodeInvalidTag            = "InvalidTag"
	CodeTransactionNotFound   = "TransactionNotFound"
	CodeTransactionInvalid    = "TransactionInvalid"
	// CodeTransactionNotOnThisNode: the node started from a snapshot taken
	// after the transaction and holds neither its entry nor its receipt.
	CodeTransactionNotOnThisNode = "TransactionNotOnThisNode"
	CodeLedgerEntryNotFound      = "LedgerEntryNotFound"
	CodeSignatureTransaction     = "SignatureTransaction"
	CodeNotCommitted             = "TransactionNotCommitted"
	CodeUserNotFound             = "UserNotFound"
	CodeLastAdministrator        = "LastAdministrator"
	CodeResourceNotFound         = "ResourceNotFound"
	CodeMethodNotAllowed         = "UnsupportedHttpVerb"
	CodeServiceUnavailable       = "ServiceUnavailable"
	CodeInternalError            = "InternalError"
)

// apiError is an error with its HTTP status and ACL code.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

func newError(status int, code, msg string) *apiError {
	return &apiError{status: status, code: code, msg: msg}
}

// toAPIError maps any error a handler returns to its status and code: the
// one place where domain errors meet HTTP.
func toAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	if ae := govAPIError(err); ae != nil {
		return ae
	}
	if ae := attestAPIError(err); ae != nil {
		return ae
	}
	var mbe *http.MaxBytesError
	table := []struct {
		target error
		status int
		code   string
	}{
		{app.ErrEntryTooLarge, http.StatusBadRequest, CodeEntryTooLarge},
		{app.ErrCollectionIDTooLong, http.StatusBadRequest, CodeCollectionIDTooLong},
		{app.ErrInvalidCollectionID, http.StatusBadRequest, CodeInvalidQueryParameter},
		{app.ErrCollectionCapacity, http.StatusBadRequest, CodeCollectionCapacity},
		{app.ErrTagCapacity, http.StatusBadRequest, CodeTagCapacity},
		{app.ErrInvalidTag, http.StatusBadRequest, CodeInvalidTag},
		{app.ErrNotLedgerEntry, http.StatusNotFound, CodeLedgerEntryNotFound},
		{app.ErrNoEntries, http.StatusNotFound, CodeLedgerEntryNotFound},
		{app.ErrSignatureTx, http.StatusBadRequest, CodeSignatureTransaction},
		{engine.ErrSignatureTx, http.StatusBadRequest, CodeSignatureTransaction},
		{app.ErrUserNotFound, http.StatusNotFound, CodeUserNotFound},
		{app.ErrInvalidUserID, http.StatusBadRequest, CodeInvalidUserID},
		{app.ErrInvalidRole, http.StatusBadRequest, CodeInvalidInput},
		{app.ErrLastAdministrator, http.StatusConflict, CodeLastAdministrator},
		{engine.ErrUnknownTx, http.StatusNotFound, CodeTransactionNotFound},
		{engine.ErrInvalid, http.StatusNotFound, CodeTransactionInvalid},
		{engine.ErrNotOnThisNode, http.StatusNotFound, CodeTransactionNotOnThisNode},
		{engine.ErrNotCommitted, http.StatusBadRequest, CodeNotCommitted},
		{engine.ErrNotLeader, http.StatusServiceUnavailable, CodeServiceUnavailable},
		{engine.ErrClosed, http.StatusServiceUnavailable, CodeServiceUnavailable},
		{app.ErrTooManyConflicts, http.StatusServiceUnavailable, CodeServiceUnavailable},
		{context.DeadlineExceeded, http.StatusServiceUnavailable, CodeServiceUnavailable},
		{context.Canceled, http.StatusServiceUnavailable, CodeServiceUnavailable},
	}
	for _, t := range table {
		if errors.Is(err, t.target) {
			return newError(t.status, t.code, err.Error())
		}
	}
	if errors.As(err, &mbe) {
		return newError(http.StatusRequestEntityTooLarge, CodeRequestBodyTooLarge, "request body exceeds the limit")
	}
	return newError(http.StatusInternalServerError, CodeInternalError, "internal error")
}
