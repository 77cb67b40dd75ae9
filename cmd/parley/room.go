package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/client"
	"github.com/parleyhq/parley/internal/cleanroom"
	"github.com/parleyhq/parley/internal/cleanroom/blob"
	"github.com/parleyhq/parley/internal/cleanroom/dataset"
	"github.com/parleyhq/parley/internal/cleanroom/dataset/parquet"
	"github.com/parleyhq/parley/internal/cleanroom/runner"
	"github.com/parleyhq/parley/internal/httpapi"
	"github.com/parleyhq/parley/internal/identity"
	"github.com/parleyhq/parley/internal/receipt"
	"github.com/parleyhq/parley/internal/strictjson"
	"github.com/parleyhq/parley/internal/vfs"
)

// roomFlags are the flags of every `parley room` command.
type roomFlags struct {
	conn     connFlags
	partyKey string
}

// roomConn is a connection to the service as a party.
type roomConn struct {
	c        *client.Client
	hc       *http.Client
	endpoint string
	key      *ecdsa.PrivateKey // nil when the command signs nothing
	party    string
}

// dial connects; withParty loads --party-key.
func (f *roomFlags) dial(withParty bool) (*roomConn, error) {
	c, p, err := f.conn.client(false)
	if err != nil {
		return nil, err
	}
	o, err := p.Options()
	if err != nil {
		return nil, &exitError{code: 2, err: err}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(o.CACertPEM) {
		return nil, &exitError{code: 2, err: errors.New("--cacert: no certificate")}
	}
	pair, err := tls.X509KeyPair(o.CertPEM, o.KeyPEM)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("client certificate and key: %w", err)}
	}
	rc := &roomConn{
		c:        c,
		hc:       &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}}},
		endpoint: strings.TrimSuffix(p.Endpoint, "/"),
	}
	if withParty {
		if f.partyKey == "" {
			return nil, &exitError{code: 2, err: errors.New("--party-key is required: the party's P-384 signing key (see `parley room keys new`)")}
		}
		b, err := os.ReadFile(f.partyKey)
		if err != nil {
			return nil, &exitError{code: 2, err: fmt.Errorf("--party-key: %w", err)}
		}
		if rc.key, err = identity.ParseKeyPEM(b); err != nil || rc.key.Curve != elliptic.P384() {
			return nil, &exitError{code: 2, err: fmt.Errorf("--party-key %s: want a P-384 private key PEM", f.partyKey)}
		}
		if rc.party, err = cleanroom.PartyID(&rc.key.PublicKey); err != nil {
			return nil, err
		}
	}
	return rc, nil
}

// signed signs a clean-room request of type typ for room with body and
// sends it, with the time in nanoseconds as its counter.
func (rc *roomConn) signed(ctx context.Context, typ, room string, body any) (json.RawMessage, string, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, "", fmt.Errorf("encode %s body: %w", typ, err)
	}
	now := time.Now()
	jws, err := cleanroom.Sign(rc.key, rc.party, &cleanroom.Request{Type: typ, Room: room, CreatedAt: now.Unix(), Counter: uint64(now.UnixNano()), Body: b})
	if err != nil {
		return nil, "", err
	}
	return rc.post(ctx, "/cleanroom/"+typ, "application/jose", jws)
}

// post sends a request and returns the JSON of a 200 answer and the
// transaction id header.
func (rc *roomConn) post(ctx context.Context, path, contentType string, body []byte) (json.RawMessage, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rc.endpoint+path, bytes.NewReader(body))
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := rc.hc.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, client.MaxResponseSize))
	if err != nil {
		return nil, "", fmt.Errorf("read response: %w", err)
	}
	txid := resp.Header.Get("x-ms-ccf-transaction-id")
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error.Code != "" {
			return nil, txid, fmt.Errorf("POST %s: %d %s: %s", path, resp.StatusCode, e.Error.Code, e.Error.Message)
		}
		return nil, txid, fmt.Errorf("POST %s: %s", path, resp.Status)
	}
	return b, txid, nil
}

func roomPath(room string, rest ...string) string {
	p := "/cleanroom/rooms/" + url.PathEscape(room)
	for _, r := range rest {
		p += "/" + url.PathEscape(r)
	}
	return p
}

func newRoomCmd() *cobra.Command {
	f := &roomFlags{}
	cmd := &cobra.Command{
		Use:   "room",
		Short: "Clean rooms: parties, encrypted datasets, contracts, runs, results, audit",
		Long: `Work in a clean room as a party. Writes are signed with the party's P-384
key (--party-key, JWS ES384); the party id is the SHA-256 of its public key.
Reads (contracts, datasets, jobs, the audit) take a ledger user's certificate:
the connection flags as for ` + "`parley ledger`" + ` (--profile, or --endpoint,
--cacert, --cert, --key).

  keys new PREFIX                                   make a party's keys
  create ROOM --name NAME                           create a room, as its first party
  invite ROOM NAME --public-key FILE                invite a party
  join ROOM                                         accept an invitation
  dataset upload ROOM NAME FILE --blob-dir DIR      encrypt on this machine, store, register, deposit the key
  dataset show ROOM NAME                            a dataset's digest, schema and rules
  rules ROOM DATASET                                a dataset's analysis rules
  contract propose ROOM --name N --sql Q ...        propose a contract
  contract show ROOM ID                             a contract and its approvals
  approve ROOM ID | suspend ROOM ID
  run ROOM ID --blob-dir DIR --platform P ...       start a runner process for the contract
  result fetch ROOM JOB --hpke-key FILE --blob-dir DIR
  audit ROOM                                        every step with its receipt, verified`,
		Args: cobra.NoArgs,
	}
	f.conn.register(cmd.PersistentFlags())
	cmd.PersistentFlags().StringVar(&f.partyKey, "party-key", "", "the party's P-384 signing key PEM")
	cmd.AddCommand(
		newRoomKeysCmd(),
		newRoomCreateCmd(f), newRoomInviteCmd(f), newRoomJoinCmd(f),
		newRoomDatasetCmd(f), newRoomRulesCmd(f),
		newRoomContractCmd(f), newRoomContractChangeCmd(f, cleanroom.TypeApprove, "Approve a contract (an owner of a dataset it reads)"),
		newRoomContractChangeCmd(f, cleanroom.TypeSuspend, "Suspend a contract for good (any party)"),
		newRoomRunCmd(f), newRoomResultCmd(f), newRoomAuditCmd(f),
	)
	return cmd
}

// printSigned prints the answer to a signed request and its transaction.
func printSigned(cmd *cobra.Command, out json.RawMessage, txid string) error {
	var v any
	if err := json.Unmarshal(out, &v); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	if txid != "" {
		fmt.Fprintf(cmd.ErrOrStderr(), "committed in transaction %s\n", txid)
	}
	return printJSON(cmd.OutOrStdout(), v)
}

func newRoomKeysCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Make a party's keys", Args: cobra.NoArgs}
	cmd.AddCommand(&cobra.Command{
		Use:   "new PREFIX",
		Short: "Make a party's signing key and result (HPKE) key",
		Long: `Writes PREFIX.party.pem (P-384 signing key, the party's identity),
PREFIX.party.pub.pem (its public key, what an inviter needs), PREFIX.hpke.pem
(X25519 key that opens results sealed to the party) and PREFIX.hpke.pub.pem.
Prints the party id and the HPKE public key.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sk, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
			if err != nil {
				return err
			}
			hk, err := ecdh.X25519().GenerateKey(rand.Reader)
			if err != nil {
				return err
			}
			skPEM, err := identity.EncodeKeyPEM(sk)
			if err != nil {
				return err
			}
			pubPEM, err := cleanroom.EncodePublicKey(&sk.PublicKey)
			if err != nil {
				return err
			}
			hDER, err := x509.MarshalPKCS8PrivateKey(hk)
			if err != nil {
				return err
			}
			hPubDER, err := x509.MarshalPKIXPublicKey(hk.PublicKey())
			if err != nil {
				return err
			}
			prefix := args[0]
			files := []struct {
				name string
				b    []byte
				mode os.FileMode
			}{
				{prefix + ".party.pem", skPEM, 0o600},
				{prefix + ".party.pub.pem", []byte(pubPEM), 0o644},
				{prefix + ".hpke.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: hDER}), 0o600},
				{prefix + ".hpke.pub.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: hPubDER}), 0o644},
			}
			// A party's keys are its identity: never overwrite them.
			for _, w := range files {
				if _, err := os.Stat(w.name); err == nil {
					return &exitError{code: 2, err: fmt.Errorf("%s exists: not overwriting a party's keys", w.name)}
				}
			}
			for _, w := range files {
				if err := vfs.WriteFileDurable(vfs.OS{}, w.name, w.b, w.mode); err != nil {
					return err
				}
			}
			id, err := cleanroom.PartyID(&sk.PublicKey)
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), map[string]any{"party": id, "hpkeCurve": "X25519", "hpkePublicKey": hk.PublicKey().Bytes()})
		},
	})
	return cmd
}

func newRoomCreateCmd(f *roomFlags) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "create ROOM --name NAME",
		Short: "Create a room; the signer is its first party",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if name == "" {
				return usage(cmd, "--name (this party's name in the room) is required")
			}
			rc, err := f.dial(true)
			if err != nil {
				return err
			}
			pub, err := cleanroom.EncodePublicKey(&rc.key.PublicKey)
			if err != nil {
				return err
			}
			ctx, cancel := f.conn.context(cmd)
			defer cancel()
			out, txid, err := rc.signed(ctx, cleanroom.TypeCreateRoom, args[0], cleanroom.CreateRoomBody{Name: name, PublicKey: pub})
			if err != nil {
				return err
			}
			return printSigned(cmd, out, txid)
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "this party's name in the room")
	return cmd
}

func newRoomInviteCmd(f *roomFlags) *cobra.Command {
	var pubFile string
	cmd := &cobra.Command{
		Use:   "invite ROOM NAME --public-key FILE",
		Short: "Invite a party by its P-384 public key",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if pubFile == "" {
				return usage(cmd, "--public-key is required")
			}
			pub, err := readLimited(pubFile)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			rc, err := f.dial(true)
			if err != nil {
				return err
			}
			ctx, cancel := f.conn.context(cmd)
			defer cancel()
			out, txid, err := rc.signed(ctx, cleanroom.TypeInvite, args[0], cleanroom.InviteBody{Name: args[1], PublicKey: string(pub)})
			if err != nil {
				return err
			}
			return printSigned(cmd, out, txid)
		},
	}
	cmd.Flags().StringVar(&pubFile, "public-key", "", "the invitee's public key PEM (PREFIX.party.pub.pem)")
	return cmd
}

func newRoomJoinCmd(f *roomFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "join ROOM",
		Short: "Accept an invitation to a room",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rc, err := f.dial(true)
			if err != nil {
				return err
			}
			ctx, cancel := f.conn.context(cmd)
			defer cancel()
			out, txid, err := rc.signed(ctx, cleanroom.TypeJoin, args[0], struct{}{})
			if err != nil {
				return err
			}
			return printSigned(cmd, out, txid)
		},
	}
}

func newRoomDatasetCmd(f *roomFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "dataset", Short: "Upload and inspect datasets", Args: cobra.NoArgs}
	var format, schemaFile, rulesFile, blobDir string
	upload := &cobra.Command{
		Use:   "upload ROOM NAME FILE --blob-dir DIR [--format csv|parquet] [--schema FILE] [--rules FILE]",
		Short: "Encrypt a dataset here, store it, register it and deposit its key",
		Long: `Encrypts FILE on this machine with a new random data key (chunked AES-256-GCM,
see docs/cleanroom.md), stores the ciphertext in the blob store (--blob-dir,
as ROOM/NAME), registers the dataset (name, ciphertext SHA-256, size, schema,
analysis rules) signed by this party, and in the same transaction hands the
data key to the service's key broker, which releases it only to an attested
runner of an approved contract. The key travels only inside TLS, is never
logged, and is kept only encrypted in the ledger.

CSV: the header row names the columns; --schema FILE ({"columns":[{"name",
"type"}]}) fixes their types, else they are inferred. Parquet is converted to
CSV in memory. --rules FILE is the analysis rules JSON: {"forbidden":[…],
"join_only":[…], "aggregate_only":[…], "entity":"col", "min_entities":N}.
Rules are part of the registration and immutable: new rules mean a new
dataset name.`,
		Args: exactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			room, name, file := args[0], args[1], args[2]
			if blobDir == "" {
				return usage(cmd, "--blob-dir is required")
			}
			var rules runner.Rules
			if rulesFile != "" {
				b, err := readLimited(rulesFile)
				if err != nil {
					return &exitError{code: 2, err: err}
				}
				if err := strictjson.Unmarshal(b, &rules); err != nil {
					return &exitError{code: 2, err: fmt.Errorf("--rules: %w", err)}
				}
			}
			ctx, cancel := f.conn.context(cmd)
			defer cancel()
			plain, schema, err := readDataset(ctx, file, format, schemaFile)
			if err != nil {
				return err
			}
			defer clear(plain)
			if err := runner.ValidateTable(runner.Table{Name: name, Schema: schema, Rules: rules}); err != nil {
				return &exitError{code: 2, err: fmt.Errorf("rules: %w", err)}
			}
			rc, err := f.dial(true)
			if err != nil {
				return err
			}
			key, err := dataset.NewKey()
			if err != nil {
				return err
			}
			defer clear(key[:])
			id, err := dataset.NewID()
			if err != nil {
				return err
			}
			var ct bytes.Buffer
			info, err := dataset.EncryptCSV(&ct, bytes.NewReader(plain), key, id, schema, 0)
			if err != nil {
				return fmt.Errorf("encrypt %s: %w", file, err)
			}
			store, err := blob.OpenDir(blobDir)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if _, err := store.Put(ctx, datasetBlob(room, name), &ct); err != nil {
				return fmt.Errorf("store the ciphertext: %w", err)
			}
			d := cleanroom.Dataset{
				Name: name, Digest: hex.EncodeToString(info.Digest[:]), Size: info.Size, Schema: schema, Rules: rules,
				KeyCommitment: cleanroom.KeyCommitment(key[:]),
			}
			b, err := json.Marshal(d)
			if err != nil {
				return err
			}
			now := time.Now()
			jws, err := cleanroom.Sign(rc.key, rc.party, &cleanroom.Request{Type: cleanroom.TypeRegisterDataset, Room: room, CreatedAt: now.Unix(), Counter: uint64(now.UnixNano()), Body: b})
			if err != nil {
				return err
			}
			env, err := json.Marshal(map[string]any{"request": string(jws), "dataKey": key[:]})
			if err != nil {
				return err
			}
			defer clear(env)
			out, txid, err := rc.post(ctx, "/cleanroom/"+cleanroom.TypeRegisterDataset, "application/json", env)
			if err != nil {
				return err
			}
			return printSigned(cmd, out, txid)
		},
	}
	upload.Flags().StringVar(&format, "format", "", "csv or parquet (default: from the file name)")
	upload.Flags().StringVar(&schemaFile, "schema", "", "CSV: schema JSON (default: inferred)")
	upload.Flags().StringVar(&rulesFile, "rules", "", "analysis rules JSON")
	upload.Flags().StringVar(&blobDir, "blob-dir", "", "blob store directory")
	show := &cobra.Command{
		Use:   "show ROOM NAME",
		Short: "Show a dataset's registration",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return roomGet(cmd, f, roomPath(args[0], "datasets", args[1]), nil)
		},
	}
	cmd.AddCommand(upload, show)
	return cmd
}

// readDataset reads a CSV or Parquet file into dataset CSV and its schema.
func readDataset(ctx context.Context, file, format, schemaFile string) ([]byte, dataset.Schema, error) {
	if format == "" {
		format = "csv"
		if strings.HasSuffix(strings.ToLower(file), ".parquet") {
			format = "parquet"
		}
	}
	switch format {
	case "parquet":
		var buf bytes.Buffer
		schema, err := parquet.ToCSV(ctx, file, &buf)
		if err != nil {
			return nil, dataset.Schema{}, fmt.Errorf("read %s: %w", file, err)
		}
		return buf.Bytes(), schema, nil
	case "csv":
		plain, err := os.ReadFile(file)
		if err != nil {
			return nil, dataset.Schema{}, &exitError{code: 2, err: err}
		}
		var schema dataset.Schema
		if schemaFile != "" {
			b, err := readLimited(schemaFile)
			if err != nil {
				return nil, dataset.Schema{}, &exitError{code: 2, err: err}
			}
			if err := strictjson.Unmarshal(b, &schema); err != nil {
				return nil, dataset.Schema{}, &exitError{code: 2, err: fmt.Errorf("--schema: %w", err)}
			}
		} else if schema, err = dataset.InferSchema(bufio.NewReader(bytes.NewReader(plain))); err != nil {
			return nil, dataset.Schema{}, fmt.Errorf("infer the schema of %s: %w", file, err)
		}
		return plain, schema, nil
	}
	return nil, dataset.Schema{}, &exitError{code: 2, err: fmt.Errorf("--format %q: want csv or parquet", format)}
}

// roomGet GETs path with the ledger user's certificate and prints it (or
// decodes it into out).
func roomGet(cmd *cobra.Command, f *roomFlags, path string, out any) error {
	c, _, err := f.conn.client(false)
	if err != nil {
		return err
	}
	ctx, cancel := f.conn.context(cmd)
	defer cancel()
	var v any
	if out == nil {
		out = &v
	}
	if err := c.Call(ctx, "GET", path, nil, out); err != nil {
		return err
	}
	if out == &v {
		return printJSON(cmd.OutOrStdout(), v)
	}
	return nil
}

func newRoomRulesCmd(f *roomFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "rules ROOM DATASET",
		Short: "Show the analysis rules its owner set on a dataset",
		Long: `Prints the dataset's analysis rules. Rules are set when the dataset is
uploaded (` + "`dataset upload --rules FILE`" + `) and are immutable.`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var d cleanroom.Dataset
			if err := roomGet(cmd, f, roomPath(args[0], "datasets", args[1]), &d); err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), map[string]any{"dataset": d.Name, "owner": d.Owner, "rules": d.Rules})
		},
	}
}

func newRoomContractCmd(f *roomFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "contract", Short: "Propose and inspect contracts", Args: cobra.NoArgs}
	var name, sqlText, sqlFile string
	var datasets, recipients, measurements []string
	var unchecked bool
	propose := &cobra.Command{
		Use:   "propose ROOM --name N (--sql Q | --sql-file F) --dataset D… --recipient PARTY=HPKEPUB… --measurement HEX…",
		Short: "Propose a contract",
		Long: `Propose a contract: a query over the room's datasets, who receives the result
(--recipient PARTY_ID=FILE, FILE the recipient's PREFIX.hpke.pub.pem, an
X25519 or P-256 public key), and which runner measurements may run it. The
contract id (printed) is the SHA-256 of the terms as signed; every owner of a
dataset it reads must approve it before any runner gets a key.

Before proposing, the query is checked here against the datasets' schemas
and analysis rules (the runner's own check, on no data); a query that breaks
a rule is not proposed, unless --unchecked. The runner checks it again when
it runs.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if sqlFile != "" {
				b, err := readLimited(sqlFile)
				if err != nil {
					return &exitError{code: 2, err: err}
				}
				sqlText = string(b)
			}
			t := cleanroom.ContractTerms{Name: name, SQL: sqlText, Datasets: datasets, Measurements: measurements}
			for _, r := range recipients {
				party, file, ok := strings.Cut(r, "=")
				if !ok {
					return usage(cmd, "--recipient %q: want PARTY_ID=HPKE_PUBLIC_KEY_FILE", r)
				}
				rec, err := readRecipient(party, file)
				if err != nil {
					return &exitError{code: 2, err: err}
				}
				t.Recipients = append(t.Recipients, rec)
			}
			rc, err := f.dial(true)
			if err != nil {
				return err
			}
			ctx, cancel := f.conn.context(cmd)
			defer cancel()
			if !unchecked {
				if err := checkQuery(ctx, rc.c, args[0], t); err != nil {
					return err
				}
			}
			out, txid, err := rc.signed(ctx, cleanroom.TypeProposeContract, args[0], t)
			if err != nil {
				return err
			}
			return printSigned(cmd, out, txid)
		},
	}
	fl := propose.Flags()
	fl.StringVar(&name, "name", "", "contract name")
	fl.StringVar(&sqlText, "sql", "", "the query")
	fl.StringVar(&sqlFile, "sql-file", "", "read the query from this file")
	fl.StringArrayVar(&datasets, "dataset", nil, "a dataset the query reads (repeat)")
	fl.StringArrayVar(&recipients, "recipient", nil, "PARTY_ID=HPKE_PUBLIC_KEY_FILE of a result recipient (repeat)")
	fl.StringArrayVar(&measurements, "measurement", nil, "an allowed runner measurement, hex (repeat)")
	fl.BoolVar(&unchecked, "unchecked", false, "propose without checking the query against the datasets' rules")
	show := &cobra.Command{
		Use:   "show ROOM ID",
		Short: "Show a contract, its state and approvals",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return roomGet(cmd, f, roomPath(args[0], "contracts", args[1]), nil)
		},
	}
	cmd.AddCommand(propose, show)
	return cmd
}

// checkQuery runs the runner's rule check of t's query over the datasets'
// registered schemas and rules, with no rows.
func checkQuery(ctx context.Context, c *client.Client, room string, t cleanroom.ContractTerms) error {
	var tables []runner.Table
	for _, name := range t.Datasets {
		var d cleanroom.Dataset
		if err := c.Call(ctx, "GET", roomPath(room, "datasets", name), nil, &d); err != nil {
			return err
		}
		head := make([]string, len(d.Schema.Columns))
		for i, col := range d.Schema.Columns {
			head[i] = col.Name
		}
		tables = append(tables, runner.Table{Name: d.Name, Schema: d.Schema, CSV: []byte(strings.Join(head, ",") + "\n"), Rules: d.Rules})
	}
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	_, err = runner.Run(ctx, runner.Job{Tables: tables, SQL: t.SQL, Recipients: []runner.Recipient{{ID: "check", Key: k.PublicKey()}}})
	var re *runner.RuleError
	if errors.As(err, &re) {
		return &exitError{code: 1, err: fmt.Errorf("the query breaks %w; not proposed (--unchecked proposes it anyway; the runner will refuse it)", re)}
	}
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("check the query: %w", err)}
	}
	return nil
}

// readRecipient reads a recipient's HPKE public key (PKIX PEM, X25519 or
// P-256).
func readRecipient(party, file string) (cleanroom.Recipient, error) {
	b, err := readLimited(file)
	if err != nil {
		return cleanroom.Recipient{}, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return cleanroom.Recipient{}, fmt.Errorf("%s: no PEM public key", file)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return cleanroom.Recipient{}, fmt.Errorf("%s: %w", file, err)
	}
	switch pk := k.(type) {
	case *ecdh.PublicKey:
		return cleanroom.Recipient{Party: party, Curve: "X25519", Key: pk.Bytes()}, nil
	case *ecdsa.PublicKey:
		e, err := pk.ECDH()
		if err != nil || pk.Curve != elliptic.P256() {
			return cleanroom.Recipient{}, fmt.Errorf("%s: want an X25519 or P-256 key", file)
		}
		return cleanroom.Recipient{Party: party, Curve: "P-256", Key: e.Bytes()}, nil
	}
	return cleanroom.Recipient{}, fmt.Errorf("%s: want an X25519 or P-256 key", file)
}

func newRoomContractChangeCmd(f *roomFlags, typ, short string) *cobra.Command {
	return &cobra.Command{
		Use:   typ + " ROOM CONTRACT_ID",
		Short: short,
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			rc, err := f.dial(true)
			if err != nil {
				return err
			}
			ctx, cancel := f.conn.context(cmd)
			defer cancel()
			out, txid, err := rc.signed(ctx, typ, args[0], cleanroom.ContractRef{Contract: args[1]})
			if err != nil {
				return err
			}
			return printSigned(cmd, out, txid)
		},
	}
}

func newRoomRunCmd(f *roomFlags) *cobra.Command {
	o := &runnerOptions{}
	cmd := &cobra.Command{
		Use:   "run ROOM CONTRACT_ID --platform P --blob-dir DIR [runner flags]",
		Short: "Start a runner process for an approved contract",
		Long: `Starts ` + "`parley runner`" + ` (this same binary, as a child process) for the
contract, with the endpoint and service certificate of the connection flags,
and waits for it. The runner attests, gets the data keys, runs the query and
records the job; see ` + "`parley runner --help`" + `. No party key is needed: the
runner is authenticated by its attestation alone.`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := f.conn.resolve()
			if err != nil {
				return err
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			argv := []string{"runner", "--endpoint", p.Endpoint, "--cacert", p.CACert, "--room", args[0], "--contract", args[1]}
			cmd.Flags().Visit(func(fl *pflag.Flag) {
				switch fl.Name {
				case "endpoint", "cacert", "cert", "key", "profile", "api-version", "party-key":
					return
				}
				argv = append(argv, "--"+fl.Name, fl.Value.String())
			})
			child := exec.CommandContext(cmd.Context(), self, argv...)
			child.Stdout, child.Stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
			if err := child.Run(); err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					return &exitError{code: ee.ExitCode(), err: errors.New("")}
				}
				return err
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.platform, "platform", "", "virtual (development only), sev-snp or tdx")
	fs.StringVar(&o.measurement, "measurement", "", "virtual: the measurement to claim (default: SHA-256 of this binary)")
	fs.StringVar(&o.virtualKey, "virtual-key", "", "virtual: the software evidence signing key PEM")
	fs.StringVar(&o.vcek, "vcek", "", "sev-snp: the VCEK certificate")
	fs.StringVar(&o.blobDir, "blob-dir", "", "blob store directory")
	fs.StringVar(&o.workDir, "work-dir", "", "the runner's working directory")
	fs.StringVar(&o.memoryLimit, "memory-limit", "", "DuckDB memory limit")
	return cmd
}

func newRoomResultCmd(f *roomFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "result", Short: "Fetch and open results", Args: cobra.NoArgs}
	var hpkeKey, blobDir, out string
	fetch := &cobra.Command{
		Use:   "fetch ROOM JOB_ID --hpke-key FILE --blob-dir DIR [--out FILE]",
		Short: "Fetch a job's sealed result, check it against the ledger and open it",
		Long: `Reads the job record from the ledger, the sealed result it names from the blob
store (checking its SHA-256 against the record), and opens it with the
recipient's HPKE private key (PREFIX.hpke.pem). Only a recipient's key opens
it. Writes the CSV to --out or standard output.`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if hpkeKey == "" || blobDir == "" {
				return usage(cmd, "--hpke-key and --blob-dir are required")
			}
			kb, err := readLimited(hpkeKey)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			key, err := parseHPKEKey(kb)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("--hpke-key %s: %w", hpkeKey, err)}
			}
			var job cleanroom.JobRecord
			if err := roomGet(cmd, f, roomPath(args[0], "jobs", args[1]), &job); err != nil {
				return err
			}
			if job.Refused != "" || job.Output == "" {
				return &exitError{code: 1, err: fmt.Errorf("job %s has no result: the runner refused it: %s", job.ID, job.Refused)}
			}
			store, err := blob.OpenDir(blobDir)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			ctx, cancel := f.conn.context(cmd)
			defer cancel()
			rd, err := store.Get(ctx, resultBlob(args[0], job.Output))
			if err != nil {
				return err
			}
			b, err := io.ReadAll(io.LimitReader(rd, runner.MaxOutputSize*2))
			rd.Close()
			if err != nil {
				return err
			}
			if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != job.Output {
				return &exitError{code: 1, err: fmt.Errorf("stored result has SHA-256 %x, the job record says %s", sum, job.Output)}
			}
			var res SealedResult
			if err := json.Unmarshal(b, &res); err != nil {
				return fmt.Errorf("decode result: %w", err)
			}
			if res.Room != args[0] || res.Contract != job.Contract || res.Release != job.Release {
				return &exitError{code: 1, err: errors.New("the stored result names another room, contract or release than the job record")}
			}
			pt, party, err := openResult(&res, key)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "opened the copy sealed to party %s\n", party)
			if out != "" {
				return os.WriteFile(out, pt, 0o600)
			}
			_, err = cmd.OutOrStdout().Write(pt)
			return err
		},
	}
	fetch.Flags().StringVar(&hpkeKey, "hpke-key", "", "the recipient's HPKE private key PEM")
	fetch.Flags().StringVar(&blobDir, "blob-dir", "", "blob store directory")
	fetch.Flags().StringVarP(&out, "out", "o", "", "write the CSV here (default stdout)")
	cmd.AddCommand(fetch)
	return cmd
}

// parseHPKEKey parses an X25519 or P-256 private key PEM (PKCS#8).
func parseHPKEKey(b []byte) (*ecdh.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM private key")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	switch pk := k.(type) {
	case *ecdh.PrivateKey:
		return pk, nil
	case *ecdsa.PrivateKey:
		return pk.ECDH()
	}
	return nil, errors.New("want an X25519 or P-256 key")
}

// auditLine is one verified step as `room audit --json` prints it.
type auditLine struct {
	TransactionID string          `json:"transactionId"`
	Event         cleanroom.Event `json:"event"`
	Verified      bool            `json:"verified"`
	Problem       string          `json:"problem,omitempty"`
	Receipt       *api.Receipt    `json:"receipt,omitempty"`
}

func newRoomAuditCmd(f *roomFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "audit ROOM",
		Short: "List every step of a room and verify each step's receipt",
		Long: `Lists every step of the room in order — creation, invitations, joins,
datasets, contracts, approvals, suspensions, key releases and refusals, jobs
and refused jobs — each with the transaction that recorded it. For each step
it fetches the transaction's receipt and checks, offline, against the pinned
service certificate: the receipt's signature and Merkle path, that it is the
receipt of that transaction, and that its claims digest is the SHA-256 of
the step as listed (so the step is exactly what the ledger recorded). A step
a party made must also carry that party's signed request, the one the step
names, verified with the party's key as the room's own steps introduced it
(the creator's key in create_room, each invitee's in the invitation signed
by an active party): the service cannot forge a party's step. Prints OK or
FAILED per step; exits 1 if any step fails.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := f.conn.client(false)
			if err != nil {
				return err
			}
			ctx, cancel := f.conn.context(cmd)
			defer cancel()
			start := time.Now()
			var list httpapi.CleanRoomAudit
			// Steps just made may not be committed yet: they have no
			// receipt until they are. Ask again for a while.
			for {
				if err := c.Call(ctx, "GET", roomPath(args[0], "audit"), nil, &list); err != nil {
					return err
				}
				if !slices.ContainsFunc(list.Steps, func(s httpapi.CleanRoomAuditStep) bool { return s.Receipt == nil }) {
					break
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(100 * time.Millisecond):
				}
				if time.Since(start) > 10*time.Second {
					break
				}
			}
			failed := 0
			var lines []auditLine
			keys := map[string]*ecdsa.PublicKey{}
			for _, s := range list.Steps {
				l := auditLine{TransactionID: s.TransactionID}
				if err := json.Unmarshal(s.Event, &l.Event); err != nil {
					l.Problem = "event does not decode: " + err.Error()
				} else if err := verifyStep(c.ServiceCertificate(), s, &l); err != nil {
					l.Problem = err.Error()
				} else if err := verifySigner(keys, s.Request, l.Event); err != nil {
					l.Problem = err.Error()
				} else {
					l.Verified = true
				}
				if !l.Verified {
					failed++
				}
				lines = append(lines, l)
			}
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), lines); err != nil {
					return err
				}
			} else {
				w := cmd.OutOrStdout()
				for _, l := range lines {
					status := "OK"
					if !l.Verified {
						status = "FAILED: " + l.Problem
					}
					fmt.Fprintf(w, "%3d  %-8s  %-16s  by %-12s  %-20s  %s  %s\n", l.Event.Seq, l.TransactionID, l.Event.Step, short(l.Event.By), short(l.Event.Subject), summary(l.Event), status)
				}
				fmt.Fprintf(w, "%d steps, %d receipts verified, %d failed\n", len(lines), len(lines)-failed, failed)
			}
			if failed > 0 {
				return &exitError{code: 1, err: fmt.Errorf("%d of %d steps did not verify", failed, len(lines))}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the steps, their receipts and the verdicts as JSON")
	return cmd
}

// verifyStep checks one step's receipt offline against the pinned
// service certificate.
func verifyStep(serviceCert *x509.Certificate, s httpapi.CleanRoomAuditStep, l *auditLine) error {
	if s.TransactionID == "" {
		return errors.New("no transaction id")
	}
	if s.Receipt == nil {
		return errors.New("no receipt: the transaction is not committed")
	}
	l.Receipt = s.Receipt
	if err := receipt.Verify(s.Receipt, serviceCert); err != nil {
		return err
	}
	view, seqno, err := receipt.ParseCommitEvidence(s.Receipt.LeafComponents.CommitEvidence)
	if err != nil {
		return err
	}
	if got := fmt.Sprintf("%d.%d", view, seqno); got != s.TransactionID {
		return fmt.Errorf("the receipt is of transaction %s", got)
	}
	want := cleanroom.ClaimsDigest(s.Event)
	if s.Receipt.LeafComponents.ClaimsDigest != hex.EncodeToString(want[:]) {
		return fmt.Errorf("the receipt's claims digest %s is not the step's digest %x", s.Receipt.LeafComponents.ClaimsDigest, want)
	}
	return nil
}

// verifySigner checks that a step a party made carries that party's signed
// request: the one the event names, of the event's type and room, signed by
// a key the room's earlier steps introduced (the creator's own, or one an
// active party invited). keys gathers the party keys in step order.
func verifySigner(keys map[string]*ecdsa.PublicKey, jws string, ev cleanroom.Event) error {
	if ev.By == "runner" {
		if jws != "" || ev.Request != "" {
			return errors.New("a runner's step carries a party request")
		}
		return nil
	}
	if jws == "" {
		return errors.New("no signed request")
	}
	if sum := sha256.Sum256([]byte(jws)); hex.EncodeToString(sum[:]) != ev.Request {
		return errors.New("the signed request is not the one the step names")
	}
	var req *cleanroom.Request
	if ev.Step == cleanroom.StepCreateRoom {
		if len(keys) > 0 {
			return errors.New("a second create_room")
		}
		r, pub, err := cleanroom.VerifyCreateRoom([]byte(jws))
		if err != nil {
			return err
		}
		id, err := cleanroom.PartyID(pub)
		if err != nil || id != ev.By {
			return fmt.Errorf("the room was created by %s, the step says %s", short(id), short(ev.By))
		}
		keys[id] = pub
		req = r
	} else {
		kid, err := cleanroom.SignerOf([]byte(jws))
		if err != nil {
			return err
		}
		pub, ok := keys[kid]
		if !ok {
			return fmt.Errorf("signer %s was never invited to this room", short(kid))
		}
		if req, err = cleanroom.VerifySigned([]byte(jws), pub); err != nil {
			return err
		}
		if kid != ev.By {
			return fmt.Errorf("signed by %s, the step says %s", short(kid), short(ev.By))
		}
	}
	if req.Type != ev.Step || req.Room != ev.Room {
		return fmt.Errorf("the signed request is a %s in room %s", req.Type, req.Room)
	}
	if ev.Step == cleanroom.StepInvite {
		var b cleanroom.InviteBody
		if err := json.Unmarshal(req.Body, &b); err != nil {
			return err
		}
		pub, err := cleanroom.ParsePublicKey(b.PublicKey)
		if err != nil {
			return err
		}
		id, err := cleanroom.PartyID(pub)
		if err != nil || id != ev.Subject {
			return fmt.Errorf("the invitation's key is not party %s's", short(ev.Subject))
		}
		keys[id] = pub
	}
	return nil
}

func short(s string) string {
	if len(s) > 12 && isHex(s) {
		return s[:12]
	}
	return s
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// summary is a one-line view of an event's detail.
func summary(e cleanroom.Event) string {
	d := e.Detail
	switch e.Step {
	case cleanroom.StepKeyRefusal, cleanroom.StepJobRefusal:
		return fmt.Sprintf("reason=%q", d["reason"])
	case cleanroom.StepKeyRelease:
		return fmt.Sprintf("datasets=%v measurement=%s", d["datasets"], short(fmt.Sprint(d["measurement"])))
	case cleanroom.StepJob:
		return fmt.Sprintf("rows=%v suppressed=%v output=%s", d["rows"], d["suppressed"], short(fmt.Sprint(d["output"])))
	case cleanroom.StepRegisterDataset:
		return fmt.Sprintf("digest=%s keyDeposited=%v", short(fmt.Sprint(d["digest"])), d["keyDeposited"])
	case cleanroom.StepProposeContract, cleanroom.StepApprove, cleanroom.StepSuspend:
		return fmt.Sprintf("state=%v", d["state"])
	}
	if n, ok := d["name"]; ok {
		return fmt.Sprintf("name=%v", n)
	}
	return ""
}
