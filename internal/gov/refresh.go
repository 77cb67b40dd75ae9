package gov

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/parleyhq/parley/internal/kv"
)

// maxDiscoveryBytes bounds an OpenID configuration or JWKS document.
const maxDiscoveryBytes = 256 << 10

// RefreshJWKS fetches, for every issuer set with auto_refresh, the key set
// the issuer publishes (its OpenID configuration at
// <issuer>/.well-known/openid-configuration names jwks_uri, which must be
// https) and, where it differs from the recorded one, records it in one
// ledger transaction per issuer. Only the primary refreshes; on a backup
// it does nothing. hc makes the requests (it decides which roots to
// trust). It returns the errors of the issuers it could not refresh,
// joined; the others are refreshed all the same.
func (s *Service) RefreshJWKS(ctx context.Context, hc *http.Client) error {
	if !s.eng.IsPrimary() {
		return nil
	}
	issuers := map[string]Issuer{}
	s.eng.Begin().Foreach(JWTIssuersMap, func(k string, v []byte) bool {
		var iss Issuer
		if json.Unmarshal(v, &iss) == nil && iss.AutoRefresh {
			issuers[k] = iss
		}
		return true
	})
	var errs []error
	for name := range issuers {
		jwks, err := fetchJWKS(ctx, hc, name)
		if err != nil {
			errs = append(errs, fmt.Errorf("refresh %s: %w", name, err))
			continue
		}
		_, err = s.run(ctx, func() (*kv.Tx, error) {
			tx := s.eng.Begin()
			b, ok := tx.Get(JWTIssuersMap, name)
			if !ok {
				return tx, nil // removed meanwhile: nothing to write
			}
			var iss Issuer
			if err := json.Unmarshal(b, &iss); err != nil || !iss.AutoRefresh {
				return tx, nil
			}
			if bytes.Equal(iss.JWKS, jwks) {
				return tx, nil
			}
			iss.JWKS = jwks
			tx.Put(JWTIssuersMap, name, mustJSON(iss))
			return tx, nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("record %s keys: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// fetchJWKS returns the issuer's published key set, validated and
// compacted.
func fetchJWKS(ctx context.Context, hc *http.Client, issuer string) (json.RawMessage, error) {
	var conf struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := getJSON(ctx, hc, strings.TrimSuffix(issuer, "/")+"/.well-known/openid-configuration", &conf); err != nil {
		return nil, err
	}
	u, err := url.Parse(conf.JWKSURI)
	if err != nil || u.Scheme != "https" {
		return nil, fmt.Errorf("jwks_uri %.200q: want an https URL", conf.JWKSURI)
	}
	var raw json.RawMessage
	if err := getJSON(ctx, hc, conf.JWKSURI, &raw); err != nil {
		return nil, err
	}
	if _, err := parseJWKS(raw); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	return buf.Bytes(), nil
}

func getJSON(ctx context.Context, hc *http.Client, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("get %.200s: %w", u, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("get %.200s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get %.200s: %s", u, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxDiscoveryBytes+1))
	if err != nil {
		return fmt.Errorf("read %.200s: %w", u, err)
	}
	if len(b) > maxDiscoveryBytes {
		return fmt.Errorf("%.200s: over %d bytes", u, maxDiscoveryBytes)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %.200s: %w", u, err)
	}
	return nil
}
