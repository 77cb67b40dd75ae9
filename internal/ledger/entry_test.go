package ledger

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
)

func newTestSecret(t testing.TB) *Secret {
	t.Helper()
	s, err := NewSecret(bytes.Repeat([]byte{7}, SecretSize))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSealParseOpen(t *testing.T) {
	s := newTestSecret(t)
	tests := []struct {
		name            string
		public, private []byte
	}{
		{"both", []byte("public bytes"), []byte("private bytes")},
		{"public only", []byte("public bytes"), nil},
		{"private only", nil, []byte("private bytes")},
		{"empty", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tx := &Tx{ID: TxID{View: 3, Seqno: 42}, Kind: KindTx, Claims: [32]byte{1, 2, 3}, Public: tt.public, Private: tt.private}
			prefix := []byte("prefix")
			out, leaf, err := s.Seal(append([]byte(nil), prefix...), tx)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(out, prefix) {
				t.Fatalf("Seal did not append to dst")
			}
			payload := out[len(prefix):]
			if len(tt.private) > 0 && bytes.Contains(payload, tt.private) {
				t.Errorf("payload contains the private plaintext")
			}
			p, err := Parse(payload)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Leaf(); got != leaf {
				t.Errorf("Parse(...).Leaf() = %x, want %x", got, leaf)
			}
			if !bytes.Equal(p.Public, tt.public) {
				t.Errorf("Public = %q, want %q", p.Public, tt.public)
			}
			if p.ClaimsDigest != tx.Claims {
				t.Errorf("ClaimsDigest = %x, want %x", p.ClaimsDigest, tx.Claims)
			}
			got, err := s.Open(&p, tx.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.private) {
				t.Errorf("Open = %q, want %q", got, tt.private)
			}
			if _, err := s.Open(&p, TxID{View: 3, Seqno: 43}); err == nil {
				t.Errorf("Open at another seqno succeeded")
			}
		})
	}
}

func TestTamperedPayloadDoesNotOpen(t *testing.T) {
	s := newTestSecret(t)
	id := TxID{View: 2, Seqno: 9}
	payload, _, err := s.Seal(nil, &Tx{ID: id, Kind: KindTx, Public: []byte("pub"), Private: []byte("priv")})
	if err != nil {
		t.Fatal(err)
	}
	for i := range payload {
		bad := bytes.Clone(payload)
		bad[i] ^= 0x01
		p, err := Parse(bad)
		if err != nil {
			continue
		}
		if _, err := s.Open(&p, id); err == nil {
			t.Errorf("byte %d flipped: Open succeeded", i)
		}
	}
}

func TestOtherSecretDoesNotOpen(t *testing.T) {
	s := newTestSecret(t)
	other, err := NewSecret(bytes.Repeat([]byte{8}, SecretSize))
	if err != nil {
		t.Fatal(err)
	}
	id := TxID{View: 1, Seqno: 1}
	payload, _, err := s.Seal(nil, &Tx{ID: id, Kind: KindTx, Private: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(payload)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Open(&p, id); !errors.Is(err, ErrMalformed) {
		t.Errorf("Open with another secret: err = %v, want ErrMalformed", err)
	}
}

func TestCommitEvidence(t *testing.T) {
	s := newTestSecret(t)
	a := s.CommitEvidence(TxID{View: 2, Seqno: 15})
	b := s.CommitEvidence(TxID{View: 2, Seqno: 16})
	if a == b {
		t.Errorf("commit evidence repeats across seqnos")
	}
	if len(a) != len("ce:2.15:")+64 || a[:8] != "ce:2.15:" {
		t.Errorf("CommitEvidence = %q, want ce:2.15:<64 hex>", a)
	}
}

func TestNonceUniqueAcrossIDs(t *testing.T) {
	seen := map[[nonceSize]byte]TxID{}
	for v := uint64(1); v < 20; v++ {
		for q := uint64(1); q < 200; q++ {
			id := TxID{View: v, Seqno: q}
			n := Nonce(id)
			if prev, ok := seen[n]; ok {
				t.Fatalf("Nonce(%v) = Nonce(%v)", id, prev)
			}
			seen[n] = id
		}
	}
}

func TestSealRefusesHugeView(t *testing.T) {
	s := newTestSecret(t)
	if _, _, err := s.Seal(nil, &Tx{ID: TxID{View: MaxView + 1, Seqno: 1}, Kind: KindTx}); err == nil {
		t.Errorf("Seal with view %d succeeded", uint64(MaxView+1))
	}
}

func TestParseTxID(t *testing.T) {
	tests := []struct {
		in   string
		want TxID
		ok   bool
	}{
		{"2.15", TxID{2, 15}, true},
		{"0.1", TxID{0, 1}, true},
		{"18446744073709551615.18446744073709551615", TxID{^uint64(0), ^uint64(0)}, true},
		{"2.0", TxID{}, false},
		{"2", TxID{}, false},
		{"02.15", TxID{}, false},
		{"2.15.1", TxID{}, false},
		{"-1.2", TxID{}, false},
		{"+1.2", TxID{}, false},
		{"1.2 ", TxID{}, false},
		{"", TxID{}, false},
		{"18446744073709551616.1", TxID{}, false},
	}
	for _, tt := range tests {
		got, err := ParseTxID(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseTxID(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if tt.ok && got.String() != tt.in {
			t.Errorf("ParseTxID(%q).String() = %q", tt.in, got.String())
		}
	}
}

func FuzzParse(f *testing.F) {
	s := newTestSecret(f)
	for _, priv := range [][]byte{nil, []byte("secret")} {
		p, _, err := s.Seal(nil, &Tx{ID: TxID{1, 2}, Kind: KindTx, Public: []byte("pub"), Private: priv})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		_ = p.Leaf()
		plain, err := s.Open(&p, TxID{1, 2})
		if err == nil && len(b) > 0 {
			// Anything that authenticates must re-seal to the same bytes.
			again, _, err := s.Seal(nil, &Tx{ID: TxID{1, 2}, Kind: p.Kind, Claims: p.ClaimsDigest, Public: p.Public, Private: plain})
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("authenticated payload does not re-seal byte-exactly")
			}
		}
	})
}

func BenchmarkSeal1KiB(b *testing.B) {
	s := newTestSecret(b)
	priv := make([]byte, 1024)
	rand.Read(priv)
	buf := make([]byte, 0, 2048)
	b.SetBytes(int64(len(priv)))
	b.ReportAllocs()
	var q uint64
	for b.Loop() {
		q++
		if _, _, err := s.Seal(buf[:0], &Tx{ID: TxID{1, q}, Kind: KindTx, Private: priv}); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzParseSignature(f *testing.F) {
	f.Add([]byte(`{"node":"ab","view":2,"seqno":9,"commit_view":2,"commit_seqno":7,"root":"` + strings.Repeat("00", 32) + `","sig":"MEUCIQ==","cert":"x"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"seqno":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSignature(b)
		if err != nil {
			if s != nil {
				t.Fatalf("ParseSignature returned a value with error %v", err)
			}
			return
		}
		if s.Seqno < 2 || len(s.Root) != 64 || s.TreeSize() != s.Seqno-1 {
			t.Fatalf("ParseSignature accepted %+v", s)
		}
	})
}
