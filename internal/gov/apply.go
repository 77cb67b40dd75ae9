package gov

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/parleyhq/parley/internal/app"
	"github.com/parleyhq/parley/internal/kv"
)

// state is what an action applies to: the transaction that accepts its
// proposal.
type state struct {
	tx         *kv.Tx
	proposalID string
	svc        *Service
	// newSecret is the ledger secret a rotation in this transaction
	// introduces: the recovery shares must wrap it.
	newSecret []byte
}

// errApply marks an action that could not apply to the current state; its
// proposal becomes Failed.
var errApply = errors.New("action does not apply")

func applyErr(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, errApply)...)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("gov: encode " + err.Error()) // only plain structs are encoded
	}
	return b
}

func (a setMember) apply(s *state) error {
	s.tx.Put(MembersMap, a.id, []byte(a.certPEM))
	if a.encPEM != "" {
		s.tx.Put(EncryptionKeysMap, a.id, []byte(a.encPEM))
	} else {
		s.tx.Delete(EncryptionKeysMap, a.id)
	}
	s.tx.Put(MembersInfoMap, a.id, mustJSON(MemberInfo{Status: MemberActive, MemberData: a.data}))
	return nil
}

func (a removeMember) apply(s *state) error {
	if _, ok := s.tx.Get(MembersMap, a.id); !ok {
		return applyErr("member %s does not exist", a.id)
	}
	n := countKeys(s.tx, MembersMap)
	if n <= 1 {
		return applyErr("member %s is the last member", a.id)
	}
	if rt := recoveryThresholdOf(s.tx); rt > 0 {
		recovery := countKeys(s.tx, EncryptionKeysMap)
		if _, ok := s.tx.Get(EncryptionKeysMap, a.id); ok && recovery-1 < rt {
			return applyErr("removing member %s would leave %d recovery members, under the recovery threshold %d", a.id, recovery-1, rt)
		}
	}
	s.tx.Delete(MembersMap, a.id)
	s.tx.Delete(EncryptionKeysMap, a.id)
	s.tx.Delete(MembersInfoMap, a.id)
	s.tx.Delete(CountersMap, a.id)
	return nil
}

func (a setUser) apply(s *state) error {
	v := struct {
		AssignedRoles []string `json:"assignedRoles"`
	}{}
	for _, r := range a.roles {
		v.AssignedRoles = append(v.AssignedRoles, r.String())
	}
	s.tx.Put(app.UsersMap, a.id, mustJSON(v))
	return nil
}

func (a removeUser) apply(s *state) error {
	if _, ok := s.tx.Get(app.UsersMap, a.id); !ok {
		return applyErr("user %s does not exist", a.id)
	}
	s.tx.Delete(app.UsersMap, a.id)
	return nil
}

func (a measurement) apply(s *state) error {
	if a.add {
		s.tx.Put(MeasurementsMap, a.key, []byte(`"AllowedToJoin"`))
		return nil
	}
	if _, ok := s.tx.Get(MeasurementsMap, a.key); !ok {
		return applyErr("measurement %s is not allowed", a.key)
	}
	s.tx.Delete(MeasurementsMap, a.key)
	return nil
}

func (a setJWTIssuer) apply(s *state) error {
	s.tx.Put(JWTIssuersMap, a.issuer, mustJSON(a.value))
	return nil
}

func (a removeJWTIssuer) apply(s *state) error {
	if _, ok := s.tx.Get(JWTIssuersMap, a.issuer); !ok {
		return applyErr("issuer %.100q is not set", a.issuer)
	}
	s.tx.Delete(JWTIssuersMap, a.issuer)
	return nil
}

// ServiceConfig is the value of ServiceConfigMap's key "".
type ServiceConfig struct {
	RecoveryThreshold int `json:"recoveryThreshold"`
	// AutoTrustNodes makes a joining node whose evidence and measurement
	// check out Trusted at once, without a trust_node proposal. It is
	// recorded when the service is created (node configuration
	// network.autoTrustNodes); development clusters use it.
	AutoTrustNodes bool `json:"autoTrustNodes,omitempty"`
}

// ServiceConfigOf reads the service configuration in tx.
func ServiceConfigOf(tx *kv.Tx) ServiceConfig {
	var c ServiceConfig
	if b, ok := tx.Get(ServiceConfigMap, ""); ok {
		_ = json.Unmarshal(b, &c)
	}
	return c
}

func recoveryThresholdOf(tx *kv.Tx) int {
	var c ServiceConfig
	if b, ok := tx.Get(ServiceConfigMap, ""); ok {
		_ = json.Unmarshal(b, &c)
	}
	return c.RecoveryThreshold
}

func (a recoveryThreshold) apply(s *state) error {
	if n := countKeys(s.tx, EncryptionKeysMap); a.n > n {
		return applyErr("recovery threshold %d over the %d members with an encryption key", a.n, n)
	}
	var c ServiceConfig
	if b, ok := s.tx.Get(ServiceConfigMap, ""); ok {
		_ = json.Unmarshal(b, &c)
	}
	c.RecoveryThreshold = a.n
	s.tx.Put(ServiceConfigMap, "", mustJSON(c))
	return nil
}

func (a setConstitution) apply(s *state) error {
	s.tx.Put(app.ConstitutionMap, ConstitutionRulesKey, mustJSON(a.c))
	return nil
}

// Node statuses in NodesInfoMap.
const (
	// NodePending: admitted after its evidence checked out, waiting for
	// trust_node (or auto-trust).
	NodePending = "Pending"
	// NodeTrusted: may take part in consensus; the primary endorses its
	// certificate and adds it to raft.
	NodeTrusted = "Trusted"
	// NodeRetiring: retire_node passed; the primary removes it from raft.
	NodeRetiring = "Retiring"
	// NodeRetired: out of raft for good.
	NodeRetired = "Retired"
)

// NodeInfo is the value of NodesInfoMap, keyed by node id: a node of the
// service, its status and what it joined with.
type NodeInfo struct {
	Status string `json:"status"`
	// RaftID is its raft id (0 for a node of a static cluster recorded
	// before joins existed).
	RaftID uint64 `json:"raft_id,omitempty"`
	// Address is its host:port, for clients and for the other nodes.
	Address string `json:"address,omitempty"`
	// PublicKey is its public key (PEM SubjectPublicKeyInfo).
	PublicKey string `json:"public_key,omitempty"`
	// Cert is its certificate endorsed by the service key (PEM), once it
	// is Trusted.
	Cert string `json:"cert,omitempty"`
	// SubjectAltNames are the names its certificate covers.
	SubjectAltNames []string `json:"subject_alt_names,omitempty"`
	// Platform and Measurement are what its attestation evidence showed.
	Platform    string `json:"platform,omitempty"`
	Measurement string `json:"measurement,omitempty"`
}

// NodeInfoOf reads node id's record in tx.
func NodeInfoOf(tx *kv.Tx, id string) (NodeInfo, bool) {
	b, ok := tx.Get(NodesInfoMap, id)
	if !ok {
		return NodeInfo{}, false
	}
	var info NodeInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return NodeInfo{Status: "Unknown"}, true
	}
	return info, true
}

// apply makes trust_node turn a Pending node Trusted, and retire_node
// start retiring a node: a Trusted one becomes Retiring (the primary then
// removes it from raft and marks it Retired), a Pending one Retired at
// once. The rest of the node's record is kept.
func (a nodeStatus) apply(s *state) error {
	info, ok := NodeInfoOf(s.tx, a.id)
	if !ok {
		return applyErr("node %s is not known", a.id)
	}
	switch a.status {
	case NodeTrusted:
		if info.Status != NodePending {
			return applyErr("node %s is %s, not Pending", a.id, info.Status)
		}
		info.Status = NodeTrusted
	case NodeRetired:
		switch info.Status {
		case NodePending:
			info.Status = NodeRetired
		case NodeTrusted:
			info.Status = NodeRetiring
		default:
			return applyErr("node %s is %s: only a Pending or Trusted node can be retired", a.id, info.Status)
		}
	default:
		return applyErr("node status %q", a.status)
	}
	s.tx.Put(NodesInfoMap, a.id, mustJSON(info))
	return nil
}

func (openService) apply(s *state) error {
	if !s.svc.eng.PrivateOpen() {
		return applyErr("a recovering service opens when the members' recovery shares restore its private state")
	}
	setServiceStatus(s.tx, ServiceOpen)
	return nil
}

// rotateSecret rotates the ledger secret in the accepting transaction:
// the engine writes a fresh secret (private, sealed under the current one)
// and the history of earlier secrets encrypted under it; the recovery
// shares are made anew for the new secret (Service.apply).
func (rotateSecret) apply(s *state) error {
	if s.newSecret != nil {
		return applyErr("one rotation per proposal")
	}
	raw, err := s.svc.eng.PrepareRotation(s.tx)
	if err != nil {
		return applyErr("rotate ledger secret: %v", err)
	}
	s.newSecret = raw
	s.tx.Put(RekeysMap, s.proposalID, []byte(`{"status":"Applied"}`))
	return nil
}

func countKeys(tx *kv.Tx, m string) int {
	n := 0
	tx.Foreach(m, func(string, []byte) bool { n++; return true })
	return n
}
