// Package consensus carries raft messages between the nodes of a service
// over HTTPS with mutual TLS. Each node's client certificate is its node
// certificate, endorsed by the service certificate; the receiving side
// accepts a batch only from a peer whose certificate chains to the service
// certificate and whose node id (the hex SHA-256 of its public key) is that
// of a configured member, and only messages that peer claims to send.
//
// The wire format of POST [Path] is a sequence of protobuf-marshalled
// raftpb.Message values, each prefixed with its length as an unsigned
// varint. Each peer has one bounded queue and one sender goroutine, so
// messages to one peer leave in order; when a queue is full messages are
// dropped, which raft tolerates (it retries). Connections are HTTP/2 and
// kept alive.
package consensus

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
)

// Path is the HTTP path raft messages are posted to.
const Path = "/node/raft"

// Defaults and bounds.
const (
	// DefaultQueueSize is the number of messages queued per peer.
	DefaultQueueSize = 4096
	// MaxMessageSize bounds one encoded message.
	MaxMessageSize = 64 << 20
	// MaxBatchBytes bounds the body of one request.
	MaxBatchBytes = 128 << 20
	// maxBatchMessages bounds the messages a sender puts in one request.
	maxBatchMessages = 256
	// sendTimeout bounds one request.
	sendTimeout = 10 * time.Second
	// smallMessage is the size up to which Decode allocates a message's
	// buffer before reading it.
	smallMessage = 1 << 20
	// retryPause is how long a sender waits after a failed request.
	retryPause = 50 * time.Millisecond
	// verifiedFor is how long a verified client certificate chain is
	// trusted without verifying it again (never past its NotAfter).
	verifiedFor = time.Minute
	// maxVerified bounds the cache of verified certificates.
	maxVerified = 64
)

// Errors.
var (
	// ErrUnknownPeer is returned for a client certificate or a message
	// sender that is not a configured member.
	ErrUnknownPeer = errors.New("unknown peer")
)

// Receiver takes the raft messages that arrive for this node; an
// *engine.Engine is one. Receive must not block for long.
type Receiver interface {
	Receive(msgs []pb.Message)
}

// Peer is another node of the service.
type Peer struct {
	// ID is its raft id.
	ID uint64
	// Address is its host:port; the host must be among the subject
	// alternative names of its node certificate.
	Address string
	// NodeID is the hex SHA-256 of its public key (its SubjectPublicKeyInfo),
	// as in engine.NodeID.
	NodeID string
}

// Config configures a Transport.
type Config struct {
	// ID is this node's raft id.
	ID uint64
	// Peers are the other nodes; this node, if listed, is ignored.
	Peers []Peer
	// Certificate is this node's certificate and key, presented as the
	// client certificate.
	Certificate tls.Certificate
	// ServiceCert is the service certificate every node certificate
	// chains to.
	ServiceCert *x509.Certificate
	// QueueSize is the number of messages queued per peer
	// (DefaultQueueSize).
	QueueSize int
	Logger    *slog.Logger
}

// Transport sends raft messages to peers and receives theirs. It
// implements engine.Transport (Send) and http.Handler (for POST [Path]).
// It is safe for concurrent use.
type Transport struct {
	id       uint64
	logger   *slog.Logger
	roots    *x509.CertPool
	client   *http.Client
	httpTr   *http.Transport
	queueLen int
	mu       sync.RWMutex // guards peers and byNodeID
	peers    map[uint64]*peer
	byNodeID map[string]uint64
	receiver atomic.Pointer[receiverBox]
	// verified caches client certificates whose chain to the service
	// certificate was verified: SHA-256 of the DER leaf → when to verify
	// again. Verifying a P-384 chain costs about a millisecond, once per
	// raft request otherwise.
	verifiedMu    sync.Mutex
	verified      map[[sha256.Size]byte]time.Time
	verifications atomic.Uint64 // chain verifications done, for tests
	stop          chan struct{}
	ctx           context.Context // cancelled by Close, ending requests in flight
	cancel        context.CancelFunc
	wg            sync.WaitGroup
	once          sync.Once

	sent, dropped, received atomic.Uint64
}

type receiverBox struct{ r Receiver }

type peer struct {
	Peer
	url   string
	queue chan pb.Message
	gone  chan struct{} // closed when the peer is removed
}

// New starts a Transport with one sender goroutine per peer. Messages that
// arrive before SetReceiver are dropped. Close stops it.
func New(cfg Config) (*Transport, error) {
	if cfg.ServiceCert == nil {
		return nil, errors.New("consensus: ServiceCert is required")
	}
	if len(cfg.Certificate.Certificate) == 0 || cfg.Certificate.PrivateKey == nil {
		return nil, errors.New("consensus: Certificate is required")
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cfg.ServiceCert)
	httpTr := &http.Transport{
		TLSClientConfig: &tls.Config{
			Certificates: []tls.Certificate{cfg.Certificate},
			RootCAs:      roots,
			MinVersion:   tls.VersionTLS12,
		},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     2 * time.Minute,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 5 * time.Second,
	}
	t := &Transport{
		id:       cfg.ID,
		logger:   cfg.Logger,
		roots:    roots,
		httpTr:   httpTr,
		client:   &http.Client{Transport: httpTr, Timeout: sendTimeout},
		queueLen: cfg.QueueSize,
		peers:    make(map[uint64]*peer),
		byNodeID: make(map[string]uint64),
		verified: make(map[[sha256.Size]byte]time.Time),
		stop:     make(chan struct{}),
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	if err := t.SetPeers(cfg.Peers); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// checkPeers validates a peer list.
func checkPeers(self uint64, peers []Peer) error {
	seen := map[uint64]bool{}
	for _, p := range peers {
		if p.ID == self {
			continue
		}
		if p.ID == 0 {
			return errors.New("consensus: peer raft id 0")
		}
		if seen[p.ID] {
			return fmt.Errorf("consensus: peer %d listed twice", p.ID)
		}
		seen[p.ID] = true
		if _, _, err := net.SplitHostPort(p.Address); err != nil {
			return fmt.Errorf("consensus: peer %d address: %w", p.ID, err)
		}
		if b, err := hex.DecodeString(p.NodeID); err != nil || len(b) != sha256.Size {
			return fmt.Errorf("consensus: peer %d node id %q: want 64 hex digits", p.ID, p.NodeID)
		}
	}
	return nil
}

// SetPeers replaces the peers: new ones get a sender, removed ones lose
// theirs (with their queued messages), and a peer whose address or node id
// changed is replaced. This node, if listed, is ignored. On an invalid
// list nothing changes.
func (t *Transport) SetPeers(peers []Peer) error {
	if err := checkPeers(t.id, peers); err != nil {
		return err
	}
	select {
	case <-t.stop:
		return errors.New("consensus: transport closed")
	default:
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	want := map[uint64]Peer{}
	for _, p := range peers {
		if p.ID != t.id {
			want[p.ID] = p
		}
	}
	for id, old := range t.peers {
		if p, ok := want[id]; ok && p == old.Peer {
			delete(want, id)
			continue
		}
		close(old.gone)
		delete(t.peers, id)
	}
	for _, p := range want {
		np := &peer{Peer: p, url: "https://" + p.Address + Path, queue: make(chan pb.Message, t.queueLen), gone: make(chan struct{})}
		t.peers[p.ID] = np
		t.wg.Add(1)
		go t.sendLoop(np)
	}
	clear(t.byNodeID)
	for id, p := range t.peers {
		t.byNodeID[p.NodeID] = id
	}
	return nil
}

// Peers returns the current peers.
func (t *Transport) Peers() []Peer {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]Peer, 0, len(t.peers))
	for _, p := range t.peers {
		out = append(out, p.Peer)
	}
	return out
}

// SetReceiver sets where arriving messages go.
func (t *Transport) SetReceiver(r Receiver) { t.receiver.Store(&receiverBox{r}) }

// Send queues msgs for their peers without blocking, dropping those for
// unknown peers or full queues.
func (t *Transport) Send(msgs []pb.Message) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, m := range msgs {
		p := t.peers[m.To]
		if p == nil {
			t.dropped.Add(1)
			continue
		}
		select {
		case p.queue <- m:
		default:
			t.dropped.Add(1)
		}
	}
}

// Close stops the senders and waits for them; queued messages are dropped.
func (t *Transport) Close() {
	t.once.Do(func() {
		close(t.stop)
		t.cancel()
	})
	t.wg.Wait()
	t.httpTr.CloseIdleConnections()
}

// Stats are counters since New.
type Stats struct {
	Sent, Dropped, Received uint64
}

// Stats returns the message counters.
func (t *Transport) Stats() Stats {
	return Stats{Sent: t.sent.Load(), Dropped: t.dropped.Load(), Received: t.received.Load()}
}

func (t *Transport) sendLoop(p *peer) {
	defer t.wg.Done()
	var buf bytes.Buffer
	batch := make([]pb.Message, 0, maxBatchMessages)
	for {
		select {
		case <-t.stop:
			return
		case <-p.gone:
			return
		case m := <-p.queue:
			batch = append(batch[:0], m)
		}
		size := batch[0].Size()
	fill:
		for len(batch) < maxBatchMessages && size < MaxBatchBytes/2 {
			select {
			case m := <-p.queue:
				batch = append(batch, m)
				size += m.Size()
			default:
				break fill
			}
		}
		buf.Reset()
		if err := Encode(&buf, batch); err != nil {
			t.dropped.Add(uint64(len(batch)))
			t.logger.Warn("dropping raft messages: encode", slog.Uint64("peer", p.ID), slog.Any("err", err))
			continue
		}
		if err := t.post(t.ctx, p, buf.Bytes()); err != nil {
			t.dropped.Add(uint64(len(batch)))
			t.logger.Debug("dropping raft messages", slog.Uint64("peer", p.ID), slog.Int("count", len(batch)), slog.Any("err", err))
			// Pause so a peer that is down costs little: raft resends.
			timer := time.NewTimer(retryPause)
			select {
			case <-t.stop:
				timer.Stop()
				return
			case <-p.gone:
				timer.Stop()
				return
			case <-timer.C:
			}
			continue
		}
		t.sent.Add(uint64(len(batch)))
	}
}

func (t *Transport) post(ctx context.Context, p *peer, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := t.client.Do(req)
	if err != nil {
		return fmt.Errorf("post to %s: %w", p.Address, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("post to %s: status %s", p.Address, resp.Status)
	}
	// The server must be the peer we meant: its certificate holds the
	// peer's key.
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 {
		return fmt.Errorf("post to %s: no server certificate", p.Address)
	}
	if !sameID(nodeIDOf(resp.TLS.PeerCertificates[0]), p.NodeID) {
		return fmt.Errorf("post to %s: %w: server is not node %d", p.Address, ErrUnknownPeer, p.ID)
	}
	return nil
}

// ServeHTTP receives a batch of raft messages (POST [Path]) from an
// authenticated peer and hands them to the receiver. It answers 204 on
// success.
func (t *Transport) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	from, err := t.Authenticate(r.TLS)
	if err != nil {
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	msgs, err := Decode(http.MaxBytesReader(w, r.Body, MaxBatchBytes))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for i := range msgs {
		if msgs[i].From != from || msgs[i].To != t.id {
			http.Error(w, fmt.Sprintf("message from %d to %d on a connection from node %d to node %d", msgs[i].From, msgs[i].To, from, t.id), http.StatusForbidden)
			return
		}
	}
	t.received.Add(uint64(len(msgs)))
	if box := t.receiver.Load(); box != nil && len(msgs) > 0 {
		box.r.Receive(msgs)
	}
	w.WriteHeader(http.StatusNoContent)
}

// Authenticate returns the raft id of the peer that presented the client
// certificate of cs: one that chains to the service certificate and holds
// the key of a configured peer.
func (t *Transport) Authenticate(cs *tls.ConnectionState) (uint64, error) {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return 0, errors.New("authenticate peer: no client certificate")
	}
	leaf := cs.PeerCertificates[0]
	if err := t.verifyChain(leaf, cs.PeerCertificates[1:]); err != nil {
		return 0, fmt.Errorf("authenticate peer: %w", err)
	}
	nid := nodeIDOf(leaf)
	t.mu.RLock()
	defer t.mu.RUnlock()
	for known, id := range t.byNodeID {
		if sameID(known, nid) {
			return id, nil
		}
	}
	return 0, fmt.Errorf("authenticate peer: node %s: %w", nid, ErrUnknownPeer)
}

// verifyChain checks that leaf chains to the service certificate for
// client authentication, remembering a success for verifiedFor (or until
// the leaf expires, if sooner) so that the requests of one peer do not each
// pay for the signature check. Membership is not cached: Authenticate
// checks it every time.
func (t *Transport) verifyChain(leaf *x509.Certificate, intermediates []*x509.Certificate) error {
	key := sha256.Sum256(leaf.Raw)
	now := time.Now()
	t.verifiedMu.Lock()
	until, ok := t.verified[key]
	t.verifiedMu.Unlock()
	if ok && now.Before(until) {
		return nil
	}
	t.verifications.Add(1)
	inter := x509.NewCertPool()
	for _, c := range intermediates {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: t.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, CurrentTime: now}); err != nil {
		return err
	}
	until = now.Add(verifiedFor)
	if leaf.NotAfter.Before(until) {
		until = leaf.NotAfter
	}
	t.verifiedMu.Lock()
	if len(t.verified) >= maxVerified {
		clear(t.verified)
	}
	t.verified[key] = until
	t.verifiedMu.Unlock()
	return nil
}

func nodeIDOf(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

func sameID(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// Encode writes msgs to w, each as an unsigned-varint length and the
// protobuf encoding.
func Encode(w io.Writer, msgs []pb.Message) error {
	var lenBuf [binary.MaxVarintLen64]byte
	var b []byte
	for i := range msgs {
		n := msgs[i].Size()
		if n > MaxMessageSize {
			return fmt.Errorf("encode raft message: %d bytes, at most %d", n, MaxMessageSize)
		}
		if cap(b) < n {
			b = make([]byte, n)
		}
		b = b[:n]
		if _, err := msgs[i].MarshalTo(b); err != nil {
			return fmt.Errorf("encode raft message: %w", err)
		}
		k := binary.PutUvarint(lenBuf[:], uint64(n))
		if _, err := w.Write(lenBuf[:k]); err != nil {
			return fmt.Errorf("encode raft message: %w", err)
		}
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("encode raft message: %w", err)
		}
	}
	return nil
}

// Decode reads messages written by Encode until the end of r.
func Decode(r io.Reader) ([]pb.Message, error) {
	br := bufio.NewReader(r)
	var msgs []pb.Message
	var buf []byte
	for {
		n, err := binary.ReadUvarint(br)
		if errors.Is(err, io.EOF) {
			return msgs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("decode raft message length: %w", err)
		}
		if n > MaxMessageSize {
			return nil, fmt.Errorf("decode raft message: %d bytes, at most %d", n, MaxMessageSize)
		}
		// Unmarshal copies what it keeps, so one buffer serves every
		// message. Past smallMessage, read rather than allocate n bytes up
		// front: n is the sender's word.
		if n <= smallMessage {
			if uint64(cap(buf)) < n {
				buf = make([]byte, n)
			}
			buf = buf[:n]
			if _, err := io.ReadFull(br, buf); err != nil {
				return nil, fmt.Errorf("decode raft message: %w", err)
			}
		} else {
			b, err := io.ReadAll(io.LimitReader(br, int64(n)))
			if err != nil {
				return nil, fmt.Errorf("decode raft message: %w", err)
			}
			if uint64(len(b)) != n {
				return nil, fmt.Errorf("decode raft message: %w", io.ErrUnexpectedEOF)
			}
			buf = b
		}
		var m pb.Message
		if err := m.Unmarshal(buf); err != nil {
			return nil, fmt.Errorf("decode raft message: %w", err)
		}
		msgs = append(msgs, m)
	}
}
