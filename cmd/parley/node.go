package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/parleyhq/parley/internal/server"
)

func newNodeCmd() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run a Parley node from a configuration file",
		Long: `Run a Parley node from a JSON configuration file (see the Config type in
internal/server for every field; unknown fields are refused).

On first start the data directory is created with a new service: the service
and node identities, and user0 (Administrator) and member0 certificates and
keys, as parley dev does. One node only for now; joining a cluster comes later.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath == "" {
				return &exitError{code: 2, err: errNoConfig}
			}
			cfg, err := server.LoadConfig(configPath)
			if err != nil {
				return &exitError{code: 2, err: err}
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
	return cmd
}

// errNoConfig is returned by parley node without --config.
var errNoConfig = errors.New("--config is required")
