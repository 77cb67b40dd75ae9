package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spf13/cobra"

	"github.com/parleyhq/parley/internal/attest"
	"github.com/parleyhq/parley/internal/identity"
	"github.com/parleyhq/parley/internal/tee"
)

// maxAttestFile bounds the evidence, certificate, policy and token files
// the attest and keys commands read.
const maxAttestFile = 1 << 20

func newAttestCmd() *cobra.Command {
	cf := &connFlags{}
	cmd := &cobra.Command{
		Use:   "attest",
		Short: "Collect and verify TEE evidence; get attestation tokens",
		Long: `Work with TEE evidence of three platforms: virtual (software, for development
only: it proves nothing), sev-snp (AMD SEV-SNP) and tdx (Intel TDX).

  evidence  collect evidence on this machine
  verify    verify evidence offline, and appraise it with a policy
  token     send evidence to a Parley attestation service for a token
  policy    read or (Administrator, temporary) set the service's appraisal policy`,
		Args: cobra.NoArgs,
	}
	cf.register(cmd.PersistentFlags())
	cmd.AddCommand(newAttestEvidenceCmd(), newAttestVerifyCmd(), newAttestTokenCmd(cf), newAttestPolicyCmd(cf))
	return cmd
}

func readLimited(path string) ([]byte, error) {
	var r io.Reader
	if path == "-" {
		r = os.Stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxAttestFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxAttestFile {
		return nil, fmt.Errorf("read %s: over %d bytes", path, maxAttestFile)
	}
	return b, nil
}

func usage(cmd *cobra.Command, format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf("%s: %s", cmd.CommandPath(), fmt.Sprintf(format, args...))}
}

func newAttestEvidenceCmd() *cobra.Command {
	var platform, reportData, runtimeData, keyFile, measurement, out, newRuntimeKey string
	cmd := &cobra.Command{
		Use:   "evidence --platform virtual|sev-snp|tdx [--runtime-data FILE | --new-runtime-key PREFIX | --report-data HEX] [--out FILE]",
		Short: "Collect evidence on this machine",
		Long: `Collect evidence binding 64 bytes of report data: SHA-256 of the runtime data
followed by zeros (what the attestation service checks), or --report-data.

--new-runtime-key PREFIX makes an EC P-256 key pair, writes PREFIX.key.pem and
PREFIX.runtime.json ({"keys":[JWK]}), and binds that runtime data: a key
released to the resulting token unwraps only with PREFIX.key.pem.

sev-snp and tdx need the guest device (configfs-tsm or /dev/sev-guest); the
SEV-SNP VCEK is not collected. virtual signs a JSON document holding the
SHA-256 of this binary with a software key (--key FILE, made if missing): it
is NOT hardware evidence and proves nothing about the code that runs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := tee.ParsePlatform(platform)
			if err != nil {
				return usage(cmd, "%v", err)
			}
			var rd [tee.ReportDataSize]byte
			switch {
			case newRuntimeKey != "":
				rt, err := makeRuntimeKey(newRuntimeKey)
				if err != nil {
					return err
				}
				sum := sha256.Sum256(rt)
				copy(rd[:], sum[:])
			case runtimeData != "":
				rt, err := readLimited(runtimeData)
				if err != nil {
					return &exitError{code: 2, err: err}
				}
				sum := sha256.Sum256(rt)
				copy(rd[:], sum[:])
			case reportData != "":
				b, err := hex.DecodeString(reportData)
				if err != nil || len(b) > tee.ReportDataSize {
					return usage(cmd, "--report-data must be at most 64 bytes of hex")
				}
				copy(rd[:], b)
			}
			var raw []byte
			switch p {
			case tee.Virtual:
				fmt.Fprintln(cmd.ErrOrStderr(), "WARNING:", tee.VirtualWarning)
				raw, err = virtualEvidence(keyFile, measurement, rd)
			case tee.SevSnp:
				raw, err = tee.CollectSNP(rd)
			case tee.TDX:
				raw, err = tee.CollectTDX(rd)
			}
			if err != nil {
				return err
			}
			if out == "" || out == "-" {
				_, err = cmd.OutOrStdout().Write(raw)
				return err
			}
			return os.WriteFile(out, raw, 0o644)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&platform, "platform", "", "virtual, sev-snp or tdx")
	fs.StringVar(&reportData, "report-data", "", "report data, hex (at most 64 bytes, zero-padded)")
	fs.StringVar(&runtimeData, "runtime-data", "", "runtime data file (JSON) to bind")
	fs.StringVar(&newRuntimeKey, "new-runtime-key", "", "make a runtime key pair PREFIX.key.pem / PREFIX.runtime.json and bind it")
	fs.StringVar(&keyFile, "key", "", "virtual: the software signing key PEM (made if missing; ephemeral if not given)")
	fs.StringVar(&measurement, "measurement", "", "virtual: the measurement, hex SHA-256 (default: SHA-256 of this binary)")
	fs.StringVarP(&out, "out", "o", "", "write the evidence here (default stdout)")
	return cmd
}

// makeRuntimeKey writes PREFIX.key.pem and PREFIX.runtime.json and returns
// the runtime data.
func makeRuntimeKey(prefix string) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("runtime key: %w", err)
	}
	pemKey, err := identity.EncodeKeyPEM(key)
	if err != nil {
		return nil, err
	}
	jwk := jose.JSONWebKey{Key: &key.PublicKey, KeyID: "runtime", Use: "enc"}
	rt, err := json.Marshal(map[string]any{"keys": []jose.JSONWebKey{jwk}})
	if err != nil {
		return nil, fmt.Errorf("runtime data: %w", err)
	}
	if err := os.WriteFile(prefix+".key.pem", pemKey, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(prefix+".runtime.json", rt, 0o644); err != nil {
		return nil, err
	}
	return rt, nil
}

func virtualEvidence(keyFile, measurement string, rd [tee.ReportDataSize]byte) ([]byte, error) {
	var key *ecdsa.PrivateKey
	if keyFile != "" {
		if b, err := os.ReadFile(keyFile); err == nil {
			if key, err = identity.ParseKeyPEM(b); err != nil {
				return nil, fmt.Errorf("%s: %w", keyFile, err)
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	if key == nil {
		var err error
		if key, err = tee.NewVirtualKey(); err != nil {
			return nil, err
		}
		if keyFile != "" {
			b, err := identity.EncodeKeyPEM(key)
			if err != nil {
				return nil, err
			}
			if err := os.WriteFile(keyFile, b, 0o600); err != nil {
				return nil, err
			}
		}
	}
	var m []byte
	if measurement != "" {
		var err error
		if m, err = hex.DecodeString(measurement); err != nil || len(m) != sha256.Size {
			return nil, &exitError{code: 2, err: fmt.Errorf("--measurement must be 32 bytes of hex")}
		}
	} else {
		var err error
		if m, err = tee.MeasureExecutable(); err != nil {
			return nil, err
		}
	}
	return tee.VirtualEvidence(key, m, rd)
}

func newAttestVerifyCmd() *cobra.Command {
	var platform, evidence, vcek, policy, now string
	cmd := &cobra.Command{
		Use:   "verify --platform sev-snp|tdx|virtual --evidence FILE [--vcek FILE] [--policy FILE] [--now RFC3339]",
		Short: "Verify evidence offline and print its claims",
		Long: `Verify evidence offline: signatures and the certificate chain up to the
vendor root (AMD's ARK/ASK and Intel's SGX root CA, embedded), or the software
signature of virtual evidence. With --policy (an appraisal policy, see
docs/attestation.md) also appraise it. --now fixes the clock for certificate
validity.

Prints the evidence's claims as JSON, named as in the tokens
(x-ms-sevsnpvm-launchmeasurement, x-ms-sevsnpvm-is-debuggable, tdx_mrtd, …).
Exits 0 only if everything holds, 1 if the evidence does not verify or the
policy refuses it, 2 on misuse or unreadable files.`,
		Example: `  parley attest verify --platform sev-snp --evidence report.bin --vcek vcek.der --policy policy.json
  parley attest verify --platform tdx --evidence quote.dat --now 2023-07-01T00:00:00Z`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := tee.ParsePlatform(platform)
			if err != nil {
				return usage(cmd, "%v", err)
			}
			if evidence == "" {
				return usage(cmd, "--evidence is required")
			}
			ev := tee.Evidence{Platform: p}
			if ev.Raw, err = readLimited(evidence); err != nil {
				return &exitError{code: 2, err: err}
			}
			if vcek != "" {
				if ev.VCEK, err = readLimited(vcek); err != nil {
					return &exitError{code: 2, err: err}
				}
			}
			var pol *tee.Policy
			if policy != "" {
				b, err := readLimited(policy)
				if err != nil {
					return &exitError{code: 2, err: err}
				}
				if pol, err = tee.ParsePolicy(b); err != nil {
					return &exitError{code: 2, err: err}
				}
			}
			var opts tee.VerifyOptions
			if now != "" {
				if opts.Now, err = time.Parse(time.RFC3339, now); err != nil {
					return usage(cmd, "--now: %v", err)
				}
			}
			if p == tee.Virtual {
				fmt.Fprintln(cmd.ErrOrStderr(), "WARNING:", tee.VirtualWarning)
			}
			r, err := tee.Verify(ev, opts)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			if pol != nil {
				if err := pol.Appraise(r); err != nil {
					printJSON(cmd.OutOrStdout(), r.Claims)
					return &exitError{code: 1, err: err}
				}
			}
			return printJSON(cmd.OutOrStdout(), r.Claims)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&platform, "platform", "", "sev-snp, tdx or virtual")
	fs.StringVar(&evidence, "evidence", "", "evidence file (- for stdin)")
	fs.StringVar(&vcek, "vcek", "", "sev-snp: the VCEK certificate, DER or PEM")
	fs.StringVar(&policy, "policy", "", "appraisal policy JSON")
	fs.StringVar(&now, "now", "", "verify certificates at this time (RFC 3339)")
	return cmd
}

// maaName is the attest endpoint's name for a platform.
func maaName(p tee.Platform) string {
	switch p {
	case tee.SevSnp:
		return "SevSnpVm"
	case tee.TDX:
		return "TdxVm"
	}
	return "Virtual"
}

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func newAttestTokenCmd(cf *connFlags) *cobra.Command {
	var platform, evidence, vcek, runtimeData, nonce, audience string
	var claims bool
	cmd := &cobra.Command{
		Use:   "token --platform P --evidence FILE [--vcek FILE] [--runtime-data FILE] [--nonce N] [--audience A]",
		Short: "Get an attestation token from a Parley service",
		Long: `POST the evidence to the service's /attest/{SevSnpVm|TdxVm|Virtual} and print
the token. With --claims, fetch the service's JWKS (/certs), verify the token
with it and print its claims instead.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := tee.ParsePlatform(platform)
			if err != nil {
				return usage(cmd, "%v", err)
			}
			if evidence == "" {
				return usage(cmd, "--evidence is required")
			}
			raw, err := readLimited(evidence)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			body := map[string]any{"nonce": nonce}
			if audience != "" {
				body["audience"] = audience
			}
			if p == tee.SevSnp {
				if vcek == "" {
					return usage(cmd, "sev-snp needs --vcek")
				}
				v, err := readLimited(vcek)
				if err != nil {
					return &exitError{code: 2, err: err}
				}
				snp, _ := json.Marshal(map[string]string{"SnpReport": b64url(raw), "VcekCertChain": b64url(v)})
				body["report"] = b64url(snp)
			} else {
				body["report"] = b64url(raw)
			}
			if runtimeData != "" {
				rt, err := readLimited(runtimeData)
				if err != nil {
					return &exitError{code: 2, err: err}
				}
				body["runtimeData"] = map[string]string{"data": b64url(rt), "dataType": "JSON"}
			}
			c, _, err := cf.client(false)
			if err != nil {
				return err
			}
			ctx, cancel := cf.context(cmd)
			defer cancel()
			var out struct {
				Token string `json:"token"`
			}
			if err := c.Call(ctx, "POST", "/attest/"+maaName(p), body, &out); err != nil {
				return err
			}
			if !claims {
				_, err := fmt.Fprintln(cmd.OutOrStdout(), out.Token)
				return err
			}
			var jwks jose.JSONWebKeySet
			if err := c.Call(ctx, "GET", "/certs", nil, &jwks); err != nil {
				return err
			}
			var oidc attest.OpenIDConfiguration
			if err := c.Call(ctx, "GET", "/.well-known/openid-configuration", nil, &oidc); err != nil {
				return err
			}
			aud := audience
			if aud == "" {
				aud = oidc.Issuer
			}
			got, err := (&attest.Verifier{Keys: jwks, Issuer: oidc.Issuer, Audience: aud}).Verify(out.Token)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			return printJSON(cmd.OutOrStdout(), got)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&platform, "platform", "", "virtual, sev-snp or tdx")
	fs.StringVar(&evidence, "evidence", "", "evidence file (- for stdin)")
	fs.StringVar(&vcek, "vcek", "", "sev-snp: the VCEK certificate, DER or PEM")
	fs.StringVar(&runtimeData, "runtime-data", "", "runtime data JSON file bound by the evidence")
	fs.StringVar(&nonce, "nonce", "", "nonce to echo in the token")
	fs.StringVar(&audience, "audience", "", "aud of the token (default: the service itself)")
	fs.BoolVar(&claims, "claims", false, "verify the token with the service's JWKS and print its claims")
	return cmd
}

func newAttestPolicyCmd(cf *connFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy get | set FILE",
		Short: "Read or set the service's appraisal policy",
		Long: `get prints the appraisal policy (GET /app/attestation/policy, Reader).
set FILE replaces it (PUT /app/attestation/policy, Administrator): a temporary
endpoint until governance proposals set the policy.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 || (args[0] == "get" && len(args) != 1) || (args[0] == "set" && len(args) != 2) || (args[0] != "get" && args[0] != "set") {
				return usage(cmd, "want get or set FILE")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := cf.client(false)
			if err != nil {
				return err
			}
			ctx, cancel := cf.context(cmd)
			defer cancel()
			const path = "/app/attestation/policy"
			var out json.RawMessage
			if args[0] == "get" {
				err = c.Call(ctx, "GET", path, nil, &out)
			} else {
				b, rerr := readLimited(args[1])
				if rerr != nil {
					return &exitError{code: 2, err: rerr}
				}
				if _, perr := tee.ParsePolicy(b); perr != nil {
					return &exitError{code: 2, err: perr}
				}
				err = c.Call(ctx, "PUT", path, json.RawMessage(b), &out)
			}
			if err != nil {
				return err
			}
			var v any
			json.Unmarshal(out, &v)
			return printJSON(cmd.OutOrStdout(), v)
		},
	}
	return cmd
}
