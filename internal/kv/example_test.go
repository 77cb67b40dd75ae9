package kv_test

import (
	"errors"
	"fmt"

	"github.com/parleyhq/parley/internal/kv"
)

func Example() {
	s := kv.NewStore()

	// A transaction reads, writes, and is committed at the next seqno by
	// the ledger engine's sequencer.
	tx := s.Begin()
	tx.Put("public:app.entries", "1", []byte("hello"))
	tx.Put("app.secrets", "k", []byte("private"))
	ws := tx.WriteSet()
	if err := s.Commit(tx, 1); err != nil {
		fmt.Println(err)
	}

	// The public half is stored in clear, the private half encrypted.
	public, private := ws.Split()
	pub, _ := public.MarshalBinary()
	fmt.Printf("public: %q\n", pub)
	fmt.Println("private maps:", len(private.Maps))

	// Two read-modify-write transactions on the same key: the second to
	// commit conflicts and must be retried.
	a, b := s.Begin(), s.Begin()
	for _, t := range []*kv.Tx{a, b} {
		v, _ := t.Get("public:app.entries", "1")
		t.Put("public:app.entries", "1", append(v, '!'))
	}
	fmt.Println(s.Commit(a, 2))
	fmt.Println(errors.Is(s.Commit(b, 3), kv.ErrConflict))

	v, _ := s.Begin().Get("public:app.entries", "1")
	fmt.Printf("%s at version %d\n", v, s.Version())
	// Output:
	// public: "\x01\x01\x12public:app.entries\x01\x011\x00\x05hello"
	// private maps: 1
	// <nil>
	// true
	// hello! at version 2
}
