package app

import (
	"sort"
	"sync"

	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
)

// Index is the application's in-memory index of the log: the ids of the
// entries of each collection and of each (collection, tag), and the seqnos
// of signature transactions (the seqnos the engine reports no transaction
// for). It is an engine.Observer; pass it as engine.Config.Observer.
type Index struct {
	mu          sync.RWMutex
	collections map[string][]ledger.TxID
	tags        map[tagKey][]ledger.TxID
	sigs        []uint64
	lastSeqno   uint64 // seqno of the last transaction applied
}

type tagKey struct{ collection, tag string }

var _ engine.Observer = (*Index)(nil)

// NewIndex returns an empty index.
func NewIndex() *Index {
	return &Index{collections: make(map[string][]ledger.TxID), tags: make(map[tagKey][]ledger.TxID)}
}

// Applied records the entries written by transaction id.
func (x *Index) Applied(id ledger.TxID, _ ledger.Kind, ws *kv.WriteSet) {
	x.mu.Lock()
	defer x.mu.Unlock()
	// Every seqno the engine skipped is a signature transaction.
	for s := x.lastSeqno + 1; s < id.Seqno; s++ {
		x.sigs = append(x.sigs, s)
	}
	if id.Seqno > x.lastSeqno {
		x.lastSeqno = id.Seqno
	}
	if ws == nil {
		return
	}
	for _, m := range ws.Maps {
		if m.Map != EntriesMap {
			continue
		}
		for _, w := range m.Writes {
			if w.Deleted {
				continue
			}
			x.collections[w.Key] = append(x.collections[w.Key], id)
			tags, _, _, err := splitEntry(w.Value)
			if err != nil {
				continue
			}
			for _, t := range tags {
				k := tagKey{w.Key, t}
				x.tags[k] = append(x.tags[k], id)
			}
		}
	}
}

// RolledBack forgets every transaction after seqno.
func (x *Index) RolledBack(seqno uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for k, ids := range x.collections {
		if ids = trim(ids, seqno); len(ids) == 0 {
			delete(x.collections, k)
		} else {
			x.collections[k] = ids
		}
	}
	for k, ids := range x.tags {
		if ids = trim(ids, seqno); len(ids) == 0 {
			delete(x.tags, k)
		} else {
			x.tags[k] = ids
		}
	}
	i := sort.Search(len(x.sigs), func(i int) bool { return x.sigs[i] > seqno })
	x.sigs = x.sigs[:i]
	if x.lastSeqno > seqno {
		x.lastSeqno = seqno
	}
}

func trim(ids []ledger.TxID, seqno uint64) []ledger.TxID {
	i := sort.Search(len(ids), func(i int) bool { return ids[i].Seqno > seqno })
	return ids[:i]
}

// last returns the id of the latest entry of collection.
func (x *Index) last(collection string) (ledger.TxID, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	ids := x.collections[collection]
	if len(ids) == 0 {
		return ledger.TxID{}, false
	}
	return ids[len(ids)-1], true
}

// page returns up to n ids of collection's entries (with tag, when not
// empty) whose seqnos are in [from, to], in order.
func (x *Index) page(collection, tag string, from, to uint64, n int) []ledger.TxID {
	x.mu.RLock()
	defer x.mu.RUnlock()
	ids := x.collections[collection]
	if tag != "" {
		ids = x.tags[tagKey{collection, tag}]
	}
	i := sort.Search(len(ids), func(i int) bool { return ids[i].Seqno >= from })
	var out []ledger.TxID
	for ; i < len(ids) && len(out) < n && ids[i].Seqno <= to; i++ {
		out = append(out, ids[i])
	}
	return out
}

// signatureAtOrAfter returns the first known signature seqno ≥ seqno.
func (x *Index) signatureAtOrAfter(seqno uint64) (uint64, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	i := sort.Search(len(x.sigs), func(i int) bool { return x.sigs[i] >= seqno })
	if i == len(x.sigs) {
		return 0, false
	}
	return x.sigs[i], true
}
