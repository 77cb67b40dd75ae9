package gov

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/parleyhq/parley/internal/app"
	"github.com/parleyhq/parley/internal/identity"
	"github.com/parleyhq/parley/internal/strictjson"
)

// Limits on proposals.
const (
	// MaxActions bounds the actions of one proposal.
	MaxActions = 64
	// MinEncryptionKeyBits is the smallest RSA encryption key a member may
	// register.
	MinEncryptionKeyBits = 2048
	maxIDLen             = 256
)

// Action is one action of a proposal, in CCF's form.
type Action struct {
	Name string          `json:"name"`
	Args json.RawMessage `json:"args,omitempty"`
}

// ProposalBody is what a member proposes: a list of actions.
type ProposalBody struct {
	Actions []Action `json:"actions"`
}

// action is a validated action, ready to apply.
type action interface {
	apply(s *state) error
}

// actionNames lists every action the service knows, sorted.
var actionNames []string

// ActionNames returns the names of the actions a proposal may hold.
func ActionNames() []string { return slices.Clone(actionNames) }

// parsers validate an action's arguments without reading state.
var parsers map[string]func(args []byte) (action, error)

func init() {
	parsers = map[string]func(args []byte) (action, error){
		"set_member":                 parseSetMember,
		"remove_member":              parseRemoveMember,
		"set_user":                   parseSetUser,
		"remove_user":                parseRemoveUser,
		"add_measurement":            parseMeasurement(true),
		"remove_measurement":         parseMeasurement(false),
		"set_jwt_issuer":             parseSetJWTIssuer,
		"remove_jwt_issuer":          parseRemoveJWTIssuer,
		"set_recovery_threshold":     parseRecoveryThreshold,
		"set_constitution":           parseSetConstitution,
		"trust_node":                 parseNodeStatus("Trusted"),
		"retire_node":                parseNodeStatus("Retired"),
		"transition_service_to_open": parseNoArgs(func() action { return openService{} }),
		"rotate_ledger_secret":       parseNoArgs(func() action { return rotateSecret{} }),
	}
	for n := range parsers {
		actionNames = append(actionNames, n)
	}
	slices.Sort(actionNames)
}

// ParseProposal parses and validates a proposal body: known actions with
// well-formed arguments. It fails with an error wrapping ErrInvalidProposal
// and naming the action at fault.
func ParseProposal(b []byte) (*ProposalBody, error) {
	p, _, err := parseProposal(b)
	return p, err
}

func parseProposal(b []byte) (*ProposalBody, []action, error) {
	var p ProposalBody
	if err := strictjson.Unmarshal(b, &p); err != nil {
		return nil, nil, fmt.Errorf("proposal: %v: %w", err, ErrInvalidProposal)
	}
	if len(p.Actions) == 0 {
		return nil, nil, fmt.Errorf("proposal has no actions: %w", ErrInvalidProposal)
	}
	if len(p.Actions) > MaxActions {
		return nil, nil, fmt.Errorf("proposal has %d actions, over %d: %w", len(p.Actions), MaxActions, ErrInvalidProposal)
	}
	acts := make([]action, len(p.Actions))
	for i, a := range p.Actions {
		parse, ok := parsers[a.Name]
		if !ok {
			return nil, nil, fmt.Errorf("action %d: unknown action %.60q (known: %s): %w", i, a.Name, strings.Join(actionNames, ", "), ErrInvalidProposal)
		}
		args := []byte(a.Args)
		if len(args) == 0 || string(args) == "null" {
			args = []byte("{}")
		}
		act, err := parse(args)
		if err != nil {
			return nil, nil, fmt.Errorf("action %d (%s): %v: %w", i, a.Name, err, ErrInvalidProposal)
		}
		acts[i] = act
	}
	return &p, acts, nil
}

// --- members

type setMember struct {
	id, certPEM, encPEM string
	data                json.RawMessage
}

func parseSetMember(b []byte) (action, error) {
	var a struct {
		Cert             string          `json:"cert"`
		EncryptionPubKey string          `json:"encryption_pub_key"`
		MemberData       json.RawMessage `json:"member_data"`
	}
	if err := strictjson.Unmarshal(b, &a); err != nil {
		return nil, err
	}
	id, err := memberCert(a.Cert)
	if err != nil {
		return nil, err
	}
	if a.EncryptionPubKey != "" {
		if _, err := ParseEncryptionKey([]byte(a.EncryptionPubKey)); err != nil {
			return nil, err
		}
	}
	if len(a.MemberData) > 4096 {
		return nil, fmt.Errorf("member_data over 4096 bytes")
	}
	return setMember{id: id, certPEM: a.Cert, encPEM: a.EncryptionPubKey, data: a.MemberData}, nil
}

// memberCert checks a member certificate (PEM, P-384 key) and returns the
// member id.
func memberCert(certPEM string) (string, error) {
	if certPEM == "" {
		return "", fmt.Errorf("cert is required")
	}
	c, err := identity.ParseCertPEM([]byte(certPEM))
	if err != nil {
		return "", fmt.Errorf("cert: %w", err)
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P384() {
		return "", fmt.Errorf("cert: a member signs with ES384 and needs a P-384 key")
	}
	return identity.Fingerprint(c.Raw), nil
}

// ParseEncryptionKey parses a member's encryption public key: an RSA key of
// at least MinEncryptionKeyBits, PEM "PUBLIC KEY" (SubjectPublicKeyInfo).
// Recovery shares are encrypted to it with RSA-OAEP-256.
func ParseEncryptionKey(b []byte) (*rsa.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("encryption_pub_key: want a PEM PUBLIC KEY block")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("encryption_pub_key: %w", err)
	}
	rk, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("encryption_pub_key: want an RSA key (RSA-OAEP-256)")
	}
	if rk.N.BitLen() < MinEncryptionKeyBits {
		return nil, fmt.Errorf("encryption_pub_key: %d bits, want at least %d", rk.N.BitLen(), MinEncryptionKeyBits)
	}
	return rk, nil
}

type removeMember struct{ id string }

func parseRemoveMember(b []byte) (action, error) {
	var a struct {
		MemberID string `json:"member_id"`
		Cert     string `json:"cert"`
	}
	if err := strictjson.Unmarshal(b, &a); err != nil {
		return nil, err
	}
	id, err := oneID(a.MemberID, a.Cert, "member_id")
	if err != nil {
		return nil, err
	}
	if !validMemberID(id) {
		return nil, fmt.Errorf("member_id %.80q: want 64 hex digits", a.MemberID)
	}
	return removeMember{id: id}, nil
}

// oneID returns the id given either directly or as a certificate.
func oneID(id, certPEM, field string) (string, error) {
	switch {
	case id != "" && certPEM != "":
		return "", fmt.Errorf("give %s or cert, not both", field)
	case certPEM != "":
		c, err := identity.ParseCertPEM([]byte(certPEM))
		if err != nil {
			return "", fmt.Errorf("cert: %w", err)
		}
		return identity.Fingerprint(c.Raw), nil
	case id != "":
		if n, err := app.NormalizeUserID(id); err == nil {
			return n, nil
		}
		return id, nil
	default:
		return "", fmt.Errorf("%s or cert is required", field)
	}
}

// --- users

type setUser struct {
	id    string
	roles []app.Role
}

func parseSetUser(b []byte) (action, error) {
	var a struct {
		Cert   string   `json:"cert"`
		UserID string   `json:"user_id"`
		Role   string   `json:"role"`
		Roles  []string `json:"roles"`
	}
	if err := strictjson.Unmarshal(b, &a); err != nil {
		return nil, err
	}
	id, err := userID(a.UserID, a.Cert)
	if err != nil {
		return nil, err
	}
	names := a.Roles
	if a.Role != "" {
		if len(names) > 0 {
			return nil, fmt.Errorf("give role or roles, not both")
		}
		names = []string{a.Role}
	}
	if len(names) == 0 || len(names) > 3 {
		return nil, fmt.Errorf("role is required (Administrator, Contributor or Reader)")
	}
	var roles []app.Role
	for _, n := range names {
		r, err := app.ParseRole(n)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(roles, r) {
			roles = append(roles, r)
		}
	}
	slices.SortFunc(roles, func(x, y app.Role) int { return int(y) - int(x) })
	return setUser{id: id, roles: roles}, nil
}

// userID returns a user id: a certificate's fingerprint, a fingerprint in
// either accepted form, or the id a JWT issuer's claim gives (printable
// UTF-8, at most maxIDLen bytes).
func userID(id, certPEM string) (string, error) {
	uid, err := oneID(id, certPEM, "user_id")
	if err != nil {
		return "", err
	}
	if len(uid) > maxIDLen || !utf8.ValidString(uid) || strings.ContainsFunc(uid, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", fmt.Errorf("user_id: want at most %d bytes of printable UTF-8", maxIDLen)
	}
	return uid, nil
}

type removeUser struct{ id string }

func parseRemoveUser(b []byte) (action, error) {
	var a struct {
		Cert   string `json:"cert"`
		UserID string `json:"user_id"`
	}
	if err := strictjson.Unmarshal(b, &a); err != nil {
		return nil, err
	}
	id, err := userID(a.UserID, a.Cert)
	if err != nil {
		return nil, err
	}
	return removeUser{id: id}, nil
}

// --- code measurements

// Platforms whose measurements governance allows.
var platforms = []string{"virtual", "sev-snp", "tdx"}

type measurement struct {
	add bool
	key string // platform:hex
}

func parseMeasurement(add bool) func([]byte) (action, error) {
	return func(b []byte) (action, error) {
		var a struct {
			Platform    string `json:"platform"`
			Measurement string `json:"measurement"`
		}
		if err := strictjson.Unmarshal(b, &a); err != nil {
			return nil, err
		}
		if !slices.Contains(platforms, a.Platform) {
			return nil, fmt.Errorf("platform %.40q: want one of %s", a.Platform, strings.Join(platforms, ", "))
		}
		m := strings.ToLower(a.Measurement)
		if _, err := hex.DecodeString(m); err != nil || len(m) == 0 || len(m) > 128 {
			return nil, fmt.Errorf("measurement: want 1 to 64 bytes in hex")
		}
		return measurement{add: add, key: a.Platform + ":" + m}, nil
	}
}

// --- JWT issuers

// Issuer is an OpenID issuer whose tokens authenticate users, as recorded
// in JWTIssuersMap.
type Issuer struct {
	// JWKS is the issuer's key set ({"keys":[…]}).
	JWKS json.RawMessage `json:"jwks"`
	// UserIDClaim names the claim whose (string) value is the user id.
	UserIDClaim string `json:"userIdClaim"`
	// Audience, when set, must be among a token's "aud".
	Audience string `json:"audience,omitempty"`
	// AutoRefresh lets the primary replace JWKS with the key set the
	// issuer publishes (OpenID discovery at the issuer's https URL); see
	// Service.RefreshJWKS.
	AutoRefresh bool `json:"autoRefresh,omitempty"`
}

type setJWTIssuer struct {
	issuer string
	value  Issuer
}

func parseSetJWTIssuer(b []byte) (action, error) {
	var a struct {
		Issuer      string          `json:"issuer"`
		JWKS        json.RawMessage `json:"jwks"`
		UserIDClaim string          `json:"user_id_claim"`
		Audience    string          `json:"audience"`
		AutoRefresh bool            `json:"auto_refresh"`
	}
	if err := strictjson.Unmarshal(b, &a); err != nil {
		return nil, err
	}
	if a.Issuer == "" || len(a.Issuer) > 512 {
		return nil, fmt.Errorf("issuer: want 1 to 512 bytes")
	}
	if a.AutoRefresh && !strings.HasPrefix(a.Issuer, "https://") {
		return nil, fmt.Errorf("auto_refresh needs an https issuer URL")
	}
	if _, err := parseJWKS(a.JWKS); err != nil {
		return nil, err
	}
	if a.UserIDClaim == "" {
		a.UserIDClaim = "sub"
	}
	if len(a.UserIDClaim) > 128 || len(a.Audience) > 512 {
		return nil, fmt.Errorf("user_id_claim or audience too long")
	}
	return setJWTIssuer{issuer: a.Issuer, value: Issuer{JWKS: a.JWKS, UserIDClaim: a.UserIDClaim, Audience: a.Audience, AutoRefresh: a.AutoRefresh}}, nil
}

// parseJWKS parses a key set of public signing keys, each with a kid.
func parseJWKS(b []byte) (*jose.JSONWebKeySet, error) {
	var ks jose.JSONWebKeySet
	if err := json.Unmarshal(b, &ks); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	if len(ks.Keys) == 0 || len(ks.Keys) > 64 {
		return nil, fmt.Errorf("jwks: want 1 to 64 keys, got %d", len(ks.Keys))
	}
	for i, k := range ks.Keys {
		if k.KeyID == "" {
			return nil, fmt.Errorf("jwks: key %d has no kid", i)
		}
		if !k.IsPublic() || !k.Valid() {
			return nil, fmt.Errorf("jwks: key %s is not a valid public key", k.KeyID)
		}
		switch k.Key.(type) {
		case *ecdsa.PublicKey, *rsa.PublicKey:
		default:
			return nil, fmt.Errorf("jwks: key %s: want an EC or RSA key", k.KeyID)
		}
	}
	return &ks, nil
}

type removeJWTIssuer struct{ issuer string }

func parseRemoveJWTIssuer(b []byte) (action, error) {
	var a struct {
		Issuer string `json:"issuer"`
	}
	if err := strictjson.Unmarshal(b, &a); err != nil {
		return nil, err
	}
	if a.Issuer == "" || len(a.Issuer) > 512 {
		return nil, fmt.Errorf("issuer: want 1 to 512 bytes")
	}
	return removeJWTIssuer{issuer: a.Issuer}, nil
}

// --- service configuration

type recoveryThreshold struct{ n int }

func parseRecoveryThreshold(b []byte) (action, error) {
	var a struct {
		RecoveryThreshold int `json:"recovery_threshold"`
	}
	if err := strictjson.Unmarshal(b, &a); err != nil {
		return nil, err
	}
	if a.RecoveryThreshold < 1 || a.RecoveryThreshold > 255 {
		return nil, fmt.Errorf("recovery_threshold: want 1 to 255")
	}
	return recoveryThreshold{n: a.RecoveryThreshold}, nil
}

type setConstitution struct{ c Constitution }

func parseSetConstitution(b []byte) (action, error) {
	var a struct {
		Constitution Constitution `json:"constitution"`
	}
	if err := strictjson.Unmarshal(b, &a); err != nil {
		return nil, err
	}
	if err := a.Constitution.validate(); err != nil {
		return nil, err
	}
	return setConstitution{c: a.Constitution}, nil
}

type nodeStatus struct{ id, status string }

func parseNodeStatus(status string) func([]byte) (action, error) {
	return func(b []byte) (action, error) {
		var a struct {
			NodeID string `json:"node_id"`
		}
		if err := strictjson.Unmarshal(b, &a); err != nil {
			return nil, err
		}
		if len(a.NodeID) != 64 || !isLowerHex(a.NodeID) {
			return nil, fmt.Errorf("node_id: want 64 lowercase hex digits")
		}
		return nodeStatus{id: a.NodeID, status: status}, nil
	}
}

type openService struct{}
type rotateSecret struct{}

func parseNoArgs(mk func() action) func([]byte) (action, error) {
	return func(b []byte) (action, error) {
		var a struct{}
		if err := strictjson.Unmarshal(b, &a); err != nil {
			return nil, err
		}
		return mk(), nil
	}
}
