package shamir

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"testing"
)

type vector struct {
	Name   string   `json:"name"`
	Secret string   `json:"secret"`
	N      int      `json:"n"`
	K      int      `json:"k"`
	Coeffs string   `json:"coeffs"`
	Shares []string `json:"shares"`
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func loadVectors(t *testing.T) []vector {
	t.Helper()
	b, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) == 0 {
		t.Fatal("no vectors")
	}
	return vs
}

// TestVectors checks Split's evaluation and Combine against shares computed
// by testdata/vectors.py, an independent table-based implementation.
func TestVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			secret := unhex(t, v.Secret)
			shares, err := split(bytes.NewReader(unhex(t, v.Coeffs)), secret, v.N, v.K)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range shares {
				if got := hex.EncodeToString(s); got != v.Shares[i] {
					t.Errorf("share %d = %s, want %s", i, got, v.Shares[i])
				}
			}
			var want [][]byte
			for _, s := range v.Shares {
				want = append(want, unhex(t, s))
			}
			// The last k shares, in reverse order.
			var sub [][]byte
			for i := len(want) - 1; i >= len(want)-v.K; i-- {
				sub = append(sub, want[i])
			}
			got, err := Combine(sub)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, secret) {
				t.Errorf("Combine = %x, want %x", got, secret)
			}
		})
	}
}

// TestVectorsRegenerate reruns the Python generator, when there is one, and
// checks the committed vectors are its output.
func TestVectorsRegenerate(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3")
	}
	out, err := exec.Command(py, "testdata/vectors.py").Output()
	if err != nil {
		t.Fatalf("vectors.py: %v", err)
	}
	committed, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bytes.TrimSpace(out), bytes.TrimSpace(committed)) {
		t.Error("testdata/vectors.json differs from the output of testdata/vectors.py")
	}
}

// subsets calls f with every subset of {0…n-1} of size k.
func subsets(n, k int, f func([]int)) {
	var rec func(start int, cur []int)
	rec = func(start int, cur []int) {
		if len(cur) == k {
			f(cur)
			return
		}
		for i := start; i < n; i++ {
			rec(i+1, append(cur, i))
		}
	}
	rec(0, nil)
}

func TestAnyKOfNCombine(t *testing.T) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ n, k int }{{1, 1}, {2, 1}, {2, 2}, {3, 2}, {5, 3}, {6, 6}, {7, 4}} {
		shares, err := Split(secret, c.n, c.k)
		if err != nil {
			t.Fatalf("Split(n=%d, k=%d): %v", c.n, c.k, err)
		}
		if len(shares) != c.n {
			t.Fatalf("Split(n=%d) made %d shares", c.n, len(shares))
		}
		for size := c.k; size <= c.n; size++ {
			subsets(c.n, size, func(idx []int) {
				var sub [][]byte
				for _, i := range idx {
					sub = append(sub, shares[i])
				}
				got, err := Combine(sub)
				if err != nil {
					t.Fatalf("n=%d k=%d shares %v: %v", c.n, c.k, idx, err)
				}
				if !bytes.Equal(got, secret) {
					t.Errorf("n=%d k=%d shares %v: got %x, want %x", c.n, c.k, idx, got, secret)
				}
			})
		}
		if c.k < 2 {
			continue
		}
		subsets(c.n, c.k-1, func(idx []int) {
			var sub [][]byte
			for _, i := range idx {
				sub = append(sub, shares[i])
			}
			got, err := Combine(sub)
			if err != nil {
				t.Fatalf("n=%d k=%d shares %v: %v", c.n, c.k, idx, err)
			}
			if bytes.Equal(got, secret) {
				t.Errorf("n=%d k=%d: %d shares %v recombine into the secret", c.n, c.k, c.k-1, idx)
			}
		})
	}
}

// TestFewerSharesUniform checks that one share of a 2-of-2 split of a
// fixed secret byte is uniform over the field: each value appears, so the
// share says nothing about the secret.
func TestFewerSharesUniform(t *testing.T) {
	var seen [256]bool
	for c := range 256 {
		shares, err := split(bytes.NewReader([]byte{byte(c)}), []byte{0x42}, 2, 2)
		if err != nil {
			t.Fatal(err)
		}
		seen[shares[0][0]] = true
	}
	for v, ok := range seen {
		if !ok {
			t.Fatalf("share value %#x never appears over all coefficients", v)
		}
	}
}

func TestSplitBadInput(t *testing.T) {
	for _, c := range []struct {
		name   string
		secret []byte
		n, k   int
	}{
		{"empty secret", nil, 3, 2},
		{"secret too long", make([]byte, MaxSecretBytes+1), 3, 2},
		{"no shares", []byte{1}, 0, 0},
		{"too many shares", []byte{1}, 256, 2},
		{"threshold 0", []byte{1}, 3, 0},
		{"threshold over n", []byte{1}, 3, 4},
	} {
		if _, err := Split(c.secret, c.n, c.k); err == nil {
			t.Errorf("%s: Split succeeded, want an error", c.name)
		}
	}
}

func TestCombineBadInput(t *testing.T) {
	for _, c := range []struct {
		name   string
		shares [][]byte
	}{
		{"none", nil},
		{"too short", [][]byte{{1}}},
		{"different lengths", [][]byte{{1, 1}, {1, 2, 2}}},
		{"zero x", [][]byte{{1, 0}}},
		{"repeated x", [][]byte{{1, 3}, {2, 3}}},
		{"too many", make([][]byte, MaxShares+1)},
	} {
		if _, err := Combine(c.shares); !errors.Is(err, ErrInvalidShares) {
			t.Errorf("%s: Combine error %v, want ErrInvalidShares", c.name, err)
		}
	}
}

// slowMul is schoolbook multiplication then reduction, for reference.
func slowMul(a, b byte) byte {
	var p uint16
	for i := range 8 {
		if b>>i&1 == 1 {
			p ^= uint16(a) << i
		}
	}
	for i := 15; i >= 8; i-- {
		if p>>i&1 == 1 {
			p ^= 0x11b << (i - 8)
		}
	}
	return byte(p)
}

func TestField(t *testing.T) {
	for a := range 256 {
		for b := range 256 {
			if got, want := mul(byte(a), byte(b)), slowMul(byte(a), byte(b)); got != want {
				t.Fatalf("mul(%#x, %#x) = %#x, want %#x", a, b, got, want)
			}
		}
		if a != 0 {
			if got := mul(byte(a), inv(byte(a))); got != 1 {
				t.Fatalf("%#x · inv(%#x) = %#x, want 1", a, a, got)
			}
		}
	}
	if got := inv(0); got != 0 {
		t.Errorf("inv(0) = %#x, want 0", got)
	}
}

func FuzzCombine(f *testing.F) {
	f.Add([]byte{0x13, 0x01, 0xe0, 0x02}, 2)
	f.Add([]byte{1, 2, 3, 4, 5, 6}, 3)
	f.Add([]byte{0, 0}, 1)
	f.Add([]byte{}, 0)
	f.Fuzz(func(t *testing.T, data []byte, parts int) {
		if parts < 0 || parts > 300 {
			parts = 0
		}
		var shares [][]byte
		if parts > 0 {
			l := len(data) / parts
			for i := range parts {
				shares = append(shares, data[i*l:(i+1)*l])
			}
		}
		secret, err := Combine(shares)
		if err != nil {
			return
		}
		if len(secret) != len(shares[0])-1 {
			t.Fatalf("secret of %d bytes from shares of %d", len(secret), len(shares[0]))
		}
		// Shares that combine are points of a polynomial: splitting the
		// secret again and combining gives it back.
		again, err := Split(secret, len(shares), len(shares))
		if err != nil {
			t.Fatal(err)
		}
		got, err := Combine(again)
		if err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("round trip: %x, %v; want %x", got, err, secret)
		}
	})
}

func BenchmarkSplit32(b *testing.B) {
	secret := make([]byte, 32)
	b.SetBytes(32)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Split(secret, 5, 3); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCombine32(b *testing.B) {
	shares, err := Split(make([]byte, 32), 5, 3)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(32)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Combine(shares[:3]); err != nil {
			b.Fatal(err)
		}
	}
}
