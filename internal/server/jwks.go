package server

import (
	"context"
	"log/slog"
	"net/http"
	"time"
)

// DefaultJWKSRefreshInterval is how often a node refreshes the key sets of
// JWT issuers set with auto_refresh.
const DefaultJWKSRefreshInterval = 10 * time.Minute

// refreshJWKS refreshes the auto-refreshed JWT issuers' key sets at once
// and then every Config.JWKSRefreshInterval until ctx ends. Failures are
// logged; the keys on the ledger stay as they were.
func (s *Server) refreshJWKS(ctx context.Context) {
	hc := &http.Client{Timeout: 30 * time.Second}
	every := time.Duration(s.cfg.JWKSRefreshInterval)
	if every <= 0 {
		every = DefaultJWKSRefreshInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := s.gov.RefreshJWKS(ctx, hc); err != nil && ctx.Err() == nil {
			s.log.LogAttrs(ctx, slog.LevelWarn, "refresh JWT issuer keys", slog.Any("error", err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
