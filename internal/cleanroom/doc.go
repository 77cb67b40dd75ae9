// Package cleanroom is the ledger side of Parley's clean rooms: rooms and
// their parties, datasets registered by their owners (name, owner, ciphertext
// digest, schema, analysis rules), contracts (a query, the datasets it reads,
// who receives the output, which runner measurements may run it), the
// approval of every owner of a dataset a contract reads, suspension by any
// party, and the record of each job run. Every change is one transaction over
// public maps, so the ledger alone shows who did what; the data itself never
// reaches the ledger (see packages dataset, blob and runner).
//
// # Signed requests
//
// Every request is a JWS (RFC 7515, compact, ES384) signed by a party's
// P-384 key; the protected header's "kid" is the party id, the lowercase hex
// SHA-256 of the key's PKIX DER. The payload is a [Request]: its type, the
// room, createdAt (Unix seconds), a counter that must exceed the party's last
// accepted one, and the type's body. Creating a room carries the creator's
// public key, which must match the kid; every other request is verified with
// the key recorded for the party in that room. Each accepted request is kept
// in the history map under its SHA-256.
//
// # Maps
//
//	map                                   key                      value
//	public:parley.cleanroom.rooms         room                     JSON Room
//	public:parley.cleanroom.parties       room/party id            JSON Party
//	public:parley.cleanroom.datasets      room/dataset             JSON Dataset
//	public:parley.cleanroom.contracts     room/contract id         JSON Contract
//	public:parley.cleanroom.jobs          room/job id              JSON JobRecord
//	public:parley.cleanroom.counters      party id                 last accepted counter, decimal
//	public:parley.cleanroom.history       SHA-256 of request       the JWS as received
//	public:parley.cleanroom.events        room/seq (12 digits)     JSON Event, one per transaction
//	public:parley.cleanroom.releases      room/runtime key         JSON ReleaseRecord of a key release
//
// # Events and receipts
//
// Every transaction of this package writes exactly one Event and commits
// with SHA-256 of the event's JSON as its claims digest, so the
// transaction's receipt proves the event. [Index] maps events to their
// transactions and [Service.Audit] lists a room's steps.
//
// # Key release
//
// Data keys are held by the key broker (package keyrelease). The service is
// the broker's keyrelease.RoomGate: [Service.AuthorizeRelease] is the
// clean-room release policy (the contract approved by every owner, not
// suspended, the runner's measurement allowed) and [Service.RecordRelease]
// records each release and refusal.
//
// A contract's id is the hex SHA-256 of its terms as signed (JSON
// ContractTerms), so approving the id approves exactly those terms.
package cleanroom
