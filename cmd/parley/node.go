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
keys, as parley dev does.

With a "network" section the new service accepts joining nodes (POST
/node/join) and changes its raft membership as governance decides
(trust_node, retire_node); "network": {"autoTrustNodes": true} trusts every
node whose evidence and measurement check out (development).

With a "join" section ({"target": "host:port", "serviceCertificate": FILE})
a node whose data directory is empty joins that service: it makes its node
key, presents TEE evidence binding it (the virtual platform: development
only), waits until it is Trusted, receives its endorsed certificate and the
service's secrets encrypted to its key, and catches up by replication. Once
joined it restarts on its data directory and never joins again.

With a "cluster" section the node is one voter of a static cluster whose
directories parley node init-cluster made (development only).

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
			srv, err := server.StartContext(cmd.Context(), cfg, logger)
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
	cmd.AddCommand(newInitClusterCmd(), newInitNetworkCmd())
	return cmd
}

// NetworkFile is the file init-network writes into its base directory: the
// nodes it configured, as JSON.
const NetworkFile = "network.json"

func newInitNetworkCmd() *cobra.Command {
	var dir string
	var nodes, members int
	var autoTrust bool
	cmd := &cobra.Command{
		Use:   "init-network",
		Short: "Write the configuration files of a network of nodes that join one another",
		Long: `Write the configuration files of N nodes on free 127.0.0.1 ports, and nothing
else: DIR/node0/config.json starts a new service that accepts joining nodes,
and DIR/node<i>/config.json (i >= 1) joins it through the attested join, with
DIR/service_cert.pem as the service certificate (copy it from DIR/node0 once
node0 has started). DIR/network.json lists the nodes
([{"id","endpoint","dir","config"}], also printed); "id" is the raft id each
node gets if they join in order. No key or secret is made or copied: each
node makes its own, and joining nodes receive the service's secrets only
once they are trusted. examples/cluster/start.sh uses it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return &exitError{code: 2, err: errors.New("--dir is required")}
			}
			if _, err := os.Stat(filepath.Join(dir, NetworkFile)); err == nil {
				return &exitError{code: 2, err: fmt.Errorf("%s already holds a network", dir)}
			}
			ms, err := server.InitNetwork(dir, server.InitNetworkOptions{Nodes: nodes, Members: members, AutoTrustNodes: autoTrust})
			if err != nil {
				return err
			}
			return writeNodeList(cmd, filepath.Join(dir, NetworkFile), ms)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "base directory of the network")
	cmd.Flags().IntVar(&nodes, "nodes", 3, "number of nodes")
	cmd.Flags().IntVar(&members, "members", 1, "number of consortium members")
	cmd.Flags().BoolVar(&autoTrust, "auto-trust", false, "trust joining nodes whose evidence checks out without a vote (development)")
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
		Short: "Make the data directories of a static development cluster (development only; see init-network)",
		Long: `Make the data directories and configuration files of a new static cluster of
N nodes on free 127.0.0.1 ports: DIR/node<i>/ with DIR/node<i>/config.json
(run each with parley node --config), DIR/service_cert.pem, DIR/user0_cert.pem,
DIR/user0_privk.pem, the members' files, and DIR/cluster.json listing the
nodes ([{"id","endpoint","dir","config"}], also printed).

DEVELOPMENT BOOTSTRAP ONLY. It makes ONE service key and ledger secret and
writes them, sealed, into EVERY node directory; no TEE evidence is checked.
Nodes of a real service join through the attested join instead (see
init-network and examples/cluster/start.sh). Do not use it for a service
whose data matters.`,
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
			return writeNodeList(cmd, filepath.Join(dir, ClusterFile), ms)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "base directory of the cluster")
	cmd.Flags().IntVar(&nodes, "nodes", 3, "number of nodes")
	cmd.Flags().IntVar(&members, "members", 1, "number of consortium members")
	return cmd
}

// errNoConfig is returned by parley node without --config.
var errNoConfig = errors.New("--config is required")

// writeNodeList writes the nodes an init command configured to path, as
// JSON, durably, and prints them.
func writeNodeList(cmd *cobra.Command, path string, nodes []server.ClusterMember) error {
	b, err := json.MarshalIndent(nodes, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if err := vfs.WriteFileDurable(vfs.OS{}, path, b, 0o644); err != nil {
		return err
	}
	_, err = cmd.OutOrStdout().Write(b)
	return err
}
