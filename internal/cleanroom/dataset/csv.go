package dataset

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// MaxFieldSize bounds a single CSV field on input.
const MaxFieldSize = 1 << 20

// Info describes a dataset ciphertext once written.
type Info struct {
	Header Header
	// Digest is the SHA-256 of the whole ciphertext, as recorded on the ledger.
	Digest [32]byte
	// Size is the ciphertext length in bytes.
	Size int64
	// Rows is the number of data rows, not counting the header row.
	Rows int64
}

// EncryptCSV reads CSV from r, checks that its header row names schema's
// columns in order and that every field parses as its column's type (an
// empty field is NULL), and writes the dataset ciphertext of the canonical
// CSV re-encoding (header row included) to w.
func EncryptCSV(w io.Writer, r io.Reader, key Key, id ID, schema Schema, chunkSize uint32) (Info, error) {
	if err := schema.Validate(); err != nil {
		return Info{}, fmt.Errorf("validate schema: %w", err)
	}
	dw, err := NewWriter(w, key, Header{ID: id, ChunkSize: chunkSize, Schema: schema})
	if err != nil {
		return Info{}, err
	}
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = len(schema.Columns)
	cr.ReuseRecord = true
	cw := csv.NewWriter(dw)
	head, err := cr.Read()
	if err != nil {
		return Info{}, fmt.Errorf("read csv header: %w", err)
	}
	for i, c := range schema.Columns {
		if head[i] != c.Name {
			return Info{}, fmt.Errorf("csv column %d is %q, schema says %q", i, head[i], c.Name)
		}
	}
	if err := cw.Write(head); err != nil {
		return Info{}, fmt.Errorf("encode csv header: %w", err)
	}
	var rows int64
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Info{}, fmt.Errorf("read csv row %d: %w", rows+1, err)
		}
		for i, f := range rec {
			if err := CheckField(schema.Columns[i].Type, f); err != nil {
				return Info{}, fmt.Errorf("csv row %d column %q: %w", rows+1, schema.Columns[i].Name, err)
			}
		}
		if err := cw.Write(rec); err != nil {
			return Info{}, fmt.Errorf("encode csv row %d: %w", rows+1, err)
		}
		rows++
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return Info{}, fmt.Errorf("encode csv: %w", err)
	}
	if err := dw.Close(); err != nil {
		return Info{}, fmt.Errorf("seal final chunk: %w", err)
	}
	return Info{Header: dw.header, Digest: dw.Digest(), Size: dw.Size(), Rows: rows}, nil
}

// CheckField reports whether f is a valid value of type t. The empty string
// is NULL and valid for every type.
func CheckField(t Type, f string) error {
	if len(f) > MaxFieldSize {
		return fmt.Errorf("field is %d bytes, limit %d", len(f), MaxFieldSize)
	}
	if f == "" {
		return nil
	}
	var err error
	switch t {
	case Bigint:
		_, err = strconv.ParseInt(f, 10, 64)
	case Double:
		_, err = strconv.ParseFloat(f, 64)
	case Boolean:
		_, err = strconv.ParseBool(f)
	case Varchar:
	default:
		err = fmt.Errorf("unknown type %q", t)
	}
	return err
}

// InferSchema reads CSV from r and returns a schema naming its header row's
// columns, each typed as the narrowest of BIGINT, DOUBLE, BOOLEAN and
// VARCHAR that every non-empty field parses as.
func InferSchema(r io.Reader) (Schema, error) {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	head, err := cr.Read()
	if err != nil {
		return Schema{}, fmt.Errorf("read csv header: %w", err)
	}
	s := Schema{Columns: make([]Column, len(head))}
	// candidates[i] lists the types still possible for column i.
	candidates := make([][]Type, len(head))
	for i, name := range head {
		s.Columns[i].Name = name
		candidates[i] = []Type{Bigint, Double, Boolean}
	}
	for row := 1; ; row++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Schema{}, fmt.Errorf("read csv row %d: %w", row, err)
		}
		for i, f := range rec {
			kept := candidates[i][:0]
			for _, t := range candidates[i] {
				if CheckField(t, f) == nil {
					kept = append(kept, t)
				}
			}
			candidates[i] = kept
		}
	}
	for i := range s.Columns {
		s.Columns[i].Type = Varchar
		if len(candidates[i]) > 0 {
			s.Columns[i].Type = candidates[i][0]
		}
	}
	if err := s.Validate(); err != nil {
		return Schema{}, fmt.Errorf("validate inferred schema: %w", err)
	}
	return s, nil
}
