package app

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/receipt"
)

// Map names; see the package documentation for their keys and values.
const (
	EntriesMap     = "acl.entries"
	CollectionsMap = "acl.collections"
	TagsMap        = "acl.tags"
	CountersMap    = "acl.counters"
	UsersMap       = "public:acl.users"
	MembersMap     = "public:ccf.gov.members.certs"
	// MemberEncryptionKeysMap holds members' encryption public keys (PEM)
	// by member id; package gov owns the other governance maps.
	MemberEncryptionKeysMap = "public:ccf.gov.members.encryption_public_keys"
	ConstitutionMap         = "public:ccf.gov.constitution"
)

// DefaultCollection is the collection of entries written without one, as in
// ACL.
const DefaultCollection = "subledger:0"

// SecretKeySize is the size of an entry's claim key.
const SecretKeySize = 32

// Errors returned by App methods. httpapi maps each to an HTTP status and an
// ACL error code.
var (
	// ErrEntryTooLarge is returned by Append for contents over
	// Limits.MaxEntryBytes.
	ErrEntryTooLarge = errors.New("entry contents too large")
	// ErrCollectionIDTooLong is returned for a collection id over
	// Limits.MaxCollectionIDBytes.
	ErrCollectionIDTooLong = errors.New("collection id too long")
	// ErrInvalidCollectionID is returned for a collection id that is not
	// valid UTF-8.
	ErrInvalidCollectionID = errors.New("invalid collection id")
	// ErrCollectionCapacity is returned by Append when a new collection
	// would exceed Limits.MaxCollections.
	ErrCollectionCapacity = errors.New("collection capacity exceeded")
	// ErrTagCapacity is returned by Append when a new tag would exceed
	// Limits.MaxTags.
	ErrTagCapacity = errors.New("tag capacity exceeded")
	// ErrInvalidTag is returned by Append for an empty, over-long or
	// non-UTF-8 tag, or too many tags on one entry.
	ErrInvalidTag = errors.New("invalid tag")
	// ErrNotLedgerEntry is returned for a transaction that is not a ledger
	// entry (a user change, a no-op) or not one of the asked collection.
	ErrNotLedgerEntry = errors.New("not a ledger entry")
	// ErrSignatureTx is returned for a signature transaction.
	ErrSignatureTx = errors.New("signature transaction")
	// ErrNoEntries is returned by Current for a collection without entries.
	ErrNoEntries = errors.New("collection has no entries")
	// ErrUserNotFound is returned for a user id with no roles.
	ErrUserNotFound = errors.New("user not found")
	// ErrInvalidUserID is returned for a user id that is not a certificate
	// fingerprint in either accepted form.
	ErrInvalidUserID = errors.New("invalid user id")
	// ErrInvalidRole is returned for an unknown role name or an empty role
	// list.
	ErrInvalidRole = errors.New("invalid role")
	// ErrLastAdministrator is returned when a change would leave the ledger
	// without an Administrator.
	ErrLastAdministrator = errors.New("last administrator")
	// ErrTooManyConflicts is returned when a transaction conflicted
	// engine.MaxConflictRetries times in a row.
	ErrTooManyConflicts = engine.ErrTooManyConflicts
)

// Limits bounds what a write may hold. Zero fields take the defaults of
// [DefaultLimits], which are ACL's.
type Limits struct {
	// MaxEntryBytes bounds an entry's contents, in bytes after JSON
	// decoding (ACL: 8192).
	MaxEntryBytes int `json:"maxEntryBytes,omitempty"`
	// MaxCollectionIDBytes bounds a collection id, in bytes (ACL: 256).
	MaxCollectionIDBytes int `json:"maxCollectionIdBytes,omitempty"`
	// MaxCollections bounds the number of collections (ACL: 5000).
	MaxCollections int `json:"maxCollections,omitempty"`
	// MaxTags bounds the number of distinct tags (ACL: 10000).
	MaxTags int `json:"maxTags,omitempty"`
	// MaxTagsPerEntry bounds the tags of one entry (Parley: 32).
	MaxTagsPerEntry int `json:"maxTagsPerEntry,omitempty"`
	// MaxTagBytes bounds one tag, in bytes (Parley: 256).
	MaxTagBytes int `json:"maxTagBytes,omitempty"`
}

// DefaultLimits returns ACL's limits.
func DefaultLimits() Limits {
	return Limits{
		MaxEntryBytes:        8192,
		MaxCollectionIDBytes: 256,
		MaxCollections:       5000,
		MaxTags:              10000,
		MaxTagsPerEntry:      32,
		MaxTagBytes:          256,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxEntryBytes <= 0 {
		l.MaxEntryBytes = d.MaxEntryBytes
	}
	if l.MaxCollectionIDBytes <= 0 {
		l.MaxCollectionIDBytes = d.MaxCollectionIDBytes
	}
	if l.MaxCollections <= 0 {
		l.MaxCollections = d.MaxCollections
	}
	if l.MaxTags <= 0 {
		l.MaxTags = d.MaxTags
	}
	if l.MaxTagsPerEntry <= 0 {
		l.MaxTagsPerEntry = d.MaxTagsPerEntry
	}
	if l.MaxTagBytes <= 0 {
		l.MaxTagBytes = d.MaxTagBytes
	}
	return l
}

// App is the ACL application over one engine. It is safe for concurrent
// use.
type App struct {
	eng *engine.Engine
	idx *Index
	lim Limits
}

// New returns the application over eng, whose Config.Observer MUST have
// been idx from before Open, so that idx saw the whole ledger.
func New(eng *engine.Engine, idx *Index, lim Limits) *App {
	return &App{eng: eng, idx: idx, lim: lim.withDefaults()}
}

// Limits returns the limits in force, defaults filled in.
func (a *App) Limits() Limits { return a.lim }

// Entry is one ledger entry.
type Entry struct {
	ID           ledger.TxID
	CollectionID string
	Contents     string
	Tags         []string
	// SecretKey is the key of the entry's LedgerEntryV1 claim.
	SecretKey []byte
}

// Claim returns the entry's LedgerEntryV1 application claim.
func (e *Entry) Claim() api.ApplicationClaim {
	return receipt.LedgerEntryClaim(e.CollectionID, e.Contents, e.SecretKey)
}

// NewEntry is a write request: its collection (DefaultCollection when
// empty), contents and tags.
type NewEntry struct {
	CollectionID string
	Contents     string
	Tags         []string
}

// Validate checks e against the limits that need no state: contents size,
// collection id and tags. Append calls it too.
func (a *App) Validate(e *NewEntry) error {
	if len(e.Contents) > a.lim.MaxEntryBytes {
		return fmt.Errorf("entry contents of %d bytes exceed the limit of %d bytes: %w", len(e.Contents), a.lim.MaxEntryBytes, ErrEntryTooLarge)
	}
	if err := a.ValidateCollectionID(e.CollectionID); err != nil {
		return err
	}
	if len(e.Tags) > a.lim.MaxTagsPerEntry {
		return fmt.Errorf("%d tags on one entry, the limit is %d: %w", len(e.Tags), a.lim.MaxTagsPerEntry, ErrInvalidTag)
	}
	for _, t := range e.Tags {
		if t == "" || len(t) > a.lim.MaxTagBytes || !utf8.ValidString(t) || strings.Contains(t, ",") {
			return fmt.Errorf("tag %.40q: must be 1 to %d bytes of UTF-8 without commas: %w", t, a.lim.MaxTagBytes, ErrInvalidTag)
		}
	}
	return nil
}

// ValidateCollectionID checks a collection id (empty means the default).
func (a *App) ValidateCollectionID(id string) error {
	if len(id) > a.lim.MaxCollectionIDBytes {
		return fmt.Errorf("collection id of %d bytes exceeds the limit of %d bytes: %w", len(id), a.lim.MaxCollectionIDBytes, ErrCollectionIDTooLong)
	}
	if !utf8.ValidString(id) {
		return fmt.Errorf("collection id is not UTF-8: %w", ErrInvalidCollectionID)
	}
	return nil
}

// Append writes one ledger entry as its own transaction and returns its id
// (Pending) and the entry. Nothing is written on error.
func (a *App) Append(ctx context.Context, ne *NewEntry) (*Entry, error) {
	if err := a.Validate(ne); err != nil {
		return nil, err
	}
	e := &Entry{CollectionID: ne.CollectionID, Contents: ne.Contents, Tags: dedupe(ne.Tags), SecretKey: make([]byte, SecretKeySize)}
	if e.CollectionID == "" {
		e.CollectionID = DefaultCollection
	}
	if _, err := rand.Read(e.SecretKey); err != nil {
		return nil, fmt.Errorf("entry secret key: %w", err)
	}
	claims, err := receipt.ClaimsDigest([]api.ApplicationClaim{e.Claim()})
	if err != nil {
		return nil, fmt.Errorf("claims digest: %w", err)
	}
	value := encodeEntry(e)
	id, err := a.run(ctx, engine.CommitOptions{Claims: claims}, func(tx *kv.Tx) error {
		if err := a.ensureMember(tx, CollectionsMap, "collections", e.CollectionID, a.lim.MaxCollections, ErrCollectionCapacity); err != nil {
			return err
		}
		for _, t := range e.Tags {
			if err := a.ensureMember(tx, TagsMap, "tags", t, a.lim.MaxTags, ErrTagCapacity); err != nil {
				return err
			}
		}
		tx.Put(EntriesMap, e.CollectionID, value)
		return nil
	})
	if err != nil {
		return nil, err
	}
	e.ID = id
	return e, nil
}

// ensureMember adds key to the set map m unless present, counting members
// under counter and refusing past limit.
func (a *App) ensureMember(tx *kv.Tx, m, counter, key string, limit int, errFull error) error {
	if _, ok := tx.Get(m, key); ok {
		return nil
	}
	var n uint64
	if v, ok := tx.Get(CountersMap, counter); ok && len(v) == 8 {
		n = binary.BigEndian.Uint64(v)
	}
	if n >= uint64(limit) {
		return fmt.Errorf("the ledger already holds %d %s, the limit: %w", n, counter, errFull)
	}
	tx.Put(m, key, nil)
	tx.Put(CountersMap, counter, binary.BigEndian.AppendUint64(nil, n+1))
	return nil
}

// run runs fn in a transaction and commits it, again on conflict.
func (a *App) run(ctx context.Context, opts engine.CommitOptions, fn func(*kv.Tx) error) (ledger.TxID, error) {
	return engine.Retry(ctx, a.eng, opts, fn)
}

// Entry returns the ledger entry written by transaction id. It fails with
// an error wrapping engine.ErrUnknownTx or engine.ErrInvalid for an id this
// node does not hold, ErrSignatureTx for a signature transaction and
// ErrNotLedgerEntry for any other transaction that wrote no entry. A
// Pending transaction is returned as well; callers check engine.Status.
func (a *App) Entry(id ledger.TxID) (*Entry, error) {
	rec, err := a.eng.Read(id)
	if err != nil {
		return nil, err
	}
	if rec.Kind == ledger.KindSignature {
		return nil, fmt.Errorf("%s: %w", id, ErrSignatureTx)
	}
	for _, m := range rec.WriteSet.Maps {
		if m.Map != EntriesMap {
			continue
		}
		for _, w := range m.Writes {
			if w.Deleted {
				continue
			}
			e, err := decodeEntry(w.Key, w.Value)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", id, err)
			}
			e.ID = id
			return e, nil
		}
	}
	return nil, fmt.Errorf("%s: %w", id, ErrNotLedgerEntry)
}

// Current returns the latest entry of a collection (DefaultCollection when
// empty), committed or not, as ACL does.
func (a *App) Current(collectionID string) (*Entry, error) {
	if collectionID == "" {
		collectionID = DefaultCollection
	}
	id, ok := a.idx.last(collectionID)
	if !ok {
		return nil, fmt.Errorf("collection %.64q: %w", collectionID, ErrNoEntries)
	}
	return a.Entry(id)
}

// Query selects committed entries of one collection, optionally with one
// tag, between two transaction ids (inclusive; zero means unbounded).
type Query struct {
	CollectionID string // DefaultCollection when empty
	Tag          string
	From, To     ledger.TxID
	// Limit bounds the page; 100 when zero.
	Limit int
}

// List returns one page of the entries Query selects, in log order, and the
// id to continue from when there are more (zero otherwise).
func (a *App) List(q Query) ([]*Entry, ledger.TxID, error) {
	if q.CollectionID == "" {
		q.CollectionID = DefaultCollection
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	upTo := a.eng.CommittedID().Seqno
	if q.To.Seqno != 0 && q.To.Seqno < upTo {
		upTo = q.To.Seqno
	}
	ids := a.idx.page(q.CollectionID, q.Tag, q.From.Seqno, upTo, q.Limit+1)
	var next ledger.TxID
	if len(ids) > q.Limit {
		next = ids[q.Limit]
		ids = ids[:q.Limit]
	}
	out := make([]*Entry, 0, len(ids))
	for _, id := range ids {
		e, err := a.Entry(id)
		if err != nil {
			return nil, ledger.TxID{}, err
		}
		out = append(out, e)
	}
	return out, next, nil
}

// Collections returns the ids of all collections, sorted.
func (a *App) Collections() []string {
	var out []string
	a.eng.Begin().Foreach(CollectionsMap, func(k string, _ []byte) bool {
		out = append(out, k)
		return true
	})
	return out
}

// SignatureAtOrAfter returns the seqno of the first committed signature
// transaction at or after seqno, as far as the index knows, or false.
func (a *App) SignatureAtOrAfter(seqno uint64) (uint64, bool) {
	committed := a.eng.CommittedID().Seqno
	if s, ok := a.idx.signatureAtOrAfter(seqno); ok && s <= committed {
		return s, true
	}
	if committed >= seqno && committed > 0 {
		return committed, true
	}
	return 0, false
}

func dedupe(tags []string) []string {
	if len(tags) == 0 {
		return nil
	}
	out := make([]string, 0, len(tags))
	seen := make(map[string]bool, len(tags))
	for _, t := range tags {
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out
}

const entryVersion = 1

func encodeEntry(e *Entry) []byte {
	n := 1 + SecretKeySize + binary.MaxVarintLen64 + len(e.Contents)
	for _, t := range e.Tags {
		n += binary.MaxVarintLen64 + len(t)
	}
	b := make([]byte, 0, n)
	b = append(b, entryVersion)
	b = append(b, e.SecretKey...)
	b = binary.AppendUvarint(b, uint64(len(e.Tags)))
	for _, t := range e.Tags {
		b = binary.AppendUvarint(b, uint64(len(t)))
		b = append(b, t...)
	}
	return append(b, e.Contents...)
}

var errBadEntry = errors.New("malformed entry value")

// decodeEntry decodes an acl.entries value.
func decodeEntry(collectionID string, b []byte) (*Entry, error) {
	tags, contents, key, err := splitEntry(b)
	if err != nil {
		return nil, err
	}
	return &Entry{CollectionID: collectionID, Contents: string(contents), Tags: tags, SecretKey: key}, nil
}

func splitEntry(b []byte) (tags []string, contents, key []byte, err error) {
	if len(b) < 1+SecretKeySize || b[0] != entryVersion {
		return nil, nil, nil, errBadEntry
	}
	key = b[1 : 1+SecretKeySize]
	b = b[1+SecretKeySize:]
	n, k := uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return nil, nil, nil, errBadEntry
	}
	b = b[k:]
	for range n {
		l, k := uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return nil, nil, nil, errBadEntry
		}
		tags = append(tags, string(b[k:k+int(l)]))
		b = b[k+int(l):]
	}
	return tags, b, key, nil
}

// uvarint is binary.Uvarint refusing non-minimal encodings, so that every
// value has one encoding.
func uvarint(b []byte) (uint64, int) {
	v, k := binary.Uvarint(b)
	if k > 0 && len(binary.AppendUvarint(nil, v)) != k {
		return 0, -1
	}
	return v, k
}
