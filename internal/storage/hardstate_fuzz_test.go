package storage

import (
	"bytes"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
)

func FuzzDecodeHardState(f *testing.F) {
	f.Add(encodeHardState(raftpb.HardState{Term: 3, Vote: 1, Commit: 42}))
	f.Add(encodeHardState(raftpb.HardState{}))
	f.Add([]byte("PRLYHS01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		hs, err := decodeHardState(b)
		if err != nil {
			if hs != (raftpb.HardState{}) {
				t.Fatalf("decodeHardState returned %+v with error %v", hs, err)
			}
			return
		}
		if again := encodeHardState(hs); !bytes.Equal(again, b) {
			t.Fatalf("decoded %+v does not re-encode to the same bytes", hs)
		}
	})
}
