// Package gov is the consortium governance of a Parley service: members,
// signed governance requests, proposals (lists of actions in CCF's form),
// ballots, the constitution that decides them, and JWT bearer
// authentication of users from issuers governance trusts. Every request
// that changes anything is one ledger transaction, and all governance
// state lives in public maps, so the ledger alone shows who proposed and
// voted what, and what it changed. docs/governance.md is the reference.
//
// # Signed requests
//
// A member signs each request as a JWS (RFC 7515, compact serialization,
// ES384 with its P-384 member key); the protected header's "kid" is the
// member id (lowercase hex SHA-256 of its certificate's DER). The payload
// is a [Request]: its type (proposal, ballot, withdrawal), the proposal it
// is for, createdAt (Unix seconds) and a counter. The service refuses a
// request outside its clock-skew window ([DefaultMaxClockSkew]) or whose
// counter is not above the member's last accepted one, so a request
// cannot be replayed; the counter is stored on the ledger, in the same
// transaction as the request's effect.
//
// # Proposals and the constitution
//
// A proposal's id is the hex SHA-256 of its signed request. Its state
// starts Open; after each ballot the [Constitution] resolves it: Accepted
// once the accepting ballots of current members reach its threshold
// (a strict majority of members unless the constitution sets a threshold
// for one of its actions; the largest applies), Rejected once enough
// members reject that the threshold is out of reach. Its proposer may
// withdraw it while Open. An accepted proposal's actions apply in the
// transaction that accepts it; if one does not apply to the state at that
// point (say, removing a user who is gone), none does and the proposal is
// Failed, with the reason recorded, in that same transaction.
//
// # Maps
//
//	map                                              key               value
//	public:ccf.gov.members.certs                     member id         certificate, PEM
//	public:ccf.gov.members.encryption_public_keys    member id         RSA public key, PEM (recovery shares, RSA-OAEP-256)
//	public:ccf.gov.members.info                      member id         JSON MemberInfo
//	public:ccf.gov.members.request_counters          member id         last accepted counter, decimal
//	public:ccf.gov.proposals                         proposal id       proposal body as signed, JSON {"actions":[…]}
//	public:ccf.gov.proposals_info                    proposal id       JSON ProposalInfo (proposer, state, ballots, …)
//	public:ccf.gov.history                           SHA-256 of req.   JSON {"memberId","request":JWS}
//	public:ccf.gov.constitution                      "rules"           JSON Constitution ("" holds the descriptive script)
//	public:ccf.gov.nodes.measurements                platform:hex      "AllowedToJoin"
//	public:ccf.gov.nodes.info                        node id           JSON NodeInfo (status, raft id, address, keys, measurement)
//	public:ccf.gov.jwt.issuers                       issuer            JSON Issuer
//	public:ccf.gov.service.config                    ""                JSON ServiceConfig
//	public:ccf.gov.service.info                      ""                JSON ServiceInfo (status and service certificate)
//	public:ccf.gov.service.previous_identities       last seqno        JSON PreviousIdentity (after recovery)
//	public:ccf.gov.recovery.submitted_shares         member id         JSON SubmittedShare (never the share)
//	public:ccf.gov.ledger_secret.rekeys              proposal id       {"status":"Applied"}
//	public:ccf.gov.recovery_shares                   member id         JSON RecoveryShare (encrypted to the member)
//	public:ccf.internal.recovery.wrapped_ledger_secret ""              JSON WrappedSecret
//	public:acl.users                                 user id           JSON {"assignedRoles":[…]} (package app)
//
// # Recovery shares
//
// With a SecretSource (Config.Secrets), the service keeps the ledger secret
// recoverable by the members, as CCF does: a random 256-bit wrapping key
// seals the ledger secret (AES-256-GCM, WrappedSecret), and is split with
// Shamir's scheme (package shamir) into one share per recovery member (a
// member with an encryption key), any recovery-threshold of which give it
// back (every recovery member when no threshold is set). Each share is
// encrypted to its member's RSA key with RSA-OAEP-256 (RecoveryShare).
// Whenever a proposal changes the recovery members, their keys or the
// threshold, the shares are made anew in the transaction that applies it;
// EnsureRecoveryShares does so at start if they are missing or stale. A
// member reads its share (RecoveryShare), decrypts it (DecryptShare), and
// threshold shares open the wrapped secret (UnwrapLedgerSecret).
//
// # Rotation and recovery
//
// rotate_ledger_secret rotates the engine's secret (engine.PrepareRotation)
// and re-shares the new one in the accepting transaction. On a recovered
// ledger (the engine's private state closed), SubmitRecoveryShare takes
// members' shares in memory; at the threshold it unwraps the ledger secret
// and restores the private state (engine.PrepareRestore, CommitRestore)
// with new shares, in one transaction (docs/governance.md).
package gov
