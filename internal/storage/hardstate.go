package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"

	"github.com/parleyhq/parley/internal/vfs"
	"go.etcd.io/raft/v3/raftpb"
)

const (
	hardStateMagic = "PRLYHS01"
	hardStateSize  = 36
)

// encodeHardState encodes hs in the raft_state format of the package doc.
func encodeHardState(hs raftpb.HardState) []byte {
	b := make([]byte, 0, hardStateSize)
	b = append(b, hardStateMagic...)
	b = binary.LittleEndian.AppendUint64(b, hs.Term)
	b = binary.LittleEndian.AppendUint64(b, hs.Vote)
	b = binary.LittleEndian.AppendUint64(b, hs.Commit)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeHardState(b []byte) (raftpb.HardState, error) {
	if len(b) != hardStateSize || string(b[:8]) != hardStateMagic {
		return raftpb.HardState{}, errors.New("bad raft_state length or magic")
	}
	if got, want := crc32.Checksum(b[:32], castagnoli), binary.LittleEndian.Uint32(b[32:]); got != want {
		return raftpb.HardState{}, fmt.Errorf("raft_state checksum mismatch: %08x != %08x", got, want)
	}
	return raftpb.HardState{
		Term:   binary.LittleEndian.Uint64(b[8:]),
		Vote:   binary.LittleEndian.Uint64(b[16:]),
		Commit: binary.LittleEndian.Uint64(b[24:]),
	}, nil
}

// readHardState reads raft_state; a missing file is the empty HardState.
func readHardState(fsys vfs.FS, name string) (raftpb.HardState, error) {
	b, err := fsys.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return raftpb.HardState{}, nil
	}
	if err != nil {
		return raftpb.HardState{}, fmt.Errorf("read raft_state: %w", err)
	}
	hs, err := decodeHardState(b)
	if err != nil {
		return raftpb.HardState{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return hs, nil
}
