package gov

import (
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"github.com/parleyhq/parley/internal/jws"
	"github.com/parleyhq/parley/internal/strictjson"
	"time"
)

// Message types of a signed request; each endpoint takes one.
const (
	TypeProposal   = "proposal"
	TypeBallot     = "ballot"
	TypeWithdrawal = "withdrawal"
	// TypeRecoveryShare submits a member's decrypted recovery share to a
	// recovering service (body {"share":"<base64>"}).
	TypeRecoveryShare = "recovery_share"
)

// MaxRequestBytes bounds a signed request (the JWS compact serialization).
const MaxRequestBytes = 512 << 10

// Request is the payload of a signed governance request. It is signed as a
// JWS (ES384, compact serialization) whose protected header names the
// signing member in "kid".
type Request struct {
	// Type is TypeProposal, TypeBallot or TypeWithdrawal.
	Type string `json:"type"`
	// ProposalID names the proposal a ballot or withdrawal is for; empty
	// for a new proposal.
	ProposalID string `json:"proposalId,omitempty"`
	// CreatedAt is when the member signed, in Unix seconds. The service
	// refuses requests outside its clock-skew window.
	CreatedAt int64 `json:"createdAt"`
	// Counter must be greater than the counter of every earlier request
	// of the same member the service accepted (the CLI uses the signing
	// time in Unix nanoseconds).
	Counter uint64 `json:"counter"`
	// Body is the proposal ({"actions":[…]}) or the ballot
	// ({"ballot":"accept"|"reject"}); empty for a withdrawal.
	Body json.RawMessage `json:"body,omitempty"`
}

// SignedRequest is a parsed request whose signature is not checked yet.
type SignedRequest struct {
	// MemberID is the "kid" of the protected header: the signer's member
	// id, the lowercase hex SHA-256 of its certificate's DER.
	MemberID string
	// Raw is the compact serialization as received.
	Raw string
	obj *jws.Object
}

// requestType is the "typ" of governance requests.
const requestType = "parley-gov+jws"

// Sign signs r with a member's P-384 key, naming the member memberID,
// and returns the JWS compact serialization to send as a request body.
func Sign(key *ecdsa.PrivateKey, memberID string, r *Request) ([]byte, error) {
	payload, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	return jws.Sign(key, memberID, requestType, payload)
}

// ParseSigned parses a JWS compact serialization signed with ES384 and
// returns it with its signer's member id, without checking the signature
// (Verify does). It fails with an error wrapping ErrMalformedRequest.
func ParseSigned(b []byte) (*SignedRequest, error) {
	obj, err := jws.Parse(b, MaxRequestBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: want a JWS signed by a member: %w", ErrMalformedRequest, err)
	}
	if !validMemberID(obj.KeyID) {
		return nil, fmt.Errorf("kid %.80q is not a member id (64 lowercase hex digits): %w", obj.KeyID, ErrMalformedRequest)
	}
	return &SignedRequest{MemberID: obj.KeyID, Raw: obj.Raw, obj: obj}, nil
}

// Verify checks the signature with the member's public key and decodes the
// payload strictly (unknown fields and trailing data refused). It fails
// with an error wrapping ErrBadSignature or ErrMalformedRequest.
func (sr *SignedRequest) Verify(pub *ecdsa.PublicKey) (*Request, error) {
	payload, err := sr.obj.Verify(pub)
	if err != nil {
		return nil, fmt.Errorf("member %s: %w", sr.MemberID, ErrBadSignature)
	}
	return decodeRequest(payload)
}

func decodeRequest(payload []byte) (*Request, error) {
	var r Request
	if err := strictjson.Unmarshal(payload, &r); err != nil {
		return nil, fmt.Errorf("request payload: %v: %w", err, ErrMalformedRequest)
	}
	switch r.Type {
	case TypeProposal, TypeRecoveryShare:
		if r.ProposalID != "" {
			return nil, fmt.Errorf("a %s names no proposalId: %w", r.Type, ErrMalformedRequest)
		}
	case TypeBallot, TypeWithdrawal:
		if !validProposalID(r.ProposalID) {
			return nil, fmt.Errorf("proposalId %.80q: want 64 lowercase hex digits: %w", r.ProposalID, ErrMalformedRequest)
		}
	default:
		return nil, fmt.Errorf("type %.40q: want proposal, ballot, withdrawal or recovery_share: %w", r.Type, ErrMalformedRequest)
	}
	if r.Counter == 0 {
		return nil, fmt.Errorf("counter must be positive: %w", ErrMalformedRequest)
	}
	return &r, nil
}

// checkFresh refuses a request created outside [now-skew, now+skew].
func checkFresh(r *Request, now time.Time, skew time.Duration) error {
	created := time.Unix(r.CreatedAt, 0)
	if created.Before(now.Add(-skew)) || created.After(now.Add(skew)) {
		return fmt.Errorf("request created at %s, service time %s, allowed skew %s: %w",
			created.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), skew, ErrStaleRequest)
	}
	return nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func validMemberID(s string) bool   { return len(s) == 64 && isLowerHex(s) }
func validProposalID(s string) bool { return len(s) == 64 && isLowerHex(s) }
