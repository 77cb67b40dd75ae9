package main

import (
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
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spf13/cobra"

	"github.com/parleyhq/parley/client"
	"github.com/parleyhq/parley/internal/cleanroom"
	"github.com/parleyhq/parley/internal/cleanroom/blob"
	"github.com/parleyhq/parley/internal/cleanroom/dataset"
	"github.com/parleyhq/parley/internal/cleanroom/runner"
	"github.com/parleyhq/parley/internal/httpapi"
	"github.com/parleyhq/parley/internal/keyrelease"
	"github.com/parleyhq/parley/internal/receipt"
	"github.com/parleyhq/parley/internal/server"
	"github.com/parleyhq/parley/internal/tee"
)

// runnerKid is the kid of the runner's ephemeral runtime key.
const runnerKid = "runner-enc"

// maxDatasetBlob bounds an encrypted dataset the runner reads into memory.
const maxDatasetBlob = 4 << 30

// runnerOptions are the flags of `parley runner`.
type runnerOptions struct {
	endpoint, cacert  string
	room, contract    string
	platform          string
	measurement       string
	virtualKey        string
	vcek              string
	blobDir, workDir  string
	memoryLimit       string
	timeout           time.Duration
	logFormat, logLvl string
}

func (o *runnerOptions) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&o.endpoint, "endpoint", "", "service endpoint, https://host:port (required)")
	fs.StringVar(&o.cacert, "cacert", "", "service certificate PEM, pinned as the only trusted root (required)")
	fs.StringVar(&o.room, "room", "", "room (required)")
	fs.StringVar(&o.contract, "contract", "", "contract id (required)")
	fs.StringVar(&o.platform, "platform", "", "TEE platform whose evidence to present: virtual (development only), sev-snp or tdx (required)")
	fs.StringVar(&o.measurement, "measurement", "", "virtual: the measurement to claim, hex SHA-256 (default: SHA-256 of this binary)")
	fs.StringVar(&o.virtualKey, "virtual-key", "", "virtual: the software evidence signing key PEM (default: a new key per run)")
	fs.StringVar(&o.vcek, "vcek", "", "sev-snp: the VCEK certificate, DER or PEM")
	fs.StringVar(&o.blobDir, "blob-dir", "", "blob store directory holding the encrypted datasets; results are written there (required)")
	fs.StringVar(&o.workDir, "work-dir", "", "working directory of the run (default: a new temporary directory); nothing in clear is written to it")
	fs.StringVar(&o.memoryLimit, "memory-limit", "", `DuckDB memory limit, e.g. "4GB" (default DuckDB's)`)
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up after this long")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json (on stderr)")
	fs.StringVar(&o.logLvl, "log-level", "info", "log level")
}

func newRunnerCmd() *cobra.Command {
	o := &runnerOptions{}
	cmd := &cobra.Command{
		Use:   "runner --endpoint URL --cacert FILE --room ROOM --contract ID --platform P --blob-dir DIR",
		Short: "Run an approved clean-room contract as an attested runner",
		Long: `Run one approved contract of a clean room:

 1. make an ephemeral P-256 runtime key and collect TEE evidence whose report
    data binds it (SHA-256 of the runtime data {"keys":[JWK],"room","contract"});
 2. get an attestation token for it (POST /attest/{platform});
 3. ask for the contract's data keys (POST
    /cleanroom/rooms/ROOM/contracts/ID/keys): the service releases them,
    wrapped to the runtime key, only if the contract is approved by every
    owner, not suspended, and allows this runner's measurement; the release
    or the refusal is a ledger transaction;
 4. read each encrypted dataset from --blob-dir (named ROOM/DATASET), check
    its SHA-256 against the ledger, and decrypt it in memory;
 5. run the contract's query in an in-memory DuckDB (no spilling, no file or
    network access), enforcing every dataset's analysis rules; a query that
    breaks a rule is refused with the rule named, and the refusal recorded;
 6. seal the CSV result to each recipient with HPKE, store it in --blob-dir
    as ROOM/results/<sha256>, and record the job (contract, input digests,
    measurement, output digest) on the ledger.

Prints the job record as JSON. Nothing in clear is written to disk: the
process works in --work-dir, which stays free of plaintext.

--platform virtual signs the evidence with a software key: it is NOT a TEE
and proves nothing about the code that runs. For development and CI only.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runRunner(cmd, o)
		},
	}
	o.register(cmd)
	return cmd
}

func runRunner(cmd *cobra.Command, o *runnerOptions) error {
	for _, f := range []struct{ name, v string }{{"--endpoint", o.endpoint}, {"--cacert", o.cacert}, {"--room", o.room}, {"--contract", o.contract}, {"--platform", o.platform}, {"--blob-dir", o.blobDir}} {
		if f.v == "" {
			return usage(cmd, "%s is required", f.name)
		}
	}
	platform, err := tee.ParsePlatform(o.platform)
	if err != nil {
		return usage(cmd, "%v", err)
	}
	logger, err := server.NewLogger(cmd.ErrOrStderr(), o.logFormat, o.logLvl)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if platform == tee.Virtual {
		fmt.Fprintln(cmd.ErrOrStderr(), "WARNING:", tee.VirtualWarning)
		logger.Warn(tee.VirtualWarning, slog.String("component", "runner"))
	}
	// Paths are resolved before the runner enters its working directory.
	for _, p := range []*string{&o.blobDir, &o.virtualKey, &o.vcek} {
		if *p == "" {
			continue
		}
		if *p, err = filepath.Abs(*p); err != nil {
			return &exitError{code: 2, err: err}
		}
	}
	blobDir := o.blobDir
	store, err := blob.OpenDir(blobDir)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	caPEM, err := os.ReadFile(o.cacert)
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("--cacert: %w", err)}
	}
	work := o.workDir
	if work == "" {
		if work, err = os.MkdirTemp("", "parley-runner-"); err != nil {
			return err
		}
		defer os.RemoveAll(work)
	} else if err := os.MkdirAll(work, 0o700); err != nil {
		return &exitError{code: 2, err: fmt.Errorf("--work-dir: %w", err)}
	}
	// Work in the working directory, so that anything written by a
	// relative path lands where it can be checked.
	if err := os.Chdir(work); err != nil {
		return fmt.Errorf("enter the working directory: %w", err)
	}
	hc, err := pinnedHTTPClient(caPEM)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	c, err := client.New(o.endpoint, client.Options{CACertPEM: caPEM, HTTPClient: hc})
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
	defer cancel()
	r := &runnerRun{o: o, platform: platform, c: c, store: store, log: logger.With(slog.String("room", o.room), slog.String("contract", o.contract))}
	rec, err := r.run(ctx)
	if err != nil {
		return err
	}
	return printJSON(cmd.OutOrStdout(), rec)
}

// runnerRun is one run of a contract.
type runnerRun struct {
	o        *runnerOptions
	platform tee.Platform
	c        *client.Client
	store    blob.Store
	log      *slog.Logger
	key      *ecdsa.PrivateKey
	token    string
	nonce    string
}

// jobResult is what `parley runner` prints.
type jobResult struct {
	*cleanroom.JobRecord
	TransactionID string `json:"transactionId"`
}

func (r *runnerRun) run(ctx context.Context) (*jobResult, error) {
	if err := r.attest(ctx); err != nil {
		return nil, err
	}
	var rel httpapi.ReleasedDatasetKeys
	path := "/cleanroom/rooms/" + url.PathEscape(r.o.room) + "/contracts/" + url.PathEscape(r.o.contract) + "/keys"
	if err := r.c.Call(ctx, "POST", path, map[string]string{"token": r.token, "nonce": r.nonce, "kid": runnerKid}, &rel); err != nil {
		return nil, &exitError{code: 1, err: fmt.Errorf("data key release: %w", err)}
	}
	// The release is on the ledger: check its receipt against the pinned
	// service certificate before using the keys.
	if err := receipt.Verify(rel.Receipt, r.c.ServiceCertificate()); err != nil {
		return nil, fmt.Errorf("the release's receipt does not verify: %w", err)
	}
	r.log.Info("data keys released", slog.String("transaction", rel.TransactionID), slog.Int("datasets", len(rel.Keys)))
	if rel.DatasetKeys == nil || len(rel.Keys) != len(rel.Datasets) {
		return nil, fmt.Errorf("data key release: %d keys for %d datasets", len(rel.Keys), len(rel.Datasets))
	}
	keys := map[string]keyrelease.WrappedKey{}
	for _, k := range rel.Keys {
		keys[k.Dataset] = k
	}
	job := runner.Job{
		SQL:         rel.Terms.SQL,
		Context:     cleanroom.JobContext(r.o.room, r.o.contract, rel.TransactionID),
		MemoryLimit: r.o.memoryLimit,
	}
	inputs := map[string]string{}
	defer func() {
		for _, t := range job.Tables {
			clear(t.CSV)
		}
	}()
	for _, d := range rel.Datasets {
		wk, ok := keys[d.Name]
		if !ok {
			return nil, fmt.Errorf("data key release: no key for dataset %s", d.Name)
		}
		t, err := r.open(ctx, d, wk)
		if err != nil {
			return nil, err
		}
		job.Tables = append(job.Tables, t)
		inputs[d.Name] = d.Digest
	}
	for _, rc := range rel.Terms.Recipients {
		pk, err := rc.PublicKey()
		if err != nil {
			return nil, err
		}
		job.Recipients = append(job.Recipients, runner.Recipient{ID: rc.Party, Key: pk})
	}
	rec := cleanroom.JobRecord{Contract: r.o.contract, Inputs: inputs, Release: rel.TransactionID}
	res, err := runner.Run(ctx, job)
	var ruleErr *runner.RuleError
	if errors.As(err, &ruleErr) {
		rec.Refused = ruleErr.Error()
		out, rerr := r.record(ctx, rec)
		if rerr != nil {
			return nil, fmt.Errorf("query refused (%v); recording the refusal: %w", ruleErr, rerr)
		}
		r.log.Warn("query refused", slog.String("rule", ruleErr.Rule), slog.String("job", out.ID), slog.String("transaction", out.TransactionID))
		return nil, &exitError{code: 1, err: fmt.Errorf("query refused: %w (refusal recorded as job %s in transaction %s)", ruleErr, out.ID, out.TransactionID)}
	}
	if err != nil {
		return nil, fmt.Errorf("run the query: %w", err)
	}
	sealed := SealedResult{Room: r.o.room, Contract: r.o.contract, Release: rel.TransactionID, Columns: res.Columns}
	for _, s := range res.Sealed {
		sealed.Recipients = append(sealed.Recipients, SealedCopy{Party: s.Recipient, Ciphertext: s.Ciphertext})
	}
	b, err := json.Marshal(sealed)
	if err != nil {
		return nil, fmt.Errorf("encode result: %w", err)
	}
	sum := sha256.Sum256(b)
	digest := hex.EncodeToString(sum[:])
	if _, err := r.store.Put(ctx, resultBlob(r.o.room, digest), bytes.NewReader(b)); err != nil {
		return nil, fmt.Errorf("store result: %w", err)
	}
	rec.Output, rec.Rows, rec.Suppressed = digest, res.Rows, res.Suppressed
	out, err := r.record(ctx, rec)
	if err != nil {
		return nil, err
	}
	r.log.Info("job recorded", slog.String("job", out.ID), slog.String("transaction", out.TransactionID), slog.Int("rows", res.Rows), slog.Int("suppressed", res.Suppressed))
	return out, nil
}

// SealedResult is the blob a runner stores: the output sealed to each
// recipient. Its SHA-256 is the job record's output digest.
type SealedResult struct {
	Room       string       `json:"room"`
	Contract   string       `json:"contract"`
	Release    string       `json:"release"`
	Columns    []string     `json:"columns"`
	Recipients []SealedCopy `json:"recipients"`
}

// SealedCopy is the output sealed to one recipient.
type SealedCopy struct {
	Party      string `json:"party"`
	Ciphertext []byte `json:"ciphertext"`
}

func datasetBlob(room, name string) string  { return room + "/" + name }
func resultBlob(room, digest string) string { return room + "/results/" + digest }

// attest makes the runtime key (once), collects evidence binding it and
// gets a token with a new nonce.
func (r *runnerRun) attest(ctx context.Context) error {
	var err error
	if r.key == nil {
		if r.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return fmt.Errorf("runtime key: %w", err)
		}
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return fmt.Errorf("nonce: %w", err)
	}
	r.nonce = hex.EncodeToString(nonce)
	rt, err := json.Marshal(map[string]any{
		"keys":     []jose.JSONWebKey{{Key: &r.key.PublicKey, KeyID: runnerKid, Use: "enc"}},
		"room":     r.o.room,
		"contract": r.o.contract,
	})
	if err != nil {
		return fmt.Errorf("runtime data: %w", err)
	}
	var rd [tee.ReportDataSize]byte
	sum := sha256.Sum256(rt)
	copy(rd[:], sum[:])
	var raw, vcek []byte
	switch r.platform {
	case tee.Virtual:
		raw, err = virtualEvidence(r.o.virtualKey, r.o.measurement, rd)
	case tee.SevSnp:
		if r.o.vcek == "" {
			return &exitError{code: 2, err: errors.New("sev-snp needs --vcek")}
		}
		if vcek, err = readLimited(r.o.vcek); err != nil {
			return &exitError{code: 2, err: err}
		}
		raw, err = tee.CollectSNP(rd)
	case tee.TDX:
		raw, err = tee.CollectTDX(rd)
	}
	if err != nil {
		return fmt.Errorf("collect evidence: %w", err)
	}
	body := map[string]any{"nonce": r.nonce, "runtimeData": map[string]string{"data": b64url(rt), "dataType": "JSON"}}
	if r.platform == tee.SevSnp {
		snp, _ := json.Marshal(map[string]string{"SnpReport": b64url(raw), "VcekCertChain": b64url(vcek)})
		body["report"] = b64url(snp)
	} else {
		body["report"] = b64url(raw)
	}
	var out struct {
		Token string `json:"token"`
	}
	if err := r.c.Call(ctx, "POST", "/attest/"+maaName(r.platform), body, &out); err != nil {
		return &exitError{code: 1, err: fmt.Errorf("attest: %w", err)}
	}
	r.token = out.Token
	r.log.Info("attested", slog.String("platform", string(r.platform)))
	return nil
}

// open reads, checks and decrypts one dataset in memory.
func (r *runnerRun) open(ctx context.Context, d *cleanroom.Dataset, wk keyrelease.WrappedKey) (runner.Table, error) {
	keyBytes, err := keyrelease.Unwrap(r.key, wk.Enc, r.o.room+"/"+d.Name, wk.Ciphertext)
	if err != nil {
		return runner.Table{}, fmt.Errorf("unwrap the data key of %s: %w", d.Name, err)
	}
	defer clear(keyBytes)
	var key dataset.Key
	if len(keyBytes) != len(key) {
		return runner.Table{}, fmt.Errorf("data key of %s is %d bytes, want %d", d.Name, len(keyBytes), len(key))
	}
	copy(key[:], keyBytes)
	defer clear(key[:])
	rc, err := r.store.Get(ctx, datasetBlob(r.o.room, d.Name))
	if err != nil {
		return runner.Table{}, fmt.Errorf("fetch dataset %s: %w", d.Name, err)
	}
	ct, err := io.ReadAll(io.LimitReader(rc, maxDatasetBlob+1))
	rc.Close()
	if err != nil {
		return runner.Table{}, fmt.Errorf("fetch dataset %s: %w", d.Name, err)
	}
	if len(ct) > maxDatasetBlob {
		return runner.Table{}, fmt.Errorf("dataset %s is over %d bytes", d.Name, maxDatasetBlob)
	}
	if sum := sha256.Sum256(ct); hex.EncodeToString(sum[:]) != d.Digest {
		return runner.Table{}, fmt.Errorf("dataset %s: stored ciphertext has SHA-256 %x, the ledger records %s", d.Name, sum, d.Digest)
	}
	h, plain, _, err := dataset.Open(ct, key)
	if err != nil {
		return runner.Table{}, fmt.Errorf("decrypt dataset %s: %w", d.Name, err)
	}
	got, _ := json.Marshal(h.Schema)
	want, _ := json.Marshal(d.Schema)
	if !bytes.Equal(got, want) {
		clear(plain)
		return runner.Table{}, fmt.Errorf("dataset %s: the ciphertext's schema is not the registered one", d.Name)
	}
	return runner.Table{Name: d.Name, Schema: d.Schema, CSV: plain, Rules: d.Rules}, nil
}

// record posts the job record with a fresh token attesting the same
// runtime key the data keys were released to, so that a run may outlast
// the first token.
func (r *runnerRun) record(ctx context.Context, rec cleanroom.JobRecord) (*jobResult, error) {
	if err := r.attest(ctx); err != nil {
		return nil, err
	}
	var out jobResult
	body := map[string]any{"token": r.token, "nonce": r.nonce, "kid": runnerKid, "job": rec}
	if err := r.c.Call(ctx, "POST", "/cleanroom/rooms/"+url.PathEscape(r.o.room)+"/jobs", body, &out); err != nil {
		return nil, fmt.Errorf("record the job: %w", err)
	}
	return &out, nil
}

// openResult opens a sealed result with a recipient's HPKE private key,
// trying every copy: only a recipient's key opens one.
func openResult(res *SealedResult, key *ecdh.PrivateKey) ([]byte, string, error) {
	ctx := cleanroom.JobContext(res.Room, res.Contract, res.Release)
	for _, s := range res.Recipients {
		if pt, err := runner.Open(key, ctx, s.Ciphertext); err == nil {
			return pt, s.Party, nil
		}
	}
	return nil, "", errors.New("this key opens no copy of the result: it is not a recipient's")
}

// pinnedHTTPClient is an HTTPS client that trusts only the service
// certificate and presents no client certificate.
func pinnedHTTPClient(caPEM []byte) (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("--cacert: no certificate")
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}, nil
}
