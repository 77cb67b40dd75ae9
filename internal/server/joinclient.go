package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/parleyhq/parley/internal/identity"
	"github.com/parleyhq/parley/internal/node"
	"github.com/parleyhq/parley/internal/tee"
	"github.com/parleyhq/parley/internal/vfs"
)

// JoinConfig makes a node whose data directory holds no node join a
// running service instead of starting a new one. A node that has joined
// restarts on its data directory and never joins again.
type JoinConfig struct {
	// Target is host:port of any node of the service.
	Target string `json:"target"`
	// ServiceCertificate is the file holding the service certificate
	// (PEM): the target must present a certificate it endorsed.
	ServiceCertificate string `json:"serviceCertificate"`
	// Timeout bounds the wait to be admitted and trusted ("10m").
	Timeout Duration `json:"timeout,omitempty"`
}

// NetworkConfig makes a node start a new service that other nodes can
// join (POST /node/join) and that changes its raft membership as
// governance decides.
type NetworkConfig struct {
	// AutoTrustNodes is recorded in the service configuration when the
	// service is created: a joining node whose evidence and measurement
	// check out becomes Trusted without a trust_node proposal. For
	// development clusters (examples/cluster/start.sh).
	AutoTrustNodes bool `json:"autoTrustNodes,omitempty"`
}

// ErrJoinRefused is returned by Start when the service refused to admit
// the node.
var ErrJoinRefused = errors.New("join refused")

const defaultJoinTimeout = 10 * time.Minute

// advertisedAddress is the host:port other nodes and clients reach this
// node at: the listen address, with an unspecified host replaced by the
// first subject alternative name.
func advertisedAddress(cfg Config) string {
	host, port, err := net.SplitHostPort(cfg.ListenAddress)
	if err != nil {
		return cfg.ListenAddress
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = cfg.SubjectAltNames[0]
	}
	return net.JoinHostPort(host, port)
}

// virtualMeasurement is what this node's virtual evidence claims: the
// configured value, or the SHA-256 of the running binary.
func virtualMeasurement(cfg Config) ([]byte, error) {
	if cfg.VirtualMeasurement != "" {
		return hex.DecodeString(cfg.VirtualMeasurement)
	}
	return tee.MeasureExecutable()
}

// joinService admits this node to the service at cfg.Join.Target and
// writes its data directory: it makes a node key, presents virtual TEE
// evidence binding it, waits until the node is Trusted and in raft, then
// receives its endorsed certificate and the service's secrets.
func joinService(ctx context.Context, cfg Config, dir string, logger *slog.Logger) error {
	j := cfg.Join
	svcPEM, err := os.ReadFile(j.ServiceCertificate)
	if err != nil {
		return fmt.Errorf("join: service certificate: %w", err)
	}
	svcCert, err := identity.ParseCertPEM(svcPEM)
	if err != nil {
		return fmt.Errorf("join: service certificate: %w", err)
	}
	certDER, key, err := identity.NewClientCert("parley joining node", 24*time.Hour)
	if err != nil {
		return fmt.Errorf("join: node key: %w", err)
	}
	m, err := virtualMeasurement(cfg)
	if err != nil {
		return fmt.Errorf("join: measurement: %w", err)
	}
	rd, err := JoinReportData(&key.PublicKey)
	if err != nil {
		return err
	}
	logger.Warn(tee.VirtualWarning, slog.String("use", "join evidence"), slog.String("measurement", hex.EncodeToString(m)))
	raw, err := tee.VirtualEvidence(key, m, rd)
	if err != nil {
		return fmt.Errorf("join: evidence: %w", err)
	}
	nodeID, err := identity.NodeID(&key.PublicKey)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AddCert(svcCert)
	tr := &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs:      roots,
		Certificates: []tls.Certificate{{Certificate: [][]byte{certDER}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS12,
	}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 40 * time.Second}
	timeout := time.Duration(j.Timeout)
	if timeout == 0 {
		timeout = defaultJoinTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	body, err := json.Marshal(JoinRequest{
		Evidence:        JoinEvidence{Platform: string(tee.Virtual), Raw: raw},
		Address:         advertisedAddress(cfg),
		SubjectAltNames: cfg.SubjectAltNames,
	})
	if err != nil {
		return err
	}
	url := "https://" + j.Target + "/node/join"
	logger.Info("joining the service", slog.String("target", j.Target), slog.String("node_id", nodeID))
	var st JoinStatus
	for {
		code, err := joinCall(ctx, hc, http.MethodPost, url, body, &st)
		if err == nil && code == http.StatusOK {
			break
		}
		if code == http.StatusForbidden || code == http.StatusBadRequest || code == http.StatusUnauthorized {
			return fmt.Errorf("%w by %s: %v", ErrJoinRefused, j.Target, err)
		}
		logger.Info("join request not answered yet; retrying", slog.Int("status", code), slog.Any("err", err))
		if err := pause(ctx, time.Second); err != nil {
			return fmt.Errorf("join: %w", err)
		}
	}
	logger.Info("admitted", slog.String("status", st.Status), slog.Uint64("raft_id", st.RaftID))
	last := st.Status
	for st.Secrets == nil {
		if err := pause(ctx, 200*time.Millisecond); err != nil {
			return fmt.Errorf("join: waiting to be trusted (status %s): %w", last, err)
		}
		code, err := joinCall(ctx, hc, http.MethodGet, url, nil, &st)
		if code == http.StatusForbidden {
			return fmt.Errorf("%w: %v", ErrJoinRefused, err)
		}
		if err != nil {
			logger.Debug("poll join status", slog.Any("err", err))
			continue
		}
		if st.Status != last {
			logger.Info("join status", slog.String("status", st.Status))
			last = st.Status
		}
		if st.Status == "Retired" || st.Status == "Retiring" {
			return fmt.Errorf("%w: the node was retired before it started", ErrJoinRefused)
		}
	}
	return writeJoined(dir, key, &st)
}

// writeJoined opens the secrets and writes the data directory.
func writeJoined(dir string, key *ecdsa.PrivateKey, st *JoinStatus) error {
	secrets, err := openJoinSecrets(key, st.Secrets)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	if len(secrets.LedgerSecrets) == 0 {
		return errors.New("join: no ledger secret received")
	}
	eps := make([]node.SecretEpoch, len(secrets.LedgerSecrets))
	for i, sec := range secrets.LedgerSecrets {
		eps[i] = node.SecretEpoch{From: sec.FromSeqno, Secret: sec.Secret}
	}
	defer func() {
		for _, sec := range secrets.LedgerSecrets {
			clear(sec.Secret)
		}
	}()
	info := node.JoinInfo{RaftID: st.RaftID, Voters: st.Voters}
	for _, p := range st.Nodes {
		info.Peers = append(info.Peers, node.JoinPeer{RaftID: p.RaftID, NodeID: p.NodeID, Address: p.Address})
	}
	if _, err := node.InitJoined(vfs.OS{}, dir, node.Joined{
		NodeKey:        key,
		NodeCertPEM:    []byte(st.Certificate),
		ServiceCertPEM: []byte(st.ServiceCertificate),
		ServiceKeyPEM:  []byte(secrets.ServiceKey),
		LedgerSecrets:  eps,
		Info:           info,
	}); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	return nil
}

// joinCall sends one join request and decodes a 200 answer into out; on
// another status the error holds the service's message.
func joinCall(ctx context.Context, hc *http.Client, method, url string, body []byte, out *JoinStatus) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		_ = json.Unmarshal(b, &e)
		return resp.StatusCode, fmt.Errorf("%s: %s %s", resp.Status, e.Error.Code, e.Error.Message)
	}
	*out = JoinStatus{}
	if err := json.Unmarshal(b, out); err != nil {
		return resp.StatusCode, fmt.Errorf("join answer: %w", err)
	}
	return resp.StatusCode, nil
}

// pause waits d or until ctx ends.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// validateNetwork checks the network, join and virtualMeasurement
// settings.
func (c Config) validateNetwork() error {
	n := 0
	for _, set := range []bool{c.Cluster != nil, c.Network != nil, c.Join != nil} {
		if set {
			n++
		}
	}
	if n > 1 {
		return errors.New("cluster, network and join exclude one another")
	}
	if c.Network != nil || c.Join != nil {
		if _, port, err := net.SplitHostPort(c.ListenAddress); c.ListenAddress == "" || err != nil || port == "0" {
			return errors.New("a network or joining node needs a listenAddress with a fixed port")
		}
	}
	if c.Join != nil {
		if _, _, err := net.SplitHostPort(c.Join.Target); err != nil {
			return fmt.Errorf("join.target: %w", err)
		}
		if c.Join.ServiceCertificate == "" {
			return errors.New("join.serviceCertificate is required")
		}
		if c.Join.Timeout < 0 {
			return errors.New("join.timeout must not be negative")
		}
	}
	if c.VirtualMeasurement != "" {
		if b, err := hex.DecodeString(c.VirtualMeasurement); err != nil || len(b) != 32 {
			return errors.New("virtualMeasurement: want 64 hex digits")
		}
	}
	return nil
}
