package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
)

// Role is an ACL user role. Each role includes the rights of the roles
// below it: Administrator ⊃ Contributor ⊃ Reader.
type Role int

// Roles, weakest first.
const (
	RoleNone Role = iota
	RoleReader
	RoleContributor
	RoleAdministrator
)

var roleNames = [...]string{"", "Reader", "Contributor", "Administrator"}

func (r Role) String() string {
	if r < 0 || int(r) >= len(roleNames) {
		return fmt.Sprintf("Role(%d)", int(r))
	}
	return roleNames[r]
}

// ParseRole parses a role name, ignoring case.
func ParseRole(s string) (Role, error) {
	for i := RoleReader; i <= RoleAdministrator; i++ {
		if strings.EqualFold(s, roleNames[i]) {
			return i, nil
		}
	}
	return RoleNone, fmt.Errorf("role %.40q: want Administrator, Contributor or Reader: %w", s, ErrInvalidRole)
}

// NormalizeUserID returns the canonical (lowercase hex) form of a
// certificate user id given either as 64 hex digits, as CCF writes it, or as
// 32 colon-separated pairs of hex digits, as ACL's users pass it (e.g.
// "5F:23:3D:…:B5"). Either case is accepted.
func NormalizeUserID(id string) (string, error) {
	var b [sha256.Size]byte
	switch len(id) {
	case 2 * sha256.Size:
		if _, err := hex.Decode(b[:], []byte(id)); err != nil {
			return "", fmt.Errorf("user id %.100q: %w", id, ErrInvalidUserID)
		}
	case 3*sha256.Size - 1:
		for i := range sha256.Size {
			if i > 0 && id[3*i-1] != ':' {
				return "", fmt.Errorf("user id %.100q: %w", id, ErrInvalidUserID)
			}
			if _, err := hex.Decode(b[i:i+1], []byte(id[3*i:3*i+2])); err != nil {
				return "", fmt.Errorf("user id %.100q: %w", id, ErrInvalidUserID)
			}
		}
	default:
		return "", fmt.Errorf("user id %.100q: want 64 hex digits or 32 colon-separated pairs: %w", id, ErrInvalidUserID)
	}
	return hex.EncodeToString(b[:]), nil
}

// userValue is the JSON value of a UsersMap entry.
type userValue struct {
	AssignedRoles []string `json:"assignedRoles"`
}

func encodeRoles(roles []Role) []byte {
	v := userValue{AssignedRoles: make([]string, len(roles))}
	for i, r := range roles {
		v.AssignedRoles[i] = r.String()
	}
	b, _ := json.Marshal(v) // cannot fail: strings only
	return b
}

func decodeRoles(b []byte) []Role {
	var v userValue
	if json.Unmarshal(b, &v) != nil {
		return nil
	}
	var out []Role
	for _, s := range v.AssignedRoles {
		if r, err := ParseRole(s); err == nil {
			out = append(out, r)
		}
	}
	return out
}

// Highest returns the strongest of roles, RoleNone for none.
func Highest(roles []Role) Role {
	h := RoleNone
	for _, r := range roles {
		h = max(h, r)
	}
	return h
}

// normalizeRoles sorts roles strongest first and removes duplicates.
func normalizeRoles(roles []Role) ([]Role, error) {
	if len(roles) == 0 {
		return nil, fmt.Errorf("no roles: %w", ErrInvalidRole)
	}
	out := slices.Clone(roles)
	for _, r := range out {
		if r < RoleReader || r > RoleAdministrator {
			return nil, fmt.Errorf("role %d: %w", int(r), ErrInvalidRole)
		}
	}
	slices.SortFunc(out, func(a, b Role) int { return int(b) - int(a) })
	return slices.Compact(out), nil
}

// Role returns the strongest role of the user with canonical id, RoleNone
// for an unknown user.
func (a *App) Role(id string) Role {
	v, ok := a.eng.Begin().Get(UsersMap, id)
	if !ok {
		return RoleNone
	}
	return Highest(decodeRoles(v))
}

// User is a user and its roles, strongest first.
type User struct {
	ID    string // canonical
	Roles []Role
}

// User returns the roles of the user with canonical id, or ErrUserNotFound.
func (a *App) User(id string) (*User, error) {
	v, ok := a.eng.Begin().Get(UsersMap, id)
	if !ok {
		return nil, fmt.Errorf("user %s: %w", id, ErrUserNotFound)
	}
	return &User{ID: id, Roles: decodeRoles(v)}, nil
}

// Users returns every user, by id.
func (a *App) Users() []User {
	var out []User
	a.eng.Begin().Foreach(UsersMap, func(k string, v []byte) bool {
		out = append(out, User{ID: k, Roles: decodeRoles(v)})
		return true
	})
	return out
}

// SetUserRoles creates the user with canonical id or replaces its roles.
// It refuses to leave the ledger without an Administrator.
func (a *App) SetUserRoles(ctx context.Context, id string, roles []Role) (ledger.TxID, error) {
	roles, err := normalizeRoles(roles)
	if err != nil {
		return ledger.TxID{}, err
	}
	return a.run(ctx, engine.CommitOptions{}, func(tx *kv.Tx) error {
		if Highest(roles) != RoleAdministrator {
			if err := keepsAdministrator(tx, id); err != nil {
				return err
			}
		}
		tx.Put(UsersMap, id, encodeRoles(roles))
		return nil
	})
}

// DeleteUser removes the user with canonical id, or fails with
// ErrUserNotFound. It refuses to remove the last Administrator.
func (a *App) DeleteUser(ctx context.Context, id string) (ledger.TxID, error) {
	return a.run(ctx, engine.CommitOptions{}, func(tx *kv.Tx) error {
		if _, ok := tx.Get(UsersMap, id); !ok {
			return fmt.Errorf("user %s: %w", id, ErrUserNotFound)
		}
		if err := keepsAdministrator(tx, id); err != nil {
			return err
		}
		tx.Delete(UsersMap, id)
		return nil
	})
}

// keepsAdministrator fails if id is the only Administrator.
func keepsAdministrator(tx *kv.Tx, id string) error {
	others := false
	tx.Foreach(UsersMap, func(k string, v []byte) bool {
		if k != id && Highest(decodeRoles(v)) == RoleAdministrator {
			others = true
			return false
		}
		return true
	})
	v, ok := tx.Get(UsersMap, id)
	if ok && Highest(decodeRoles(v)) == RoleAdministrator && !others {
		return fmt.Errorf("user %s is the only Administrator: %w", id, ErrLastAdministrator)
	}
	return nil
}

// Member is a consortium member: its id and PEM certificate.
type Member struct {
	ID      string
	CertPEM string
}

// Members returns the consortium members, by id.
func (a *App) Members() []Member {
	var out []Member
	a.eng.Begin().Foreach(MembersMap, func(k string, v []byte) bool {
		out = append(out, Member{ID: k, CertPEM: string(v)})
		return true
	})
	return out
}

// Constitution returns the constitution script.
func (a *App) Constitution() string {
	v, _ := a.eng.Begin().Get(ConstitutionMap, "")
	return string(v)
}

// DefaultConstitution is the constitution of a new service: proposals pass
// with a strict majority of members' votes, as CCF's default. (Governance is
// a later milestone; the script is recorded so that it is on the ledger from
// the start.)
const DefaultConstitution = `// Parley default constitution.
export function validate(input) {
  return { valid: true, description: "Parley accepts well-formed proposals" };
}

export function resolve(proposal, proposerId, votes) {
  const members = Object.keys(JSON.parse(ccf.kv["public:ccf.gov.members.certs"] ?? "{}"));
  const yes = votes.filter((v) => v.vote).length;
  if (yes > members.length / 2) return "Accepted";
  if (votes.length - yes >= members.length / 2) return "Rejected";
  return "Open";
}

export function apply(proposal, proposalId) {}
`

// Genesis is what the first transaction of a new service records.
type Genesis struct {
	// Users are canonical user ids and their roles.
	Users map[string][]Role
	// Members are member certificates, PEM, by canonical id.
	Members map[string]string
	// MemberEncryptionKeys are members' encryption public keys (PEM), by
	// canonical id, for recovery shares (see package gov).
	MemberEncryptionKeys map[string]string
	// Constitution is the script; DefaultConstitution when empty.
	Constitution string
}

// NeedsGenesis reports whether the ledger has no members yet, so the
// service's first transaction is still to be written.
func (a *App) NeedsGenesis() bool {
	empty := true
	a.eng.Begin().Foreach(MembersMap, func(string, []byte) bool {
		empty = false
		return false
	})
	return empty
}

// ErrNoMembers is returned by WriteGenesis without members.
var ErrNoMembers = errors.New("genesis needs at least one member")

// WriteGenesis writes the service's first transaction: its users, members
// and constitution.
func (a *App) WriteGenesis(ctx context.Context, g Genesis) (ledger.TxID, error) {
	if len(g.Members) == 0 {
		return ledger.TxID{}, ErrNoMembers
	}
	if g.Constitution == "" {
		g.Constitution = DefaultConstitution
	}
	for id, roles := range g.Users {
		r, err := normalizeRoles(roles)
		if err != nil {
			return ledger.TxID{}, fmt.Errorf("genesis user %s: %w", id, err)
		}
		g.Users[id] = r
	}
	return a.run(ctx, engine.CommitOptions{}, func(tx *kv.Tx) error {
		for id, roles := range g.Users {
			tx.Put(UsersMap, id, encodeRoles(roles))
		}
		for id, pem := range g.Members {
			tx.Put(MembersMap, id, []byte(pem))
		}
		for id, pem := range g.MemberEncryptionKeys {
			tx.Put(MemberEncryptionKeysMap, id, []byte(pem))
		}
		tx.Put(ConstitutionMap, "", []byte(g.Constitution))
		return nil
	})
}
