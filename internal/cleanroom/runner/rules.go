package runner

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Rule names, as they appear in a [RuleError].
const (
	RuleForbidden     = "forbidden-column"
	RuleJoinOnly      = "join-only"
	RuleAggregateOnly = "aggregate-only"
	RuleMinEntities   = "min-entities"
	// RuleUnsupported names refusals of query shapes the checker cannot
	// analyse (subqueries, CTEs, set operations, window functions, SELECT *,
	// table functions, ...). Refusing them keeps the check conservative.
	RuleUnsupported = "unsupported-query"
)

// Rules are the analysis rules a data owner sets on one dataset. Column
// names are the dataset's schema names.
type Rules struct {
	// Forbidden columns may not be referenced anywhere in the query.
	Forbidden []string `json:"forbidden,omitempty"`
	// JoinOnly columns may appear only as one side of a column = column
	// equality in a JOIN ... ON condition (possibly under AND).
	JoinOnly []string `json:"join_only,omitempty"`
	// AggregateOnly columns may appear only inside the arguments of count,
	// sum, avg or the variance and standard deviation aggregates.
	AggregateOnly []string `json:"aggregate_only,omitempty"`
	// Entity is the column that identifies the entity (customer, patient)
	// a row is about; required when MinEntities > 0.
	Entity string `json:"entity,omitempty"`
	// MinEntities, when positive, is the minimum number of distinct Entity
	// values behind every output row; rows below it are suppressed.
	MinEntities int `json:"min_entities,omitempty"`
}

// RuleError is returned when a query breaks, or cannot be shown to keep, an
// analysis rule.
type RuleError struct {
	Rule    string // one of the Rule* constants
	Table   string // the dataset's table, if the rule is a dataset's
	Column  string // the column concerned, if any
	Message string
}

func (e *RuleError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rule %s", e.Rule)
	if e.Table != "" {
		fmt.Fprintf(&b, " on %s", e.Table)
		if e.Column != "" {
			fmt.Fprintf(&b, ".%s", e.Column)
		}
	}
	fmt.Fprintf(&b, ": %s", e.Message)
	return b.String()
}

func unsupported(format string, args ...any) error {
	return &RuleError{Rule: RuleUnsupported, Message: fmt.Sprintf(format, args...)}
}

// safeAggregates may take aggregate-only columns: each output value mixes
// every input row of its group.
// count(*) is count_star: it takes no column, but its FILTER may use
// aggregate-only columns as count(column) FILTER may.
var safeAggregates = map[string]bool{
	"count": true, "count_star": true, "sum": true, "avg": true, "mean": true,
	"stddev": true, "stddev_samp": true, "stddev_pop": true,
	"variance": true, "var_samp": true, "var_pop": true,
}

// aggregates are the aggregate functions the checker recognises, to decide
// whether a query aggregates. Others (min, max, median) reveal single values
// and do not make aggregate-only columns usable.
var aggregates = map[string]bool{
	"min": true, "max": true, "median": true,
	"approx_count_distinct": true, "bool_and": true, "bool_or": true,
}

// modifierTypes are the non-expression nodes the checker walks into.
var modifierTypes = map[string]bool{
	"ORDER_MODIFIER": true, "LIMIT_MODIFIER": true, "LIMIT_PERCENT_MODIFIER": true, "DISTINCT_MODIFIER": true,
	"ORDER_DEFAULT": true, "ASCENDING": true, "DESCENDING": true,
}

func init() {
	for k := range safeAggregates {
		aggregates[k] = true
	}
}

// plan is the outcome of checking a query.
type plan struct {
	// entities lists, for each table with a min-entities rule, the alias the
	// query uses for it, its entity column and the threshold.
	entities []entityCheck
}

type entityCheck struct {
	table, alias, column string
	min                  int
}

// checker walks DuckDB's JSON syntax tree (json_serialize_sql) of a query.
type checker struct {
	tables  map[string]*Table // by lowercase name
	aliases map[string]*Table // FROM-clause names in scope: alias or table name
	seen    map[string]int    // how many times each table appears in FROM
	inFrom  []*Table
	aliasOf map[string]string // table name -> its alias in FROM
	agg     bool              // the query has an aggregate
}

type ctx struct {
	joinEq  bool // directly a side of a column = column in an ON condition
	safeAgg bool // inside a safe aggregate's arguments
	inAgg   bool // inside any aggregate
}

// check verifies that the single SELECT in tree keeps every table's rules and
// returns what the runner must add to enforce min-entities.
func check(tree map[string]any, tables []Table) (*plan, error) {
	c := &checker{
		tables:  map[string]*Table{},
		aliases: map[string]*Table{},
		seen:    map[string]int{},
		aliasOf: map[string]string{},
	}
	for i := range tables {
		c.tables[strings.ToLower(tables[i].Name)] = &tables[i]
	}
	if e, _ := tree["error"].(bool); e {
		return nil, unsupported("the query does not parse as a single SELECT: %v", tree["error_message"])
	}
	stmts, _ := tree["statements"].([]any)
	if len(stmts) != 1 {
		return nil, unsupported("want exactly one statement, got %d", len(stmts))
	}
	stmt, _ := stmts[0].(map[string]any)
	node, _ := stmt["node"].(map[string]any)
	if node == nil || node["type"] != "SELECT_NODE" {
		return nil, unsupported("only a plain SELECT is allowed, not %v", node["type"])
	}
	if m, _ := stmt["named_param_map"].([]any); len(m) > 0 {
		return nil, unsupported("parameters are not allowed")
	}
	if cte, _ := node["cte_map"].(map[string]any); cte != nil {
		if m, _ := cte["map"].([]any); len(m) > 0 {
			return nil, unsupported("WITH (common table expressions) is not allowed")
		}
	}
	for _, k := range []string{"sample", "qualify"} {
		if node[k] != nil {
			return nil, unsupported("%s is not allowed", strings.ToUpper(k))
		}
	}
	// FROM first, so column references can be resolved.
	if err := c.from(node["from_table"], false); err != nil {
		return nil, err
	}
	for _, k := range []string{"select_list", "where_clause", "group_expressions", "having", "modifiers"} {
		if err := c.walk(node[k], ctx{}); err != nil {
			return nil, err
		}
	}
	groups, _ := node["group_expressions"].([]any)
	p := &plan{}
	for _, t := range c.inFrom {
		if t.Rules.MinEntities <= 0 {
			continue
		}
		name := strings.ToLower(t.Name)
		if c.seen[name] != 1 {
			return nil, &RuleError{Rule: RuleMinEntities, Table: t.Name, Message: "the dataset must appear exactly once in FROM for its entities to be counted"}
		}
		if !c.agg && len(groups) == 0 {
			return nil, &RuleError{Rule: RuleMinEntities, Table: t.Name, Message: "the query must aggregate (GROUP BY or an aggregate function) so every output row can be checked"}
		}
		p.entities = append(p.entities, entityCheck{table: t.Name, alias: c.aliasOf[name], column: t.Rules.Entity, min: t.Rules.MinEntities})
	}
	return p, nil
}

// from records the tables of a FROM clause and checks join conditions.
func (c *checker) from(v any, _ bool) error {
	ref, _ := v.(map[string]any)
	if ref == nil {
		return unsupported("malformed FROM clause")
	}
	switch ref["type"] {
	case "EMPTY":
		return nil
	case "BASE_TABLE":
		if ref["schema_name"] != "" || ref["catalog_name"] != "" || ref["at_clause"] != nil || ref["sample"] != nil {
			return unsupported("tables must be named without schema, catalog, AT or SAMPLE")
		}
		if a, _ := ref["column_name_alias"].([]any); len(a) > 0 {
			return unsupported("column aliases on tables are not allowed")
		}
		name, _ := ref["table_name"].(string)
		t := c.tables[strings.ToLower(name)]
		if t == nil {
			return unsupported("table %q is not a dataset of this job", name)
		}
		alias, _ := ref["alias"].(string)
		if alias == "" {
			alias = name
		}
		alias = strings.ToLower(alias)
		if _, dup := c.aliases[alias]; dup {
			return unsupported("name %q is used twice in FROM", alias)
		}
		c.aliases[alias] = t
		lname := strings.ToLower(t.Name)
		c.seen[lname]++
		if c.seen[lname] == 1 {
			c.inFrom = append(c.inFrom, t)
		}
		c.aliasOf[lname] = alias
		return nil
	case "JOIN":
		if ref["ref_type"] != "REGULAR" && ref["ref_type"] != "CROSS" {
			return unsupported("%v joins are not allowed", ref["ref_type"])
		}
		if err := c.from(ref["left"], false); err != nil {
			return err
		}
		if err := c.from(ref["right"], false); err != nil {
			return err
		}
		if u, _ := ref["using_columns"].([]any); len(u) > 0 {
			return unsupported("JOIN ... USING is not allowed; write ON a.x = b.x")
		}
		return c.joinCondition(ref["condition"])
	default:
		return unsupported("%v in FROM is not allowed; only dataset tables and joins", ref["type"])
	}
}

// joinCondition walks an ON condition: column = column equalities, possibly
// under AND, may use join-only columns.
func (c *checker) joinCondition(v any) error {
	e, _ := v.(map[string]any)
	if e == nil {
		return nil
	}
	if e["class"] == "CONJUNCTION" && e["type"] == "CONJUNCTION_AND" {
		kids, _ := e["children"].([]any)
		for _, k := range kids {
			if err := c.joinCondition(k); err != nil {
				return err
			}
		}
		return nil
	}
	if e["class"] == "COMPARISON" && e["type"] == "COMPARE_EQUAL" {
		l, _ := e["left"].(map[string]any)
		r, _ := e["right"].(map[string]any)
		if l != nil && r != nil && l["class"] == "COLUMN_REF" && r["class"] == "COLUMN_REF" {
			if err := c.walk(l, ctx{joinEq: true}); err != nil {
				return err
			}
			return c.walk(r, ctx{joinEq: true})
		}
	}
	return c.walk(e, ctx{})
}

// walk checks every expression under v.
func (c *checker) walk(v any, cx ctx) error {
	switch v := v.(type) {
	case []any:
		for _, x := range v {
			if err := c.walk(x, cx); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		return c.expr(v, cx)
	default:
		return nil
	}
}

func (c *checker) expr(e map[string]any, cx ctx) error {
	class, _ := e["class"].(string)
	switch class {
	case "":
		// Not an expression (a modifier, a CASE check, ...): walk its fields.
		if t, _ := e["type"].(string); t != "" && !modifierTypes[t] {
			return unsupported("%s is not allowed", t)
		}
		for _, x := range e {
			if err := c.walk(x, cx); err != nil {
				return err
			}
		}
		return nil
	case "COLUMN_REF":
		return c.column(e, cx)
	case "FUNCTION":
		return c.function(e, cx)
	case "CONSTANT", "COMPARISON", "CONJUNCTION", "OPERATOR", "CASE", "CAST", "BETWEEN", "COLLATE":
		for k, x := range e {
			if k == "value" || k == "cast_type" {
				continue // a literal or a type, not an expression
			}
			if err := c.walk(x, ctx{safeAgg: cx.safeAgg, inAgg: cx.inAgg}); err != nil {
				return err
			}
		}
		return nil
	default:
		// SUBQUERY, WINDOW, STAR, LAMBDA, PARAMETER, ...
		return unsupported("%s expressions are not allowed", strings.ToLower(class))
	}
}

func (c *checker) function(e map[string]any, cx ctx) error {
	if e["schema"] != "" || e["catalog"] != "" {
		return unsupported("qualified function names are not allowed")
	}
	name, _ := e["function_name"].(string)
	name = strings.ToLower(name)
	inner := ctx{safeAgg: cx.safeAgg, inAgg: cx.inAgg}
	if aggregates[name] {
		if cx.inAgg {
			return unsupported("nested aggregate %s", name)
		}
		c.agg = true
		inner.inAgg = true
		inner.safeAgg = safeAggregates[name]
	}
	for _, k := range []string{"children", "filter", "order_bys"} {
		if err := c.walk(e[k], inner); err != nil {
			return err
		}
	}
	return nil
}

func (c *checker) column(e map[string]any, cx ctx) error {
	parts, _ := e["column_names"].([]any)
	var names []string
	for _, p := range parts {
		s, _ := p.(string)
		names = append(names, strings.ToLower(s))
	}
	var candidates []*Table
	var col string
	switch len(names) {
	case 1:
		col = names[0]
		// Unqualified: every table in FROM with this column is a candidate
		// (conservative; a name matching none is a select-list alias).
		for _, t := range c.inFrom {
			if hasColumn(t, col) {
				candidates = append(candidates, t)
			}
		}
	case 2:
		t := c.aliases[names[0]]
		if t == nil {
			return unsupported("%q does not name a table in FROM", names[0])
		}
		col = names[1]
		candidates = []*Table{t}
	default:
		return unsupported("column reference %s is not allowed", strings.Join(names, "."))
	}
	for _, t := range candidates {
		r := &t.Rules
		switch {
		case contains(r.Forbidden, col):
			return &RuleError{Rule: RuleForbidden, Table: t.Name, Column: col, Message: "the column may not be referenced"}
		case contains(r.JoinOnly, col) && !cx.joinEq:
			return &RuleError{Rule: RuleJoinOnly, Table: t.Name, Column: col, Message: "the column may appear only in a JOIN ... ON column = column equality"}
		case contains(r.AggregateOnly, col) && !cx.safeAgg:
			return &RuleError{Rule: RuleAggregateOnly, Table: t.Name, Column: col, Message: "the column may appear only inside count, sum, avg, stddev or variance"}
		}
	}
	return nil
}

func hasColumn(t *Table, col string) bool {
	for _, c := range t.Schema.Columns {
		if c.Name == col {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// rewrite appends count(DISTINCT alias.entity) for every entity check to the
// query's select list, returning the new tree.
func rewrite(tree map[string]any, p *plan) {
	node := tree["statements"].([]any)[0].(map[string]any)["node"].(map[string]any)
	list, _ := node["select_list"].([]any)
	for i, ec := range p.entities {
		list = append(list, map[string]any{
			"class": "FUNCTION", "type": "FUNCTION",
			"alias":          fmt.Sprintf("__parley_entities_%d", i),
			"query_location": json.Number("0"),
			"function_name":  "count", "schema": "", "catalog": "",
			"children": []any{map[string]any{
				"class": "COLUMN_REF", "type": "COLUMN_REF", "alias": "",
				"query_location": json.Number("0"),
				"column_names":   []any{ec.alias, ec.column},
			}},
			"filter":       nil,
			"order_bys":    map[string]any{"type": "ORDER_MODIFIER", "orders": []any{}},
			"distinct":     true,
			"is_operator":  false,
			"export_state": false,
		})
	}
	node["select_list"] = list
}
