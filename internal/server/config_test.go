package server

import (
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name, in string
		wantErr  string
	}{
		{"minimal", `{"dataDir":"/d"}`, ""},
		{"full", `{"dataDir":"/d","listenAddress":"0.0.0.0:8443","subjectAltNames":["a"],"signatureInterval":"5ms","signatureTxCount":10,"limits":{"maxEntryBytes":100},"maxRequestBytes":1000,"pageSize":10,"maxBatch":5,"logFormat":"json","logLevel":"debug"}`, ""},
		{"unknown field", `{"dataDir":"/d","dataDirectory":"/e"}`, "unknown field"},
		{"no data dir", `{}`, "dataDir is required"},
		{"bad duration", `{"dataDir":"/d","signatureInterval":"soon"}`, "duration"},
		{"tiny interval", `{"dataDir":"/d","signatureInterval":"1us"}`, "at least 1ms"},
		{"bad address", `{"dataDir":"/d","listenAddress":"8000"}`, "listenAddress"},
		{"bad log format", `{"dataDir":"/d","logFormat":"xml"}`, "logFormat"},
		{"trailing data", `{"dataDir":"/d"} {}`, "data after"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.in))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseConfig: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseConfig = %+v, %v; want an error containing %q", c, err, tt.wantErr)
			}
		})
	}
	c, err := ParseConfig([]byte(`{"dataDir":"/d","signatureInterval":"5ms"}`))
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Duration(c.withDefaults().SignatureInterval); d != 5*time.Millisecond {
		t.Errorf("signatureInterval = %v, want 5ms", d)
	}
	if a := c.withDefaults().ListenAddress; a != DefaultListenAddress {
		t.Errorf("listenAddress = %q, want %q", a, DefaultListenAddress)
	}
}
