// Command parley is the Parley node, its developer mode and its client tools,
// in one binary with subcommands.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// exitError carries a process exit code out of a subcommand, so that only
// main calls os.Exit.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "parley",
		Short: "Parley: a confidential ledger and clean-room platform",
		Long: `Parley is a replicated, append-only, encrypted ledger whose every
transaction has a signed Merkle receipt anyone can verify offline. Its REST API
is wire-compatible with the Azure Confidential Ledger data plane.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(subcommands()...)
	return root
}

// subcommands lists every top-level command; each lives in its own file.
func subcommands() []*cobra.Command {
	return []*cobra.Command{
		newDevCmd(),
		newNodeCmd(),
		newReceiptCmd(),
		newVerifyCmd(),
		newLedgerCmd(),
		newBenchCmd(),
		newGovCmd(),
		newAttestCmd(),
		newKeysCmd(),
		newRoomCmd(),
		newRunnerCmd(),
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err == nil {
		return
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil && ee.err.Error() != "" {
			fmt.Fprintln(os.Stderr, "parley:", ee.err)
		}
		os.Exit(ee.code)
	}
	fmt.Fprintln(os.Stderr, "parley:", err)
	os.Exit(1)
}
