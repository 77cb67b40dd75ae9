package parquet

import (
	"bytes"
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/parleyhq/parley/internal/cleanroom/dataset"
)

func TestToCSV(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.parquet")
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	q := `COPY (SELECT * FROM (VALUES (1, 'a,b', 1.5::DOUBLE, true, DATE '2024-01-02', 2.25::DECIMAL(5,2)),
	                                  (2, NULL, NULL, false, NULL, NULL))
	             AS t("ID", name, score, ok, day, amount)) TO '` + path + `' (FORMAT parquet)`
	if _, err := db.Exec(q); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	schema, err := ToCSV(context.Background(), path, &buf)
	if err != nil {
		t.Fatalf("ToCSV: %v", err)
	}
	wantSchema := []dataset.Column{
		{Name: "id", Type: dataset.Bigint}, {Name: "name", Type: dataset.Varchar}, {Name: "score", Type: dataset.Double},
		{Name: "ok", Type: dataset.Boolean}, {Name: "day", Type: dataset.Varchar}, {Name: "amount", Type: dataset.Double},
	}
	if len(schema.Columns) != len(wantSchema) {
		t.Fatalf("schema %+v, want %+v", schema.Columns, wantSchema)
	}
	for i, c := range wantSchema {
		if schema.Columns[i] != c {
			t.Errorf("column %d is %+v, want %+v", i, schema.Columns[i], c)
		}
	}
	want := "id,name,score,ok,day,amount\n1,\"a,b\",1.5,true,2024-01-02,2.25\n2,,,false,,\n"
	if got := buf.String(); got != want {
		t.Errorf("csv %q, want %q", got, want)
	}
	// The CSV is what EncryptCSV accepts.
	key, _ := dataset.NewKey()
	if _, err := dataset.EncryptCSV(&bytes.Buffer{}, strings.NewReader(want), key, dataset.ID{}, schema, 0); err != nil {
		t.Errorf("EncryptCSV of the converted Parquet: %v", err)
	}
	if _, err := ToCSV(context.Background(), filepath.Join(t.TempDir(), "missing.parquet"), &buf); err == nil {
		t.Error("ToCSV of a missing file succeeded")
	}
}
