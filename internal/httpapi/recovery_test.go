package httpapi

import (
	"net/http"
	"testing"
)

// TestRecoveryShareEndpoint checks that only members may ask for a recovery
// share. A member's share is tested end to end in cmd/parley (the fixture
// has no client for its member).
func TestRecoveryShareEndpoint(t *testing.T) {
	f := newFixture(t, Config{Gov: withGov})
	for _, tt := range []struct {
		who    string
		status int
		code   string
	}{
		{"anonymous", http.StatusUnauthorized, CodeInvalidAuthentication},
		{"stranger", http.StatusUnauthorized, CodeInvalidAuthentication},
		{"admin", http.StatusUnauthorized, CodeInvalidAuthentication},
	} {
		r := f.do(tt.who, "GET", "/gov/recovery/share", nil)
		if r.status != tt.status || r.code(t) != tt.code {
			t.Errorf("GET /gov/recovery/share as %s: %d %s, want %d %s", tt.who, r.status, r.code(t), tt.status, tt.code)
		}
	}
}
