package server

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/gov"
	"github.com/parleyhq/parley/internal/identity"
	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/node"
	"github.com/parleyhq/parley/internal/storage"
	"github.com/parleyhq/parley/internal/vfs"
)

// RecoveryFile is the file of a recovered node's data directory that says
// what it recovered (JSON recoveryState). Its presence makes the node open
// its ledger with the private domain up to PreviousLastSeqno closed until
// the members' shares restore it (which the ledger then records, so a
// restart needs no shares again).
const RecoveryFile = "recovery.json"

// endorsementValidity is how long the endorsement of a previous service
// identity is valid (receipt verification does not check validity periods).
const endorsementValidity = 100 * 365 * 24 * time.Hour

// RecoveryConfig starts a new service from an old service's ledger
// (disaster recovery; `parley node --recover`). DataDir must be new, or a
// directory an earlier recovery start made.
type RecoveryConfig struct {
	// PreviousLedgerDir is the old service's ledger directory (the ledger/
	// folder of one of its nodes); it is copied, not changed.
	PreviousLedgerDir string `json:"previousLedgerDir"`
	// PreviousServiceCert, optional, is the old service certificate's PEM
	// file. Without it the certificate the old ledger records
	// (gov.ServiceInfoMap) is endorsed.
	PreviousServiceCert string `json:"previousServiceCert,omitempty"`
}

// recoveryState is RecoveryFile's content.
type recoveryState struct {
	// PreviousLastSeqno is the last seqno recovered (a signature).
	PreviousLastSeqno uint64 `json:"previousLastSeqno"`
	// PreviousServiceCert is the old service certificate, when given.
	PreviousServiceCert string `json:"previousServiceCert,omitempty"`
	// LastSignerCert is the node certificate of the signature at
	// PreviousLastSeqno: the previous service certificate must have
	// issued it.
	LastSignerCert string `json:"lastSignerCert"`
}

// prepareRecovery makes a recovered node's data directory: a durable copy
// of the old ledger cut after its last signature, RecoveryFile, and then a
// new service and node identity (whose service certificate, written last,
// marks the directory complete). A directory an interrupted earlier run
// left without that certificate is made again; one with a complete node
// must already be a recovered one.
func prepareRecovery(fsys vfs.FS, dir string, rc *RecoveryConfig, sans []string, logger *slog.Logger) error {
	var prevCert string
	if rc.PreviousServiceCert != "" {
		b, err := os.ReadFile(rc.PreviousServiceCert)
		if err != nil {
			return fmt.Errorf("recover: previous service certificate: %w", err)
		}
		if _, err := identity.ParseCertPEM(b); err != nil {
			return fmt.Errorf("recover: previous service certificate %s: %w", rc.PreviousServiceCert, err)
		}
		prevCert = string(b)
	}
	if node.Exists(fsys, dir) {
		rs, err := loadRecoveryState(fsys, dir)
		if err != nil {
			return err
		}
		if rs == nil {
			return fmt.Errorf("recover into %s: it already holds a service that is not a recovered one", dir)
		}
		if prevCert != "" && prevCert != rs.PreviousServiceCert {
			// A certificate given again (say, after a wrong one) replaces
			// the one remembered; it matters until the endorsement is
			// recorded.
			rs.PreviousServiceCert = prevCert
			if err := writeRecoveryState(fsys, dir, rs); err != nil {
				return err
			}
		}
		logger.Info("resuming a recovered node", slog.String("dir", dir))
		return nil
	}
	if rc.PreviousLedgerDir == "" {
		return errors.New("recover: the previous ledger directory is required")
	}
	if err := vfs.MkdirAllDurable(fsys, dir, 0o700); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	ledgerDir := filepath.Join(dir, node.LedgerDir)
	if err := os.RemoveAll(ledgerDir); err != nil {
		return fmt.Errorf("recover: clear %s: %w", ledgerDir, err)
	}
	if err := copyLedger(fsys, rc.PreviousLedgerDir, ledgerDir); err != nil {
		return err
	}
	last, err := engine.TruncateToLastSignature(fsys, ledgerDir, logger)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	signer, err := signerCert(fsys, ledgerDir, last)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if err := writeRecoveryState(fsys, dir, &recoveryState{PreviousLastSeqno: last, PreviousServiceCert: prevCert, LastSignerCert: signer}); err != nil {
		return err
	}
	if _, err := node.Init(fsys, dir, node.InitOptions{SANs: sans}); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	logger.Info("recovering a service from an old ledger: new service identity made",
		slog.String("previous_ledger", rc.PreviousLedgerDir), slog.Uint64("last_seqno", last), slog.String("dir", dir))
	return nil
}

// copyLedger copies the chunk files and raft state of src into dst, each
// durably.
func copyLedger(fsys vfs.FS, src, dst string) error {
	names, err := fsys.ReadDir(src)
	if err != nil {
		return fmt.Errorf("recover: list %s: %w", src, err)
	}
	if err := vfs.MkdirAllDurable(fsys, dst, 0o700); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	copied := 0
	for _, name := range names {
		if strings.HasPrefix(name, ".") {
			continue
		}
		if isDir(filepath.Join(src, name)) {
			continue
		}
		b, err := fsys.ReadFile(filepath.Join(src, name))
		if err != nil {
			return fmt.Errorf("recover: read %s: %w", name, err)
		}
		if err := vfs.WriteFileDurable(fsys, filepath.Join(dst, name), b, 0o600); err != nil {
			return fmt.Errorf("recover: copy %s: %w", name, err)
		}
		copied++
	}
	if copied == 0 {
		return fmt.Errorf("recover: %s holds no ledger files", src)
	}
	return nil
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// signerCert returns the node certificate of the signature transaction at
// seqno.
func signerCert(fsys vfs.FS, dir string, seqno uint64) (string, error) {
	log, err := storage.Open(dir, storage.Options{FS: fsys})
	if err != nil {
		return "", fmt.Errorf("open ledger: %w", err)
	}
	defer log.Close()
	ent, err := log.Entry(seqno)
	if err != nil {
		return "", fmt.Errorf("read signature %d: %w", seqno, err)
	}
	p, err := ledger.Parse(ent.Data)
	if err != nil {
		return "", fmt.Errorf("signature %d: %w", seqno, err)
	}
	var ws kv.WriteSet
	if err := ws.UnmarshalBinary(p.Public); err != nil {
		return "", fmt.Errorf("signature %d: %w", seqno, err)
	}
	for _, m := range ws.Maps {
		for _, w := range m.Writes {
			if m.Map == ledger.SignaturesMap && w.Key == ledger.SignatureKey {
				s, err := ledger.ParseSignature(w.Value)
				if err != nil {
					return "", fmt.Errorf("signature %d: %w", seqno, err)
				}
				return s.Cert, nil
			}
		}
	}
	return "", fmt.Errorf("entry %d is not a signature transaction", seqno)
}

func writeRecoveryState(fsys vfs.FS, dir string, rs *recoveryState) error {
	b, err := json.MarshalIndent(rs, "", "  ")
	if err != nil {
		return err
	}
	if err := vfs.WriteFileDurable(fsys, filepath.Join(dir, RecoveryFile), b, 0o644); err != nil {
		return fmt.Errorf("recover: write %s: %w", RecoveryFile, err)
	}
	return nil
}

// loadRecoveryState reads RecoveryFile; nil when the node is not a
// recovered one.
func loadRecoveryState(fsys vfs.FS, dir string) (*recoveryState, error) {
	b, err := fsys.ReadFile(filepath.Join(dir, RecoveryFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", RecoveryFile, err)
	}
	var rs recoveryState
	if err := json.Unmarshal(b, &rs); err != nil || rs.PreviousLastSeqno == 0 {
		return nil, fmt.Errorf("%s: malformed", RecoveryFile)
	}
	return &rs, nil
}

// recordRecovery writes, once, the new service certificate and its
// endorsement of the previous identity on the recovered ledger.
func (s *Server) recordRecovery(rs *recoveryState, svc *identity.Service) error {
	for _, p := range s.gov.PreviousIdentities() {
		if p.LastSeqno == rs.PreviousLastSeqno {
			return nil // recorded at an earlier start
		}
	}
	prevPEM := rs.PreviousServiceCert
	if prevPEM == "" {
		prevPEM = s.gov.ServiceInfo().Cert
	}
	if prevPEM == "" {
		return errors.New("recover: the old ledger does not record its service certificate; give it with --previous-service-cert")
	}
	prev, err := identity.ParseCertPEM([]byte(prevPEM))
	if err != nil {
		return fmt.Errorf("recover: previous service certificate: %w", err)
	}
	signer, err := identity.ParseCertPEM([]byte(rs.LastSignerCert))
	if err != nil {
		return fmt.Errorf("recover: last signer's certificate: %w", err)
	}
	if err := signer.CheckSignatureFrom(prev); err != nil {
		return fmt.Errorf("recover: the old ledger's last signature is by a node the given previous service certificate did not endorse: %w", err)
	}
	pub, ok := prev.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return errors.New("recover: previous service key is not ECDSA")
	}
	der, err := svc.EndorseService(pub, endorsementValidity)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, id, err := s.gov.RecordRecovery(ctx, s.serviceCertPEM, gov.PreviousIdentity{
		Cert:        prevPEM,
		Endorsement: string(identity.EncodeCertPEM(der)),
		LastSeqno:   rs.PreviousLastSeqno,
		EndorsedBy:  string(s.serviceCertPEM),
	})
	if err != nil {
		return err
	}
	s.log.Info("recorded the previous service identity and its endorsement", slog.String("txid", id.String()), slog.Uint64("previous_last_seqno", rs.PreviousLastSeqno))
	return nil
}

// ensureServiceInfo records the service certificate on the ledger, so
// that a service recovering this ledger can endorse it.
func (s *Server) ensureServiceInfo() {
	if !s.eng.PrivateOpen() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.gov.EnsureServiceInfo(ctx, s.serviceCertPEM); err != nil {
		s.log.Warn("service certificate not recorded on the ledger", slog.Any("error", err))
	}
}

// serviceStatus is the service's status as /node/network reports it.
func (s *Server) serviceStatus() string {
	switch {
	case !s.eng.PrivateOpen():
		return gov.ServiceRecovering
	case s.app.NeedsGenesis():
		return "Opening"
	}
	return gov.ServiceOpen
}

// gateRecovering answers 503 ServiceRecovering, while the private state is
// closed, every request that needs it: the application's, clean rooms',
// attestation and key release. Governance, /node and the service's public
// endpoints stay served.
func (s *Server) gateRecovering(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.eng.PrivateOpen() || !needsPrivate(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		writeError(w, http.StatusServiceUnavailable, "ServiceRecovering",
			"the service is recovering: its private state is closed until a threshold of members submit their recovery shares (POST /gov/recovery/share)")
	})
}

func needsPrivate(path string) bool {
	if strings.HasPrefix(path, "/app/governance/") {
		return false
	}
	for _, p := range []string{"/app/", "/cleanroom/", "/attest/"} {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}
