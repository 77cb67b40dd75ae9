package cleanroom

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
)

// EventsMap holds one record per step of a room, under "room/seq" with seq
// a 12-digit decimal counting from 1. Every clean-room transaction writes
// exactly one event and binds SHA-256 of its JSON as the transaction's
// claims digest, so the receipt of the transaction proves the event.
const EventsMap = "public:parley.cleanroom.events"

// Steps, the Step of an Event.
const (
	StepCreateRoom      = TypeCreateRoom
	StepInvite          = TypeInvite
	StepJoin            = TypeJoin
	StepRegisterDataset = TypeRegisterDataset
	StepProposeContract = TypeProposeContract
	StepApprove         = TypeApprove
	StepSuspend         = TypeSuspend
	StepKeyRelease      = "key_release"
	StepKeyRefusal      = "key_refusal"
	StepJob             = "job"
	StepJobRefusal      = "job_refusal"
)

// Event is the record of one step of a room.
type Event struct {
	Room string `json:"room"`
	Seq  uint64 `json:"seq"`
	Step string `json:"step"`
	// By is the party that signed the request, or "runner" for steps a
	// runner causes.
	By string `json:"by"`
	// Request is the hex SHA-256 of the signed request (its key in
	// HistoryMap), for steps made by a party.
	Request string `json:"request,omitempty"`
	// Subject names what the step is about: a party id, dataset name,
	// contract id or job id.
	Subject string `json:"subject,omitempty"`
	// Detail is what else matters of the step (a contract's new state, a
	// release's measurement and datasets, a refusal's reason, …).
	Detail map[string]any `json:"detail,omitempty"`
}

// ClaimsDigest is the claims digest bound into the leaf of the
// transaction that wrote an event with this JSON encoding.
func ClaimsDigest(eventJSON []byte) [32]byte { return sha256.Sum256(eventJSON) }

// appendEvent gives ev the room's next sequence number, writes it to tx,
// and returns the claims digest to commit tx with.
func appendEvent(tx *kv.Tx, ev Event) ([32]byte, error) {
	var room Room
	ok, err := getJSON(tx, RoomsMap, ev.Room, &room)
	if err != nil {
		return [32]byte{}, err
	}
	if !ok {
		return [32]byte{}, fmt.Errorf("room %.80q: %w", ev.Room, ErrNotFound)
	}
	room.Events++
	ev.Seq = room.Events
	if err := putJSON(tx, RoomsMap, ev.Room, room); err != nil {
		return [32]byte{}, err
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return [32]byte{}, fmt.Errorf("encode event: %w", err)
	}
	tx.Put(EventsMap, eventKey(ev.Room, ev.Seq), b)
	return ClaimsDigest(b), nil
}

func eventKey(room string, seq uint64) string { return fmt.Sprintf("%s/%012d", room, seq) }

// run builds and commits a transaction whose claims digest is the one build
// returns (the digest of the event it wrote), rebuilding it on conflict.
func (s *Service) run(ctx context.Context, build func(tx *kv.Tx) ([32]byte, error)) (ledger.TxID, error) {
	return engine.RetryClaims(ctx, s.l, build)
}

// AuditEntry is one step of a room as the audit lists it: the event as
// stored (its JSON, whose SHA-256 is the claims digest of the transaction)
// and the transaction that wrote it.
type AuditEntry struct {
	TransactionID string          `json:"transactionId"`
	Event         json.RawMessage `json:"event"`
	// Request is the party's signed request (the JWS whose SHA-256 the
	// event names), for steps a party made.
	Request string `json:"request,omitempty"`
}

// Index maps each room's events to the transactions that wrote them. It is
// an engine.Observer: the engine calls it for every transaction entering
// the log, replay included, so it is rebuilt from the ledger at start. It
// is safe for concurrent use.
type Index struct {
	next  engine.Observer
	mu    sync.RWMutex
	rooms map[string][]indexed // by room, in seq order
}

type indexed struct {
	seq uint64
	id  ledger.TxID
}

// NewIndex returns an empty index that passes every call on to next
// (which may be nil) first, so that one engine can feed several indexes.
func NewIndex(next engine.Observer) *Index {
	return &Index{next: next, rooms: map[string][]indexed{}}
}

var _ engine.Observer = (*Index)(nil)

// Applied records the events tx id wrote.
func (x *Index) Applied(id ledger.TxID, kind ledger.Kind, ws *kv.WriteSet) {
	if x.next != nil {
		x.next.Applied(id, kind, ws)
	}
	if ws == nil {
		return
	}
	for _, mw := range ws.Maps {
		if mw.Map != EventsMap {
			continue
		}
		x.mu.Lock()
		for _, w := range mw.Writes {
			room, seqStr, ok := strings.Cut(w.Key, "/")
			seq, err := strconv.ParseUint(seqStr, 10, 64)
			if !ok || err != nil || w.Deleted {
				continue
			}
			x.rooms[room] = append(x.rooms[room], indexed{seq: seq, id: id})
		}
		x.mu.Unlock()
	}
}

// RolledBack forgets the events of transactions after seqno.
func (x *Index) RolledBack(seqno uint64) {
	if x.next != nil {
		x.next.RolledBack(seqno)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for room, list := range x.rooms {
		i := len(list)
		for i > 0 && list[i-1].id.Seqno > seqno {
			i--
		}
		x.rooms[room] = list[:i]
	}
}

// Audit lists every step of room in order, with the transaction that wrote
// it, reading the events from the ledger's current state. idx may be nil,
// in which case transaction ids are left empty.
func (s *Service) Audit(room string, idx *Index) ([]AuditEntry, error) {
	if !nameRE.MatchString(room) {
		return nil, fmt.Errorf("room %.80q: %w", room, ErrMalformed)
	}
	tx := s.l.Begin()
	var r Room
	ok, err := getJSON(tx, RoomsMap, room, &r)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("room %.80q: %w", room, ErrNotFound)
	}
	ids := map[uint64]ledger.TxID{}
	if idx != nil {
		idx.mu.RLock()
		for _, e := range idx.rooms[room] {
			ids[e.seq] = e.id
		}
		idx.mu.RUnlock()
	}
	out := make([]AuditEntry, 0, r.Events)
	for seq := uint64(1); seq <= r.Events; seq++ {
		b, ok := tx.Get(EventsMap, eventKey(room, seq))
		if !ok {
			return nil, fmt.Errorf("room %s event %d is missing", room, seq)
		}
		e := AuditEntry{Event: slices.Clone(b)}
		var ev struct {
			Request string `json:"request"`
		}
		if err := json.Unmarshal(b, &ev); err != nil {
			return nil, fmt.Errorf("room %s event %d: %w", room, seq, err)
		}
		if ev.Request != "" {
			jws, ok := tx.Get(HistoryMap, ev.Request)
			if !ok {
				return nil, fmt.Errorf("room %s event %d: request %s is missing", room, seq, ev.Request)
			}
			e.Request = string(jws)
		}
		if id, ok := ids[seq]; ok {
			e.TransactionID = id.String()
		}
		out = append(out, e)
	}
	return out, nil
}
