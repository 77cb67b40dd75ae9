package main

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/internal/identity"
	"github.com/parleyhq/parley/internal/keyrelease"
	"github.com/parleyhq/parley/internal/receipt"
)

func newKeysCmd() *cobra.Command {
	cf := &connFlags{}
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Create, show and release keys held by the key broker",
		Long: `The key broker releases a key only to a holder of an attestation token whose
claims satisfy the key's release policy (Azure Key Vault's secure key release
grammar), wrapped to a public key in the token's x-ms-runtime.keys.

  create NAME --policy FILE [--import FILE]   (Contributor)
  show NAME                                   (Reader)
  release NAME --token FILE --nonce N --runtime-key FILE [--out FILE]   (Reader)

Connection flags as for ` + "`parley ledger`" + `.`,
		Args: cobra.NoArgs,
	}
	cf.register(cmd.PersistentFlags())
	cmd.AddCommand(newKeysCreateCmd(cf), newKeysShowCmd(cf), newKeysReleaseCmd(cf))
	return cmd
}

func keyPath(name string) string { return "/app/keys/" + url.PathEscape(name) }

func newKeysCreateCmd(cf *connFlags) *cobra.Command {
	var policy, importFile string
	cmd := &cobra.Command{
		Use:   "create NAME --policy FILE [--import FILE]",
		Short: "Create a key with a release policy",
		Long: `Create key NAME (PUT /app/keys/NAME): 32 random bytes made by the service, or
the 16 to 64 bytes of --import FILE. The release policy is SKR JSON, for
example

  {"version":"1.0.0","anyOf":[{"authority":"localhost:8000","allOf":[
    {"claim":"x-ms-attestation-type","equals":"sevsnpvm"},
    {"claim":"x-ms-sevsnpvm-is-debuggable","equals":false}]}]}`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if policy == "" {
				return usage(cmd, "--policy is required")
			}
			p, err := readLimited(policy)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if _, err := keyrelease.ParsePolicy(p); err != nil {
				return &exitError{code: 2, err: err}
			}
			body := map[string]any{"release_policy": json.RawMessage(p)}
			if importFile != "" {
				k, err := readLimited(importFile)
				if err != nil {
					return &exitError{code: 2, err: err}
				}
				body["key"] = b64url(k)
			}
			c, _, err := cf.client(false)
			if err != nil {
				return err
			}
			ctx, cancel := cf.context(cmd)
			defer cancel()
			var out keyrelease.Key
			if err := c.Call(ctx, "PUT", keyPath(args[0]), body, &out); err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), out)
		},
	}
	cmd.Flags().StringVar(&policy, "policy", "", "release policy JSON file")
	cmd.Flags().StringVar(&importFile, "import", "", "import these key bytes instead of making a key")
	return cmd
}

func newKeysShowCmd(cf *connFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Describe a key (never its material)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := cf.client(false)
			if err != nil {
				return err
			}
			ctx, cancel := cf.context(cmd)
			defer cancel()
			var out keyrelease.Key
			if err := c.Call(ctx, "GET", keyPath(args[0]), nil, &out); err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), out)
		},
	}
}

func newKeysReleaseCmd(cf *connFlags) *cobra.Command {
	var token, nonce, runtimeKey, out, kid string
	cmd := &cobra.Command{
		Use:   "release NAME --token FILE --nonce N --runtime-key FILE [--out FILE]",
		Short: "Release a key to an attested runtime key and unwrap it",
		Long: `Present an attestation token (POST /app/keys/NAME/release). The service
answers once the release is committed on the ledger, with its receipt; this
command verifies the receipt against the service certificate, unwraps the key
with --runtime-key (the private key whose public half the token's
x-ms-runtime.keys carries) and writes the key bytes to --out, or their hex to
stdout.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if token == "" || runtimeKey == "" {
				return usage(cmd, "--token and --runtime-key are required")
			}
			tb, err := readLimited(token)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			kb, err := os.ReadFile(runtimeKey)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			priv, err := parsePrivateKey(kb)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("%s: %w", runtimeKey, err)}
			}
			c, _, err := cf.client(false)
			if err != nil {
				return err
			}
			ctx, cancel := cf.context(cmd)
			defer cancel()
			var res struct {
				keyrelease.Released
				TransactionID string       `json:"transactionId"`
				Receipt       *api.Receipt `json:"receipt"`
			}
			body := map[string]string{"target": strings.TrimSpace(string(tb)), "nonce": nonce, "kid": kid}
			if err := c.Call(ctx, "POST", keyPath(args[0])+"/release", body, &res); err != nil {
				return err
			}
			if err := receipt.Verify(res.Receipt, c.ServiceCertificate()); err != nil {
				return &exitError{code: 1, err: fmt.Errorf("the release receipt does not verify: %w", err)}
			}
			key, err := keyrelease.Unwrap(priv, res.Enc, args[0], res.Ciphertext)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "released %s in transaction %s (receipt verified)\n", args[0], res.TransactionID)
			if out != "" {
				return os.WriteFile(out, key, 0o600)
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), hex.EncodeToString(key))
			return err
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&token, "token", "", "attestation token file (- for stdin)")
	fs.StringVar(&nonce, "nonce", "", "the nonce in the token")
	fs.StringVar(&runtimeKey, "runtime-key", "", "the runtime private key PEM (EC or RSA, PKCS#8)")
	fs.StringVar(&kid, "kid", "", "pick the runtime key with this kid")
	fs.StringVarP(&out, "out", "o", "", "write the key bytes here (default: hex on stdout)")
	return cmd
}

// parsePrivateKey parses a PKCS#8, SEC 1 or PKCS#1 private key PEM.
func parsePrivateKey(b []byte) (any, error) {
	if k, err := identity.ParseKeyPEM(b); err == nil {
		return k, nil
	}
	rest := b
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return nil, fmt.Errorf("no private key")
		}
		if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
			return k, nil
		}
		if k, err := x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
			return k, nil
		}
	}
}
