// Package app is the Azure Confidential Ledger (ACL) application of a Parley
// node: ledger entries in collections, tags, certificate users and their
// roles, consortium members and the constitution, all as transactions over
// the engine's key-value maps. It knows nothing of HTTP; package httpapi
// decodes requests, calls it and maps its errors to status codes.
//
// # Maps
//
// Private maps are encrypted in the ledger under the ledger secret; maps
// whose name starts with "public:" are stored in clear.
//
//	map                            key             value
//	acl.entries                    collection id   the latest entry of the collection (below)
//	acl.collections                collection id   empty
//	acl.tags                       tag             empty
//	acl.counters                   "collections"   number of collections, uint64 big-endian
//	                               "tags"          number of distinct tags, uint64 big-endian
//	public:acl.users               user id         JSON {"assignedRoles":["Administrator",…]}
//	public:ccf.gov.members.certs   member id       member certificate, PEM
//	public:ccf.gov.constitution    ""              constitution script (JavaScript)
//	public:ccf.gov.members.encryption_public_keys
//	                               member id       member encryption public key, PEM
//
// Package gov owns the other public:ccf.gov maps and writes the users and
// members maps when a proposal is accepted.
//
// User and member ids are the lowercase hex SHA-256 of the DER certificate
// (see [NormalizeUserID]). Every ledger entry is one transaction that puts
// its collection's key in acl.entries, so the ledger holds every version;
// the map holds the latest. An entry value is
//
//	version:byte(0x01) secretKey:byte[32] tagCount:uvarint (tagLen:uvarint tag)* contents
//
// where secretKey is the random per-entry key of the entry's LedgerEntryV1
// application claim. The claim's digest (receipt.ClaimsDigest) is the
// transaction's claims digest, so the entry's receipt proves its collection
// and contents to whoever is given the claim.
//
// # Indexes
//
// [Index] is the engine's Observer: it keeps, in memory, the ids of the
// entries of each collection and of each (collection, tag) pair in log order,
// and the seqnos of signature transactions, rebuilt from the ledger when the
// engine replays it at Open and trimmed when the engine rolls a suffix back.
// List queries return only committed entries.
//
// # Limits
//
// [Limits] holds ACL's limits (entry contents of 8192 bytes, collection ids
// of 256 bytes, 5000 collections, 10000 tags); writes over a limit fail with
// an error wrapping one of the sentinel errors below and write nothing.
package app
