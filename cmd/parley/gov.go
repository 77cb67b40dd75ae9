package main

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/parleyhq/parley/client"
	"github.com/parleyhq/parley/internal/gov"
	"github.com/parleyhq/parley/internal/identity"
)

// govFlags are the flags of every `parley gov` command.
type govFlags struct {
	endpoint, cacert, memberCert, memberKey, profile string
	timeout                                          time.Duration
}

// govConn is a resolved connection: an HTTP client with the service
// certificate pinned and the member certificate presented.
type govConn struct {
	endpoint string
	hc       *http.Client
	memberID string
	keyPEM   []byte
}

// resolve fills missing flags from the profile (--profile, $PARLEY_PROFILE
// or ./parley-dev/profile.json): its endpoint and CA certificate, and
// member0's files next to it.
func (f *govFlags) resolve() (*govConn, error) {
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
	if path != "" {
		p, err := client.LoadProfile(path)
		if err != nil {
			return nil, err
		}
		dir := filepath.Dir(path)
		fill := func(dst *string, v string) {
			if *dst == "" {
				*dst = v
			}
		}
		fill(&f.endpoint, p.Endpoint)
		fill(&f.cacert, p.CACert)
		if _, err := os.Stat(filepath.Join(dir, "member0_cert.pem")); err == nil {
			fill(&f.memberCert, filepath.Join(dir, "member0_cert.pem"))
			fill(&f.memberKey, filepath.Join(dir, "member0_privk.pem"))
		}
	}
	var missing []string
	for _, o := range []struct{ name, v string }{{"--endpoint", f.endpoint}, {"--cacert", f.cacert}, {"--member-cert", f.memberCert}, {"--member-key", f.memberKey}} {
		if o.v == "" {
			missing = append(missing, o.name)
		}
	}
	if len(missing) > 0 {
		return nil, &exitError{code: 2, err: fmt.Errorf("no %s: pass the flags or --profile", strings.Join(missing, ", "))}
	}
	ca, err := os.ReadFile(f.cacert)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("--cacert: %w", err)}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, &exitError{code: 2, err: fmt.Errorf("--cacert %s: no certificate", f.cacert)}
	}
	certPEM, err := os.ReadFile(f.memberCert)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("--member-cert: %w", err)}
	}
	keyPEM, err := os.ReadFile(f.memberKey)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("--member-key: %w", err)}
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("member certificate and key: %w", err)}
	}
	cert, err := identity.ParseCertPEM(certPEM)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("--member-cert: %w", err)}
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}}
	return &govConn{
		endpoint: strings.TrimSuffix(f.endpoint, "/"),
		hc:       &http.Client{Transport: tr, Timeout: f.timeout},
		memberID: identity.Fingerprint(cert.Raw),
		keyPEM:   keyPEM,
	}, nil
}

// sign signs a governance request now, with the time in nanoseconds as
// its counter.
func (c *govConn) sign(typ, pid string, body []byte) ([]byte, error) {
	key, err := identity.ParseKeyPEM(c.keyPEM)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("--member-key: %w", err)}
	}
	now := time.Now()
	return gov.Sign(key, c.memberID, &gov.Request{Type: typ, ProposalID: pid, CreatedAt: now.Unix(), Counter: uint64(now.UnixNano()), Body: body})
}

// do sends a request and returns the JSON body of a 200 answer.
func (c *govConn) do(ctx context.Context, method, path string, body []byte) (json.RawMessage, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.endpoint+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/jose")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, client.MaxResponseSize))
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error.Code != "" {
			return nil, fmt.Errorf("%s %s: %d %s: %s", method, path, resp.StatusCode, e.Error.Code, e.Error.Message)
		}
		return nil, fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return b, nil
}

func newGovCmd() *cobra.Command {
	var f govFlags
	cmd := &cobra.Command{
		Use:   "gov",
		Short: "Propose, vote on and inspect governance proposals as a member",
		Long: `Governance requests are signed with the member's key (JWS, ES384) and sent
over TLS with the service certificate pinned and the member certificate
presented. Without flags, the endpoint and service certificate come from the
profile (--profile, $` + ProfileEnv + `, else ./parley-dev/` + ProfileFile + `) and
the member is member0 of that directory.

propose, vote, withdraw and show print the proposal as JSON with its
proposalId and state.`,
		Example: `  parley gov propose add-user.json
  parley gov vote 3f2a… accept --member-cert parley-dev/member1_cert.pem --member-key parley-dev/member1_privk.pem
  parley gov show 3f2a…`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.endpoint, "endpoint", "", "service endpoint, https://host:port")
	pf.StringVar(&f.cacert, "cacert", "", "service certificate PEM, pinned as the only trusted root")
	pf.StringVar(&f.memberCert, "member-cert", "", "member certificate PEM")
	pf.StringVar(&f.memberKey, "member-key", "", "member signing key PEM")
	pf.StringVar(&f.profile, "profile", "", "profile JSON for the endpoint and service certificate")
	pf.DurationVar(&f.timeout, "timeout", time.Minute, "give up after this long")

	run := func(fn func(ctx context.Context, c *govConn, args []string) (json.RawMessage, error)) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			c, err := f.resolve()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			out, err := fn(ctx, c, args)
			if err != nil {
				return err
			}
			var v any
			if err := json.Unmarshal(out, &v); err != nil {
				return fmt.Errorf("decode response: %w", err)
			}
			return printJSON(cmd.OutOrStdout(), v)
		}
	}
	propose := &cobra.Command{
		Use:   "propose FILE",
		Short: `Submit a proposal, {"actions":[{"name":…,"args":{…}}]} ("-" reads standard input)`,
		Args:  cobra.ExactArgs(1),
		RunE: run(func(ctx context.Context, c *govConn, args []string) (json.RawMessage, error) {
			var body []byte
			var err error
			if args[0] == "-" {
				body, err = io.ReadAll(io.LimitReader(os.Stdin, gov.MaxRequestBytes))
			} else {
				body, err = os.ReadFile(args[0])
			}
			if err != nil {
				return nil, &exitError{code: 2, err: fmt.Errorf("read proposal: %w", err)}
			}
			if _, err := gov.ParseProposal(body); err != nil {
				return nil, &exitError{code: 2, err: err}
			}
			var compact bytes.Buffer
			if err := json.Compact(&compact, body); err != nil {
				return nil, &exitError{code: 2, err: err}
			}
			signed, err := c.sign(gov.TypeProposal, "", compact.Bytes())
			if err != nil {
				return nil, err
			}
			return c.do(ctx, http.MethodPost, "/gov/proposals", signed)
		}),
	}
	vote := &cobra.Command{
		Use:   "vote ID accept|reject",
		Short: "Vote on an open proposal",
		Args:  cobra.ExactArgs(2),
		RunE: run(func(ctx context.Context, c *govConn, args []string) (json.RawMessage, error) {
			if args[1] != gov.BallotAccept && args[1] != gov.BallotReject {
				return nil, &exitError{code: 2, err: errors.New("the ballot is accept or reject")}
			}
			b, _ := json.Marshal(gov.Ballot{Ballot: args[1]})
			signed, err := c.sign(gov.TypeBallot, args[0], b)
			if err != nil {
				return nil, err
			}
			return c.do(ctx, http.MethodPost, "/gov/proposals/"+url.PathEscape(args[0])+"/ballots", signed)
		}),
	}
	withdraw := &cobra.Command{
		Use:   "withdraw ID",
		Short: "Withdraw an open proposal you made",
		Args:  cobra.ExactArgs(1),
		RunE: run(func(ctx context.Context, c *govConn, args []string) (json.RawMessage, error) {
			signed, err := c.sign(gov.TypeWithdrawal, args[0], nil)
			if err != nil {
				return nil, err
			}
			return c.do(ctx, http.MethodPost, "/gov/proposals/"+url.PathEscape(args[0])+":withdraw", signed)
		}),
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List every proposal",
		Args:  cobra.NoArgs,
		RunE: run(func(ctx context.Context, c *govConn, _ []string) (json.RawMessage, error) {
			return c.do(ctx, http.MethodGet, "/gov/proposals", nil)
		}),
	}
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show one proposal",
		Args:  cobra.ExactArgs(1),
		RunE: run(func(ctx context.Context, c *govConn, args []string) (json.RawMessage, error) {
			return c.do(ctx, http.MethodGet, "/gov/proposals/"+url.PathEscape(args[0]), nil)
		}),
	}
	members := &cobra.Command{
		Use:   "members",
		Short: "List the consortium members",
		Args:  cobra.NoArgs,
		RunE: run(func(ctx context.Context, c *govConn, _ []string) (json.RawMessage, error) {
			return c.do(ctx, http.MethodGet, "/gov/members", nil)
		}),
	}
	cmd.AddCommand(propose, vote, withdraw, list, show, members, newGovShareCmd(&f))
	return cmd
}

// newGovShareCmd makes `parley gov share`: fetch the member's encrypted
// recovery share and decrypt it locally; the private key never leaves the
// machine.
func newGovShareCmd(f *govFlags) *cobra.Command {
	var encKey string
	var submit bool
	cmd := &cobra.Command{
		Use:   "share",
		Short: "Fetch and decrypt your recovery share; print it, or submit it to a recovering service",
		Long: `Fetches the member's recovery share (GET /gov/recovery/share), encrypted to
its encryption key with RSA-OAEP-256, and decrypts it locally with
--member-enc-key (default: the --member-cert path with _cert.pem replaced by
_enc_privk.pem, as CCF's sandbox names the files). Prints the share in
base64: what the member will submit to recover the service. Keep it secret.

With --submit, it submits the decrypted share instead, to a service started
with parley node --recover (POST /gov/recovery/share, a signed
recovery_share request), and prints the recovery's progress as JSON:
{"memberId","submittedShares","threshold","serviceStatus"}. The share is
fetched from the recovering service, which serves the old service's shares
from the recovered ledger. Once a threshold of members have submitted, the
private state is restored and serviceStatus is "Open".`,
		Example: `  parley gov share --member-cert parley-dev/member1_cert.pem --member-key parley-dev/member1_privk.pem
  parley gov share --submit --endpoint https://127.0.0.1:8001 --cacert new/service_cert.pem \
    --member-cert keys/member1_cert.pem --member-key keys/member1_privk.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.resolve()
			if err != nil {
				return err
			}
			if encKey == "" {
				if base, ok := strings.CutSuffix(f.memberCert, "_cert.pem"); ok {
					encKey = base + "_enc_privk.pem"
				} else {
					return &exitError{code: 2, err: errors.New("no --member-enc-key")}
				}
			}
			keyPEM, err := os.ReadFile(encKey)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("--member-enc-key: %w", err)}
			}
			k, err := parsePrivateKey(keyPEM)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("--member-enc-key %s: %w", encKey, err)}
			}
			rk, ok := k.(*rsa.PrivateKey)
			if !ok {
				return &exitError{code: 2, err: fmt.Errorf("--member-enc-key %s: not an RSA key", encKey)}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			out, err := c.do(ctx, http.MethodGet, "/gov/recovery/share", nil)
			if err != nil {
				return err
			}
			var r struct {
				MemberID       string `json:"memberId"`
				EncryptedShare []byte `json:"encryptedShare"`
			}
			if err := json.Unmarshal(out, &r); err != nil {
				return fmt.Errorf("decode response: %w", err)
			}
			share, err := gov.DecryptShare(rk, r.EncryptedShare)
			if err != nil {
				return fmt.Errorf("share of member %s with %s: %w", r.MemberID, encKey, err)
			}
			defer clear(share)
			if !submit {
				_, err = fmt.Fprintln(cmd.OutOrStdout(), base64.StdEncoding.EncodeToString(share))
				return err
			}
			body, err := json.Marshal(gov.ShareBody{Share: share})
			if err != nil {
				return err
			}
			defer clear(body)
			signed, err := c.sign(gov.TypeRecoveryShare, "", body)
			if err != nil {
				return err
			}
			out, err = c.do(ctx, http.MethodPost, "/gov/recovery/share", signed)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), string(out))
			return err
		},
	}
	cmd.Flags().StringVar(&encKey, "member-enc-key", "", "member encryption private key PEM (RSA)")
	cmd.Flags().BoolVar(&submit, "submit", false, "submit the share to a recovering service instead of printing it")
	return cmd
}
