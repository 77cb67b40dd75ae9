package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
)

const (
	chunkMagic    = "PRLYLDG1"
	frameVersion  = 1
	flagSignature = 1
	// flagConfChange marks an entry that changes raft's membership.
	flagConfChange = 2
	knownFlags     = flagSignature | flagConfChange
	headerSize     = 24
	frameOverhead  = headerSize + 4
	// MaxPayload is the largest entry payload, 64 MiB. A frame declaring a
	// larger one is corrupt.
	MaxPayload = 64 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Frame decoding errors. errFrameShort means the bytes end before the frame
// does.
var (
	errFrameShort   = errors.New("frame cut short")
	errFrameVersion = errors.New("unknown frame version")
	errFrameFlags   = errors.New("unknown frame flags")
	errFrameSize    = errors.New("frame payload too large")
	errFrameCRC     = errors.New("frame checksum mismatch")
)

// appendFrame appends the frame of e to dst.
func appendFrame(dst []byte, e *Entry) []byte {
	start := len(dst)
	var flags byte
	if e.Signature {
		flags |= flagSignature
	}
	if e.ConfChange {
		flags |= flagConfChange
	}
	n := uint64(len(e.Data))
	dst = append(dst, frameVersion, flags,
		byte(n), byte(n>>8), byte(n>>16), byte(n>>24), byte(n>>32), byte(n>>40))
	dst = binary.LittleEndian.AppendUint64(dst, e.Term)
	dst = binary.LittleEndian.AppendUint64(dst, e.Index)
	dst = append(dst, e.Data...)
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// frameSize returns the payload size a header declares; b must hold at
// least headerSize bytes.
func frameSize(b []byte) uint64 {
	return uint64(b[2]) | uint64(b[3])<<8 | uint64(b[4])<<16 |
		uint64(b[5])<<24 | uint64(b[6])<<32 | uint64(b[7])<<40
}

// decodeFrame decodes the frame at the start of b and returns its entry and
// length. The entry's Data aliases b. On error the entry is zero.
func decodeFrame(b []byte) (Entry, int, error) {
	if len(b) < headerSize {
		return Entry{}, 0, errFrameShort
	}
	if b[0] != frameVersion {
		return Entry{}, 0, fmt.Errorf("%w %d", errFrameVersion, b[0])
	}
	if b[1]&^knownFlags != 0 {
		return Entry{}, 0, fmt.Errorf("%w %#x", errFrameFlags, b[1])
	}
	size := frameSize(b)
	if size > MaxPayload {
		return Entry{}, 0, fmt.Errorf("%w: %d bytes", errFrameSize, size)
	}
	n := frameOverhead + int(size)
	if len(b) < n {
		return Entry{}, 0, errFrameShort
	}
	want := binary.LittleEndian.Uint32(b[n-4:])
	if got := crc32.Checksum(b[:n-4], castagnoli); got != want {
		return Entry{}, 0, fmt.Errorf("%w: %08x != %08x", errFrameCRC, got, want)
	}
	return Entry{
		Term:       binary.LittleEndian.Uint64(b[8:]),
		Index:      binary.LittleEndian.Uint64(b[16:]),
		Signature:  b[1]&flagSignature != 0,
		ConfChange: b[1]&flagConfChange != 0,
		Data:       b[headerSize : n-4 : n-4],
	}, n, nil
}

// chunkName is a parsed chunk file name.
type chunkName struct {
	start, end          uint64 // end is 0 for an open chunk
	complete, committed bool
}

func (c chunkName) String() string {
	switch {
	case c.committed:
		return fmt.Sprintf("ledger_%d-%d.committed", c.start, c.end)
	case c.complete:
		return fmt.Sprintf("ledger_%d-%d", c.start, c.end)
	default:
		return fmt.Sprintf("ledger_%d", c.start)
	}
}

// isChunkLike reports whether name claims to be a chunk file.
func isChunkLike(name string) bool { return strings.HasPrefix(name, "ledger_") }

// parseChunkName parses one of the three chunk name forms.
func parseChunkName(name string) (chunkName, error) {
	rest, ok := strings.CutPrefix(name, "ledger_")
	if !ok {
		return chunkName{}, fmt.Errorf("chunk name %q: no ledger_ prefix", name)
	}
	var c chunkName
	rest, c.committed = strings.CutSuffix(rest, ".committed")
	startS, endS, hasEnd := strings.Cut(rest, "-")
	c.complete = hasEnd
	var err error
	if c.start, err = parseSeqno(startS); err != nil {
		return chunkName{}, fmt.Errorf("chunk name %q: start: %w", name, err)
	}
	if c.complete {
		if c.end, err = parseSeqno(endS); err != nil {
			return chunkName{}, fmt.Errorf("chunk name %q: end: %w", name, err)
		}
		if c.end < c.start {
			return chunkName{}, fmt.Errorf("chunk name %q: end before start", name)
		}
	} else if c.committed {
		return chunkName{}, fmt.Errorf("chunk name %q: committed chunk without an end", name)
	}
	return c, nil
}

// parseSeqno parses a canonical decimal seqno ≥ 1.
func parseSeqno(s string) (uint64, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, err
	}
	if v == 0 || strconv.FormatUint(v, 10) != s {
		return 0, fmt.Errorf("seqno %q not canonical", s)
	}
	return v, nil
}
