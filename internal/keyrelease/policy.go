package keyrelease

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/parleyhq/parley/internal/attest"
)

// Limits of a release policy.
const (
	MaxPolicyBytes = 32 << 10
	MaxDepth       = 8
	MaxConditions  = 256
)

// Errors of policies.
var (
	// ErrInvalidPolicy is returned by ParsePolicy for a policy outside the
	// grammar.
	ErrInvalidPolicy = errors.New("invalid release policy")
	// ErrPolicyNotSatisfied is returned by Policy.Evaluate when the claims
	// do not satisfy the policy.
	ErrPolicyNotSatisfied = errors.New("release policy not satisfied")
)

// Policy is a release policy in Azure Key Vault's secure key release
// grammar:
//
//	policy          = { "version": "1.0.0", ("anyOf"|"allOf"): [ authority, … ] }
//	authority       = { "authority": "<issuer>", ("allOf"|"anyOf"): [ condition, … ] }
//	condition       = claim_condition | {"anyOf":[condition, …]} | {"allOf":[condition, …]}
//	claim_condition = { "claim": "<name, dotted path for nested>", <op>: value }
//	op              = equals | notEquals | less | lessOrEquals | greater | greaterOrEquals | exists
//
// An authority matches a token whose iss is that issuer (with or without
// https:// and a trailing slash). equals and notEquals compare scalars by
// their canonical text (so the claim false equals "false", and 1 equals
// "1"); the ordering operators compare numbers (a numeric string counts);
// exists takes true or false. A condition on a missing claim holds only
// for exists: false.
type Policy struct {
	Version     string
	Any         bool // anyOf (true) or allOf over Authorities
	Authorities []Authority
}

// Authority is the conditions a token of one issuer must meet.
type Authority struct {
	Issuer string
	Any    bool
	Conds  []Condition
}

// Condition is a claim condition (Claim set) or a group (Any/All).
type Condition struct {
	Claim string
	Op    string
	Value any // string, float64 or bool

	Group []Condition
	Any   bool
}

var ops = map[string]bool{"equals": true, "notEquals": true, "less": true, "lessOrEquals": true, "greater": true, "greaterOrEquals": true, "exists": true}

// ParsePolicy decodes and checks a release policy.
func ParsePolicy(b []byte) (*Policy, error) {
	if len(b) > MaxPolicyBytes {
		return nil, fmt.Errorf("%w: over %d bytes", ErrInvalidPolicy, MaxPolicyBytes)
	}
	obj, err := object(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPolicy, err)
	}
	p := &Policy{}
	if err := stringField(obj, "version", &p.Version); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPolicy, err)
	}
	if p.Version != "1.0.0" && p.Version != "1.0" {
		return nil, fmt.Errorf("%w: version %q, want 1.0.0", ErrInvalidPolicy, truncate(p.Version, 16))
	}
	delete(obj, "version")
	list, isAny, err := group(obj)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPolicy, err)
	}
	p.Any = isAny
	count := 0
	for _, raw := range list {
		a, err := parseAuthority(raw, &count)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidPolicy, err)
		}
		p.Authorities = append(p.Authorities, a)
	}
	return p, nil
}

// object decodes a JSON object, refusing duplicate keys and trailing data.
func object(b []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("want a JSON object")
	}
	obj := map[string]json.RawMessage{}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, err
		}
		k, _ := kt.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		if _, dup := obj[k]; dup {
			return nil, fmt.Errorf("duplicate field %q", truncate(k, 32))
		}
		obj[k] = v
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err == nil {
		return nil, fmt.Errorf("data after the JSON object")
	}
	return obj, nil
}

func stringField(obj map[string]json.RawMessage, k string, out *string) error {
	raw, ok := obj[k]
	if !ok {
		return fmt.Errorf("%s is required", k)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s: want a string", k)
	}
	return nil
}

// group takes the one of anyOf and allOf in obj, which must hold nothing
// else.
func group(obj map[string]json.RawMessage) ([]json.RawMessage, bool, error) {
	anyRaw, hasAny := obj["anyOf"]
	allRaw, hasAll := obj["allOf"]
	if hasAny == hasAll {
		return nil, false, fmt.Errorf("exactly one of anyOf and allOf is required")
	}
	if len(obj) != 1 {
		return nil, false, fmt.Errorf("unexpected fields beside anyOf/allOf")
	}
	raw := allRaw
	if hasAny {
		raw = anyRaw
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, false, fmt.Errorf("anyOf/allOf: want an array")
	}
	if len(list) == 0 {
		return nil, false, fmt.Errorf("anyOf/allOf is empty")
	}
	return list, hasAny, nil
}

func parseAuthority(b []byte, count *int) (Authority, error) {
	obj, err := object(b)
	if err != nil {
		return Authority{}, fmt.Errorf("authority: %w", err)
	}
	var a Authority
	if err := stringField(obj, "authority", &a.Issuer); err != nil {
		return Authority{}, err
	}
	if attest.NormalizeIssuer(a.Issuer) == "" {
		return Authority{}, fmt.Errorf("authority is empty")
	}
	delete(obj, "authority")
	list, isAny, err := group(obj)
	if err != nil {
		return Authority{}, fmt.Errorf("authority %q: %w", truncate(a.Issuer, 64), err)
	}
	a.Any = isAny
	for _, raw := range list {
		c, err := parseCondition(raw, 1, count)
		if err != nil {
			return Authority{}, err
		}
		a.Conds = append(a.Conds, c)
	}
	return a, nil
}

func parseCondition(b []byte, depth int, count *int) (Condition, error) {
	if depth > MaxDepth {
		return Condition{}, fmt.Errorf("conditions nested deeper than %d", MaxDepth)
	}
	if *count++; *count > MaxConditions {
		return Condition{}, fmt.Errorf("more than %d conditions", MaxConditions)
	}
	obj, err := object(b)
	if err != nil {
		return Condition{}, fmt.Errorf("condition: %w", err)
	}
	if _, ok := obj["claim"]; !ok {
		list, isAny, err := group(obj)
		if err != nil {
			return Condition{}, fmt.Errorf("condition: %w", err)
		}
		c := Condition{Any: isAny, Group: []Condition{}}
		for _, raw := range list {
			sub, err := parseCondition(raw, depth+1, count)
			if err != nil {
				return Condition{}, err
			}
			c.Group = append(c.Group, sub)
		}
		return c, nil
	}
	var c Condition
	if err := stringField(obj, "claim", &c.Claim); err != nil {
		return Condition{}, err
	}
	if c.Claim == "" || len(c.Claim) > 256 {
		return Condition{}, fmt.Errorf("claim name must be 1 to 256 bytes")
	}
	delete(obj, "claim")
	if len(obj) != 1 {
		return Condition{}, fmt.Errorf("claim %q: want exactly one operator", truncate(c.Claim, 64))
	}
	for op, raw := range obj {
		if !ops[op] {
			return Condition{}, fmt.Errorf("claim %q: unknown operator %q", truncate(c.Claim, 64), truncate(op, 32))
		}
		c.Op = op
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return Condition{}, fmt.Errorf("claim %q: %w", truncate(c.Claim, 64), err)
		}
		switch v.(type) {
		case string, float64, bool:
		default:
			return Condition{}, fmt.Errorf("claim %q: %s needs a string, number or boolean", truncate(c.Claim, 64), op)
		}
		switch op {
		case "exists":
			if _, ok := v.(bool); !ok {
				return Condition{}, fmt.Errorf("claim %q: exists needs true or false", truncate(c.Claim, 64))
			}
		case "less", "lessOrEquals", "greater", "greaterOrEquals":
			if _, ok := number(v); !ok {
				return Condition{}, fmt.Errorf("claim %q: %s needs a number", truncate(c.Claim, 64), op)
			}
		}
		c.Value = v
	}
	return c, nil
}

// Evaluate reports whether a token's claims satisfy p: nil, or an error
// wrapping ErrPolicyNotSatisfied.
func (p *Policy) Evaluate(claims map[string]any) error {
	iss, _ := claims["iss"].(string)
	results := make([]bool, len(p.Authorities))
	for i, a := range p.Authorities {
		results[i] = attest.NormalizeIssuer(a.Issuer) == attest.NormalizeIssuer(iss) && evalGroup(a.Conds, a.Any, claims)
	}
	if combine(results, p.Any) {
		return nil
	}
	return fmt.Errorf("%w by the token of %q", ErrPolicyNotSatisfied, truncate(iss, 64))
}

func combine(results []bool, isAny bool) bool {
	for _, r := range results {
		if isAny && r {
			return true
		}
		if !isAny && !r {
			return false
		}
	}
	return !isAny
}

func evalGroup(conds []Condition, isAny bool, claims map[string]any) bool {
	results := make([]bool, len(conds))
	for i, c := range conds {
		results[i] = c.eval(claims)
	}
	return combine(results, isAny)
}

func (c *Condition) eval(claims map[string]any) bool {
	if c.Claim == "" {
		return evalGroup(c.Group, c.Any, claims)
	}
	v, found := lookup(claims, c.Claim)
	if c.Op == "exists" {
		return found == c.Value.(bool)
	}
	if !found {
		return false
	}
	switch c.Op {
	case "equals", "notEquals":
		a, okA := scalarText(v)
		b, okB := scalarText(c.Value)
		eq := okA && okB && a == b
		if c.Op == "equals" {
			return eq
		}
		return okA && !eq
	}
	x, okX := number(v)
	y, _ := number(c.Value)
	if !okX {
		return false
	}
	switch c.Op {
	case "less":
		return x < y
	case "lessOrEquals":
		return x <= y
	case "greater":
		return x > y
	case "greaterOrEquals":
		return x >= y
	}
	return false
}

// lookup follows a dotted path into nested objects. A claim whose own name
// contains the whole path is found first.
func lookup(claims map[string]any, path string) (any, bool) {
	if v, ok := claims[path]; ok {
		return v, true
	}
	var cur any = claims
	for part := range strings.SplitSeq(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func scalarText(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case bool:
		return strconv.FormatBool(x), true
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	}
	return "", false
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, !math.IsNaN(x) && !math.IsInf(x, 0)
	case string:
		f, err := strconv.ParseFloat(x, 64)
		return f, err == nil && !math.IsNaN(f) && !math.IsInf(f, 0)
	}
	return 0, false
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
