package cleanroom

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/parleyhq/parley/internal/jws"
	"github.com/parleyhq/parley/internal/strictjson"
)

const jwsType = "parley-cleanroom+jws"

// Sign signs r with a party's P-384 key as a compact JWS whose kid is
// partyID.
func Sign(k *ecdsa.PrivateKey, partyID string, r *Request) ([]byte, error) {
	payload, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	return jws.Sign(k, partyID, jwsType, payload)
}

// VerifySigned checks a signed request offline, as an auditor does: it
// parses, its kid is PartyID(pub), and pub's signature verifies. It
// returns the request. Errors wrap ErrMalformed or ErrBadSignature.
func VerifySigned(b []byte, pub *ecdsa.PublicKey) (*Request, error) {
	sr, err := parseSigned(b)
	if err != nil {
		return nil, err
	}
	id, err := PartyID(pub)
	if err != nil {
		return nil, err
	}
	if sr.kid != id {
		return nil, fmt.Errorf("signed by %s, not by %s: %w", sr.kid, id, ErrBadSignature)
	}
	return sr.verify(pub)
}

// VerifyCreateRoom checks a signed create_room request offline: it is
// signed by the key its body carries. It returns the request and that key,
// the room creator's, from which an auditor learns every other party's key
// (each invite carries the invitee's key, signed by the inviter).
func VerifyCreateRoom(b []byte) (*Request, *ecdsa.PublicKey, error) {
	sr, err := parseSigned(b)
	if err != nil {
		return nil, nil, err
	}
	var peek struct {
		Body CreateRoomBody `json:"body"`
	}
	if err := json.Unmarshal(sr.obj.UnsafePayload(), &peek); err != nil {
		return nil, nil, fmt.Errorf("create_room body: %v: %w", err, ErrMalformed)
	}
	pub, err := parsePublicKey(peek.Body.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	r, err := VerifySigned(b, pub)
	if err != nil {
		return nil, nil, err
	}
	if r.Type != TypeCreateRoom {
		return nil, nil, fmt.Errorf("request is a %s, not a create_room: %w", r.Type, ErrMalformed)
	}
	return r, pub, nil
}

// SignerOf returns the kid (party id) of a signed request, unverified.
func SignerOf(b []byte) (string, error) {
	sr, err := parseSigned(b)
	if err != nil {
		return "", err
	}
	return sr.kid, nil
}

// signed is a parsed request whose signature is not checked yet.
type signed struct {
	kid  string
	room string // from the unverified payload, to find the key
	raw  string
	obj  *jws.Object
}

func parseSigned(b []byte) (*signed, error) {
	obj, err := jws.Parse(b, MaxRequestBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if !hexID.MatchString(obj.KeyID) {
		return nil, fmt.Errorf("kid %.80q: want a party id (64 lowercase hex digits): %w", obj.KeyID, ErrMalformed)
	}
	if obj.Type != jwsType {
		return nil, fmt.Errorf("typ %.40q, want %s: %w", obj.Type, jwsType, ErrMalformed)
	}
	var peek struct {
		Room string `json:"room"`
	}
	if err := json.Unmarshal(obj.UnsafePayload(), &peek); err != nil || !nameRE.MatchString(peek.Room) {
		return nil, fmt.Errorf("room %.80q: want a lowercase identifier: %w", peek.Room, ErrMalformed)
	}
	return &signed{kid: obj.KeyID, room: peek.Room, raw: obj.Raw, obj: obj}, nil
}

// event is the event of a step sr makes.
func (sr *signed) event(step, subject string, detail map[string]any) Event {
	d := sha256.Sum256([]byte(sr.raw))
	return Event{Room: sr.room, Step: step, By: sr.kid, Request: hex.EncodeToString(d[:]), Subject: subject, Detail: detail}
}

func (sr *signed) verify(pub *ecdsa.PublicKey) (*Request, error) {
	payload, err := sr.obj.Verify(pub)
	if err != nil {
		return nil, fmt.Errorf("party %s: %w", sr.kid, ErrBadSignature)
	}
	var r Request
	if err := strictjson.Unmarshal(payload, &r); err != nil {
		return nil, fmt.Errorf("request payload: %v: %w", err, ErrMalformed)
	}
	if r.Room != sr.room || r.Counter == 0 {
		return nil, fmt.Errorf("request room %q counter %d: %w", r.Room, r.Counter, ErrMalformed)
	}
	return &r, nil
}
