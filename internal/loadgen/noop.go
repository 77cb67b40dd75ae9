package loadgen

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/client"
	"github.com/parleyhq/parley/internal/identity"
)

// noopBody is what the no-op handler answers: an ACL LedgerWriteResult.
var noopBody = []byte(`{"collectionId":"subledger:0"}` + "\n")

// Noop is an HTTPS server on loopback that does nothing: the baseline a
// ledger's throughput is compared with. It has the same kinds of
// certificates as a Parley node (a P-384 service identity, a node
// certificate it endorses, mutual TLS with a self-signed P-384 client
// certificate) and answers every request with 200 and a small JSON body,
// checking only the client certificate's fingerprint.
type Noop struct {
	srv      *http.Server
	endpoint string
	opts     client.Options
	done     chan error
}

// StartNoop starts a no-op server on 127.0.0.1 with a fresh service
// identity. Close stops it.
func StartNoop() (*Noop, error) {
	svc, err := identity.NewService("", time.Hour)
	if err != nil {
		return nil, fmt.Errorf("make service identity: %w", err)
	}
	_, nodeKey, err := identity.NewClientCert("node", time.Hour) // only its key is used
	if err != nil {
		return nil, fmt.Errorf("make node key: %w", err)
	}
	nodeDER, err := svc.EndorseNode(&nodeKey.PublicKey, []string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		return nil, fmt.Errorf("endorse node: %w", err)
	}
	userDER, userKey, err := identity.NewClientCert("bench", time.Hour)
	if err != nil {
		return nil, fmt.Errorf("make client certificate: %w", err)
	}
	userKeyPEM, err := identity.EncodeKeyPEM(userKey)
	if err != nil {
		return nil, fmt.Errorf("encode client key: %w", err)
	}
	want := sha256.Sum256(userDER)

	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, `{"error":{"code":"Unauthorized","message":"no client certificate"}}`, http.StatusUnauthorized)
			return
		}
		got := sha256.Sum256(r.TLS.PeerCertificates[0].Raw)
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			http.Error(w, `{"error":{"code":"Forbidden","message":"unknown client certificate"}}`, http.StatusForbidden)
			return
		}
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set(api.TransactionIDHeader, "2.1")
		w.Write(noopBody)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	n := &Noop{
		srv: &http.Server{
			Handler:           http.MaxBytesHandler(h, 1<<20),
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			ErrorLog:          log.New(io.Discard, "", 0),
			TLSConfig: &tls.Config{
				Certificates: []tls.Certificate{{Certificate: [][]byte{nodeDER}, PrivateKey: nodeKey}},
				ClientAuth:   tls.RequireAnyClientCert,
				MinVersion:   tls.VersionTLS12,
			},
		},
		endpoint: "https://" + ln.Addr().String(),
		opts: client.Options{
			CACertPEM: identity.EncodeCertPEM(svc.CertDER),
			CertPEM:   identity.EncodeCertPEM(userDER),
			KeyPEM:    userKeyPEM,
		},
		done: make(chan error, 1),
	}
	go func() { n.done <- n.srv.ServeTLS(ln, "", "") }()
	return n, nil
}

// Endpoint returns the server's https URL.
func (n *Noop) Endpoint() string { return n.endpoint }

// Options returns client options that trust the server and present the
// accepted client certificate; the caller adds its transport settings.
func (n *Noop) Options() client.Options { return n.opts }

// Close stops the server.
func (n *Noop) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := n.srv.Shutdown(ctx)
	if serr := <-n.done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
