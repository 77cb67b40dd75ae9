package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/parleyhq/parley/internal/server"
	"github.com/parleyhq/parley/internal/vfs"
)

func newNodeCmd() *cobra.Command {
	var configPath, prevLedger, prevCert string
	var recoverMode bool
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run a Parley node from a configuration file",
		Long: `Run a Parley node from a JSON configuration file (see the Config type in
internal/server for every field; unknown fields are refused).

On first start the data directory is created with a new service: the service
and node identities, and user0 (Administrator) and member0 certificates and
keys, as parley dev does. With a "cluster" section the node is one voter of
a static cluster whose directories parley node init-cluster made; the
attested join of new nodes is not built yet.

With --recover (disaster recovery), the node starts a NEW service from an old
service's ledger directory (--previous-ledger): it makes a new service and
node identity in the configuration's dataDir (which must be new), copies the
old ledger there, cuts it after its last signature transaction, and opens it
with the old private state closed (service status Recovering: governance and
public reads only; the application answers 503 ServiceRecovering). The new
service records its certificate and its endorsement of the previous service
identity (from --previous-service-cert, or as the old ledger records it), so
receipts issued before the disaster verify against the new service
certificate. Members then submit their recovery shares (parley gov share
--submit); at the threshold the private state is restored and the service
opens. Restarting a recovered node needs no flag and no shares.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath == "" {
				return &exitError{code: 2, err: errNoConfig}
			}
			cfg, err := server.LoadConfig(configPath)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if recoverMode {
				if prevLedger == "" && cfg.Recovery == nil {
					return &exitError{code: 2, err: errors.New("--recover needs --previous-ledger (or a recovery section in the configuration)")}
				}
				if cfg.Recovery == nil {
					cfg.Recovery = &server.RecoveryConfig{}
				}
				if prevLedger != "" {
					cfg.Recovery.PreviousLedgerDir = prevLedger
				}
				if prevCert != "" {
					cfg.Recovery.PreviousServiceCert = prevCert
				}
			} else if prevLedger != "" || prevCert != "" {
				return &exitError{code: 2, err: errors.New("--previous-ledger and --previous-service-cert go with --recover")}
			}
			logger, err := server.NewLogger(cmd.ErrOrStderr(), cfg.LogFormat, cfg.LogLevel)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			srv, err := server.Start(cfg, logger)
			if err != nil {
				return err
			}
			return srv.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "configuration file (JSON)")
	cmd.Flags().BoolVar(&recoverMode, "recover", false, "start a new service from an old service's ledger (disaster recovery)")
	cmd.Flags().StringVar(&prevLedger, "previous-ledger", "", "with --recover: the old service's ledger directory")
	cmd.Flags().StringVar(&prevCert, "previous-service-cert", "", "with --recover: the old service certificate (PEM), if the old ledger does not record it")
	cmd.AddCommand(newInitClusterCmd())
	return cmd
}

// ClusterFile is the file init-cluster writes into its base directory: the
// nodes it made, as JSON.
const ClusterFile = "cluster.json"

func newInitClusterCmd() *cobra.Command {
	var dir string
	var nodes, members int
	cmd := &cobra.Command{
		Use:   "init-cluster",
		Short: "Make the data directories of a static development cluster",
		Long: `Make the data directories and configuration files of a new static cluster of
N nodes on free 127.0.0.1 ports: DIR/node<i>/ with DIR/node<i>/config.json
(run each with parley node --config), DIR/service_cert.pem, DIR/user0_cert.pem,
DIR/user0_privk.pem, the members' files, and DIR/cluster.json listing the
nodes ([{"id","endpoint","dir","config"}], also printed).

DEVELOPMENT BOOTSTRAP ONLY. It makes ONE service key and ledger secret and
writes them, sealed, into EVERY node directory; no TEE evidence is checked.
That is not the attested join protocol, which is not built yet. Do not use it
for a service whose data matters. examples/cluster/start.sh starts the nodes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return &exitError{code: 2, err: errors.New("--dir is required")}
			}
			if _, err := os.Stat(filepath.Join(dir, ClusterFile)); err == nil {
				return &exitError{code: 2, err: fmt.Errorf("%s already holds a cluster", dir)}
			}
			ms, err := server.InitCluster(dir, server.InitClusterOptions{Nodes: nodes, Members: members})
			if err != nil {
				return err
			}
			b, err := json.MarshalIndent(ms, "", "  ")
			if err != nil {
				return err
			}
			b = append(b, '\n')
			if err := vfs.WriteFileDurable(vfs.OS{}, filepath.Join(dir, ClusterFile), b, 0o644); err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "base directory of the cluster")
	cmd.Flags().IntVar(&nodes, "nodes", 3, "number of nodes")
	cmd.Flags().IntVar(&members, "members", 1, "number of consortium members")
	return cmd
}

// errNoConfig is returned by parley node without --config.
var errNoConfig = errors.New("--config is required")
