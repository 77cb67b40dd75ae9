package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/parleyhq/parley/internal/identity"
	"github.com/parleyhq/parley/internal/verify"
	"github.com/parleyhq/parley/internal/vfs"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func newVerifyCmd() *cobra.Command {
	var ledgerDir, certFile, snapshotFile string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "verify --ledger DIR --service-cert FILE",
		Short: "Verify a whole ledger directory offline",
		Long: `Verify checks a ledger directory with nothing but the service certificate:
every chunk file is present, in order and whole; every entry's frame checksum;
every transaction re-hashes to its Merkle leaf; at every signature transaction
the tree rebuilt from those leaves has the root the transaction signed; and
every signing node certificate is endorsed by the service certificate.

It needs no ledger secret, so it checks the structure of private entries, not
their plaintext. A ledger directory that starts after seqno 1 (a node that
joined or caught up from a snapshot) is checked from that snapshot: its public
part (Merkle leaves, signature transaction) must verify, then every entry after
it; the snapshot is --snapshot, or found in the ledger directory's snapshots/
folder. Exit status 0 means intact; otherwise it names the first bad
transaction id or chunk and says what is wrong.`,
		Example: `  parley verify --ledger parley-dev/ledger --service-cert parley-dev/service_cert.pem`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if ledgerDir == "" || certFile == "" {
				return &exitError{code: 2, err: errors.New("verify: --ledger and --service-cert are required")}
			}
			pemBytes, err := os.ReadFile(certFile)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("verify: %w", err)}
			}
			cert, err := identity.ParseCertPEM(pemBytes)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("verify: service certificate: %w", err)}
			}
			out := cmd.OutOrStdout()
			opts := verify.Options{}
			stderr := cmd.ErrOrStderr()
			if f, ok := stderr.(*os.File); ok && !quiet && term.IsTerminal(int(f.Fd())) {
				opts.Progress = progressBar(stderr)
			}
			start := time.Now()
			if snapshotFile == "" {
				if snapshotFile, err = verify.SnapshotFor(vfs.OS{}, ledgerDir); err != nil {
					return &exitError{code: 2, err: fmt.Errorf("verify: %w", err)}
				}
			}
			var rep *verify.Report
			if snapshotFile != "" {
				rep, err = verify.LedgerFromSnapshot(vfs.OS{}, ledgerDir, snapshotFile, cert, opts)
			} else {
				rep, err = verify.Ledger(vfs.OS{}, ledgerDir, cert, opts)
			}
			if opts.Progress != nil {
				fmt.Fprintln(stderr)
			}
			if err != nil {
				fmt.Fprintf(out, "ledger INVALID: %v\n", err)
				return &exitError{code: 1}
			}
			elapsed := time.Since(start)
			fmt.Fprintf(out, "ledger OK: %d transactions in %d chunks (%d bytes), %d signatures, last signed at %s, root %s\n",
				rep.Entries, rep.Chunks, rep.Bytes, rep.Signatures, rep.LastSigned, rep.Root)
			if rep.SnapshotSeqno > 0 {
				fmt.Fprintf(out, "note: checked from the snapshot at seqno %d (%s): the entries before it are not in this directory\n", rep.SnapshotSeqno, snapshotFile)
				if rep.SnapshotEvidence {
					fmt.Fprintln(out, "note: the ledger records this snapshot's digest, and it matches")
				}
			}
			if rep.PreviousIdentities > 0 {
				fmt.Fprintf(out, "note: %d signing node certificates of previous service identities chain to the service certificate through the endorsements the ledger records\n", rep.PreviousIdentities)
			}
			if rep.UnsignedTail > 0 {
				fmt.Fprintf(out, "note: %d transactions after the last signature are not yet covered by one\n", rep.UnsignedTail)
			}
			if !quiet {
				fmt.Fprintf(stderr, "verified in %v (%.0f MB/s)\n", elapsed.Round(time.Millisecond), float64(rep.Bytes)/elapsed.Seconds()/1e6)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&ledgerDir, "ledger", "", "ledger directory (the ledger/ folder of a node's data directory)")
	cmd.Flags().StringVar(&certFile, "service-cert", "", "service certificate (PEM) the ledger must chain to")
	cmd.Flags().StringVar(&snapshotFile, "snapshot", "", "snapshot file the ledger directory starts from (default: found in its snapshots/ folder when the ledger starts after seqno 1)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the verdict")
	return cmd
}

// progressBar draws a one-line bar on a terminal.
func progressBar(w io.Writer) func(done, total int64) {
	return func(done, total int64) {
		const width = 40
		frac := 1.0
		if total > 0 {
			frac = float64(done) / float64(total)
		}
		n := int(frac * width)
		bar := make([]byte, width)
		for i := range bar {
			if i < n {
				bar[i] = '='
			} else {
				bar[i] = ' '
			}
		}
		fmt.Fprintf(w, "\r[%s] %3.0f%%  %d/%d MB", bar, frac*100, done>>20, total>>20)
	}
}
