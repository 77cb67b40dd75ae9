package httpapi

import (
	"net/http"
	"strings"
	"testing"

	"github.com/parleyhq/parley/internal/gov"
)

// withGov, as Config.Gov of newFixture, asks for governance over the
// fixture's engine.
var withGov = &gov.Service{}

func TestGovEndpoints(t *testing.T) {
	f := newFixture(t, Config{Gov: withGov})
	tests := []struct {
		who, method, path string
		body              string
		hdr               []string
		status            int
		code              string
	}{
		{"stranger", "GET", "/gov/members", "", nil, http.StatusUnauthorized, CodeInvalidAuthentication},
		{"anonymous", "GET", "/gov/proposals", "", nil, http.StatusUnauthorized, CodeInvalidAuthentication},
		{"anonymous", "POST", "/gov/proposals", `{"actions":[]}`, nil, http.StatusBadRequest, CodeInvalidGovRequest},
		{"anonymous", "POST", "/gov/proposals", "", nil, http.StatusBadRequest, CodeInvalidGovRequest},
		{"anonymous", "POST", "/gov/proposals/" + strings.Repeat("a", 64) + "/ballots", "x.y.z", nil, http.StatusBadRequest, CodeInvalidGovRequest},
		{"anonymous", "POST", "/gov/proposals/" + strings.Repeat("a", 64) + ":frobnicate", "x.y.z", nil, http.StatusNotFound, CodeResourceNotFound},
		{"reader", "GET", "/gov/proposals/" + strings.Repeat("a", 64), "", nil, http.StatusNotFound, CodeProposalNotFound},
		{"anonymous", "GET", "/app/transactions?api-version=2022-05-13", "", []string{"Authorization", "Bearer a.b.c"}, http.StatusUnauthorized, CodeInvalidAuthentication},
	}
	for _, tt := range tests {
		var body []byte
		if tt.body != "" {
			body = []byte(tt.body)
		}
		r := f.do(tt.who, tt.method, tt.path, body, tt.hdr...)
		if r.status != tt.status || r.code(t) != tt.code {
			t.Errorf("%s %s as %s: %d %s, want %d %s", tt.method, tt.path, tt.who, r.status, r.code(t), tt.status, tt.code)
		}
	}
	r := f.do("reader", "GET", "/gov/members", nil)
	var ms struct{ Members []gov.Member }
	r.decode(t, &ms)
	if r.status != http.StatusOK || len(ms.Members) != 1 || ms.Members[0].MemberID != f.ids["member"] {
		t.Errorf("GET /gov/members = %d %s, want the one member", r.status, r.body)
	}
}

func TestBearerWithoutGovernance(t *testing.T) {
	f := newFixture(t, Config{})
	r := f.do("admin", "GET", "/app/transactions?api-version=2022-05-13", nil, "Authorization", "Bearer a.b.c")
	if r.status != http.StatusUnauthorized {
		t.Errorf("bearer token without governance: %d, want 401", r.status)
	}
	if r := f.do("admin", "GET", "/gov/members", nil); r.status != http.StatusNotFound {
		t.Errorf("/gov/members without governance: %d, want 404", r.status)
	}
}
