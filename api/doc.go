// Package api holds the public JSON wire types of Parley's REST API, which is
// wire-compatible with the Azure Confidential Ledger (ACL) data plane
// (api-versions 2022-05-13 and 2026-02-23). Field names follow the ACL
// OpenAPI specification exactly.
//
// The package has no logic beyond JSON encoding and decoding: verifying a
// [Receipt] is the job of the receipt package, and serving one is the job of
// the HTTP handlers.
package api
