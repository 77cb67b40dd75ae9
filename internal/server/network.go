package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/parleyhq/parley/internal/consensus"
	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/gov"
	"github.com/parleyhq/parley/internal/identity"
	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/node"
	"github.com/parleyhq/parley/internal/tee"
	"github.com/parleyhq/parley/internal/vfs"
)

// A network node (config "network" or "join", or a node that joined) keeps
// the service's nodes in gov.NodesInfoMap: every node reads its raft peers
// from there (refreshPeers), and the primary carries out what governance
// decided (reconcile): it endorses the certificate of a Trusted node, adds
// it to raft as a learner, promotes it to voter once it has caught up,
// removes a Retiring node from raft (handing the primary role over first
// if it is itself retiring) and then marks it Retired.

// memberTimeout bounds one membership change.
const memberTimeout = 10 * time.Second

// nodeRecord is one entry of gov.NodesInfoMap.
type nodeRecord struct {
	NodeID string
	gov.NodeInfo
}

// nodeRecords reads every node of gov.NodesInfoMap, by raft id.
func nodeRecords(tx *kv.Tx) []nodeRecord {
	var out []nodeRecord
	tx.Foreach(gov.NodesInfoMap, func(k string, b []byte) bool {
		var info gov.NodeInfo
		if json.Unmarshal(b, &info) == nil {
			out = append(out, nodeRecord{NodeID: k, NodeInfo: info})
		}
		return true
	})
	slices.SortFunc(out, func(a, b nodeRecord) int {
		switch {
		case a.RaftID < b.RaftID:
			return -1
		case a.RaftID > b.RaftID:
			return 1
		}
		return 0
	})
	return out
}

// inRaftStatus reports whether a node of this status may be in raft.
func inRaftStatus(status string) bool {
	return status == gov.NodeTrusted || status == gov.NodeRetiring
}

// dynamicNodes are the nodes that take part in raft: Trusted or Retiring,
// with a raft id, an address and an endorsed certificate.
func (s *Server) dynamicNodes(tx *kv.Tx) []ClusterNode {
	var out []ClusterNode
	for _, r := range nodeRecords(tx) {
		if r.RaftID != 0 && r.Address != "" && r.Cert != "" && inRaftStatus(r.Status) {
			out = append(out, ClusterNode{RaftID: r.RaftID, Address: r.Address, NodeID: r.NodeID})
		}
	}
	return out
}

// refreshPeers sets the transport's peers from the nodes map, starting
// from the nodes a joined node was told of until the ledger names them.
func (s *Server) refreshPeers() {
	peers := map[uint64]consensus.Peer{}
	for _, p := range s.bootPeers {
		peers[p.RaftID] = consensus.Peer{ID: p.RaftID, Address: p.Address, NodeID: p.NodeID}
	}
	for _, r := range nodeRecords(s.eng.Begin()) {
		if r.RaftID == 0 {
			continue
		}
		switch {
		case inRaftStatus(r.Status) && r.Address != "" && r.Cert != "":
			peers[r.RaftID] = consensus.Peer{ID: r.RaftID, Address: r.Address, NodeID: r.NodeID}
		case r.Status == gov.NodeRetired:
			delete(peers, r.RaftID)
		}
	}
	delete(peers, s.eng.RaftID())
	list := make([]consensus.Peer, 0, len(peers))
	for _, p := range peers {
		list = append(list, p)
	}
	if err := s.tr.SetPeers(list); err != nil {
		s.log.Warn("set raft peers", slog.Any("err", err))
	}
}

// selfStatus is this node's status in the nodes map ("" if unrecorded).
func (s *Server) selfStatus() string {
	info, ok := gov.NodeInfoOf(s.eng.Begin(), s.eng.NodeID())
	if !ok {
		return ""
	}
	return info.Status
}

// recordSelf records the first node of a new network service as Trusted,
// allows its own measurement if none is allowed yet, and records the
// auto-trust setting. It does nothing once the node is recorded.
func (s *Server) recordSelf(ctx context.Context) error {
	if s.joined {
		return nil
	}
	m, err := virtualMeasurement(s.cfg)
	if err != nil {
		return err
	}
	measurement := string(tee.Virtual) + ":" + hex.EncodeToString(m)
	cert, err := identity.ParseCertPEM(s.id.NodeCertPEM)
	if err != nil {
		return err
	}
	spki, err := x509.MarshalPKIXPublicKey(&s.id.NodeKey.PublicKey)
	if err != nil {
		return err
	}
	wrote := false
	cctx, cancel := context.WithTimeout(ctx, memberTimeout)
	defer cancel()
	_, err = engine.Retry(cctx, s.eng, engine.CommitOptions{}, func(tx *kv.Tx) error {
		wrote = false
		if _, ok := tx.Get(gov.NodesInfoMap, s.eng.NodeID()); ok {
			return nil
		}
		info := gov.NodeInfo{
			Status:          gov.NodeTrusted,
			RaftID:          s.eng.RaftID(),
			Address:         advertisedAddress(s.cfg),
			SubjectAltNames: cert.DNSNames,
			PublicKey:       string(pemBlock("PUBLIC KEY", spki)),
			Cert:            string(s.id.NodeCertPEM),
			Platform:        string(tee.Virtual),
			Measurement:     measurement,
		}
		tx.Put(gov.NodesInfoMap, s.eng.NodeID(), mustMarshal(info))
		empty := true
		tx.Foreach(gov.MeasurementsMap, func(string, []byte) bool { empty = false; return false })
		if empty {
			tx.Put(gov.MeasurementsMap, measurement, []byte(`"AllowedToJoin"`))
		}
		if s.cfg.Network != nil && s.cfg.Network.AutoTrustNodes {
			c := gov.ServiceConfigOf(tx)
			c.AutoTrustNodes = true
			tx.Put(gov.ServiceConfigMap, "", mustMarshal(c))
		}
		wrote = true
		return nil
	})
	if err != nil {
		return fmt.Errorf("record this node: %w", err)
	}
	if wrote {
		s.log.Warn(tee.VirtualWarning, slog.String("use", "this node's measurement, allowed to join"), slog.String("measurement", measurement))
		s.log.Info("recorded this node as Trusted", slog.Uint64("raft_id", s.eng.RaftID()), slog.Bool("auto_trust_nodes", s.cfg.Network != nil && s.cfg.Network.AutoTrustNodes))
	}
	return nil
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("server: encode " + err.Error()) // plain structs only
	}
	return b
}

// reconcile makes raft's membership follow the nodes map; primary only.
func (s *Server) reconcile(ctx context.Context) {
	members := s.eng.Members()
	progress := s.eng.Progress()
	committed := s.eng.CommittedID().Seqno
	self := s.eng.RaftID()
	for _, r := range nodeRecords(s.eng.Begin()) {
		if r.RaftID == 0 || !s.eng.IsPrimary() {
			continue
		}
		var err error
		switch r.Status {
		case gov.NodeTrusted:
			switch {
			case r.Cert == "":
				err = s.endorse(ctx, r)
			case !members.Contains(r.RaftID):
				err = s.changeMember(ctx, "add learner", r, s.eng.AddLearner)
			case slices.Contains(members.Learners, r.RaftID) && committed > 0 && progress[r.RaftID] >= committed:
				err = s.changeMember(ctx, "promote to voter", r, s.eng.AddVoter)
			}
		case gov.NodeRetiring:
			switch {
			case r.RaftID == self && members.Contains(self):
				s.handOver(members, progress, committed)
			case members.Contains(r.RaftID):
				err = s.changeMember(ctx, "remove", r, s.eng.RemoveNode)
			default:
				err = s.setStatus(ctx, r.NodeID, gov.NodeRetiring, gov.NodeRetired)
			}
		}
		if err != nil {
			s.log.Warn("membership", slog.String("node_id", r.NodeID), slog.Uint64("raft_id", r.RaftID), slog.Any("err", err))
			return
		}
	}
}

// changeMember runs one membership change for r.
func (s *Server) changeMember(ctx context.Context, what string, r nodeRecord, change func(context.Context, uint64) (ledger.TxID, error)) error {
	cctx, cancel := context.WithTimeout(ctx, memberTimeout)
	defer cancel()
	id, err := change(cctx, r.RaftID)
	if errors.Is(err, engine.ErrNoChange) || errors.Is(err, engine.ErrNotLeader) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	s.log.Info("membership changed", slog.String("change", what), slog.Uint64("raft_id", r.RaftID), slog.String("node_id", r.NodeID), slog.String("txid", id.String()))
	return nil
}

// handOver asks raft to make the most caught-up other voter primary, at
// most every two seconds, so that this retiring primary can be removed.
func (s *Server) handOver(m engine.Membership, progress map[uint64]uint64, committed uint64) {
	if time.Since(s.lastHandOver) < 2*time.Second {
		return
	}
	var best, bestMatch uint64
	for _, v := range m.Voters {
		if v != s.eng.RaftID() && progress[v] >= committed && progress[v] >= bestMatch {
			best, bestMatch = v, progress[v]
		}
	}
	if best == 0 {
		s.log.Warn("this primary is retiring but no other voter has caught up to take over")
		s.lastHandOver = time.Now()
		return
	}
	s.log.Info("retiring: handing the primary role over", slog.Uint64("to", best))
	s.eng.TransferLeadership(best)
	s.lastHandOver = time.Now()
}

// endorse issues a Trusted node's certificate with the service key and
// records it.
func (s *Server) endorse(ctx context.Context, r nodeRecord) error {
	block, _ := pem.Decode([]byte(r.PublicKey))
	if block == nil {
		return errors.New("endorse: the node's public key is not PEM")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return fmt.Errorf("endorse: %w", err)
	}
	pub, ok := k.(*ecdsa.PublicKey)
	if !ok {
		return errors.New("endorse: the node key is not ECDSA")
	}
	sans := r.SubjectAltNames
	if host, _, err := net.SplitHostPort(r.Address); err == nil && !slices.Contains(sans, host) {
		sans = append(slices.Clone(sans), host)
	}
	der, err := s.id.Service.EndorseNode(pub, sans, nodeCertValidity)
	if err != nil {
		return fmt.Errorf("endorse: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, memberTimeout)
	defer cancel()
	_, err = engine.Retry(cctx, s.eng, engine.CommitOptions{}, func(tx *kv.Tx) error {
		info, ok := gov.NodeInfoOf(tx, r.NodeID)
		if !ok || info.Status != gov.NodeTrusted || info.Cert != "" {
			return nil
		}
		info.Cert = string(identity.EncodeCertPEM(der))
		tx.Put(gov.NodesInfoMap, r.NodeID, mustMarshal(info))
		return nil
	})
	if err != nil {
		return fmt.Errorf("endorse: %w", err)
	}
	s.log.Info("endorsed a trusted node's certificate", slog.String("node_id", r.NodeID))
	return nil
}

// setStatus moves node id from status from to to, if it is still in from.
func (s *Server) setStatus(ctx context.Context, id, from, to string) error {
	cctx, cancel := context.WithTimeout(ctx, memberTimeout)
	defer cancel()
	txid, err := engine.Retry(cctx, s.eng, engine.CommitOptions{}, func(tx *kv.Tx) error {
		info, ok := gov.NodeInfoOf(tx, id)
		if !ok || info.Status != from {
			return nil
		}
		info.Status = to
		tx.Put(gov.NodesInfoMap, id, mustMarshal(info))
		return nil
	})
	if err != nil {
		return fmt.Errorf("mark %s: %w", to, err)
	}
	s.log.Info("node status changed", slog.String("node_id", id), slog.String("status", to), slog.String("txid", txid.String()))
	return nil
}

// networkNode is one node of GET /node/network/nodes on a network node.
type networkNode struct {
	NodeID      string `json:"node_id"`
	RaftID      uint64 `json:"raft_id"`
	Status      string `json:"status"`
	Primary     bool   `json:"primary"`
	Address     string `json:"address,omitempty"`
	Measurement string `json:"measurement,omitempty"`
	// InRaft says whether the node is in raft's committed membership, and
	// as what.
	InRaft string `json:"in_raft"`
}

// refusedNode is one refused join of GET /node/network/nodes.
type refusedNode struct {
	NodeID string `json:"node_id"`
	JoinRefusal
}

// networkNodes lists every recorded node and every refused join.
func (s *Server) networkNodes() ([]networkNode, []refusedNode) {
	tx := s.eng.Begin()
	m := s.eng.Members()
	primary := s.eng.Primary()
	var nodes []networkNode
	for _, r := range nodeRecords(tx) {
		in := "no"
		switch {
		case slices.Contains(m.Voters, r.RaftID):
			in = "voter"
		case slices.Contains(m.Learners, r.RaftID):
			in = "learner"
		}
		nodes = append(nodes, networkNode{NodeID: r.NodeID, RaftID: r.RaftID, Status: r.Status, Primary: primary != 0 && r.RaftID == primary, Address: r.Address, Measurement: r.Measurement, InRaft: in})
	}
	var refused []refusedNode
	tx.Foreach(NodeRefusalsMap, func(k string, b []byte) bool {
		var ref JoinRefusal
		if json.Unmarshal(b, &ref) == nil {
			refused = append(refused, refusedNode{NodeID: k, JoinRefusal: ref})
		}
		return true
	})
	return nodes, refused
}

// networkSetup is what Start needs to run a network node.
type networkSetup struct {
	raftID  uint64
	voters  []uint64
	joined  bool
	peers   []node.JoinPeer
	tr      *consensus.Transport
	joining bool
}

// newNetworkTransport makes the transport of a network node: the first
// node of its service is raft id 1 and the only initial voter; a joined
// node starts from its join.json.
func newNetworkTransport(dir string, id *node.Identity, info node.JoinInfo, joined bool, logger *slog.Logger) (*networkSetup, error) {
	ns := &networkSetup{raftID: 1, voters: []uint64{1}}
	if joined {
		ns.raftID, ns.voters, ns.joined, ns.peers, ns.joining = info.RaftID, info.Voters, true, info.Peers, true
	}
	tlsCert, err := nodeTLSCert(id)
	if err != nil {
		return nil, err
	}
	var peers []consensus.Peer
	for _, p := range ns.peers {
		peers = append(peers, consensus.Peer{ID: p.RaftID, Address: p.Address, NodeID: p.NodeID})
	}
	if ns.tr, err = consensus.New(consensus.Config{ID: ns.raftID, Peers: peers, Certificate: tlsCert, ServiceCert: id.Service.Cert, Logger: logger}); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return ns, nil
}

// networkState is what a network node keeps besides a Server's fields.
type networkState struct {
	network      bool            // a network node (network, join, or joined)
	joined       bool            // this node joined (it did not start the service)
	bootPeers    []node.JoinPeer // the nodes it was told of when it joined
	joinMu       sync.Mutex      // serializes joins on the primary
	refusals     joinLimiter     // bounds the refusals written
	lastHandOver time.Time       // when a retiring primary last handed over
}

// networkOf sets up a network node: one configured with network or join,
// or one that joined (its data directory has join.json). Nil otherwise.
func networkOf(cfg Config, dir string, id *node.Identity, logger *slog.Logger) (*networkSetup, error) {
	info, joined, err := node.LoadJoinInfo(vfs.OS{}, dir)
	if err != nil {
		return nil, err
	}
	if cfg.Cluster != nil || (cfg.Network == nil && cfg.Join == nil && !joined) {
		return nil, nil
	}
	if cfg.Join != nil && !joined {
		return nil, fmt.Errorf("data dir %s holds a node that did not join a service, but the configuration says join", dir)
	}
	return newNetworkTransport(dir, id, info, joined, logger.With(slog.String("component", "consensus")))
}
