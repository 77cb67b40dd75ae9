package api

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

const snakeReceipt = `{
 "is_signature_transaction": false,
 "cert": "CERT",
 "node_id": "708c",
 "service_endorsements": ["E1"],
 "leaf_components": {
  "claims_digest": "00",
  "commit_evidence": "ce:2.35:fa",
  "write_set_digest": "fe"
 },
 "proof": [{"left": "5e"}, {"right": "fb"}],
 "signature": "MEYC"
}`

const camelReceipt = `{
 "cert": "CERT",
 "nodeId": "708c",
 "serviceEndorsements": ["E1"],
 "leafComponents": {
  "claimsDigest": "00",
  "commitEvidence": "ce:2.35:fa",
  "writeSetDigest": "fe"
 },
 "proof": [{"left": "5e"}, {"right": "fb"}],
 "signature": "MEYC"
}`

var wantReceipt = Receipt{
	Cert:                "CERT",
	NodeID:              "708c",
	ServiceEndorsements: []string{"E1"},
	LeafComponents: &LeafComponents{
		ClaimsDigest:   "00",
		CommitEvidence: "ce:2.35:fa",
		WriteSetDigest: "fe",
	},
	Proof:     []ProofElement{{Left: "5e"}, {Right: "fb"}},
	Signature: "MEYC",
}

func TestReceiptUnmarshal(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   string
	}{
		{"snake_case", snakeReceipt},
		{"camelCase", camelReceipt},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got Receipt
			if err := json.Unmarshal([]byte(tt.in), &got); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if !reflect.DeepEqual(got, wantReceipt) {
				t.Errorf("Unmarshal = %+v, want %+v", got, wantReceipt)
			}
		})
	}
}

func TestReceiptMarshalIsCamelCase(t *testing.T) {
	var r Receipt
	if err := json.Unmarshal([]byte(snakeReceipt), &r); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var got, want any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(camelReceipt), &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Marshal = %s, want %s", b, camelReceipt)
	}
	if strings.Contains(string(b), "_") {
		t.Errorf("Marshal = %s, want no snake_case keys", b)
	}
}

func TestReceiptMarshalEmptyArrays(t *testing.T) {
	b, err := json.Marshal(&Receipt{NodeID: "ab", Signature: "sig"})
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"nodeId":"ab","proof":[],"serviceEndorsements":[],"signature":"sig"}`
	if string(b) != want {
		t.Errorf("Marshal = %s, want %s", b, want)
	}
}

func TestReceiptUnmarshalConflicts(t *testing.T) {
	for _, in := range []string{
		`{"nodeId":"a","node_id":"b"}`,
		`{"serviceEndorsements":[],"service_endorsements":[]}`,
		`{"leafComponents":{},"leaf_components":{}}`,
		`{"leafComponents":{"claimsDigest":"a","claims_digest":"b"}}`,
		`{"leafComponents":{"commitEvidence":"a","commit_evidence":"b"}}`,
		`{"leafComponents":{"writeSetDigest":"a","write_set_digest":"b"}}`,
		`{"proof":{"left":"a"}}`,
		`{"nodeId":1}`,
		`[]`,
	} {
		var r Receipt
		if err := json.Unmarshal([]byte(in), &r); err == nil {
			t.Errorf("Unmarshal(%s) = %+v, want error", in, r)
		}
	}
}

func TestTransactionReceiptRoundTrip(t *testing.T) {
	const in = `{"applicationClaims":[{"kind":"LedgerEntry","ledgerEntry":{"collectionId":"subledger:0","contents":"Hello world","protocol":"LedgerEntryV1","secretKey":"Jde/Vg=="}},{"kind":"ClaimDigest","digest":{"protocol":"LedgerEntryV1","value":"feb5"}}],"receipt":{"cert":"C","leafComponents":{"claimsDigest":"00","commitEvidence":"ce:2.15:aa","writeSetDigest":"ff"},"nodeId":"n","proof":[{"left":"aa"}],"serviceEndorsements":[],"signature":"s"},"state":"Ready","transactionId":"2.15"}`
	var tr TransactionReceipt
	if err := json.Unmarshal([]byte(in), &tr); err != nil {
		t.Fatal(err)
	}
	if got, want := tr.ApplicationClaims[0].LedgerEntry.CollectionID, "subledger:0"; got != want {
		t.Errorf("collectionId = %q, want %q", got, want)
	}
	if got, want := tr.ApplicationClaims[1].Digest.Value, "feb5"; got != want {
		t.Errorf("digest value = %q, want %q", got, want)
	}
	out, err := json.Marshal(&tr)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != in {
		t.Errorf("Marshal = %s, want %s", out, in)
	}
}
