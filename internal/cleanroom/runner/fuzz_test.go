package runner

import (
	"encoding/json"
	"strings"
	"testing"
)

// FuzzCheck feeds arbitrary syntax trees to the rule checker: it must never
// panic, and a tree it accepts must survive the min-entities rewrite.
func FuzzCheck(f *testing.F) {
	seeds := []string{
		`{"error":false,"statements":[{"node":{"type":"SELECT_NODE","modifiers":[],"cte_map":{"map":[]},"select_list":[{"class":"FUNCTION","type":"FUNCTION","function_name":"count_star","schema":"","catalog":"","children":[],"filter":null,"order_bys":{"type":"ORDER_MODIFIER","orders":[]}}],"from_table":{"type":"BASE_TABLE","alias":"a","schema_name":"","catalog_name":"","table_name":"bank_a","column_name_alias":[],"at_clause":null,"sample":null},"where_clause":null,"group_expressions":[],"having":null,"sample":null,"qualify":null},"named_param_map":[]}]}`,
		`{"error":true}`,
		`{"statements":[{"node":{"type":"SELECT_NODE","from_table":{"type":"JOIN","ref_type":"REGULAR","left":{"type":"BASE_TABLE","table_name":"bank_b","schema_name":"","catalog_name":""},"right":{"type":"BASE_TABLE","table_name":"bank_a","schema_name":"","catalog_name":""},"condition":{"class":"COMPARISON","type":"COMPARE_EQUAL","left":{"class":"COLUMN_REF","column_names":["bank_a","account"]},"right":{"class":"COLUMN_REF","column_names":["bank_b","account"]}}}}}]}`,
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var m map[string]any
		dec := json.NewDecoder(strings.NewReader(s))
		dec.UseNumber()
		if dec.Decode(&m) != nil {
			return
		}
		p, err := check(m, tables())
		if err != nil {
			return
		}
		rewrite(m, p)
	})
}
