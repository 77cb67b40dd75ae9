package httpapi

import (
	"mime"
	"net/http"

	"github.com/parleyhq/parley/internal/app"
)

// ledgerUser is ACL's LedgerUser (one role, the strongest).
type ledgerUser struct {
	UserID       string `json:"userId"`
	AssignedRole string `json:"assignedRole"`
}

// ledgerUserRoles is ACL's LedgerUserMultipleRoles.
type ledgerUserRoles struct {
	UserID        string   `json:"userId"`
	AssignedRoles []string `json:"assignedRoles"`
}

func roleNames(roles []app.Role) []string {
	out := make([]string, len(roles))
	for i, r := range roles {
		out[i] = r.String()
	}
	return out
}

// userID returns the path's user id as given and in canonical form.
func userID(c *call) (given, canonical string, err error) {
	given = c.r.PathValue("userId")
	canonical, err = app.NormalizeUserID(given)
	return given, canonical, err
}

func (h *Handler) getUser(c *call) (any, int, error) {
	given, id, err := userID(c)
	if err != nil {
		return nil, 0, err
	}
	u, err := h.app.User(id)
	if err != nil {
		return nil, 0, err
	}
	return ledgerUser{UserID: given, AssignedRole: app.Highest(u.Roles).String()}, http.StatusOK, nil
}

func (h *Handler) getLedgerUser(c *call) (any, int, error) {
	given, id, err := userID(c)
	if err != nil {
		return nil, 0, err
	}
	u, err := h.app.User(id)
	if err != nil {
		return nil, 0, err
	}
	return ledgerUserRoles{UserID: given, AssignedRoles: roleNames(u.Roles)}, http.StatusOK, nil
}

func (h *Handler) listUsers(c *call) (any, int, error) {
	users := h.app.Users()
	out := make([]ledgerUser, len(users))
	for i, u := range users {
		out[i] = ledgerUser{UserID: u.ID, AssignedRole: app.Highest(u.Roles).String()}
	}
	return struct {
		LedgerUsers []ledgerUser `json:"ledgerUsers"`
	}{out}, http.StatusOK, nil
}

func (h *Handler) listLedgerUsers(c *call) (any, int, error) {
	users := h.app.Users()
	out := make([]ledgerUserRoles, len(users))
	for i, u := range users {
		out[i] = ledgerUserRoles{UserID: u.ID, AssignedRoles: roleNames(u.Roles)}
	}
	return struct {
		LedgerUsers []ledgerUserRoles `json:"ledgerUsers"`
	}{out}, http.StatusOK, nil
}

// patchRoles applies a user merge-patch and returns the user's roles
// after it.
func (h *Handler) patchRoles(c *call, multi bool) (string, []app.Role, error) {
	given, id, err := userID(c)
	if err != nil {
		return "", nil, err
	}
	if ct := c.r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/merge-patch+json" && mt != "application/json") {
			return "", nil, newError(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType, "want Content-Type application/merge-patch+json")
		}
	}
	b, err := readBody(c)
	if err != nil {
		return "", nil, err
	}
	roles, err := decodeRolePatch(b, multi)
	if err != nil {
		return "", nil, err
	}
	if roles == nil {
		// The patch leaves the roles alone: the user must exist.
		u, err := h.app.User(id)
		if err != nil {
			return "", nil, newError(http.StatusBadRequest, CodeInvalidInput, "a new user needs a role")
		}
		return given, u.Roles, nil
	}
	txID, err := h.app.SetUserRoles(c.r.Context(), id, roles)
	if err != nil {
		return "", nil, err
	}
	c.txID = txID
	u, err := h.app.User(id)
	if err != nil {
		return "", nil, err
	}
	return given, u.Roles, nil
}

func (h *Handler) patchUser(c *call) (any, int, error) {
	given, roles, err := h.patchRoles(c, false)
	if err != nil {
		return nil, 0, err
	}
	return ledgerUser{UserID: given, AssignedRole: app.Highest(roles).String()}, http.StatusOK, nil
}

func (h *Handler) patchLedgerUser(c *call) (any, int, error) {
	given, roles, err := h.patchRoles(c, true)
	if err != nil {
		return nil, 0, err
	}
	return ledgerUserRoles{UserID: given, AssignedRoles: roleNames(roles)}, http.StatusOK, nil
}

func (h *Handler) deleteUser(c *call) (any, int, error) {
	_, id, err := userID(c)
	if err != nil {
		return nil, 0, err
	}
	txID, err := h.app.DeleteUser(c.r.Context(), id)
	if err != nil {
		return nil, 0, err
	}
	c.txID = txID
	return nil, http.StatusNoContent, nil
}
