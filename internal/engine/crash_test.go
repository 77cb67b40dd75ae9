package engine

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/kv"
	"github.com/parleyhq/parley/internal/ledger"
	"github.com/parleyhq/parley/internal/node"
	"github.com/parleyhq/parley/internal/verify"
	"github.com/parleyhq/parley/internal/vfs"
)

const crashWriterEnv = "PARLEY_TEST_CRASH_WRITER_DIR"

// TestCrashWriterProcess is not a test: it is the writer process that
// TestCrashKill starts and kills. It writes transactions from several
// goroutines forever and prints "<txid> <key> <sha256 of value>" for each
// one once it is committed.
func TestCrashWriterProcess(t *testing.T) {
	dir := os.Getenv(crashWriterEnv)
	if dir == "" {
		t.Skip("only run as a child of TestCrashKill")
	}
	id, err := node.Load(vfs.OS{}, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	tn := &testNode{dir: dir, fs: vfs.OS{}, id: id}
	e, err := Open(tn.config())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	pid := os.Getpid()
	// Rotate the ledger secret now and then, so that kills land around
	// rotations too and replay must follow them.
	go func() {
		tick := time.NewTicker(150 * time.Millisecond)
		defer tick.Stop()
		for range tick.C {
			tx := e.Begin()
			raw, err := e.PrepareRotation(tx)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			clear(raw)
			if _, err := e.Commit(context.Background(), tx, CommitOptions{}); err != nil && !errors.Is(err, kv.ErrConflict) {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
		}
	}()
	for w := 0; w < 16; w++ {
		go func() {
			for i := 0; ; i++ {
				key := fmt.Sprintf("%d/%d/%d", pid, w, i)
				value := []byte(strings.Repeat(key, 1+i%40))
				tx := e.Begin()
				tx.Put("private:crash", key, value)
				txid, err := e.Commit(context.Background(), tx, CommitOptions{})
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				if err := e.WaitCommitted(context.Background(), txid); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				sum := sha256.Sum256(value)
				mu.Lock()
				fmt.Fprintf(out, "%s %s %x\n", txid, key, sum)
				out.Flush()
				mu.Unlock()
			}
		}()
	}
	select {}
}

// TestCrashKill starts a real writer process, kills it with SIGKILL at a
// random moment, and checks after each restart that every transaction it
// reported committed is present with identical content and that the ledger
// verifies; 20 rounds on the same directory.
func TestCrashKill(t *testing.T) {
	if testing.Short() {
		t.Skip("kills 20 real processes")
	}
	dir := t.TempDir()
	n := newTestNode(t, vfs.OS{}, dir)
	type committed struct{ key, sum string }
	reported := map[ledger.TxID]committed{}
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for round := 0; round < 20; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashWriterProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashWriterEnv+"="+dir)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// Once it has committed something, kill it at a random moment.
		var kill <-chan time.Time
		deadline := time.After(30 * time.Second)
		var got int
	read:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break read
				}
				var id, key, sum string
				if _, err := fmt.Sscan(l, &id, &key, &sum); err != nil {
					t.Fatalf("writer printed %q", l)
				}
				txid, err := ledger.ParseTxID(id)
				if err != nil {
					t.Fatal(err)
				}
				reported[txid] = committed{key, sum}
				if got == 0 {
					kill = time.After(time.Duration(r.IntN(300)) * time.Millisecond)
				}
				got++
			case <-deadline:
				cmd.Process.Signal(syscall.SIGKILL)
				t.Fatalf("round %d: the writer committed nothing in 30 s; stderr: %s", round, stderr.String())
			case <-kill:
				cmd.Process.Signal(syscall.SIGKILL)
				kill = nil
			}
		}
		cmd.Wait()
		if got == 0 {
			t.Fatalf("round %d: the writer committed nothing before the kill; stderr: %s", round, stderr.String())
		}

		// Everything reported committed is there, unchanged.
		e := n.open(t)
		for txid, want := range reported {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := e.WaitCommitted(ctx, txid)
			cancel()
			if err != nil {
				t.Fatalf("round %d: %s was reported committed: %v", round, txid, err)
			}
			rec, err := e.Read(txid)
			if err != nil {
				t.Fatalf("round %d: read %s: %v", round, txid, err)
			}
			v := valueIn(rec.WriteSet, "private:crash", want.key)
			if sum := sha256.Sum256([]byte(v)); hex.EncodeToString(sum[:]) != want.sum {
				t.Fatalf("round %d: %s value changed", round, txid)
			}
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := verify.Ledger(vfs.OS{}, filepath.Join(dir, node.LedgerDir), n.id.Service.Cert, verify.Options{}); err != nil {
			t.Fatalf("round %d: ledger does not verify: %v", round, err)
		}
	}
	e := n.open(t)
	rotations := len(e.Epochs()) - 1
	e.Close()
	if rotations == 0 {
		t.Error("no ledger secret rotation survived the 20 rounds")
	}
	t.Logf("%d committed transactions checked across 20 kills, %d rotations", len(reported), rotations)
}
