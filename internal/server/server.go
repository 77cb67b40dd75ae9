// Package server assembles one Parley node process: its data directory
// (identities made at first start, the genesis transaction), the ledger
// engine, the ACL application, and the HTTPS server with its TLS
// configuration, graceful shutdown, health and metrics. `parley dev` and
// `parley node` are thin commands over it.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/parleyhq/parley/internal/cleanroom"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"path/filepath"
	"time"

	"github.com/parleyhq/parley/internal/app"
	"github.com/parleyhq/parley/internal/attest"
	"github.com/parleyhq/parley/internal/consensus"
	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/gov"
	"github.com/parleyhq/parley/internal/httpapi"
	"github.com/parleyhq/parley/internal/identity"
	"github.com/parleyhq/parley/internal/keyrelease"
	"github.com/parleyhq/parley/internal/node"
	"github.com/parleyhq/parley/internal/vfs"
)

// ShutdownTimeout bounds how long Run waits for requests in flight when it
// stops.
const ShutdownTimeout = 10 * time.Second

// Files names the PEM files of a node's data directory, as absolute paths.
type Files struct {
	Dir         string
	ServiceCert string
	NodeCert    string
	User0Cert   string
	User0Key    string
	Member0Cert string
	Member0Key  string
}

// File names of the first user's and member's certificates and keys.
const (
	User0CertFile   = "user0_cert.pem"
	User0KeyFile    = "user0_privk.pem"
	Member0CertFile = "member0_cert.pem"
	Member0KeyFile  = "member0_privk.pem"
)

func filesIn(dir string) Files {
	return Files{
		Dir:         dir,
		ServiceCert: filepath.Join(dir, node.ServiceCertFile),
		NodeCert:    filepath.Join(dir, node.NodeCertFile),
		User0Cert:   filepath.Join(dir, User0CertFile),
		User0Key:    filepath.Join(dir, User0KeyFile),
		Member0Cert: filepath.Join(dir, Member0CertFile),
		Member0Key:  filepath.Join(dir, Member0KeyFile),
	}
}

// Server is a started node.
type Server struct {
	cfg   Config
	log   *slog.Logger
	eng   *engine.Engine
	app   *app.App
	srv   *http.Server
	ln    net.Listener
	files Files
	gov   *gov.Service
	// tr carries raft messages in a cluster; nil for a single node.
	tr *consensus.Transport
	// fwd forwards writes at a backup to the primary, in a cluster.
	fwd            *http.Transport
	serviceCertPEM []byte
	id             *node.Identity
	networkState   // a network node's (network.go)
}

// Start prepares the data directory (on first start: the service and node
// identities, user0 as Administrator and member0, and the genesis
// transaction), opens the ledger and listens. Run serves.
func Start(cfg Config, logger *slog.Logger) (*Server, error) {
	return StartContext(context.Background(), cfg, logger)
}

// StartContext is Start; ctx bounds only the attested join of a new node
// (Config.Join), which waits until governance trusts the node.
func StartContext(ctx context.Context, cfg Config, logger *slog.Logger) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	fsys := vfs.OS{}
	if cfg.Recovery != nil {
		if cfg.Cluster != nil {
			return nil, errors.New("recovery starts a one-node service: remove the cluster section")
		}
		if err := prepareRecovery(fsys, dir, cfg.Recovery, cfg.SubjectAltNames, logger); err != nil {
			return nil, err
		}
	}
	if cfg.Cluster != nil && !node.Exists(fsys, dir) {
		return nil, fmt.Errorf("data dir %s holds no node: a cluster node's directory is made by parley node init-cluster", dir)
	}
	if cfg.Join != nil && !node.Exists(fsys, dir) {
		if err := joinService(ctx, cfg, dir, logger); err != nil {
			return nil, err
		}
	}
	if !node.Exists(fsys, dir) {
		if _, err := node.Init(fsys, dir, node.InitOptions{SANs: cfg.SubjectAltNames}); err != nil {
			return nil, err
		}
		logger.Info("created a new service", slog.String("dir", dir))
	}
	id, err := node.Load(fsys, dir)
	if err != nil {
		return nil, err
	}
	node.WarnNoTEE(logger, dir)
	recovery, err := loadRecoveryState(fsys, dir)
	if err != nil {
		return nil, err
	}
	secret, secrets, recoveredUpTo := id.Secret, []engine.Epoch(nil), uint64(0)
	for _, ep := range id.Epochs {
		// A node that joined its service seals and opens with the
		// service's secrets as it received them.
		secret = nil
		secrets = append(secrets, engine.Epoch{From: ep.From, Secret: ep.Secret})
	}
	if recovery != nil {
		// The old ledger's private domain stays closed until the members'
		// shares restore it; this service's secret seals what follows.
		secret, secrets = nil, []engine.Epoch{{From: recovery.PreviousLastSeqno + 1, Secret: id.Secret}}
		recoveredUpTo = recovery.PreviousLastSeqno
	}
	idx := app.NewIndex()
	crIdx := cleanroom.NewIndex(idx)
	var (
		tr        *consensus.Transport
		transport engine.Transport
		voters    []uint64
		raftID    uint64
	)
	if cfg.Cluster != nil {
		if tr, err = newTransport(cfg.Cluster, id, logger.With(slog.String("component", "consensus"))); err != nil {
			return nil, err
		}
		transport, voters, raftID = tr, cfg.Cluster.voters(), cfg.Cluster.RaftID
	}
	ns, err := networkOf(cfg, dir, id, logger)
	if err != nil {
		return nil, err
	}
	if ns != nil {
		tr = ns.tr
		transport, voters, raftID = tr, ns.voters, ns.raftID
	}
	eng, err := engine.Open(engine.Config{
		RaftID:                    raftID,
		Voters:                    voters,
		Joining:                   ns != nil && ns.joining,
		Transport:                 transport,
		Dir:                       filepath.Join(dir, node.LedgerDir),
		FS:                        fsys,
		Secret:                    secret,
		Secrets:                   secrets,
		RecoveredUpTo:             recoveredUpTo,
		NodeKey:                   id.NodeKey,
		NodeCertPEM:               id.NodeCertPEM,
		SignatureInterval:         time.Duration(cfg.SignatureInterval),
		SignatureTxCount:          cfg.SignatureTxCount,
		SnapshotTxInterval:        cfg.SnapshotTxInterval,
		Logger:                    logger.With(slog.String("component", "engine")),
		Observer:                  crIdx,
		UnsafeTruncateCorruptTail: cfg.UnsafeTruncateCorruptTail,
	})
	if err != nil {
		if tr != nil {
			tr.Close()
		}
		return nil, fmt.Errorf("open engine: %w", err)
	}
	s := &Server{cfg: cfg, log: logger, eng: eng, app: app.New(eng, idx, cfg.Limits), files: filesIn(dir), tr: tr, id: id}
	if ns != nil {
		s.networkState = networkState{network: true, joined: ns.joined, bootPeers: ns.peers}
	}
	fail := func(err error) (*Server, error) {
		if tr != nil {
			tr.Close()
		}
		eng.Close()
		return nil, err
	}
	if tr != nil {
		tr.SetReceiver(eng)
		if s.fwd, err = newForwarder(id); err != nil {
			return fail(err)
		}
	} else if err := s.genesis(fsys); err != nil {
		// A cluster's first primary writes the genesis (Run).
		return fail(err)
	}
	nodeCert, err := identity.ParseCertPEM(id.NodeCertPEM)
	if err != nil {
		return fail(fmt.Errorf("node certificate: %w", err))
	}
	serviceCertPEM, err := fsys.ReadFile(s.files.ServiceCert)
	if err != nil {
		return fail(fmt.Errorf("service certificate: %w", err))
	}
	s.serviceCertPEM = serviceCertPEM
	s.gov = gov.New(gov.Config{Engine: eng, Secrets: eng, Logger: logger.With(slog.String("component", "gov"))})
	if recovery != nil {
		if err := s.recordRecovery(recovery, id.Service); err != nil {
			return fail(err)
		}
	}
	eng.SetServiceEndorsements(s.gov.Endorsements())
	if tr == nil {
		// A cluster node does this when it is primary (Run): here it
		// would wait for a leader it cannot hear before it listens.
		s.ensureServiceInfo()
		s.ensureRecoveryShares()
	}
	svc, broker, err := attestation(cfg, id, eng, logger)
	if err != nil {
		return fail(err)
	}
	handler := httpapi.New(httpapi.Config{
		Attestation:     svc,
		Keys:            broker,
		App:             s.app,
		Engine:          eng,
		ServiceCertPEM:  serviceCertPEM,
		Logger:          logger.With(slog.String("component", "http")),
		MaxRequestBytes: cfg.MaxRequestBytes,
		PageSize:        cfg.PageSize,
		MaxBatch:        cfg.MaxBatch,
		Gov:             s.gov,
		CleanRoom:       cleanroom.New(eng, nil),
		CleanRoomIndex:  crIdx,
	})
	mux := http.NewServeMux()
	if tr != nil {
		mux.Handle("POST "+consensus.Path, tr)
	}
	s.nodeRoutes(mux)
	if s.network {
		mux.Handle("/node/join", s.routeWrites(http.HandlerFunc(s.serveJoin)))
	}
	mux.Handle("/", s.gateRecovering(s.routeWrites(handler)))
	s.srv = &http.Server{
		Handler:           mux,
		TLSConfig:         TLSConfig(nodeCert.Raw, id.NodeKey),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      httpapi.DefaultWaitTimeout + 30*time.Second,
		IdleTimeout:       2 * time.Minute,
		ConnContext:       httpapi.ConnContext,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	s.ln, err = net.Listen("tcp", cfg.ListenAddress)
	if err != nil {
		return fail(fmt.Errorf("listen: %w", err))
	}
	return s, nil
}

// attestation makes the node's attestation service and key broker. Tokens
// are signed by a key derived from the service key (attest.DeriveSigningKey),
// so nothing new is stored and every node of the service signs with the same
// key; its certificate, issued by the service key at each start, chains the
// JWKS to the service certificate. The issuer is https://HOST[:PORT] with
// HOST the first subject alternative name (or the listen host).
func attestation(cfg Config, id *node.Identity, eng *engine.Engine, logger *slog.Logger) (*attest.Service, *keyrelease.Broker, error) {
	key, err := attest.DeriveSigningKey(id.Service.Key)
	if err != nil {
		return nil, nil, err
	}
	certDER, err := attest.NewSigningCertificate(id.Service.Cert, id.Service.Key, &key.PublicKey, 365*24*time.Hour)
	if err != nil {
		return nil, nil, err
	}
	host, port, _ := net.SplitHostPort(cfg.ListenAddress)
	if len(cfg.SubjectAltNames) > 0 {
		host = cfg.SubjectAltNames[0]
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	issuer := "https://" + host
	if port != "" && port != "0" && port != "443" {
		issuer = "https://" + net.JoinHostPort(host, port)
	}
	svc, err := attest.New(attest.Config{
		Issuer:  issuer,
		Key:     key,
		CertDER: certDER,
		Policy:  attest.LedgerPolicy(eng),
		Logger:  logger.With(slog.String("component", "attest")),
	})
	if err != nil {
		return nil, nil, err
	}
	broker := keyrelease.New(eng, &attest.Verifier{Keys: svc.JWKS(), Issuer: issuer, Audience: issuer})
	return svc, broker, nil
}

// TLSConfig is the server's TLS configuration: the node certificate
// (endorsed by the service key) and key, TLS 1.2 or later, and client
// certificates requested but left to the application to check.
func TLSConfig(nodeCertDER []byte, key any) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{nodeCertDER}, PrivateKey: key}},
		ClientAuth:   tls.RequestClientCert,
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
	}
}

// genesis writes the first transaction when the ledger has none: user0
// as Administrator and Config.Members members (member0…), each with a
// signing certificate and an encryption key, making their
// certificates and keys first if they are missing. Every step is safe to
// repeat after a crash.
func (s *Server) genesis(fsys vfs.FS) error {
	if !s.app.NeedsGenesis() {
		return nil
	}
	user, err := ensureClientCert(fsys, s.files.User0Cert, s.files.User0Key, "user0")
	if err != nil {
		return err
	}
	g := app.Genesis{
		Users:                map[string][]app.Role{user: {app.RoleAdministrator}},
		Members:              map[string]string{},
		MemberEncryptionKeys: map[string]string{},
	}
	for i := range max(s.cfg.Members, 1) {
		certPath, keyPath, encPath, encPubPath := MemberFiles(s.files.Dir, i)
		member, err := ensureClientCert(fsys, certPath, keyPath, fmt.Sprintf("member%d", i))
		if err != nil {
			return err
		}
		memberPEM, err := fsys.ReadFile(certPath)
		if err != nil {
			return fmt.Errorf("genesis: %w", err)
		}
		encPub, err := ensureEncryptionKey(fsys, encPath, encPubPath)
		if err != nil {
			return err
		}
		g.Members[member] = string(memberPEM)
		g.MemberEncryptionKeys[member] = encPub
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id, err := s.app.WriteGenesis(ctx, g)
	if err != nil {
		return fmt.Errorf("genesis: %w", err)
	}
	s.log.Info("wrote the genesis transaction", slog.String("txid", id.String()), slog.String("user0", user), slog.Int("members", len(g.Members)))
	return nil
}

// ensureRecoveryShares writes the recovery shares if they are missing or
// stale (after genesis, say). A failure is logged, not fatal: the service
// runs, but cannot be recovered from its ledger until shares are written.
func (s *Server) ensureRecoveryShares() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wrote, id, err := s.gov.EnsureRecoveryShares(ctx)
	switch {
	case err != nil:
		s.log.Warn("recovery shares not written", slog.Any("error", err))
	case wrote:
		s.log.Info("wrote recovery shares", slog.String("txid", id.String()))
	}
}

// ensureClientCert returns the id of the certificate in certPath, making a
// new certificate and key first if certPath does not exist. The key is
// written before the certificate, so a certificate on disk always has its
// key.
func ensureClientCert(fsys vfs.FS, certPath, keyPath, cn string) (string, error) {
	if b, err := fsys.ReadFile(certPath); err == nil {
		c, err := identity.ParseCertPEM(b)
		if err != nil {
			return "", fmt.Errorf("%s: %w", certPath, err)
		}
		return identity.Fingerprint(c.Raw), nil
	}
	der, key, err := identity.NewClientCert(cn, 365*24*time.Hour)
	if err != nil {
		return "", fmt.Errorf("%s certificate: %w", cn, err)
	}
	keyPEM, err := identity.EncodeKeyPEM(key)
	if err != nil {
		return "", fmt.Errorf("%s key: %w", cn, err)
	}
	if err := vfs.WriteFileDurable(fsys, keyPath, keyPEM, 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", keyPath, err)
	}
	if err := vfs.WriteFileDurable(fsys, certPath, identity.EncodeCertPEM(der), 0o644); err != nil {
		return "", fmt.Errorf("write %s: %w", certPath, err)
	}
	return identity.Fingerprint(der), nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Files names the data directory's PEM files.
func (s *Server) Files() Files { return s.files }

// Run serves until ctx ends, then shuts down: it stops accepting, waits up
// to ShutdownTimeout for requests in flight, and closes the engine.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.ServeTLS(s.ln, "", "") }()
	if s.cfg.DebugAddress != "" {
		stop, err := s.serveDebug()
		if err != nil {
			return err
		}
		defer stop()
	}
	refreshCtx, stopRefresh := context.WithCancel(ctx)
	refreshDone := make(chan struct{})
	go func() { defer close(refreshDone); s.refreshJWKS(refreshCtx) }()
	genesisDone := make(chan struct{})
	if s.tr != nil {
		go func() { defer close(genesisDone); s.primaryDuties(refreshCtx) }()
	} else {
		close(genesisDone)
	}
	s.log.Info("serving", slog.String("addr", s.ln.Addr().String()), slog.String("node_id", s.eng.NodeID()))
	var serveErr error
	select {
	case err := <-errc:
		serveErr = fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
		s.log.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
		err := s.srv.Shutdown(sctx)
		cancel()
		if err != nil {
			serveErr = fmt.Errorf("shutdown: %w", err)
		}
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) && serveErr == nil {
			serveErr = fmt.Errorf("serve: %w", err)
		}
	}
	stopRefresh()
	<-refreshDone
	<-genesisDone
	if s.tr != nil {
		s.tr.Close()
		s.fwd.CloseIdleConnections()
	}
	if err := s.eng.Close(); err != nil {
		return errors.Join(serveErr, fmt.Errorf("close engine: %w", err))
	}
	if serveErr == nil {
		s.log.Info("stopped")
	}
	return serveErr
}

// serveDebug serves the profiler on the loopback debug address until the
// returned function is called.
func (s *Server) serveDebug() (func(), error) {
	ln, err := net.Listen("tcp", s.cfg.DebugAddress)
	if err != nil {
		return nil, fmt.Errorf("debug listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	s.log.Info("serving the profiler", slog.String("addr", ln.Addr().String()))
	return func() { srv.Close() }, nil
}
