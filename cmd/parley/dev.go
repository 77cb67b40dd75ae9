package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/parleyhq/parley/internal/server"
	"github.com/parleyhq/parley/internal/vfs"
)

// ProfileFile is the client profile `parley dev` writes into its data
// directory for the CLI.
const ProfileFile = "profile.json"

// profile is what ProfileFile holds: the endpoint and absolute paths of the
// pinned service certificate and of user0's certificate and key.
type profile struct {
	Endpoint string `json:"endpoint"`
	CACert   string `json:"cacert"`
	Cert     string `json:"cert"`
	Key      string `json:"key"`
}

func newDevCmd() *cobra.Command {
	var dir, addr, debugAddr, logFormat, logLevel string
	var members int
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a one-node development service",
		Long: `Run a one-node Parley service for development, with generated identities.

On first start it creates DIR (default ./parley-dev) holding the service
certificate (service_cert.pem, the CA clients pin), user0_cert.pem and
user0_privk.pem (an Administrator), the consortium's members (--members N:
member<i>_cert.pem, member<i>_privk.pem and member<i>_enc_privk.pem for each
i < N, named as CCF's sandbox names them), profile.json for the CLI, and the ledger under DIR/ledger. Restarting with the
same DIR continues the same ledger. The node certificate covers 127.0.0.1,
localhost and the host of --addr. Stops cleanly on SIGINT or SIGTERM.

There is no TEE: the ledger secret and keys are sealed to a key file in DIR.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("--addr: %w", err)}
			}
			sans := []string{"127.0.0.1", "localhost"}
			if host != "" && host != "127.0.0.1" && host != "localhost" && host != "0.0.0.0" && host != "::" {
				sans = append(sans, host)
			}
			logger, err := server.NewLogger(cmd.ErrOrStderr(), logFormat, logLevel)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			srv, err := server.Start(server.Config{DataDir: dir, ListenAddress: addr, SubjectAltNames: sans, DebugAddress: debugAddr, Members: members}, logger)
			if err != nil {
				return err
			}
			endpoint := "https://" + endpointHost(host, srv.Addr())
			f := srv.Files()
			p := profile{Endpoint: endpoint, CACert: f.ServiceCert, Cert: f.User0Cert, Key: f.User0Key}
			if err := writeProfile(filepath.Join(f.Dir, ProfileFile), p); err != nil {
				return err
			}
			printDevBanner(cmd.OutOrStdout(), p, filepath.Join(f.Dir, ProfileFile))
			return srv.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "parley-dev", "data directory")
	cmd.Flags().StringVar(&addr, "addr", server.DefaultListenAddress, "HTTPS listen address, host:port")
	cmd.Flags().StringVar(&debugAddr, "debug-addr", "", "serve Go's profiler on this loopback host:port (no authentication)")
	cmd.Flags().IntVar(&members, "members", 1, "consortium members of a new service (member0…member<N-1>)")
	cmd.Flags().StringVar(&logFormat, "log-format", "text", "log format: text or json (on stderr)")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level: debug (logs every request), info, warn or error")
	return cmd
}

// endpointHost is the host:port clients should use: the listen address,
// with 127.0.0.1 for an unspecified host.
func endpointHost(host string, a net.Addr) string {
	_, port, _ := net.SplitHostPort(a.String())
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func writeProfile(path string, p profile) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return fmt.Errorf("encode profile: %w", err)
	}
	if err := vfs.WriteFileDurable(vfs.OS{}, path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write profile: %w", err)
	}
	return nil
}

func printDevBanner(w io.Writer, p profile, profilePath string) {
	fmt.Fprintf(w, `Parley dev service at %[1]s (no TEE: development only)

  service certificate (pin it): %[2]s
  user0 (Administrator):        %[3]s
                                %[4]s
  CLI profile:                  %[5]s

Try it:

  parley ledger append --profile %[5]s 'hello, ledger'

  curl --cacert %[2]s --cert %[3]s --key %[4]s \
    -H 'Content-Type: application/json' -d '{"contents":"hello, ledger"}' \
    '%[1]s/app/transactions?api-version=2022-05-13'
  curl --cacert %[2]s --cert %[3]s --key %[4]s \
    '%[1]s/app/transactions?api-version=2022-05-13'

`, p.Endpoint, p.CACert, p.Cert, p.Key, profilePath)
}
