package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/client"
	"github.com/parleyhq/parley/internal/receipt"
)

// ProfileEnv names a profile file to use when --profile is not given.
const ProfileEnv = "PARLEY_PROFILE"

// maxStdinEntry bounds contents read from standard input.
const maxStdinEntry = 1 << 20

// connFlags are the flags every command that talks to a service takes.
type connFlags struct {
	endpoint, cacert, cert, key string
	profile                     string
	apiVersion                  string
	timeout                     time.Duration
	fs                          *pflag.FlagSet
}

func (f *connFlags) register(fs *pflag.FlagSet) {
	f.fs = fs
	fs.StringVar(&f.endpoint, "endpoint", "", "service endpoint, https://host:port")
	fs.StringVar(&f.cacert, "cacert", "", "service certificate PEM, pinned as the only trusted root")
	fs.StringVar(&f.cert, "cert", "", "client (user) certificate PEM")
	fs.StringVar(&f.key, "key", "", "client private key PEM")
	fs.StringVar(&f.profile, "profile", "", "profile JSON {endpoint,cacert,cert,key} (default $"+ProfileEnv+", else ./parley-dev/"+ProfileFile+" if present)")
	fs.StringVar(&f.apiVersion, "api-version", api.APIVersion2022, "api-version to send (2026-02-23 is used automatically for tags and user listing)")
	fs.DurationVar(&f.timeout, "timeout", time.Minute, "give up after this long")
}

// resolve returns the profile the flags describe: the profile file (if
// any) with each flag given overriding its field.
func (f *connFlags) resolve() (*client.Profile, error) {
	path := f.profile
	if path == "" {
		path = os.Getenv(ProfileEnv)
	}
	if path == "" {
		def := filepath.Join("parley-dev", ProfileFile)
		if _, err := os.Stat(def); err == nil {
			path = def
		}
	}
	p := &client.Profile{}
	if path != "" {
		var err error
		if p, err = client.LoadProfile(path); err != nil {
			return nil, err
		}
	}
	for _, o := range []struct{ flag, dst *string }{
		{&f.endpoint, &p.Endpoint}, {&f.cacert, &p.CACert}, {&f.cert, &p.Cert}, {&f.key, &p.Key},
	} {
		if *o.flag != "" {
			*o.dst = *o.flag
		}
	}
	var missing []string
	for name, v := range map[string]string{"--endpoint": p.Endpoint, "--cacert": p.CACert, "--cert": p.Cert, "--key": p.Key} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, &exitError{code: 2, err: fmt.Errorf("no %s: pass --profile (or set $%s, or run `parley dev` here) or the flags", strings.Join(sortedStrings(missing), ", "), ProfileEnv)}
	}
	return p, nil
}

func sortedStrings(s []string) []string {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s
}

// client builds a client; needNew says the call needs api-version
// 2026-02-23 unless the user chose a version.
func (f *connFlags) client(needNew bool) (*client.Client, *client.Profile, error) {
	p, err := f.resolve()
	if err != nil {
		return nil, nil, err
	}
	o, err := p.Options()
	if err != nil {
		return nil, nil, &exitError{code: 2, err: err}
	}
	o.APIVersion = f.apiVersion
	if needNew && !f.fs.Changed("api-version") {
		o.APIVersion = api.APIVersion2026
	}
	c, err := client.New(p.Endpoint, o)
	if err != nil {
		return nil, nil, &exitError{code: 2, err: err}
	}
	return c, p, nil
}

func (f *connFlags) context(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), f.timeout)
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode output: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// exactArgs is cobra.ExactArgs with exit code 2.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return &exitError{code: 2, err: fmt.Errorf("%s: want %d argument(s), got %d (see --help)", cmd.CommandPath(), n, len(args))}
		}
		return nil
	}
}

func newLedgerCmd() *cobra.Command {
	cf := &connFlags{}
	cmd := &cobra.Command{
		Use:   "ledger",
		Short: "Read and write ledger entries, receipts and users",
		Long: `Talk to a Parley (or Azure Confidential Ledger) service over HTTPS with
mutual TLS, using its ACL-compatible REST API.

Connection: --endpoint, --cacert (the service certificate, pinned as the only
trusted root), --cert and --key (your user certificate); or --profile FILE, a
JSON file {"endpoint","cacert","cert","key"} such as the one ` + "`parley dev`" + ` writes.
Without flags the profile is $` + ProfileEnv + `, else ./parley-dev/` + ProfileFile + ` if it
exists. Flags given override the profile's fields.

Output is indented JSON on stdout; --quiet prints only the essential value.
Errors from the service print as "<status> <code>: <message>" and exit 1;
misuse exits 2.`,
		Example: `  parley dev &                     # writes ./parley-dev/profile.json
  parley ledger append 'hello, ledger' --wait
  parley ledger get 2.15
  parley ledger list --collection audit
  parley ledger receipt 2.15
  parley ledger users list`,
		Args: cobra.NoArgs,
	}
	cf.register(cmd.PersistentFlags())
	cmd.AddCommand(
		newLedgerAppendCmd(cf),
		newLedgerGetCmd(cf),
		newLedgerListCmd(cf),
		newLedgerReceiptCmd(cf),
		newLedgerStatusCmd(cf),
		newLedgerCurrentCmd(cf),
		newLedgerCollectionsCmd(cf),
		newLedgerUsersCmd(cf),
	)
	return cmd
}

// appendOutput is what `ledger append` prints.
type appendOutput struct {
	TransactionID string                  `json:"transactionId"`
	CollectionID  string                  `json:"collectionId,omitempty"`
	State         string                  `json:"state"`
	Receipt       *api.TransactionReceipt `json:"receipt,omitempty"`
}

func newLedgerAppendCmd(cf *connFlags) *cobra.Command {
	var collection string
	var tags []string
	var wait, quiet bool
	cmd := &cobra.Command{
		Use:   "append CONTENTS | -",
		Short: "Write an entry",
		Long: `Write one ledger entry (POST /app/transactions) and print its transaction id.
CONTENTS "-" reads the contents from standard input.

Without --wait the write is acknowledged but not yet committed ("Pending").
With --wait the command returns once the entry is committed, using Parley's
wait-for-commit extension when the server offers it (the receipt comes back
in the same response and is printed) and polling the status otherwise.
Tags need api-version 2026-02-23, which is then used automatically.`,
		Example: `  parley ledger append 'hello, ledger'
  parley ledger append --collection audit --tags login,alice 'alice logged in' --wait
  echo '{"event":"deploy"}' | parley ledger append - --quiet`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			contents := args[0]
			if contents == "-" {
				b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), maxStdinEntry+1))
				if err != nil {
					return fmt.Errorf("read stdin: %w", err)
				}
				if len(b) > maxStdinEntry {
					return &exitError{code: 2, err: fmt.Errorf("stdin: more than %d bytes", maxStdinEntry)}
				}
				contents = string(b)
			}
			c, _, err := cf.client(len(tags) > 0)
			if err != nil {
				return err
			}
			ctx, cancel := cf.context(cmd)
			defer cancel()
			out := appendOutput{State: api.TxPending}
			if wait {
				res, err := c.AppendAndWait(ctx, collection, contents, tags)
				if err != nil {
					return err
				}
				out = appendOutput{TransactionID: res.TransactionID, CollectionID: res.CollectionID, State: api.TxCommitted, Receipt: res.Receipt}
			} else if out.TransactionID, err = c.Append(ctx, collection, contents, tags); err != nil {
				return err
			}
			if quiet {
				_, err := fmt.Fprintln(cmd.OutOrStdout(), out.TransactionID)
				return err
			}
			if out.CollectionID == "" {
				out.CollectionID = collection
			}
			return printJSON(cmd.OutOrStdout(), out)
		},
	}
	cmd.Flags().StringVar(&collection, "collection", "", "collection id (default: the service's default collection)")
	cmd.Flags().StringSliceVar(&tags, "tags", nil, "comma-separated tags (api-version 2026-02-23)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the entry is committed")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the transaction id")
	return cmd
}

func newLedgerGetCmd(cf *connFlags) *cobra.Command {
	var collection string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "get TRANSACTION_ID",
		Short: "Read the entry a transaction wrote",
		Long: `Read the entry transaction TRANSACTION_ID ("view.seqno") wrote
(GET /app/transactions/{id}), waiting while the service loads it.
--collection must name the entry's collection if it is not the default.`,
		Example: `  parley ledger get 2.15
  parley ledger get 2.16 --collection audit --quiet   # just the contents`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := cf.client(false)
			if err != nil {
				return err
			}
			ctx, cancel := cf.context(cmd)
			defer cancel()
			e, err := c.Entry(ctx, args[0], collection)
			if err != nil {
				return err
			}
			if quiet {
				_, err := fmt.Fprintln(cmd.OutOrStdout(), e.Contents)
				return err
			}
			return printJSON(cmd.OutOrStdout(), e)
		},
	}
	cmd.Flags().StringVar(&collection, "collection", "", "collection id of the entry")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the contents")
	return cmd
}

func newLedgerListCmd(cf *connFlags) *cobra.Command {
	var opts client.ListOptions
	var limit int
	var quiet bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List entries",
		Long: `List the entries of a collection in transaction order (GET /app/transactions),
following the service's nextLink from page to page. --from and --to bound the
range by transaction id (inclusive); --tag (api-version 2026-02-23) keeps
entries with that tag. Prints a JSON array, or with --quiet one transaction id
per line.`,
		Example: `  parley ledger list
  parley ledger list --collection audit --from 2.10 --to 2.50
  parley ledger list --tag login --limit 10 --quiet`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := cf.client(opts.Tag != "")
			if err != nil {
				return err
			}
			ctx, cancel := cf.context(cmd)
			defer cancel()
			w := cmd.OutOrStdout()
			n := 0
			if !quiet {
				fmt.Fprint(w, "[")
			}
			for e, err := range c.List(ctx, opts) {
				if err != nil {
					if !quiet {
						fmt.Fprintln(w, "]")
					}
					return err
				}
				if limit > 0 && n >= limit {
					break
				}
				if quiet {
					fmt.Fprintln(w, e.TransactionID)
				} else {
					b, err := json.MarshalIndent(e, "  ", "  ")
					if err != nil {
						return fmt.Errorf("encode entry: %w", err)
					}
					sep := ","
					if n == 0 {
						sep = ""
					}
					fmt.Fprintf(w, "%s\n  %s", sep, b)
				}
				n++
			}
			if !quiet {
				if n > 0 {
					fmt.Fprintln(w)
				}
				fmt.Fprintln(w, "]")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&opts.CollectionID, "collection", "", "collection id")
	cmd.Flags().StringVar(&opts.From, "from", "", "first transaction id")
	cmd.Flags().StringVar(&opts.To, "to", "", "last transaction id")
	cmd.Flags().StringVar(&opts.Tag, "tag", "", "only entries with this tag (api-version 2026-02-23)")
	cmd.Flags().IntVar(&limit, "limit", 0, "stop after this many entries (0: all)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only transaction ids")
	return cmd
}

func newLedgerReceiptCmd(cf *connFlags) *cobra.Command {
	var noVerify, quiet bool
	cmd := &cobra.Command{
		Use:   "receipt TRANSACTION_ID",
		Short: "Fetch and verify a transaction's receipt",
		Long: `Fetch the write receipt of a committed transaction
(GET /app/transactions/{id}/receipt), waiting while the service loads it, and
verify it against the pinned service certificate (--cacert, or the profile's)
with the Azure Confidential Ledger algorithm: the Merkle proof, the node's
signature of the root, the node certificate's endorsement by the service, and
the application claims. The receipt JSON goes to stdout, suitable for
` + "`parley receipt verify`" + ` later; the verdict goes to stderr. Exits 1 if the
receipt does not verify. --no-verify skips the check.`,
		Example: `  parley ledger receipt 2.15 > receipt.json
  parley receipt verify receipt.json --service-cert parley-dev/service_cert.pem`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, p, err := cf.client(false)
			if err != nil {
				return err
			}
			ctx, cancel := cf.context(cmd)
			defer cancel()
			tr, err := c.Receipt(ctx, args[0])
			if err != nil {
				return err
			}
			if !quiet {
				if err := printJSON(cmd.OutOrStdout(), tr); err != nil {
					return err
				}
			}
			if noVerify {
				fmt.Fprintln(cmd.ErrOrStderr(), "receipt NOT verified (--no-verify)")
				return nil
			}
			svc := c.ServiceCertificate()
			fp := sha256.Sum256(svc.Raw)
			if err := receipt.VerifyTransactionReceipt(tr, svc); err != nil {
				return &exitError{code: 1, err: fmt.Errorf("receipt INVALID for %s: %w", args[0], err)}
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "receipt OK: transaction %s verified against service certificate %s (SHA-256 %s)\n",
				tr.TransactionID, p.CACert, hex.EncodeToString(fp[:]))
			return nil
		},
	}
	cmd.Flags().BoolVar(&noVerify, "no-verify", false, "do not verify the receipt")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the verdict (on stderr)")
	return cmd
}

func newLedgerStatusCmd(cf *connFlags) *cobra.Command {
	var wait, quiet bool
	cmd := &cobra.Command{
		Use:   "status TRANSACTION_ID",
		Short: "Show whether a transaction is committed",
		Long: `Show the state of a transaction, "Committed" or "Pending"
(GET /app/transactions/{id}/status). --wait polls until it is Committed.`,
		Example: `  parley ledger status 2.15
  parley ledger status 2.15 --wait --quiet`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := cf.client(false)
			if err != nil {
				return err
			}
			ctx, cancel := cf.context(cmd)
			defer cancel()
			if wait {
				if err := c.WaitCommitted(ctx, args[0]); err != nil {
					return err
				}
			}
			s, err := c.Status(ctx, args[0])
			if err != nil {
				return err
			}
			if quiet {
				_, err := fmt.Fprintln(cmd.OutOrStdout(), s.State)
				return err
			}
			return printJSON(cmd.OutOrStdout(), s)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the transaction is committed")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the state")
	return cmd
}

func newLedgerCurrentCmd(cf *connFlags) *cobra.Command {
	var collection string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "current",
		Short: "Show the latest entry of a collection",
		Long:  `Show the latest entry of a collection (GET /app/transactions/current).`,
		Example: `  parley ledger current
  parley ledger current --collection audit --quiet   # just its transaction id`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := cf.client(false)
			if err != nil {
				return err
			}
			ctx, cancel := cf.context(cmd)
			defer cancel()
			e, err := c.Current(ctx, collection)
			if err != nil {
				return err
			}
			if quiet {
				_, err := fmt.Fprintln(cmd.OutOrStdout(), e.TransactionID)
				return err
			}
			return printJSON(cmd.OutOrStdout(), e)
		},
	}
	cmd.Flags().StringVar(&collection, "collection", "", "collection id")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the transaction id")
	return cmd
}

func newLedgerCollectionsCmd(cf *connFlags) *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:     "collections",
		Short:   "List collections",
		Long:    `List the ledger's collections (GET /app/collections).`,
		Example: `  parley ledger collections --quiet`,
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := cf.client(false)
			if err != nil {
				return err
			}
			ctx, cancel := cf.context(cmd)
			defer cancel()
			out, err := collect(c.Collections(ctx))
			if err != nil {
				return err
			}
			if quiet {
				for _, col := range out {
					fmt.Fprintln(cmd.OutOrStdout(), col.CollectionID)
				}
				return nil
			}
			return printJSON(cmd.OutOrStdout(), out)
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only collection ids")
	return cmd
}

func newLedgerUsersCmd(cf *connFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "users",
		Short: "Manage certificate users and their roles",
		Long: `Manage the ledger's users (/app/users). A user id is the SHA-256
fingerprint of the user's DER certificate, either in lowercase hex as CCF
writes it or colon-separated uppercase as ACL shows it (5F:23:…:B5); both name
the same user, and answers echo the form given. Roles: Administrator ⊃
Contributor ⊃ Reader. Only Administrators manage users.`,
		Example: `  parley ledger users list
  parley ledger users set 5F:23:3D:…:B5 --role Reader
  parley ledger users get 5f233d…b5
  parley ledger users delete 5f233d…b5`,
		Args: cobra.NoArgs,
	}
	var quiet bool
	get := &cobra.Command{
		Use:     "get USER_ID",
		Short:   "Show a user's role",
		Example: `  parley ledger users get 5f233d…b5 --quiet   # just the role`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := cf.client(false)
			if err != nil {
				return err
			}
			ctx, cancel := cf.context(cmd)
			defer cancel()
			u, err := c.GetUser(ctx, args[0])
			if err != nil {
				return err
			}
			if quiet {
				_, err := fmt.Fprintln(cmd.OutOrStdout(), u.AssignedRole)
				return err
			}
			return printJSON(cmd.OutOrStdout(), u)
		},
	}
	get.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the role")

	var role string
	set := &cobra.Command{
		Use:     "set USER_ID --role ROLE",
		Short:   "Add a user, or change its role",
		Example: `  parley ledger users set $(openssl x509 -in bob.pem -outform der | sha256sum | cut -c1-64) --role Contributor`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch role {
			case api.RoleAdministrator, api.RoleContributor, api.RoleReader:
			default:
				return &exitError{code: 2, err: fmt.Errorf("--role %q: want Administrator, Contributor or Reader", role)}
			}
			c, _, err := cf.client(false)
			if err != nil {
				return err
			}
			ctx, cancel := cf.context(cmd)
			defer cancel()
			u, err := c.SetUser(ctx, args[0], role)
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), u)
		},
	}
	set.Flags().StringVar(&role, "role", "", "Administrator, Contributor or Reader (required)")

	del := &cobra.Command{
		Use:     "delete USER_ID",
		Short:   "Remove a user",
		Example: `  parley ledger users delete 5F:23:3D:…:B5`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := cf.client(false)
			if err != nil {
				return err
			}
			ctx, cancel := cf.context(cmd)
			defer cancel()
			return c.DeleteUser(ctx, args[0])
		},
	}

	var listQuiet bool
	list := &cobra.Command{
		Use:     "list",
		Short:   "List users and roles",
		Long:    `List every user and its role (GET /app/users, api-version 2026-02-23, used automatically).`,
		Example: `  parley ledger users list --quiet`,
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := cf.client(true)
			if err != nil {
				return err
			}
			ctx, cancel := cf.context(cmd)
			defer cancel()
			out, err := collect(c.ListUsers(ctx))
			if err != nil {
				return err
			}
			if listQuiet {
				for _, u := range out {
					fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", u.UserID, u.AssignedRole)
				}
				return nil
			}
			return printJSON(cmd.OutOrStdout(), out)
		},
	}
	list.Flags().BoolVarP(&listQuiet, "quiet", "q", false, "print \"id role\" lines")
	cmd.AddCommand(get, set, del, list)
	return cmd
}

// collect drains a paged listing into a slice (empty, not nil, when there is
// nothing, so it prints as []).
func collect[T any](seq iter.Seq2[T, error]) ([]T, error) {
	out := []T{}
	for v, err := range seq {
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}
