package client

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"net/http"
	"net/url"

	"github.com/parleyhq/parley/api"
)

// userPath returns the path of a user. A user id is either the lowercase hex
// SHA-256 fingerprint of the user's certificate or its colon-separated
// uppercase form ("5F:23:…"); the colons are sent as is, as ACL clients do.
func userPath(id string) (string, error) {
	if id == "" || len(id) > 256 {
		return "", fmt.Errorf("user id %q: bad length", id)
	}
	return "/app/users/" + url.PathEscape(id), nil
}

// GetUser returns user id and its role.
func (c *Client) GetUser(ctx context.Context, id string) (*api.LedgerUser, error) {
	p, err := userPath(id)
	if err != nil {
		return nil, err
	}
	var u api.LedgerUser
	if _, err := c.getJSON(ctx, p, nil, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// SetUser creates user id with role, or changes its role (a merge-patch, as
// ACL's create_or_update_user). role is one of api.RoleAdministrator,
// api.RoleContributor and api.RoleReader.
func (c *Client) SetUser(ctx context.Context, id, role string) (*api.LedgerUser, error) {
	p, err := userPath(id)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(api.LedgerUser{AssignedRole: role})
	if err != nil {
		return nil, fmt.Errorf("encode user: %w", err)
	}
	r, err := c.do(ctx, http.MethodPatch, p, nil, "application/merge-patch+json", body, http.StatusOK)
	if err != nil {
		return nil, err
	}
	var u api.LedgerUser
	if err := json.Unmarshal(r.body, &u); err != nil {
		return nil, fmt.Errorf("decode user: %w", err)
	}
	return &u, nil
}

// DeleteUser removes user id.
func (c *Client) DeleteUser(ctx context.Context, id string) error {
	p, err := userPath(id)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, http.MethodDelete, p, nil, "", nil, http.StatusNoContent, http.StatusOK)
	return err
}

// ListUsers returns every user (GET /app/users, 2026-02-23), following
// nextLink.
func (c *Client) ListUsers(ctx context.Context) iter.Seq2[api.LedgerUser, error] {
	return pages(ctx, c, "/app/users", func(b []byte) ([]api.LedgerUser, string, error) {
		var p api.PagedUsers
		err := json.Unmarshal(b, &p)
		return p.LedgerUsers, p.NextLink, err
	})
}
