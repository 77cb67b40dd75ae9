package engine

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/merkle"
	"github.com/parleyhq/parley/internal/storage"
	"github.com/parleyhq/parley/internal/vfs"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// Defaults for [Config].
const (
	DefaultSignatureInterval = 10 * time.Millisecond
	DefaultSignatureTxCount  = 1000
	DefaultTickInterval      = 50 * time.Millisecond
	// MaxTxSize bounds the encoded write set of one transaction.
	MaxTxSize = 16 << 20
)

// Errors returned by the engine.
var (
	// ErrClosed is returned by calls on a closed engine.
	ErrClosed = errors.New("engine closed")
	// ErrNotLeader is returned by Commit on a node that is not the primary.
	ErrNotLeader = errors.New("not the primary")
	// ErrNotCommitted is returned by Receipt for a transaction that is not
	// (yet) committed.
	ErrNotCommitted = errors.New("transaction not committed")
	// ErrUnknownTx is returned for a transaction id this node has no entry for.
	ErrUnknownTx = errors.New("unknown transaction")
	// ErrSignatureTx is returned by Receipt for a signature transaction:
	// receipts are for what signatures cover, as in ACL.
	ErrSignatureTx = errors.New("no receipt for a signature transaction")
	// ErrTooLarge is returned by Commit for a transaction over MaxTxSize.
	ErrTooLarge = errors.New("transaction too large")
	// ErrInvalid is returned for a transaction a view change discarded.
	ErrInvalid = errors.New("transaction invalidated by a view change")
)

// Config configures an engine. Zero values take the defaults above.
type Config struct {
	// Dir is the ledger directory (chunk files and raft state).
	Dir string
	// FS is the file system, vfs.OS{} by default.
	FS vfs.FS
	// Secret is the ledger secret that seals private write sets from seqno
	// 1, unless Secrets is set.
	Secret *ledger.Secret
	// Secrets, when set, are the ledger secrets by first seqno (see
	// secrets.go). A first From above 1 opens a recovered ledger with the
	// private domain before it closed (see Restore).
	Secrets []Epoch
	// RecoveredUpTo is, for a service that recovered an earlier service's
	// ledger, the last seqno of that ledger. Its raft membership changes
	// were the earlier service's: they are not folded into this service's
	// membership and are served to other nodes as ordinary entries.
	RecoveredUpTo uint64
	// NodeKey signs the Merkle root in signature transactions.
	NodeKey *ecdsa.PrivateKey
	// NodeCertPEM is the node certificate, endorsed by the service key; it
	// goes into signature transactions and receipts.
	NodeCertPEM []byte
	// ServiceEndorsements are the certificates, oldest first, by which
	// earlier service identities endorse the current one (after recovery).
	ServiceEndorsements []string
	// SignatureInterval is the longest a transaction waits for a signature.
	SignatureInterval time.Duration
	// SignatureTxCount is the most transactions between two signatures.
	SignatureTxCount int
	// ChunkSize is the size at which a ledger chunk is completed (at the next
	// signature); storage's default when zero.
	ChunkSize int64
	// TickInterval is raft's tick.
	TickInterval time.Duration
	// RaftID is this node's raft id, 1 when zero.
	RaftID uint64
	// Voters are the raft ids of a new service's voting nodes, this one
	// included; just RaftID when empty (a single voter, which elects itself
	// at once). Every node of a new service MUST start with the same list.
	// It is the membership before the first entry of the log: membership
	// changes in the log (see AddVoter) apply on top of it.
	Voters []uint64
	// Joining marks a node that joined an existing service: it is not
	// among Voters and takes part in raft only once a membership change
	// in the log adds it. Voters must then be the service's Voters.
	Joining bool
	// Transport carries raft messages to the other nodes; required with
	// more than one voter. Messages from them come in through Receive.
	Transport Transport
	Logger    *slog.Logger
	// UnsafeTruncateCorruptTail lets Open cut a damaged tail of the open
	// chunk that is not a plain torn write (see storage.Options). Without it
	// a ledger that does not check out is never opened for writing. It can
	// lose data; it is for an operator who has read the error.
	UnsafeTruncateCorruptTail bool
	// Observer, when set, sees every transaction enter and leave the log.
	Observer Observer
	// SnapshotTxInterval is the least number of seqnos between two
	// snapshots (snapshot.go): one is taken at the first signature that
	// many seqnos after the previous one, and written once committed.
	// 0 means DefaultSnapshotTxInterval; negative turns snapshots off.
	SnapshotTxInterval int
	// SnapshotDir holds the snapshot files; Dir/snapshots when empty.
	SnapshotDir string
	// testOnlyNow overrides time.Now in tests.
	testOnlyNow func() time.Time
	// testOnlySkipSync makes the append thread skip its fsync, so the
	// power-loss test can show that it would notice.
	testOnlySkipSync bool
}

// Transport sends raft messages to other nodes. Send must not block for
// long (queue, drop on overload: raft retries) and must not call back into
// the engine; the receiving side hands the messages to its engine's Receive.
type Transport interface {
	Send(msgs []pb.Message)
}

// Observer keeps a derived index (by collection, by tag, …) in step with
// the log. Its methods are called from the engine's sequencer goroutine, in
// log order, and must be quick and must not call back into the engine's
// Commit. Replaying the ledger at Open calls Applied for every entry, so an
// index built by an Observer is rebuilt from the files.
type Observer interface {
	// Applied is called for each transaction as it enters the log (Pending),
	// and for raft's no-op entries; not for signature transactions.
	// ws holds the public and private writes; it must not be modified.
	Applied(id ledger.TxID, kind ledger.Kind, ws *kv.WriteSet)
	// RolledBack is called when every transaction after seqno left the log.
	RolledBack(seqno uint64)
}

// Status is what a node knows of a transaction.
type Status int

//go:generate stringer -type Status
const (
	StatusUnknown Status = iota
	StatusPending
	StatusCommitted
	StatusInvalid
)

func (s Status) String() string {
	switch s {
	case StatusPending:
		return "Pending"
	case StatusCommitted:
		return "Committed"
	case StatusInvalid:
		return "Invalid"
	default:
		return "Unknown"
	}
}

// CommitOptions are per-transaction options.
type CommitOptions struct {
	// Claims is the application claims digest bound into the leaf (zero for
	// none).
	Claims [32]byte
}

// Engine is one node's ledger. It is safe for concurrent use.
type Engine struct {
	cfg      Config
	logger   *slog.Logger
	store    *kv.Store
	log      *storage.Log
	rlog     *raftLog
	rn       *raft.RawNode
	nodeID   string
	nodeCert string

	submit    chan *request
	appendc   chan pb.Message   // to the append thread
	stepc     chan []pb.Message // from the append thread
	appendErr chan error        // the append thread's fatal error
	recvc     chan []pb.Message // from other nodes, through Receive
	stop      chan struct{}
	done      chan struct{}
	runErr    error

	// mu guards what readers share with the sequencer.
	mu        sync.RWMutex
	tree      merkle.Tree
	sigs      []uint64 // seqnos of signature transactions, ascending
	terms     []termStart
	lastIndex uint64
	view      uint64 // current raft term
	leader    bool
	lead      uint64 // raft id of the leader this node knows, 0 if none
	sigCache  map[uint64]*ledger.Signature
	// unwritten holds the payloads of entries in the log but not yet handed
	// to the ledger files (held for a signature, or queued for the append
	// thread), so that reads see every entry Status reports.
	unwritten map[uint64][]byte

	committed  atomic.Uint64 // seqno of the last committed signature
	durable    atomic.Uint64 // last index fsynced by the append thread
	commitMu   sync.Mutex
	commitWake chan struct{} // closed and replaced when committed advances
	closeOnce  sync.Once
	metrics    Metrics
	// keys are the ledger secrets by seqno (secrets.go), guarded by mu.
	keys secretState

	// Membership (membership.go).
	confc         chan *confRequest
	transferc     chan uint64
	members       pb.ConfState      // guarded by mu
	progress      map[uint64]uint64 // guarded by mu; the primary's view
	replayedConfs []replayedConf    // membership changes seen by replay
	lastConfIndex atomic.Uint64     // seqno of the last membership change in the log

	// Snapshots (snapshot.go, snapshot_run.go).
	snapDir     string
	snapc       chan *capturedSnap // to the snapshot writer
	snapDone    chan struct{}      // closed when the writer is done
	pendingSnap *capturedSnap      // guarded by mu: captured, not yet committed
	captureAt   *captureReq        // sequencer: a capture to take once mu is released
	snapLast    uint64             // guarded by mu: seqno of the last capture
	snapWritten uint64             // guarded by mu: seqno of the last capture handed to the writer
	confHist    []confAt           // guarded by mu: membership by seqno
	snapBase    atomic.Uint64      // the snapshot this node's ledger starts after, 0 if none
	openSnaps   []snapMeta         // snapshot files found by Open
	recvSnap    *snapshot          // sequencer: the last MsgSnap checked
	snapSent    map[uint64]time.Time
}

type replayedConf struct {
	index uint64
	cc    ConfChange
}

// termStart records the first index of each term in the log, so the term of
// any index is a binary search away.
type termStart struct{ term, index uint64 }

type request struct {
	tx      *kv.Tx
	rotate  *ledger.Secret   // the secret this rotation introduces
	restore *restoreOp       // set for the transaction that restores private state
	ws      *kv.WriteSet     // tx's writes, for the Observer
	prep    *ledger.Prepared // the payload, laid out by the submitter
	reply   chan result
}

type result struct {
	id  ledger.TxID
	err error
}

// Open replays the ledger in cfg.Dir into memory and starts the engine.
func Open(cfg Config) (*Engine, error) {
	if cfg.NodeKey == nil || len(cfg.NodeCertPEM) == 0 {
		return nil, errors.New("engine: NodeKey and NodeCertPEM are required")
	}
	if cfg.FS == nil {
		cfg.FS = vfs.OS{}
	}
	if cfg.SignatureInterval <= 0 {
		cfg.SignatureInterval = DefaultSignatureInterval
	}
	if cfg.SignatureTxCount <= 0 {
		cfg.SignatureTxCount = DefaultSignatureTxCount
	}
	if cfg.TickInterval <= 0 {
		cfg.TickInterval = DefaultTickInterval
	}
	if cfg.RaftID == 0 {
		cfg.RaftID = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.testOnlyNow == nil {
		cfg.testOnlyNow = time.Now
	}
	if cfg.SnapshotTxInterval == 0 {
		cfg.SnapshotTxInterval = DefaultSnapshotTxInterval
	}
	if cfg.SnapshotDir == "" {
		cfg.SnapshotDir = filepath.Join(cfg.Dir, SnapshotDirName)
	}
	voters := cfg.Voters
	if len(voters) == 0 {
		voters = []uint64{cfg.RaftID}
	}
	if !cfg.Joining && !slices.Contains(voters, cfg.RaftID) {
		return nil, fmt.Errorf("engine: raft id %d is not among the voters %v", cfg.RaftID, voters)
	}
	if cfg.Joining && len(cfg.Voters) == 0 {
		return nil, errors.New("engine: a joining node needs the service's Voters")
	}
	if (len(voters) > 1 || cfg.Joining) && cfg.Transport == nil {
		return nil, errors.New("engine: a Transport is required with more than one voter")
	}
	nodeID, err := nodeIDFromCert(cfg.NodeCertPEM, &cfg.NodeKey.PublicKey)
	if err != nil {
		return nil, err
	}
	log, err := storage.Open(cfg.Dir, storage.Options{FS: cfg.FS, ChunkSize: cfg.ChunkSize, Logger: cfg.Logger, AllowTruncateCorruption: cfg.UnsafeTruncateCorruptTail})
	if err != nil {
		return nil, fmt.Errorf("open ledger: %w", err)
	}
	e := &Engine{
		cfg:        cfg,
		logger:     cfg.Logger,
		store:      kv.NewStore(),
		log:        log,
		nodeID:     nodeID,
		nodeCert:   string(cfg.NodeCertPEM),
		submit:     make(chan *request, 16384),
		appendc:    make(chan pb.Message, 256),
		stepc:      make(chan []pb.Message, 1),
		appendErr:  make(chan error, 1),
		recvc:      make(chan []pb.Message, 256),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
		sigCache:   make(map[uint64]*ledger.Signature),
		unwritten:  make(map[uint64][]byte),
		commitWake: make(chan struct{}),
		confc:      make(chan *confRequest),
		transferc:  make(chan uint64, 1),
		snapDir:    cfg.SnapshotDir,
		snapc:      make(chan *capturedSnap, 1),
		snapDone:   make(chan struct{}),
		snapSent:   make(map[uint64]time.Time),
	}
	if err := e.initSecrets(&cfg); err != nil {
		log.Close()
		return nil, err
	}
	from, err := e.openSnapshot()
	if err != nil {
		log.Close()
		return nil, err
	}
	if err := e.replay(from + 1); err != nil {
		log.Close()
		return nil, err
	}
	hs := log.HardState()
	// A snapshot is of committed entries, whatever raft_state last saved.
	for _, m := range e.openSnaps {
		hs.Commit = max(hs.Commit, m.index)
	}
	// The membership is the initial one (or the snapshot's) with every
	// change raft knows to be committed; raft hands those after hs.Commit
	// back when they commit.
	cs := pb.ConfState{Voters: slices.Sorted(slices.Values(voters))}
	if from > 0 {
		cs = e.confAtLocked(from).cs
	}
	for _, c := range e.replayedConfs {
		if c.index > cfg.RecoveredUpTo && c.index <= hs.Commit {
			cs = foldConf(cs, c.cc)
			e.noteConfLocked(c.index, cs)
		}
	}
	e.replayedConfs = nil
	e.members = cs
	e.rlog = &raftLog{
		log:       log,
		hs:        hs,
		cs:        cs,
		tailFirst: log.LastIndex() + 1,
		recovered: cfg.RecoveredUpTo,
		snaps:     e.openSnaps,
		fsys:      cfg.FS,
		snapDir:   e.snapDir,
	}
	rn, err := raft.NewRawNode(&raft.Config{
		ID:                 cfg.RaftID,
		ElectionTick:       10,
		HeartbeatTick:      1,
		Storage:            e.rlog,
		Applied:            hs.Commit,
		AsyncStorageWrites: true,
		MaxSizePerMsg:      4 << 20,
		MaxInflightMsgs:    256,
		CheckQuorum:        true,
		PreVote:            true,
		Logger:             raftLogger{cfg.Logger},
	})
	if err != nil {
		log.Close()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	e.rn = rn
	e.view = hs.Term
	go e.snapshotWriter()
	go e.run()
	return e, nil
}

func nodeIDFromCert(certPEM []byte, pub *ecdsa.PublicKey) (string, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return "", errors.New("engine: node certificate is not a PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", fmt.Errorf("engine: parse node certificate: %w", err)
	}
	if !pub.Equal(cert.PublicKey) {
		return "", errors.New("engine: node certificate does not hold the node key")
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return fmt.Sprintf("%x", sum), nil
}

// Close stops the engine, syncs and closes the ledger. Transactions in flight
// fail with ErrClosed.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() { close(e.stop) })
	<-e.done
	<-e.snapDone
	err := e.log.Close()
	if e.runErr != nil {
		return e.runErr
	}
	return err
}

// Receive hands raft messages from other nodes to the engine. It drops them
// when the engine is closed or too far behind (raft retries).
func (e *Engine) Receive(msgs []pb.Message) {
	select {
	case e.recvc <- msgs:
	case <-e.done:
	default:
		e.logger.Debug("dropping raft messages: receive queue full", slog.Int("count", len(msgs)))
	}
}

// NodeID is the hex SHA-256 of this node's public key.
func (e *Engine) NodeID() string { return e.nodeID }

// Begin starts a transaction over the current state.
func (e *Engine) Begin() *kv.Tx { return e.store.Begin() }

// Commit sequences tx and returns its id once it is in the log (Pending).
// A transaction that read stale state fails with an error wrapping
// kv.ErrConflict; the caller may run it again. A read-only transaction is
// not sequenced: Commit returns the id of the last applied transaction.
func (e *Engine) Commit(ctx context.Context, tx *kv.Tx, opts CommitOptions) (ledger.TxID, error) {
	return e.commit(ctx, tx, opts, nil)
}

func (e *Engine) commit(ctx context.Context, tx *kv.Tx, opts CommitOptions, restore *restoreOp) (ledger.TxID, error) {
	if err := tx.Err(); err != nil {
		return ledger.TxID{}, err
	}
	if tx.ReadOnly() {
		return e.Current(), nil
	}
	// Encode the write sets into the payload here, in the caller's
	// goroutine: only what depends on the transaction id is left to the
	// sequencer.
	ws := tx.WriteSet()
	pub, priv := ws.Split()
	rotate, err := e.checkPrivate(priv, restore != nil)
	if err != nil {
		return ledger.TxID{}, err
	}
	appendPrivate := func(b []byte) ([]byte, error) { return b, nil }
	if !priv.Empty() {
		appendPrivate = priv.AppendBinary
	}
	prep, err := ledger.Prepare(ledger.KindTx, opts.Claims, sizeHint(ws), pub.AppendBinary, appendPrivate)
	if err != nil {
		return ledger.TxID{}, err
	}
	if prep.Size() > MaxTxSize {
		return ledger.TxID{}, fmt.Errorf("%w: %d bytes", ErrTooLarge, prep.Size())
	}
	req := &request{tx: tx, ws: ws, prep: prep, rotate: rotate, restore: restore, reply: make(chan result, 1)}
	select {
	case e.submit <- req:
	case <-e.stop:
		return ledger.TxID{}, ErrClosed
	case <-ctx.Done():
		return ledger.TxID{}, ctx.Err()
	}
	select {
	case r := <-req.reply:
		return r.id, r.err
	case <-e.done:
		// The sequencer may have answered just before stopping.
		select {
		case r := <-req.reply:
			return r.id, r.err
		default:
			return ledger.TxID{}, ErrClosed
		}
	}
}

// sizeHint estimates the encoded size of a write set.
func sizeHint(ws *kv.WriteSet) int {
	n := 16
	for _, m := range ws.Maps {
		n += len(m.Map) + 8
		for _, w := range m.Writes {
			n += len(w.Key) + len(w.Value) + 12
		}
	}
	return n
}

// Current returns the id of the last transaction in this node's log.
func (e *Engine) Current() ledger.TxID {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return ledger.TxID{View: e.termOfLocked(e.lastIndex), Seqno: e.lastIndex}
}

// CommittedID returns the id of the last committed signature transaction;
// every transaction up to it is committed.
func (e *Engine) CommittedID() ledger.TxID {
	c := e.committed.Load()
	e.mu.RLock()
	defer e.mu.RUnlock()
	return ledger.TxID{View: e.termOfLocked(c), Seqno: c}
}

// View is the current raft term.
func (e *Engine) View() uint64 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.view
}

// IsPrimary reports whether this node is the raft leader.
func (e *Engine) IsPrimary() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.leader
}

// Primary returns the raft id of the primary this node knows of, 0 while
// it knows none (an election in progress). On a backup it may be stale by
// up to an election timeout.
func (e *Engine) Primary() uint64 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.lead
}

// RaftID is this node's raft id.
func (e *Engine) RaftID() uint64 { return e.cfg.RaftID }

// termOfLocked returns the term of the entry at index, 0 if none.
func (e *Engine) termOfLocked(index uint64) uint64 {
	if index == 0 || index > e.lastIndex {
		return 0
	}
	lo, hi := 0, len(e.terms)
	for lo < hi {
		mid := (lo + hi) / 2
		if e.terms[mid].index <= index {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == 0 {
		return 0
	}
	return e.terms[lo-1].term
}

// Status reports what this node knows of the transaction id.
func (e *Engine) Status(id ledger.TxID) Status {
	committed := e.committed.Load()
	e.mu.RLock()
	defer e.mu.RUnlock()
	if id.Seqno == 0 {
		return StatusUnknown
	}
	if id.Seqno > e.lastIndex {
		// A primary holds every entry of its view and earlier ones that
		// survived; an id of an earlier view beyond its log is gone.
		if e.leader && id.View < e.view {
			return StatusInvalid
		}
		return StatusUnknown
	}
	t := e.termOfLocked(id.Seqno)
	switch {
	case t == id.View && id.Seqno <= committed:
		return StatusCommitted
	case t == id.View:
		return StatusPending
	case id.View < t || id.Seqno <= committed:
		return StatusInvalid
	default:
		// A later view than the entry we hold: not seen yet.
		return StatusUnknown
	}
}

// WaitCommitted blocks until the transaction is committed, becomes invalid,
// or ctx ends.
func (e *Engine) WaitCommitted(ctx context.Context, id ledger.TxID) error {
	for {
		e.commitMu.Lock()
		wake := e.commitWake
		e.commitMu.Unlock()
		switch e.Status(id) {
		case StatusCommitted:
			return nil
		case StatusInvalid:
			return fmt.Errorf("%s: %w", id, ErrInvalid)
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		case <-e.done:
			return ErrClosed
		}
	}
}

func (e *Engine) setCommitted(seqno uint64) {
	if seqno <= e.committed.Load() {
		return
	}
	e.committed.Store(seqno)
	e.commitMu.Lock()
	close(e.commitWake)
	e.commitWake = make(chan struct{})
	e.commitMu.Unlock()
}

// ErrTooManyConflicts is returned by Retry when a transaction kept
// conflicting with concurrent ones.
var ErrTooManyConflicts = errors.New("too many conflicting transactions")

// MaxConflictRetries is how many times Retry runs a transaction.
const MaxConflictRetries = 16

// Committer begins and commits transactions: the Engine, or a test fake.
type Committer interface {
	Begin() *kv.Tx
	Commit(ctx context.Context, tx *kv.Tx, opts CommitOptions) (ledger.TxID, error)
}

// Retry runs build in a new transaction of c and commits it, running it
// again in a fresh transaction when the commit conflicts (or build returns
// an error wrapping kv.ErrConflict), at most MaxConflictRetries times. Any
// other error from build is returned as it is, and nothing is committed.
func Retry(ctx context.Context, c Committer, opts CommitOptions, build func(tx *kv.Tx) error) (ledger.TxID, error) {
	return RetryClaims(ctx, c, func(tx *kv.Tx) ([32]byte, error) { return opts.Claims, build(tx) })
}

// RetryClaims is Retry for a transaction whose claims digest depends on what
// build wrote: build returns it, and each run may return another.
func RetryClaims(ctx context.Context, c Committer, build func(tx *kv.Tx) ([32]byte, error)) (ledger.TxID, error) {
	for range MaxConflictRetries {
		tx := c.Begin()
		claims, err := build(tx)
		if errors.Is(err, kv.ErrConflict) {
			continue
		}
		if err != nil {
			return ledger.TxID{}, err
		}
		id, err := c.Commit(ctx, tx, CommitOptions{Claims: claims})
		if errors.Is(err, kv.ErrConflict) {
			continue
		}
		if err != nil {
			return ledger.TxID{}, fmt.Errorf("commit: %w", err)
		}
		return id, nil
	}
	return ledger.TxID{}, ErrTooManyConflicts
}
