package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/parleyhq/parley/internal/consensus"
	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/gov"
	"github.com/parleyhq/parley/internal/httpapi"
	"github.com/parleyhq/parley/internal/identity"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/node"
	"github.com/parleyhq/parley/internal/vfs"
)

// MaxClusterNodes bounds the nodes of a static cluster.
const MaxClusterNodes = 15

// ClusterConfig makes a node one voter of a static cluster: every node
// lists the same Nodes. The data directory must already hold a node of the
// cluster's service (InitCluster makes them); a cluster node never creates
// a new service.
type ClusterConfig struct {
	// RaftID is this node's raft id, one of Nodes.
	RaftID uint64 `json:"raftId"`
	// Nodes are every node of the cluster, this one included.
	Nodes []ClusterNode `json:"nodes"`
}

// ClusterNode is one node of a static cluster.
type ClusterNode struct {
	// RaftID is its raft id (1 or more).
	RaftID uint64 `json:"raftId"`
	// Address is its listen address, host:port; the host must be among
	// its node certificate's subject alternative names.
	Address string `json:"address"`
	// NodeID is the hex SHA-256 of its public key.
	NodeID string `json:"nodeId"`
}

func (c *ClusterConfig) validate() error {
	if len(c.Nodes) == 0 || len(c.Nodes) > MaxClusterNodes {
		return fmt.Errorf("cluster: want 1 to %d nodes", MaxClusterNodes)
	}
	seen := map[uint64]bool{}
	for _, n := range c.Nodes {
		if n.RaftID == 0 || seen[n.RaftID] {
			return fmt.Errorf("cluster: raft id %d is zero or listed twice", n.RaftID)
		}
		seen[n.RaftID] = true
		if _, _, err := net.SplitHostPort(n.Address); err != nil {
			return fmt.Errorf("cluster: node %d address: %w", n.RaftID, err)
		}
		if b, err := hex.DecodeString(n.NodeID); err != nil || len(b) != 32 {
			return fmt.Errorf("cluster: node %d nodeId: want 64 hex digits", n.RaftID)
		}
	}
	if !seen[c.RaftID] {
		return fmt.Errorf("cluster: raftId %d is not among the nodes", c.RaftID)
	}
	return nil
}

func (c *ClusterConfig) voters() []uint64 {
	var ids []uint64
	for _, n := range c.Nodes {
		ids = append(ids, n.RaftID)
	}
	slices.Sort(ids)
	return ids
}

// InitClusterOptions configures InitCluster.
type InitClusterOptions struct {
	// Nodes is the number of nodes (3 when zero).
	Nodes int
	// Members is the number of consortium members (1 when zero).
	Members int
	// Addresses are the nodes' listen addresses; free 127.0.0.1 ports
	// when empty.
	Addresses []string
}

// ClusterMember is a node InitCluster made.
type ClusterMember struct {
	RaftID   uint64 `json:"id"`
	Endpoint string `json:"endpoint"`
	Dir      string `json:"dir"`
	Config   string `json:"config"`
}

// InitCluster makes the data directories and configuration files of a new
// static cluster under base: base/node<i>/ with base/node<i>/config.json,
// and base/service_cert.pem, base/user0_cert.pem and base/user0_privk.pem.
//
// DEVELOPMENT BOOTSTRAP ONLY: it makes ONE service key and ledger secret
// and writes them, sealed, into EVERY node directory on this machine, and
// copies the user and member keys into each (so whichever node is first
// elected writes the same genesis). That is not the attested join, in
// which a node receives the secrets only after its TEE evidence is
// checked; do not use it for a service whose data matters.
func InitCluster(base string, opts InitClusterOptions) ([]ClusterMember, error) {
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Members == 0 {
		opts.Members = 1
	}
	if opts.Nodes < 1 || opts.Nodes > MaxClusterNodes {
		return nil, fmt.Errorf("init cluster: want 1 to %d nodes", MaxClusterNodes)
	}
	if opts.Members < 1 || opts.Members > MaxMembers {
		return nil, fmt.Errorf("init cluster: want 1 to %d members", MaxMembers)
	}
	if len(opts.Addresses) != 0 && len(opts.Addresses) != opts.Nodes {
		return nil, fmt.Errorf("init cluster: %d addresses for %d nodes", len(opts.Addresses), opts.Nodes)
	}
	base, err := filepath.Abs(base)
	if err != nil {
		return nil, fmt.Errorf("init cluster: %w", err)
	}
	fsys := vfs.OS{}
	if err := vfs.MkdirAllDurable(fsys, base, 0o700); err != nil {
		return nil, fmt.Errorf("init cluster: %w", err)
	}
	svc, err := identity.NewService("Parley Service", 365*24*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("init cluster: %w", err)
	}
	secret := make([]byte, ledger.SecretSize)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("init cluster: ledger secret: %w", err)
	}
	defer clear(secret)
	addrs := opts.Addresses
	if len(addrs) == 0 {
		if addrs, err = freeAddresses(opts.Nodes); err != nil {
			return nil, err
		}
	}
	cc := ClusterConfig{}
	var members []ClusterMember
	for i := range opts.Nodes {
		dir := filepath.Join(base, fmt.Sprintf("node%d", i))
		host, _, _ := net.SplitHostPort(addrs[i])
		sans := []string{"127.0.0.1", "localhost"}
		if host != "" && !slices.Contains(sans, host) {
			sans = append(sans, host)
		}
		id, err := node.Init(fsys, dir, node.InitOptions{SANs: sans, Service: svc, LedgerSecret: secret})
		if err != nil {
			return nil, fmt.Errorf("init cluster: node %d: %w", i, err)
		}
		nid, err := identity.NodeID(&id.NodeKey.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("init cluster: node %d: %w", i, err)
		}
		rid := uint64(i + 1)
		cc.Nodes = append(cc.Nodes, ClusterNode{RaftID: rid, Address: addrs[i], NodeID: nid})
		members = append(members, ClusterMember{RaftID: rid, Endpoint: addrs[i], Dir: dir, Config: filepath.Join(dir, "config.json")})
	}
	// Client identities: made once in base, copied into every node.
	var files [][2]string // base path, name inside a node directory
	if _, err := ensureClientCert(fsys, filepath.Join(base, User0CertFile), filepath.Join(base, User0KeyFile), "user0"); err != nil {
		return nil, err
	}
	files = append(files, [2]string{filepath.Join(base, User0CertFile), User0CertFile}, [2]string{filepath.Join(base, User0KeyFile), User0KeyFile})
	for i := range opts.Members {
		cert, key, enc, encPub := MemberFiles(base, i)
		if _, err := ensureClientCert(fsys, cert, key, fmt.Sprintf("member%d", i)); err != nil {
			return nil, err
		}
		if _, err := ensureEncryptionKey(fsys, enc, encPub); err != nil {
			return nil, err
		}
		for _, p := range []string{cert, key, enc, encPub} {
			files = append(files, [2]string{p, filepath.Base(p)})
		}
	}
	if err := vfs.WriteFileDurable(fsys, filepath.Join(base, node.ServiceCertFile), identity.EncodeCertPEM(svc.CertDER), 0o644); err != nil {
		return nil, fmt.Errorf("init cluster: %w", err)
	}
	for i, m := range members {
		for _, f := range files {
			b, err := fsys.ReadFile(f[0])
			if err != nil {
				return nil, fmt.Errorf("init cluster: %w", err)
			}
			if err := vfs.WriteFileDurable(fsys, filepath.Join(m.Dir, f[1]), b, 0o600); err != nil {
				return nil, fmt.Errorf("init cluster: %w", err)
			}
		}
		mine := cc
		mine.RaftID = m.RaftID
		cfg := Config{DataDir: m.Dir, ListenAddress: addrs[i], Members: opts.Members, Cluster: &mine}
		b, err := json.MarshalIndent(cfg, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("init cluster: %w", err)
		}
		if err := vfs.WriteFileDurable(fsys, m.Config, append(b, '\n'), 0o600); err != nil {
			return nil, fmt.Errorf("init cluster: %w", err)
		}
	}
	return members, nil
}

// freeAddresses returns n 127.0.0.1 addresses whose ports were free a
// moment ago.
func freeAddresses(n int) ([]string, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("init cluster: find a free port: %w", err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs, nil
}

// newTransport makes the raft transport of a cluster node.
func newTransport(cc *ClusterConfig, id *node.Identity, logger *slog.Logger) (*consensus.Transport, error) {
	tlsCert, err := nodeTLSCert(id)
	if err != nil {
		return nil, err
	}
	var peers []consensus.Peer
	for _, n := range cc.Nodes {
		peers = append(peers, consensus.Peer{ID: n.RaftID, Address: n.Address, NodeID: n.NodeID})
	}
	return consensus.New(consensus.Config{
		ID:          cc.RaftID,
		Peers:       peers,
		Certificate: tlsCert,
		ServiceCert: id.Service.Cert,
		Logger:      logger,
	})
}

// primaryDuties does, in a cluster, what a single node does at start but
// only a primary can: the first primary of a new service writes the genesis
// transaction (backups get it through replication), and a node that
// becomes primary writes the recovery shares if they are missing or stale.
func (s *Server) primaryDuties(ctx context.Context) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	sharesDone, nodesDone := false, false
	for {
		if s.network {
			s.refreshPeers()
		}
		switch {
		case !s.eng.IsPrimary():
			sharesDone, nodesDone = false, false
		case s.app.NeedsGenesis():
			if err := s.genesis(vfs.OS{}); err != nil {
				s.log.Warn("genesis", slog.Any("err", err))
			}
		case s.network && !nodesDone:
			if err := s.recordSelf(ctx); err != nil {
				s.log.Warn("record this node", slog.Any("err", err))
			} else {
				nodesDone = true
			}
		case !nodesDone:
			if err := s.recordNodes(ctx); err != nil {
				s.log.Warn("record the cluster's nodes", slog.Any("err", err))
			} else {
				nodesDone = true
			}
		case !sharesDone:
			s.ensureServiceInfo()
			s.ensureRecoveryShares()
			sharesDone = true
		case s.network:
			s.reconcile(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// recordNodes writes the static cluster's nodes that the public nodes map
// (gov.NodesInfoMap) lacks, as Trusted: the nodes init-cluster made are
// trusted by construction. It leaves recorded nodes as they are.
func (s *Server) recordNodes(ctx context.Context) error {
	tx := s.eng.Begin()
	n := 0
	for _, m := range s.members() {
		if _, ok := tx.Get(gov.NodesInfoMap, m.NodeID); ok {
			continue
		}
		b, err := json.Marshal(gov.NodeInfo{Status: nodeTrusted})
		if err != nil {
			return err
		}
		tx.Put(gov.NodesInfoMap, m.NodeID, b)
		n++
	}
	if n == 0 {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	id, err := s.eng.Commit(cctx, tx, engine.CommitOptions{})
	if err != nil {
		return fmt.Errorf("record nodes: %w", err)
	}
	s.log.Info("recorded the cluster's nodes as Trusted", slog.Int("nodes", n), slog.String("txid", id.String()))
	return nil
}

// nodeTrusted is the status of a node that may take part in consensus.
const nodeTrusted = "Trusted"

// nodeStatus is the node's status in the public nodes map; a node of the
// static list that is not recorded yet is Trusted.
func (s *Server) nodeStatus(nodeID string) string {
	b, ok := s.eng.Begin().Get(gov.NodesInfoMap, nodeID)
	if !ok {
		return nodeTrusted
	}
	var info gov.NodeInfo
	if err := json.Unmarshal(b, &info); err != nil || info.Status == "" {
		return "Unknown"
	}
	return info.Status
}

// nodeInfo is one node of GET /node/network/nodes.
type nodeInfo struct {
	NodeID  string `json:"node_id"`
	RaftID  uint64 `json:"raft_id"`
	Status  string `json:"status"`
	Primary bool   `json:"primary"`
	Address string `json:"address"`
}

// nodeRoutes serves the unauthenticated operator endpoints: GET
// /node/network, /node/network/nodes and /node/state.
func (s *Server) nodeRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /node/network", func(w http.ResponseWriter, r *http.Request) {
		primary, _ := s.primary()
		status := s.serviceStatus()
		var pid any
		if primary.NodeID != "" {
			pid = primary.NodeID
		}
		writeJSON(w, map[string]any{
			"service_status":      status,
			"current_view":        s.eng.View(),
			"primary_id":          pid,
			"primary_raft_id":     primary.RaftID,
			"service_certificate": string(s.serviceCertPEM),
		})
	})
	mux.HandleFunc("GET /node/network/nodes", func(w http.ResponseWriter, r *http.Request) {
		if s.network {
			nodes, refused := s.networkNodes()
			writeJSON(w, map[string]any{"nodes": nodes, "refused": refused})
			return
		}
		primary, _ := s.primary()
		var nodes []nodeInfo
		for _, n := range s.members() {
			nodes = append(nodes, nodeInfo{NodeID: n.NodeID, RaftID: n.RaftID, Status: s.nodeStatus(n.NodeID), Primary: n.RaftID == primary.RaftID && primary.RaftID != 0, Address: n.Address})
		}
		writeJSON(w, map[string]any{"nodes": nodes})
	})
	mux.HandleFunc("GET /node/state", func(w http.ResponseWriter, r *http.Request) {
		state := "PartOfNetwork"
		if s.app.NeedsGenesis() || !s.eng.PrivateOpen() {
			state = "PartOfPublicNetwork"
		}
		var raftMsgs any
		if s.tr != nil {
			st := s.tr.Stats()
			raftMsgs = map[string]uint64{"sent": st.Sent, "dropped": st.Dropped, "received": st.Received}
		}
		writeJSON(w, map[string]any{
			"raft_messages":     raftMsgs,
			"node_id":           s.eng.NodeID(),
			"raft_id":           s.eng.RaftID(),
			"state":             state,
			"primary":           s.eng.IsPrimary(),
			"current_view":      s.eng.View(),
			"last_seqno":        s.eng.Current().Seqno,
			"last_committed_id": s.eng.CommittedID().String(),
			"last_signed_seqno": s.eng.CommittedID().Seqno,
		})
	})
}

// members lists the nodes of the service: the cluster's, or this node.
func (s *Server) members() []ClusterNode {
	if s.cfg.Cluster != nil {
		return s.cfg.Cluster.Nodes
	}
	if s.network {
		nodes := s.dynamicNodes(s.eng.Begin())
		for _, p := range s.bootPeers {
			if !slices.ContainsFunc(nodes, func(n ClusterNode) bool { return n.RaftID == p.RaftID }) {
				nodes = append(nodes, ClusterNode{RaftID: p.RaftID, Address: p.Address, NodeID: p.NodeID})
			}
		}
		if !slices.ContainsFunc(nodes, func(n ClusterNode) bool { return n.RaftID == s.eng.RaftID() }) {
			nodes = append(nodes, ClusterNode{RaftID: s.eng.RaftID(), Address: advertisedAddress(s.cfg), NodeID: s.eng.NodeID()})
		}
		return nodes
	}
	return []ClusterNode{{RaftID: s.eng.RaftID(), Address: s.ln.Addr().String(), NodeID: s.eng.NodeID()}}
}

// primary returns the node this one believes is the primary.
func (s *Server) primary() (ClusterNode, bool) {
	p := s.eng.Primary()
	if p == 0 {
		return ClusterNode{}, false
	}
	for _, n := range s.members() {
		if n.RaftID == p {
			return n, true
		}
	}
	return ClusterNode{}, false
}

// ForwardedCertHeader carries, from a backup to the primary, the DER
// client certificate (standard base64) of the caller whose write the backup
// forwards. The primary honours it only on a connection whose client
// certificate is that of a cluster node.
const ForwardedCertHeader = "X-Parley-Forwarded-Cert"

// newForwarder returns the client a backup forwards writes with: its node
// certificate as client certificate, the service certificate as the only
// root.
func newForwarder(id *node.Identity) (*http.Transport, error) {
	tlsCert, err := nodeTLSCert(id)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(id.Service.Cert)
	return &http.Transport{
		TLSClientConfig:     &tls.Config{Certificates: []tls.Certificate{tlsCert}, RootCAs: roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     2 * time.Minute,
		TLSHandshakeTimeout: 5 * time.Second,
	}, nil
}

// routeWrites forwards requests that may write (any method but GET and
// HEAD) arriving at a backup to the primary, with the caller's client
// certificate in ForwardedCertHeader, and relays the answer; reads are
// served here. With no primary known it answers 503 PrimaryUnknown with
// Retry-After. A forwarded request is never forwarded again. On the
// primary, it restores the caller's identity of a request a node forwarded.
func (s *Server) routeWrites(next http.Handler) http.Handler {
	rs := &routeState{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fwd := r.Header.Get(ForwardedCertHeader)
		if s.tr != nil && fwd != "" {
			r2, err := s.forwardedCaller(r, fwd)
			if err != nil {
				writeError(w, http.StatusForbidden, "InvalidForwarding", err.Error())
				return
			}
			next.ServeHTTP(w, r2)
			return
		}
		if s.tr == nil {
			next.ServeHTTP(w, r)
			return
		}
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			// Reads are served here, except those of transactions before
			// the snapshot this node started from: it does not hold them.
			if !s.beforeStart(r.URL.Path) || s.eng.IsPrimary() {
				next.ServeHTTP(w, r)
				return
			}
			if _, p, ok := s.routeInfo(rs); ok && p.RaftID != s.eng.RaftID() {
				s.forwardToPrimary(w, r, p)
				return
			}
			next.ServeHTTP(w, r) // no primary known: answer NotOnThisNode
			return
		}
		self, p, ok := s.routeInfo(rs)
		if s.network {
			if st := self; st == gov.NodeRetired || st == gov.NodeRetiring {
				writeError(w, http.StatusServiceUnavailable, "NodeRetired", "this node is "+st+" and serves no writes; use another node")
				return
			}
		}
		if s.eng.IsPrimary() {
			next.ServeHTTP(w, r)
			return
		}
		if !ok || p.RaftID == s.eng.RaftID() {
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, "PrimaryUnknown", "no primary is known (an election is in progress); retry")
			return
		}
		s.forwardToPrimary(w, r, p)
	})
}

// beforeStart reports whether path reads a transaction (its entry, status
// or receipt) from before the snapshot this node's ledger starts after.
func (s *Server) beforeStart(path string) bool {
	start := s.eng.StartSeqno()
	if start == 0 {
		return false
	}
	rest, ok := strings.CutPrefix(path, "/app/transactions/")
	if !ok {
		return false
	}
	idStr, _, _ := strings.Cut(rest, "/")
	id, err := ledger.ParseTxID(idStr)
	return err == nil && id.Seqno <= start
}

// forwardToPrimary sends r to the primary p with the caller's client
// certificate, and its answer back.
func (s *Server) forwardToPrimary(w http.ResponseWriter, r *http.Request, p ClusterNode) {
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: "https", Host: p.Address})
			pr.Out.Host = p.Address
			pr.Out.Header.Del(ForwardedCertHeader)
			if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
				pr.Out.Header.Set(ForwardedCertHeader, base64.StdEncoding.EncodeToString(r.TLS.PeerCertificates[0].Raw))
			} else {
				// No certificate to vouch for, but the header marks
				// the request as forwarded (bearer tokens pass as is).
				pr.Out.Header.Set(ForwardedCertHeader, "-")
			}
		},
		Transport: s.fwd,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			s.log.Debug("forward to the primary", slog.String("primary", p.Address), slog.Any("err", err))
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusBadGateway, "ForwardingFailed", "could not forward the request to the primary at "+p.Address+"; retry")
		},
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	proxy.ServeHTTP(w, r)
}

// routeState caches what routeWrites would otherwise read from the ledger
// (decoding every node record) on every write: this node's status and the
// primary's address. Both change rarely, on membership changes and
// elections; a cached value serves for at most routeCacheFor, and the
// primary's only while raft names the same primary.
type routeState struct {
	mu      sync.Mutex
	at      time.Time
	status  string
	primary ClusterNode
	ok      bool
}

// routeCacheFor bounds how stale routeState may be: a node retired this
// long ago may still forward a write, which the primary then handles.
const routeCacheFor = 100 * time.Millisecond

// routeInfo returns this node's status in the nodes map (network mode)
// and the primary, from rs when fresh.
func (s *Server) routeInfo(rs *routeState) (status string, primary ClusterNode, ok bool) {
	now := time.Now()
	lead := s.eng.Primary()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.at.IsZero() || now.Sub(rs.at) >= routeCacheFor || rs.primary.RaftID != lead {
		rs.status = ""
		if s.network {
			rs.status = s.selfStatus()
		}
		rs.primary, rs.ok = s.primary()
		rs.at = now
	}
	return rs.status, rs.primary, rs.ok
}

// forwardedCaller checks that r comes from a cluster node and returns r
// with the caller's certificate from the header (fwd) in place of the
// node's, and a fresh per-connection authentication cache.
func (s *Server) forwardedCaller(r *http.Request, fwd string) (*http.Request, error) {
	if _, err := s.tr.Authenticate(r.TLS); err != nil {
		return nil, fmt.Errorf("%s from a client that is not a node of this service: %w", ForwardedCertHeader, err)
	}
	cs := *r.TLS
	cs.PeerCertificates = nil
	cs.VerifiedChains = nil
	if fwd != "-" {
		if len(fwd) > maxForwardedCert {
			return nil, fmt.Errorf("%s: longer than %d bytes", ForwardedCertHeader, maxForwardedCert)
		}
		der, err := base64.StdEncoding.DecodeString(fwd)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ForwardedCertHeader, err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ForwardedCertHeader, err)
		}
		cs.PeerCertificates = []*x509.Certificate{c}
	}
	r2 := r.WithContext(httpapi.ConnContext(r.Context(), nil))
	r2.TLS = &cs
	r2.Header = r.Header.Clone()
	r2.Header.Del(ForwardedCertHeader)
	return r2, nil
}

// maxForwardedCert bounds ForwardedCertHeader.
const maxForwardedCert = 16 << 10

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// nodeTLSCert is the node certificate and key as a TLS certificate.
func nodeTLSCert(id *node.Identity) (tls.Certificate, error) {
	c, err := identity.ParseCertPEM(id.NodeCertPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("node certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: id.NodeKey}, nil
}
