// Package runner runs an approved clean-room query: it loads decrypted
// datasets into an in-memory DuckDB, checks the query against every
// dataset's analysis rules, runs it, enforces the minimum-entities rule on
// its output, and seals the CSV result to each recipient with HPKE.
//
// The runner never writes plaintext to disk: the database is in memory,
// spilling to a temporary directory is disabled, extensions are neither
// installed nor loaded, and external access (files, URLs) is switched off
// before the query runs. The exact rule semantics are documented in
// docs/cleanroom.md.
package runner

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"database/sql"
	"database/sql/driver"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"github.com/duckdb/duckdb-go/v2"

	"github.com/parleyhq/parley/internal/cleanroom/dataset"
)

// Table is one decrypted dataset, as the query sees it.
type Table struct {
	// Name is the SQL table name: a lowercase identifier.
	Name   string
	Schema dataset.Schema
	// CSV is the decrypted dataset plaintext: a header row naming the
	// schema's columns, then rows. The runner does not keep it.
	CSV   []byte
	Rules Rules
}

// Job is one run of a contract's query.
type Job struct {
	Tables []Table
	// SQL is a single SELECT over the tables.
	SQL        string
	Recipients []Recipient
	// Context is bound into every sealed result (e.g. the contract hash and
	// job id) so a result cannot be passed off as another job's.
	Context []byte
	// MemoryLimit caps DuckDB's memory, e.g. "4GB"; empty means DuckDB's default.
	MemoryLimit string
}

// Result is what a job produced.
type Result struct {
	// Columns are the output column names.
	Columns []string
	// Rows is the number of output rows after suppression.
	Rows int
	// Suppressed is the number of rows removed by min-entities.
	Suppressed int
	// Sealed holds the CSV output sealed to each recipient, in Job.Recipients order.
	Sealed []Sealed
}

// Limits on a job's inputs.
const (
	MaxTables     = 16
	MaxSQLSize    = 64 << 10
	MaxRecipients = 64
	// MaxOutputSize bounds the CSV output.
	MaxOutputSize = 256 << 20
)

var (
	tableName   = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
	memoryLimit = regexp.MustCompile(`^[0-9]{1,6}(\.[0-9]{1,3})?\s?(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$`)
)

// Run runs job and returns its sealed output. A query that breaks or cannot
// be shown to keep a rule fails with a *[RuleError] naming the rule.
func Run(ctx context.Context, job Job) (*Result, error) {
	if err := validate(job); err != nil {
		return nil, err
	}
	conn, err := duckdb.NewConnector("", nil)
	if err != nil {
		return nil, fmt.Errorf("open duckdb: %w", err)
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	// One connection: settings are per database, but keep everything on
	// one session to be sure.
	db.SetMaxOpenConns(1)
	c, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect duckdb: %w", err)
	}
	defer c.Close()

	settings := []string{
		"SET temp_directory = ''",
		"SET autoinstall_known_extensions = false",
		"SET autoload_known_extensions = false",
	}
	if job.MemoryLimit != "" {
		settings = append(settings, fmt.Sprintf("SET memory_limit = '%s'", job.MemoryLimit))
	}
	for _, s := range settings {
		if _, err := c.ExecContext(ctx, s); err != nil {
			return nil, fmt.Errorf("configure duckdb (%s): %w", s, err)
		}
	}
	for _, t := range job.Tables {
		if err := load(ctx, c, t); err != nil {
			return nil, fmt.Errorf("load table %s: %w", t.Name, err)
		}
	}
	for _, s := range []string{"SET enable_external_access = false", "SET lock_configuration = true"} {
		if _, err := c.ExecContext(ctx, s); err != nil {
			return nil, fmt.Errorf("configure duckdb (%s): %w", s, err)
		}
	}

	query, p, err := prepare(ctx, c, job)
	if err != nil {
		return nil, err
	}
	cols, out, rows, suppressed, err := execute(ctx, c, query, p)
	if err != nil {
		return nil, err
	}
	res := &Result{Columns: cols, Rows: rows, Suppressed: suppressed}
	for _, r := range job.Recipients {
		s, err := seal(r, job.Context, out)
		if err != nil {
			return nil, fmt.Errorf("seal result to %s: %w", r.ID, err)
		}
		res.Sealed = append(res.Sealed, s)
	}
	clear(out)
	return res, nil
}

func validate(job Job) error {
	if len(job.Tables) == 0 || len(job.Tables) > MaxTables {
		return fmt.Errorf("job has %d tables, want 1..%d", len(job.Tables), MaxTables)
	}
	if len(job.SQL) == 0 || len(job.SQL) > MaxSQLSize {
		return fmt.Errorf("query is %d bytes, want 1..%d", len(job.SQL), MaxSQLSize)
	}
	if len(job.Recipients) == 0 || len(job.Recipients) > MaxRecipients {
		return fmt.Errorf("job has %d recipients, want 1..%d", len(job.Recipients), MaxRecipients)
	}
	if job.MemoryLimit != "" && !memoryLimit.MatchString(job.MemoryLimit) {
		return fmt.Errorf("memory limit %q is not a size like 4GB", job.MemoryLimit)
	}
	seen := map[string]bool{}
	for _, t := range job.Tables {
		if err := ValidateTable(t); err != nil {
			return err
		}
		if seen[t.Name] {
			return fmt.Errorf("table name %q appears twice", t.Name)
		}
		seen[t.Name] = true
	}
	for _, r := range job.Recipients {
		if r.Key == nil {
			return fmt.Errorf("recipient %q has no key", r.ID)
		}
	}
	return nil
}

// ValidateTable checks t's name, schema and rules (not its CSV): rules must
// name columns of the schema, and a min-entities rule needs an entity column.
func ValidateTable(t Table) error {
	if !tableName.MatchString(t.Name) {
		return fmt.Errorf("table name %q is not a lowercase identifier", t.Name)
	}
	if err := t.Schema.Validate(); err != nil {
		return fmt.Errorf("table %s: %w", t.Name, err)
	}
	r := t.Rules
	for _, list := range [][]string{r.Forbidden, r.JoinOnly, r.AggregateOnly} {
		for _, col := range list {
			if !hasColumn(&t, col) {
				return fmt.Errorf("table %s: rule names unknown column %q", t.Name, col)
			}
		}
	}
	if r.MinEntities < 0 {
		return fmt.Errorf("table %s: min entities %d is negative", t.Name, r.MinEntities)
	}
	if r.MinEntities > 0 && !hasColumn(&t, r.Entity) {
		return fmt.Errorf("table %s: min-entities rule needs an entity column, got %q", t.Name, r.Entity)
	}
	return nil
}

// load creates t's table and appends its rows through the DuckDB appender,
// parsing the CSV in memory.
func load(ctx context.Context, c *sql.Conn, t Table) error {
	var ddl strings.Builder
	fmt.Fprintf(&ddl, "CREATE TABLE %s (", t.Name)
	for i, col := range t.Schema.Columns {
		if i > 0 {
			ddl.WriteString(", ")
		}
		fmt.Fprintf(&ddl, "%s %s", col.Name, col.Type)
	}
	ddl.WriteString(")")
	if _, err := c.ExecContext(ctx, ddl.String()); err != nil {
		return fmt.Errorf("create table: %w", err)
	}
	return c.Raw(func(dc any) error {
		a, err := duckdb.NewAppenderFromConn(dc.(driver.Conn), "", t.Name)
		if err != nil {
			return fmt.Errorf("new appender: %w", err)
		}
		cr := csv.NewReader(bytes.NewReader(t.CSV))
		cr.FieldsPerRecord = len(t.Schema.Columns)
		cr.ReuseRecord = true
		head, err := cr.Read()
		if err != nil {
			a.Close()
			return fmt.Errorf("read csv header: %w", err)
		}
		for i, col := range t.Schema.Columns {
			if head[i] != col.Name {
				a.Close()
				return fmt.Errorf("csv column %d is %q, schema says %q", i, head[i], col.Name)
			}
		}
		vals := make([]driver.Value, len(t.Schema.Columns))
		for row := 1; ; row++ {
			rec, err := cr.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				a.Close()
				return fmt.Errorf("read csv row %d: %w", row, err)
			}
			for i, f := range rec {
				if vals[i], err = parse(t.Schema.Columns[i].Type, f); err != nil {
					a.Close()
					return fmt.Errorf("csv row %d column %s: %w", row, t.Schema.Columns[i].Name, err)
				}
			}
			if err := a.AppendRow(vals...); err != nil {
				a.Close()
				return fmt.Errorf("append row %d: %w", row, err)
			}
		}
		if err := a.Close(); err != nil {
			return fmt.Errorf("flush appender: %w", err)
		}
		return nil
	})
}

func parse(t dataset.Type, f string) (driver.Value, error) {
	if f == "" {
		return nil, nil
	}
	switch t {
	case dataset.Bigint:
		return strconv.ParseInt(f, 10, 64)
	case dataset.Double:
		return strconv.ParseFloat(f, 64)
	case dataset.Boolean:
		return strconv.ParseBool(f)
	case dataset.Varchar:
		return strings.Clone(f), nil
	}
	return nil, fmt.Errorf("unknown type %q", t)
}

// prepare parses the query with DuckDB, checks it against the rules, and
// returns the query to run (rewritten to count entities when needed).
func prepare(ctx context.Context, c *sql.Conn, job Job) (string, *plan, error) {
	var tree string
	if err := c.QueryRowContext(ctx, "SELECT json_serialize_sql(?::VARCHAR)::VARCHAR", job.SQL).Scan(&tree); err != nil {
		return "", nil, fmt.Errorf("parse query: %w", err)
	}
	var m map[string]any
	dec := json.NewDecoder(strings.NewReader(tree))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return "", nil, fmt.Errorf("decode query syntax tree: %w", err)
	}
	p, err := check(m, job.Tables)
	if err != nil {
		return "", nil, err
	}
	if len(p.entities) == 0 {
		return job.SQL, p, nil
	}
	rewrite(m, p)
	b, err := json.Marshal(m)
	if err != nil {
		return "", nil, fmt.Errorf("encode rewritten query: %w", err)
	}
	var query string
	if err := c.QueryRowContext(ctx, "SELECT json_deserialize_sql(?::JSON)", string(b)).Scan(&query); err != nil {
		return "", nil, fmt.Errorf("render rewritten query: %w", err)
	}
	return query, p, nil
}

// execute runs the query and renders the rows that pass min-entities as CSV.
func execute(ctx context.Context, c *sql.Conn, query string, p *plan) ([]string, []byte, int, int, error) {
	rows, err := c.QueryContext(ctx, query)
	if err != nil {
		return nil, nil, 0, 0, fmt.Errorf("run query: %w", err)
	}
	defer rows.Close()
	all, err := rows.Columns()
	if err != nil {
		return nil, nil, 0, 0, fmt.Errorf("read columns: %w", err)
	}
	nOut := len(all) - len(p.entities)
	if nOut <= 0 {
		return nil, nil, 0, 0, fmt.Errorf("query returned %d columns, want at least %d", len(all), len(p.entities)+1)
	}
	cols := all[:nOut]
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	if err := w.Write(cols); err != nil {
		return nil, nil, 0, 0, fmt.Errorf("encode header: %w", err)
	}
	vals := make([]any, len(all))
	ptrs := make([]any, len(all))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	rec := make([]string, nOut)
	n, suppressed := 0, 0
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, nil, 0, 0, fmt.Errorf("scan row: %w", err)
		}
		if !enough(vals[nOut:], p) {
			suppressed++
			continue
		}
		for i := range rec {
			rec[i] = format(vals[i])
		}
		if err := w.Write(rec); err != nil {
			return nil, nil, 0, 0, fmt.Errorf("encode row: %w", err)
		}
		n++
		if buf.Len() > MaxOutputSize {
			return nil, nil, 0, 0, fmt.Errorf("output exceeds %d bytes", MaxOutputSize)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, 0, 0, fmt.Errorf("read rows: %w", err)
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return nil, nil, 0, 0, fmt.Errorf("encode output: %w", err)
	}
	return cols, buf.Bytes(), n, suppressed, nil
}

// enough reports whether every entity count of a row meets its threshold.
func enough(counts []any, p *plan) bool {
	for i, ec := range p.entities {
		n, ok := counts[i].(int64)
		if !ok || n < int64(ec.min) {
			return false
		}
	}
	return true
}

func format(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case int64:
		return strconv.FormatInt(v, 10)
	case int32:
		return strconv.FormatInt(int64(v), 10)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	case []byte:
		return string(v)
	default:
		return fmt.Sprint(v)
	}
}

// Recipient is someone a job's output is sealed to.
type Recipient struct {
	ID string
	// Key is an X25519 or P-256 public key.
	Key *ecdh.PublicKey
}
