package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/parleyhq/parley/internal/app"
	"github.com/parleyhq/parley/internal/engine"
	"github.com/parleyhq/parley/internal/httpapi"
)

// DefaultListenAddress is where a node listens unless configured.
const DefaultListenAddress = "127.0.0.1:8000"

// Config configures a node. It is the JSON file `parley node --config`
// reads; unknown fields are refused. Zero values take the defaults named.
//
// Example:
//
//	{
//	  "dataDir": "/var/lib/parley",
//	  "listenAddress": "0.0.0.0:8443",
//	  "subjectAltNames": ["ledger.example.com", "10.0.0.5"],
//	  "signatureInterval": "10ms",
//	  "logFormat": "json"
//	}
type Config struct {
	// DataDir holds the node's identities, sealed secrets and ledger
	// (required). It is created, with a new service, if it holds no node.
	DataDir string `json:"dataDir"`
	// ListenAddress is the HTTPS listen address, host:port
	// (DefaultListenAddress).
	ListenAddress string `json:"listenAddress,omitempty"`
	// SubjectAltNames are the host names and IP addresses the node
	// certificate covers, used only when the data directory is created.
	// Clients verify the host they connect to against them.
	SubjectAltNames []string `json:"subjectAltNames,omitempty"`
	// SignatureInterval is the longest a transaction waits for the
	// signature that commits it ("10ms" by default; Go duration syntax).
	SignatureInterval Duration `json:"signatureInterval,omitempty"`
	// SignatureTxCount is the most transactions between two signatures
	// (1000).
	SignatureTxCount int `json:"signatureTxCount,omitempty"`
	// SnapshotTxInterval is the least number of seqnos between two
	// snapshots of the state, from which a node that joins or lags far
	// behind catches up (engine.DefaultSnapshotTxInterval, 10000; -1 turns
	// snapshots off). See docs/operations.md, "Snapshots".
	SnapshotTxInterval int `json:"snapshotTxInterval,omitempty"`
	// Limits are the ledger application's limits (ACL's by default).
	Limits app.Limits `json:"limits,omitzero"`
	// MaxRequestBytes bounds a request body (1 MiB).
	MaxRequestBytes int64 `json:"maxRequestBytes,omitempty"`
	// PageSize bounds the entries of one page of GET /app/transactions
	// (100).
	PageSize int `json:"pageSize,omitempty"`
	// MaxBatch bounds the entries of one POST /app/transactions:batch
	// (1000).
	MaxBatch int `json:"maxBatch,omitempty"`
	// UnsafeTruncateCorruptTail lets the node cut a damaged tail of the
	// ledger's open chunk that is not a plain torn write. Without it a node
	// refuses to start on a ledger that does not check out, and says why.
	// It can lose data: set it only after reading that error.
	UnsafeTruncateCorruptTail bool `json:"unsafeTruncateCorruptTail,omitempty"`
	// DebugAddress, when set, serves Go's profiler (net/http/pprof) on this
	// address, which must be a loopback one: it has no authentication.
	DebugAddress string `json:"debugAddress,omitempty"`
	// JWKSRefreshInterval is how often the primary fetches the key sets
	// of JWT issuers that governance set with auto_refresh ("10m").
	JWKSRefreshInterval Duration `json:"jwksRefreshInterval,omitempty"`
	// Members is the number of consortium members (member0…) a new
	// service is created with, each with its certificate, signing key and
	// encryption key in DataDir (1; at most MaxMembers). It matters only
	// at first start.
	Members int `json:"members,omitempty"`
	// LogFormat is "text" (the default, for people) or "json".
	LogFormat string `json:"logFormat,omitempty"`
	// LogLevel is "debug" (which logs every request), "info" (the
	// default), "warn" or "error".
	LogLevel string `json:"logLevel,omitempty"`
	// Cluster, when set, makes the node one voter of a static cluster
	// (see ClusterConfig and InitCluster; development only).
	Cluster *ClusterConfig `json:"cluster,omitempty"`
	// Recovery, when set, starts a new service from an old service's
	// ledger (disaster recovery; see RecoveryConfig). One node only.
	Recovery *RecoveryConfig `json:"recovery,omitempty"`
	// Network, when set, makes a new service that other nodes can join
	// (see NetworkConfig).
	Network *NetworkConfig `json:"network,omitempty"`
	// Join, when set, makes a node whose data directory holds no node join
	// a running service (see JoinConfig); once joined it restarts on its
	// data directory.
	Join *JoinConfig `json:"join,omitempty"`
	// VirtualMeasurement is the measurement (64 hex digits) this node
	// claims in its virtual TEE evidence when it joins, and allows to join
	// when it starts a network service; the SHA-256 of the running binary
	// by default. Virtual evidence is for development only.
	VirtualMeasurement string `json:"virtualMeasurement,omitempty"`
}

// Duration is a time.Duration written in Go syntax ("10ms") in JSON.
type Duration time.Duration

// UnmarshalJSON decodes a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string such as \"10ms\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON encodes a duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// LoadConfig reads and validates a JSON configuration file.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(b)
}

// ParseConfig decodes and validates a JSON configuration, refusing unknown
// fields and trailing data.
func ParseConfig(b []byte) (Config, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("parse config: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Config{}, errors.New("parse config: data after the JSON object")
	}
	if err := c.validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

func (c Config) validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("dataDir is required"))
	}
	if c.ListenAddress != "" {
		if _, _, err := net.SplitHostPort(c.ListenAddress); err != nil {
			errs = append(errs, fmt.Errorf("listenAddress: %w", err))
		}
	}
	if c.DebugAddress != "" {
		host, _, err := net.SplitHostPort(c.DebugAddress)
		if ip := net.ParseIP(host); err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
			errs = append(errs, fmt.Errorf("debugAddress %q: want a loopback host:port", c.DebugAddress))
		}
	}
	if c.SignatureInterval < 0 || (c.SignatureInterval > 0 && time.Duration(c.SignatureInterval) < time.Millisecond) {
		errs = append(errs, errors.New("signatureInterval must be at least 1ms"))
	}
	if c.SnapshotTxInterval < -1 {
		errs = append(errs, errors.New("snapshotTxInterval: want -1 (off), 0 (default) or a positive count"))
	}
	if c.SignatureTxCount < 0 || c.MaxRequestBytes < 0 || c.PageSize < 0 || c.MaxBatch < 0 {
		errs = append(errs, errors.New("signatureTxCount, maxRequestBytes, pageSize and maxBatch must not be negative"))
	}
	if c.JWKSRefreshInterval < 0 || (c.JWKSRefreshInterval > 0 && time.Duration(c.JWKSRefreshInterval) < time.Second) {
		errs = append(errs, errors.New("jwksRefreshInterval must be at least 1s"))
	}
	if c.Members < 0 || c.Members > MaxMembers {
		errs = append(errs, fmt.Errorf("members: want 1 to %d", MaxMembers))
	}
	if c.PageSize > 10000 || c.MaxBatch > 100000 {
		errs = append(errs, errors.New("pageSize is at most 10000 and maxBatch at most 100000"))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	switch c.LogFormat {
	case "", "text", "json":
	default:
		errs = append(errs, fmt.Errorf("logFormat %q: want text or json", c.LogFormat))
	}
	if c.Cluster != nil {
		if err := c.Cluster.validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.validateNetwork(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("config: %w", errors.Join(errs...))
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.ListenAddress == "" {
		c.ListenAddress = DefaultListenAddress
	}
	if c.SignatureInterval == 0 {
		c.SignatureInterval = Duration(engine.DefaultSignatureInterval)
	}
	if c.SignatureTxCount == 0 {
		c.SignatureTxCount = engine.DefaultSignatureTxCount
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = httpapi.DefaultMaxRequestBytes
	}
	if len(c.SubjectAltNames) == 0 {
		c.SubjectAltNames = []string{"127.0.0.1", "localhost"}
	}
	return c
}

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("logLevel %q: want debug, info, warn or error", s)
}

// NewLogger returns the logger a node logs with: text or JSON on w, at
// level.
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	lv, err := parseLevel(level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}
