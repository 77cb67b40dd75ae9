// Package parquet turns a Parquet file into the CSV and schema that
// dataset.EncryptCSV takes, on the data owner's machine, using an in-memory
// DuckDB. It is separate from package dataset so the format itself stays
// free of cgo.
package parquet

import (
	"context"
	"database/sql"
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/duckdb/duckdb-go/v2"

	"github.com/parleyhq/parley/internal/cleanroom/dataset"
)

// ToCSV reads the Parquet file at path and writes it to w as CSV (header row
// first), returning its schema. Integer columns become BIGINT, floating and
// decimal columns DOUBLE, BOOLEAN stays, and every other type is cast to
// VARCHAR. Column names are lowercased and must then be identifiers.
func ToCSV(ctx context.Context, path string, w io.Writer) (dataset.Schema, error) {
	conn, err := duckdb.NewConnector("", nil)
	if err != nil {
		return dataset.Schema{}, fmt.Errorf("open duckdb: %w", err)
	}
	db := sql.OpenDB(conn)
	defer db.Close()

	var schema dataset.Schema
	var selects []string
	rows, err := db.QueryContext(ctx, "SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet(?::VARCHAR))", path)
	if err != nil {
		return dataset.Schema{}, fmt.Errorf("describe parquet: %w", err)
	}
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			rows.Close()
			return dataset.Schema{}, fmt.Errorf("describe parquet: %w", err)
		}
		t, cast := columnType(typ)
		schema.Columns = append(schema.Columns, dataset.Column{Name: strings.ToLower(name), Type: t})
		selects = append(selects, fmt.Sprintf("CAST(%s AS %s)", quoteIdent(name), cast))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return dataset.Schema{}, fmt.Errorf("describe parquet: %w", err)
	}
	if err := schema.Validate(); err != nil {
		return dataset.Schema{}, fmt.Errorf("parquet schema: %w", err)
	}

	rows, err = db.QueryContext(ctx, "SELECT "+strings.Join(selects, ", ")+" FROM read_parquet(?::VARCHAR)", path)
	if err != nil {
		return dataset.Schema{}, fmt.Errorf("read parquet: %w", err)
	}
	defer rows.Close()
	cw := csv.NewWriter(w)
	rec := make([]string, len(schema.Columns))
	for i, c := range schema.Columns {
		rec[i] = c.Name
	}
	if err := cw.Write(rec); err != nil {
		return dataset.Schema{}, fmt.Errorf("write csv header: %w", err)
	}
	vals := make([]any, len(rec))
	ptrs := make([]any, len(rec))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return dataset.Schema{}, fmt.Errorf("read parquet row: %w", err)
		}
		for i, v := range vals {
			rec[i] = format(v)
		}
		if err := cw.Write(rec); err != nil {
			return dataset.Schema{}, fmt.Errorf("write csv row: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return dataset.Schema{}, fmt.Errorf("read parquet: %w", err)
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return dataset.Schema{}, fmt.Errorf("write csv: %w", err)
	}
	return schema, nil
}

// columnType maps a DuckDB type name to the dataset type and the type to
// cast to. UBIGINT and HUGEINT may not fit a BIGINT, so they become VARCHAR.
func columnType(typ string) (dataset.Type, string) {
	switch typ {
	case "BOOLEAN":
		return dataset.Boolean, "BOOLEAN"
	case "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER":
		return dataset.Bigint, "BIGINT"
	case "FLOAT", "DOUBLE":
		return dataset.Double, "DOUBLE"
	}
	if strings.HasPrefix(typ, "DECIMAL") {
		return dataset.Double, "DOUBLE"
	}
	return dataset.Varchar, "VARCHAR"
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func format(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case int64:
		return strconv.FormatInt(v, 10)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	}
	return fmt.Sprint(v)
}
