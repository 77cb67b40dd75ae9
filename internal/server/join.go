package server

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hpke"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/gov"
	"github.com/parleyhq/parley/internal/identity"
	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/tee"
)

// The attested join, primary side.
//
// A joining node POSTs /node/join over TLS with a self-signed client
// certificate of its new node key, its TEE evidence and its address. The
// evidence's report data must be JoinReportData of that key. The primary
// (a backup forwards the request) verifies the evidence (tee.Verify), looks
// its measurement up in the allowed set (gov.MeasurementsMap, "platform:hex")
// and either records the node Pending in gov.NodesInfoMap (Trusted at once
// if the service config says autoTrustNodes) or records the refusal in
// NodeRefusalsMap and answers 403. A Trusted node's certificate is endorsed
// and the node added to raft by the primary (reconcile); once its raft id is
// in the committed membership, GET /node/join (any node, same client
// certificate) returns its endorsed certificate, the service's initial
// voters and nodes, and the service key and ledger secrets encrypted to the
// node key with HPKE.

// NodeRefusalsMap records refused joins: key node id, value JSON
// JoinRefusal.
const NodeRefusalsMap = "public:parley.nodes.join_refusals"

// JoinRefusal is a refused join as the ledger records it.
type JoinRefusal struct {
	Reason      string `json:"reason"`
	Platform    string `json:"platform,omitempty"`
	Measurement string `json:"measurement,omitempty"`
	Address     string `json:"address,omitempty"`
	At          string `json:"at"`
}

// Bounds of the join endpoint.
const (
	maxJoinBody = 256 << 10
	// maxRefusalsPerMinute bounds the refusals written to the ledger, so
	// that anyone able to reach the endpoint cannot fill it: beyond it a
	// refused join is answered 429 and not recorded.
	maxRefusalsPerMinute = 30
	// maxPendingNodes bounds the nodes waiting to be trusted, so that
	// joins alone cannot fill the ledger.
	maxPendingNodes = 64
	// joinHPKEInfo is the HPKE info string of the join secrets.
	joinHPKEInfo = "parley node join v1"
	// nodeCertValidity is the validity of the certificates the primary
	// endorses for joining nodes.
	nodeCertValidity = 365 * 24 * time.Hour
)

// JoinReportData is the report data a joining node binds into its
// evidence: SHA-256("parley node join v1" ‖ DER SubjectPublicKeyInfo of
// its key), then 32 zero bytes.
func JoinReportData(pub *ecdsa.PublicKey) ([tee.ReportDataSize]byte, error) {
	var rd [tee.ReportDataSize]byte
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return rd, fmt.Errorf("join report data: %w", err)
	}
	h := sha256.New()
	h.Write([]byte(joinHPKEInfo))
	h.Write(spki)
	copy(rd[:], h.Sum(nil))
	return rd, nil
}

// JoinEvidence is TEE evidence in a join request.
type JoinEvidence struct {
	Platform string `json:"platform"`
	Raw      []byte `json:"raw"`            // base64 in JSON
	VCEK     []byte `json:"vcek,omitempty"` // SEV-SNP only
}

// JoinRequest is the body of POST /node/join.
type JoinRequest struct {
	Evidence JoinEvidence `json:"evidence"`
	// Address is the node's host:port, for clients and other nodes.
	Address string `json:"address"`
	// SubjectAltNames are the names its certificate should cover (the
	// address's host is added).
	SubjectAltNames []string `json:"subject_alt_names,omitempty"`
}

// JoinStatus is the answer to POST and GET /node/join.
type JoinStatus struct {
	NodeID string `json:"node_id"`
	Status string `json:"status"`
	RaftID uint64 `json:"raft_id"`
	// The rest is set once the node is Trusted and in raft (GET only).
	Certificate        string      `json:"certificate,omitempty"`
	ServiceCertificate string      `json:"service_certificate,omitempty"`
	Voters             []uint64    `json:"voters,omitempty"`
	Nodes              []JoinPeer  `json:"nodes,omitempty"`
	Secrets            *JoinSealed `json:"secrets,omitempty"`
}

// JoinPeer is a node of the service in a JoinStatus.
type JoinPeer struct {
	RaftID  uint64 `json:"raft_id"`
	NodeID  string `json:"node_id"`
	Address string `json:"address"`
}

// JoinSealed is JoinSecrets sealed with HPKE (DHKEM(P-384), HKDF-SHA384,
// AES-256-GCM, info joinHPKEInfo) to the node key.
type JoinSealed struct {
	Enc        []byte `json:"enc"`
	Ciphertext []byte `json:"ciphertext"`
}

// JoinSecrets is what a trusted node receives, encrypted.
type JoinSecrets struct {
	// ServiceKey is the service private key (PEM).
	ServiceKey string `json:"service_key"`
	// LedgerSecrets are the ledger secrets, each with the first seqno it
	// seals; oldest first. Secrets of rotations after these the node
	// learns from the log.
	LedgerSecrets []JoinLedgerSecret `json:"ledger_secrets"`
}

// JoinLedgerSecret is one ledger secret and the seqno from which it seals.
type JoinLedgerSecret struct {
	FromSeqno uint64 `json:"from_seqno"`
	Secret    []byte `json:"secret"`
}

func hpkeSuite() (hpke.KEM, hpke.KDF, hpke.AEAD) {
	return hpke.DHKEM(ecdh.P384()), hpke.HKDFSHA384(), hpke.AES256GCM()
}

// sealJoinSecrets encrypts s to pub.
func sealJoinSecrets(pub *ecdsa.PublicKey, s *JoinSecrets) (*JoinSealed, error) {
	epub, err := pub.ECDH()
	if err != nil {
		return nil, fmt.Errorf("seal join secrets: %w", err)
	}
	hpub, err := hpke.NewDHKEMPublicKey(epub)
	if err != nil {
		return nil, fmt.Errorf("seal join secrets: %w", err)
	}
	plain, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("seal join secrets: %w", err)
	}
	defer clear(plain)
	_, kdf, aead := hpkeSuite()
	enc, sender, err := hpke.NewSender(hpub, kdf, aead, []byte(joinHPKEInfo))
	if err != nil {
		return nil, fmt.Errorf("seal join secrets: %w", err)
	}
	ct, err := sender.Seal(nil, plain)
	if err != nil {
		return nil, fmt.Errorf("seal join secrets: %w", err)
	}
	return &JoinSealed{Enc: enc, Ciphertext: ct}, nil
}

// openJoinSecrets decrypts what sealJoinSecrets sealed to key.
func openJoinSecrets(key *ecdsa.PrivateKey, sealed *JoinSealed) (*JoinSecrets, error) {
	ekey, err := key.ECDH()
	if err != nil {
		return nil, fmt.Errorf("open join secrets: %w", err)
	}
	hkey, err := hpke.NewDHKEMPrivateKey(ekey)
	if err != nil {
		return nil, fmt.Errorf("open join secrets: %w", err)
	}
	_, kdf, aead := hpkeSuite()
	r, err := hpke.NewRecipient(sealed.Enc, hkey, kdf, aead, []byte(joinHPKEInfo))
	if err != nil {
		return nil, fmt.Errorf("open join secrets: %w", err)
	}
	plain, err := r.Open(nil, sealed.Ciphertext)
	if err != nil {
		return nil, fmt.Errorf("open join secrets: %w", err)
	}
	defer clear(plain)
	var s JoinSecrets
	if err := json.Unmarshal(plain, &s); err != nil {
		return nil, fmt.Errorf("open join secrets: %w", err)
	}
	return &s, nil
}

// errTooManyPending is returned when maxPendingNodes nodes are Pending.
var errTooManyPending = errors.New("too many pending nodes")

// joinLimiter counts refusals written in the current minute.
type joinLimiter struct {
	mu     sync.Mutex
	minute int64
	n      int
}

func (l *joinLimiter) allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if m := now.Unix() / 60; m != l.minute {
		l.minute, l.n = m, 0
	}
	if l.n >= maxRefusalsPerMinute {
		return false
	}
	l.n++
	return true
}

// joinCaller returns the ECDSA P-384 key of the TLS client certificate and
// its node id.
func joinCaller(r *http.Request) (*ecdsa.PublicKey, string, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil, "", errors.New("a joining node authenticates with a client certificate of its node key")
	}
	pub, ok := r.TLS.PeerCertificates[0].PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P384() {
		return nil, "", errors.New("the node key must be ECDSA P-384")
	}
	id, err := identity.NodeID(pub)
	if err != nil {
		return nil, "", err
	}
	return pub, id, nil
}

// serveJoin serves POST (on the primary; backups forward it) and GET
// /node/join.
func (s *Server) serveJoin(w http.ResponseWriter, r *http.Request) {
	pub, nodeID, err := joinCaller(r)
	if err != nil {
		writeError(w, http.StatusUnauthorized, "Unauthorized", err.Error())
		return
	}
	if !s.eng.PrivateOpen() {
		// A recovering service does not hold the secrets of its recovered
		// ledger yet: nodes join once the members' shares restored them.
		writeError(w, http.StatusServiceUnavailable, "ServiceRecovering",
			"the service is recovering: nodes can join once the recovery shares have restored its private state")
		return
	}
	switch r.Method {
	case http.MethodPost:
		s.postJoin(w, r, pub, nodeID)
	case http.MethodGet:
		s.getJoin(w, nodeID, pub)
	default:
		w.Header().Set("Allow", "GET, POST")
		writeError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "GET or POST")
	}
}

func (s *Server) postJoin(w http.ResponseWriter, r *http.Request, pub *ecdsa.PublicKey, nodeID string) {
	if !s.eng.IsPrimary() {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "PrimaryUnknown", "this node is not the primary; retry")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJoinBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "RequestTooLarge", fmt.Sprintf("a join request is at most %d bytes", maxJoinBody))
		return
	}
	var req JoinRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "InvalidInput", "join request: "+err.Error())
		return
	}
	host, _, err := net.SplitHostPort(req.Address)
	if err != nil || host == "" || len(req.Address) > 256 {
		writeError(w, http.StatusBadRequest, "InvalidInput", "address: want host:port")
		return
	}
	if len(req.SubjectAltNames) > 8 {
		writeError(w, http.StatusBadRequest, "InvalidInput", "at most 8 subject_alt_names")
		return
	}
	platform, err := tee.ParsePlatform(req.Evidence.Platform)
	if err != nil {
		writeError(w, http.StatusBadRequest, "InvalidInput", err.Error())
		return
	}
	report, err := tee.Verify(tee.Evidence{Platform: platform, Raw: req.Evidence.Raw, VCEK: req.Evidence.VCEK}, tee.VerifyOptions{})
	if err != nil {
		writeError(w, http.StatusBadRequest, "InvalidEvidence", "evidence: "+err.Error())
		return
	}
	if report.Platform == tee.Virtual {
		s.log.Warn(tee.VirtualWarning, slog.String("joining_node", nodeID))
	}
	measurement := string(report.Platform) + ":" + hex.EncodeToString(report.Measurement)
	refuse := func(reason string) {
		s.refuseJoin(r.Context(), w, nodeID, JoinRefusal{Reason: reason, Platform: string(report.Platform), Measurement: measurement, Address: req.Address})
	}
	want, err := JoinReportData(pub)
	if err != nil {
		writeError(w, http.StatusBadRequest, "InvalidInput", err.Error())
		return
	}
	if report.ReportData != want {
		refuse("the evidence's report data does not bind the node key")
		return
	}
	tx := s.eng.Begin()
	if _, ok := tx.Get(gov.MeasurementsMap, measurement); !ok {
		refuse("measurement " + measurement + " is not allowed to join")
		return
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		writeError(w, http.StatusBadRequest, "InvalidInput", err.Error())
		return
	}
	sans := append([]string{host}, req.SubjectAltNames...)
	slices.Sort(sans)
	sans = slices.Compact(sans)
	// Joins are serialized on the primary, so that two never take the
	// same raft id (the transaction's map read catches the rest).
	s.joinMu.Lock()
	defer s.joinMu.Unlock()
	var out JoinStatus
	var retired bool
	_, err = engine.Retry(r.Context(), s.eng, engine.CommitOptions{}, func(tx *kv.Tx) error {
		retired = false
		if info, ok := gov.NodeInfoOf(tx, nodeID); ok {
			if info.Status == gov.NodeRetired || info.Status == gov.NodeRetiring {
				retired = true
			}
			out = JoinStatus{NodeID: nodeID, Status: info.Status, RaftID: info.RaftID}
			return nil // already admitted: answer as before, write nothing
		}
		pending := 0
		tx.Foreach(gov.NodesInfoMap, func(_ string, b []byte) bool {
			var info gov.NodeInfo
			if json.Unmarshal(b, &info) == nil && info.Status == gov.NodePending {
				pending++
			}
			return true
		})
		if pending >= maxPendingNodes {
			return errTooManyPending
		}
		info := gov.NodeInfo{
			Status:          gov.NodePending,
			RaftID:          s.nextRaftID(tx),
			Address:         req.Address,
			SubjectAltNames: sans,
			PublicKey:       string(pemBlock("PUBLIC KEY", spki)),
			Platform:        string(report.Platform),
			Measurement:     measurement,
		}
		if gov.ServiceConfigOf(tx).AutoTrustNodes {
			info.Status = gov.NodeTrusted
			der, err := s.id.Service.EndorseNode(pub, sans, nodeCertValidity)
			if err != nil {
				return fmt.Errorf("endorse: %w", err)
			}
			info.Cert = string(identity.EncodeCertPEM(der))
		}
		b, err := json.Marshal(info)
		if err != nil {
			return err
		}
		tx.Put(gov.NodesInfoMap, nodeID, b)
		out = JoinStatus{NodeID: nodeID, Status: info.Status, RaftID: info.RaftID}
		return nil
	})
	if errors.Is(err, errTooManyPending) {
		w.Header().Set("Retry-After", "60")
		writeError(w, http.StatusTooManyRequests, "TooManyPendingNodes", fmt.Sprintf("%d nodes already wait to be trusted; retire or trust them first", maxPendingNodes))
		return
	}
	if err != nil {
		s.log.Warn("record a joining node", slog.String("node_id", nodeID), slog.Any("err", err))
		writeError(w, http.StatusServiceUnavailable, "JoinFailed", "could not record the node; retry")
		return
	}
	if retired {
		refuse("node " + nodeID + " is retired")
		return
	}
	if err := s.waitAllCommitted(r.Context()); err != nil {
		writeError(w, http.StatusServiceUnavailable, "JoinFailed", "the node's record did not commit; retry")
		return
	}
	s.log.Info("node joined", slog.String("node_id", nodeID), slog.String("status", out.Status), slog.Uint64("raft_id", out.RaftID), slog.String("measurement", measurement))
	writeJSON(w, out)
}

// waitAllCommitted waits until everything in this node's log now is
// committed.
func (s *Server) waitAllCommitted(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return s.eng.WaitCommitted(ctx, s.eng.Current())
}

// refuseJoin records a refused join and answers 403 (429, unrecorded,
// over the refusal rate limit).
func (s *Server) refuseJoin(ctx context.Context, w http.ResponseWriter, nodeID string, ref JoinRefusal) {
	s.log.Warn("refused a joining node", slog.String("node_id", nodeID), slog.String("reason", ref.Reason), slog.String("measurement", ref.Measurement))
	if !s.refusals.allow(time.Now()) {
		w.Header().Set("Retry-After", "60")
		writeError(w, http.StatusTooManyRequests, "TooManyRefusals", "join refused ("+ref.Reason+"); too many refusals to record this minute")
		return
	}
	ref.At = time.Now().UTC().Format(time.RFC3339)
	b, err := json.Marshal(ref)
	if err == nil {
		_, err = engine.Retry(ctx, s.eng, engine.CommitOptions{}, func(tx *kv.Tx) error {
			tx.Put(NodeRefusalsMap, nodeID, b)
			return nil
		})
	}
	if err == nil {
		err = s.waitAllCommitted(ctx)
	}
	if err != nil {
		s.log.Warn("record a refused join", slog.Any("err", err))
		writeError(w, http.StatusServiceUnavailable, "JoinFailed", "join refused ("+ref.Reason+"), but the refusal could not be recorded; retry")
		return
	}
	writeError(w, http.StatusForbidden, "JoinRefused", "join refused: "+ref.Reason)
}

// nextRaftID is one more than every raft id in use or ever given.
func (s *Server) nextRaftID(tx *kv.Tx) uint64 {
	next := uint64(1)
	for _, v := range s.eng.InitialVoters() {
		next = max(next, v+1)
	}
	m := s.eng.Members()
	for _, v := range append(m.Voters, m.Learners...) {
		next = max(next, v+1)
	}
	tx.Foreach(gov.NodesInfoMap, func(_ string, b []byte) bool {
		var info gov.NodeInfo
		if json.Unmarshal(b, &info) == nil {
			next = max(next, info.RaftID+1)
		}
		return true
	})
	return next
}

// getJoin answers a joining node's poll; the secrets only once the node is
// Trusted and its raft id is in the committed membership (so the decision
// that trusted it is committed).
func (s *Server) getJoin(w http.ResponseWriter, nodeID string, pub *ecdsa.PublicKey) {
	tx := s.eng.Begin()
	info, ok := gov.NodeInfoOf(tx, nodeID)
	if !ok {
		if b, refused := tx.Get(NodeRefusalsMap, nodeID); refused {
			var ref JoinRefusal
			_ = json.Unmarshal(b, &ref)
			writeError(w, http.StatusForbidden, "JoinRefused", "join refused: "+ref.Reason)
			return
		}
		writeError(w, http.StatusNotFound, "NodeNotFound", "no node "+nodeID+" has joined (or this node has not seen it yet)")
		return
	}
	out := JoinStatus{NodeID: nodeID, Status: info.Status, RaftID: info.RaftID}
	if info.Status != gov.NodeTrusted || info.Cert == "" || !s.eng.Members().Contains(info.RaftID) {
		writeJSON(w, out)
		return
	}
	var secrets []JoinLedgerSecret
	for _, ep := range s.eng.Epochs() {
		secrets = append(secrets, JoinLedgerSecret{FromSeqno: ep.From, Secret: ep.Secret.Raw()})
	}
	defer func() {
		for _, sec := range secrets {
			clear(sec.Secret)
		}
	}()
	keyPEM, err := identity.EncodeKeyPEM(s.id.Service.Key)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "InternalError", "encode the service key")
		return
	}
	defer clear(keyPEM)
	sealed, err := sealJoinSecrets(pub, &JoinSecrets{ServiceKey: string(keyPEM), LedgerSecrets: secrets})
	if err != nil {
		s.log.Warn("seal join secrets", slog.Any("err", err))
		writeError(w, http.StatusInternalServerError, "InternalError", "could not seal the secrets")
		return
	}
	out.Certificate = info.Cert
	out.ServiceCertificate = string(s.serviceCertPEM)
	out.Voters = s.eng.InitialVoters()
	out.Secrets = sealed
	for _, n := range s.dynamicNodes(tx) {
		if n.RaftID != info.RaftID {
			out.Nodes = append(out.Nodes, JoinPeer{RaftID: n.RaftID, NodeID: n.NodeID, Address: n.Address})
		}
	}
	writeJSON(w, out)
}

// pemBlock encodes one PEM block.
func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
