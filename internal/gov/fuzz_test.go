package gov

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func FuzzParseSigned(f *testing.F) {
	m := newTestMember(f, "m")
	now := time.Unix(1_800_000_000, 0)
	f.Add(m.sign(f, TypeProposal, "", ProposalBody{Actions: []Action{{Name: "rotate_ledger_secret"}}}, now))
	f.Add(m.sign(f, TypeBallot, string(bytes.Repeat([]byte("a"), 64)), Ballot{BallotAccept}, now))
	f.Add(m.sign(f, TypeWithdrawal, string(bytes.Repeat([]byte("0"), 64)), nil, now))
	f.Add([]byte("eyJhbGciOiJFUzM4NCJ9.e30.AAAA"))
	f.Add([]byte("..."))
	f.Fuzz(func(t *testing.T, b []byte) {
		sr, err := ParseSigned(b)
		if err != nil {
			if sr != nil || !errors.Is(err, ErrMalformedRequest) {
				t.Fatalf("ParseSigned error %v with result %v", err, sr)
			}
			return
		}
		if !validMemberID(sr.MemberID) {
			t.Fatalf("accepted kid %q", sr.MemberID)
		}
		r, err := sr.Verify(&m.key.PublicKey)
		if err != nil {
			if r != nil {
				t.Fatal("Verify returned a request with an error")
			}
			return
		}
		if r.Counter == 0 || (r.Type != TypeProposal && !validProposalID(r.ProposalID)) {
			t.Fatalf("accepted request %+v", r)
		}
	})
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"type":"proposal","createdAt":1,"counter":1,"body":{"actions":[]}}`))
	f.Add([]byte(`{"type":"ballot","proposalId":"` + string(bytes.Repeat([]byte("a"), 64)) + `","createdAt":1,"counter":2,"body":{"ballot":"accept"}}`))
	f.Add([]byte(`{"type":"withdrawal","counter":1} x`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRequest(b)
		if err != nil {
			if r != nil || !errors.Is(err, ErrMalformedRequest) {
				t.Fatalf("decodeRequest error %v with %v", err, r)
			}
			return
		}
		// What decodes re-encodes to an equivalent request.
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := decodeRequest(again)
		if err != nil || r2.Type != r.Type || r2.Counter != r.Counter || r2.ProposalID != r.ProposalID || r2.CreatedAt != r.CreatedAt {
			t.Fatalf("round trip: %+v -> %s -> %+v, %v", r, again, r2, err)
		}
	})
}

func FuzzParseProposal(f *testing.F) {
	for _, s := range []string{
		`{"actions":[{"name":"set_user","args":{"cert":"","user_id":"abc","role":"Contributor"}}]}`,
		`{"actions":[{"name":"set_jwt_issuer","args":{"issuer":"https://i","jwks":{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}}}]}`,
		`{"actions":[{"name":"set_constitution","args":{"constitution":{"thresholds":{"set_user":2}}}}]}`,
		`{"actions":[{"name":"add_measurement","args":{"platform":"tdx","measurement":"00ff"}}]}`,
		`{"actions":[{"name":"remove_member","args":{"member_id":"` + string(bytes.Repeat([]byte("a"), 64)) + `"}}]}`,
		`{"actions":[{"name":"trust_node","args":{"node_id":"` + string(bytes.Repeat([]byte("b"), 64)) + `"}}]}`,
		`{"actions":[{"name":"set_recovery_threshold","args":{"recovery_threshold":2}},{"name":"transition_service_to_open"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, acts, err := parseProposal(b)
		if err != nil {
			if p != nil || acts != nil || !errors.Is(err, ErrInvalidProposal) {
				t.Fatalf("parseProposal error %v with a result", err)
			}
			return
		}
		if len(acts) != len(p.Actions) || len(acts) == 0 || len(acts) > MaxActions {
			t.Fatalf("%d actions parsed from %d", len(acts), len(p.Actions))
		}
		// A valid proposal re-encodes to a valid proposal.
		again, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := parseProposal(again); err != nil {
			t.Fatalf("re-encoded proposal %s refused: %v", again, err)
		}
	})
}
