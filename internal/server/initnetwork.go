package server

import (
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/parleyhq/parley/internal/vfs"
)

// InitNetworkOptions configures InitNetwork.
type InitNetworkOptions struct {
	// Nodes is the number of nodes (3 when zero).
	Nodes int
	// Members is the number of consortium members of the new service (1
	// when zero).
	Members int
	// AutoTrustNodes is written into node0's network section.
	AutoTrustNodes bool
}

// InitNetwork writes the configuration files of a network of nodes on
// free 127.0.0.1 ports, and nothing else: base/node0/config.json starts a
// new service that accepts joins ("network"), and base/node<i>/config.json
// (i ≥ 1) joins it ("join", with base/service_cert.pem as the service
// certificate, which the caller copies from node0 once it exists). No key
// or secret is made here: each node makes its own, and the joining ones
// receive the service's through the attested join.
func InitNetwork(base string, opts InitNetworkOptions) ([]ClusterMember, error) {
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Members == 0 {
		opts.Members = 1
	}
	if opts.Nodes < 1 || opts.Nodes > MaxClusterNodes {
		return nil, fmt.Errorf("init network: want 1 to %d nodes", MaxClusterNodes)
	}
	if opts.Members < 1 || opts.Members > MaxMembers {
		return nil, fmt.Errorf("init network: want 1 to %d members", MaxMembers)
	}
	base, err := filepath.Abs(base)
	if err != nil {
		return nil, fmt.Errorf("init network: %w", err)
	}
	fsys := vfs.OS{}
	addrs, err := freeAddresses(opts.Nodes)
	if err != nil {
		return nil, err
	}
	var members []ClusterMember
	for i := range opts.Nodes {
		dir := filepath.Join(base, fmt.Sprintf("node%d", i))
		if err := vfs.MkdirAllDurable(fsys, dir, 0o700); err != nil {
			return nil, fmt.Errorf("init network: %w", err)
		}
		cfg := Config{DataDir: dir, ListenAddress: addrs[i]}
		if i == 0 {
			cfg.Members = opts.Members
			cfg.Network = &NetworkConfig{AutoTrustNodes: opts.AutoTrustNodes}
		} else {
			cfg.Join = &JoinConfig{Target: addrs[0], ServiceCertificate: filepath.Join(base, "service_cert.pem")}
		}
		b, err := json.MarshalIndent(cfg, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("init network: %w", err)
		}
		m := ClusterMember{RaftID: uint64(i + 1), Endpoint: addrs[i], Dir: dir, Config: filepath.Join(dir, "config.json")}
		if err := vfs.WriteFileDurable(fsys, m.Config, append(b, '\n'), 0o600); err != nil {
			return nil, fmt.Errorf("init network: %w", err)
		}
		members = append(members, m)
	}
	return members, nil
}
