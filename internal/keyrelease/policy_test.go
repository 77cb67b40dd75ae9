package keyrelease

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

const iss = "https://parley.test"

func TestEvaluateGrammar(t *testing.T) {
	claims := map[string]any{}
	if err := json.Unmarshal([]byte(`{
		"iss": "https://parley.test",
		"x-ms-attestation-type": "sevsnpvm",
		"x-ms-sevsnpvm-is-debuggable": false,
		"x-ms-sevsnpvm-guestsvn": 3,
		"x-ms-sevsnpvm-hostdata": "abcd",
		"x-ms-isolation-tee": {"x-ms-attestation-type": "sevsnpvm", "x-ms-sevsnpvm-vmpl": 0},
		"svnstr": "7"
	}`), &claims); err != nil {
		t.Fatal(err)
	}
	cond := func(c string) string {
		return `{"version":"1.0.0","anyOf":[{"authority":"parley.test","allOf":[` + c + `]}]}`
	}
	tests := []struct {
		name   string
		policy string
		ok     bool
	}{
		{"equals string", cond(`{"claim":"x-ms-attestation-type","equals":"sevsnpvm"}`), true},
		{"equals string differs", cond(`{"claim":"x-ms-attestation-type","equals":"tdxvm"}`), false},
		{"equals is case-sensitive", cond(`{"claim":"x-ms-attestation-type","equals":"SevSnpVm"}`), false},
		{"equals bool", cond(`{"claim":"x-ms-sevsnpvm-is-debuggable","equals":false}`), true},
		{"equals bool as string", cond(`{"claim":"x-ms-sevsnpvm-is-debuggable","equals":"false"}`), true},
		{"equals bool differs", cond(`{"claim":"x-ms-sevsnpvm-is-debuggable","equals":true}`), false},
		{"equals number", cond(`{"claim":"x-ms-sevsnpvm-guestsvn","equals":3}`), true},
		{"equals missing", cond(`{"claim":"nope","equals":"x"}`), false},
		{"notEquals", cond(`{"claim":"x-ms-sevsnpvm-hostdata","notEquals":"00"}`), true},
		{"notEquals same", cond(`{"claim":"x-ms-sevsnpvm-hostdata","notEquals":"abcd"}`), false},
		{"notEquals missing", cond(`{"claim":"nope","notEquals":"x"}`), false},
		{"notEquals object", cond(`{"claim":"x-ms-isolation-tee","notEquals":"x"}`), false},
		{"less", cond(`{"claim":"x-ms-sevsnpvm-guestsvn","less":4}`), true},
		{"less equal", cond(`{"claim":"x-ms-sevsnpvm-guestsvn","less":3}`), false},
		{"lessOrEquals", cond(`{"claim":"x-ms-sevsnpvm-guestsvn","lessOrEquals":3}`), true},
		{"lessOrEquals under", cond(`{"claim":"x-ms-sevsnpvm-guestsvn","lessOrEquals":2}`), false},
		{"greater", cond(`{"claim":"x-ms-sevsnpvm-guestsvn","greater":2}`), true},
		{"greater equal", cond(`{"claim":"x-ms-sevsnpvm-guestsvn","greater":3}`), false},
		{"greaterOrEquals", cond(`{"claim":"x-ms-sevsnpvm-guestsvn","greaterOrEquals":3}`), true},
		{"greaterOrEquals over", cond(`{"claim":"x-ms-sevsnpvm-guestsvn","greaterOrEquals":4}`), false},
		{"greater numeric string claim", cond(`{"claim":"svnstr","greater":6}`), true},
		{"greater on a string claim", cond(`{"claim":"x-ms-attestation-type","greater":1}`), false},
		{"greater missing", cond(`{"claim":"nope","greater":1}`), false},
		{"exists", cond(`{"claim":"x-ms-sevsnpvm-hostdata","exists":true}`), true},
		{"exists missing", cond(`{"claim":"nope","exists":true}`), false},
		{"not exists missing", cond(`{"claim":"nope","exists":false}`), true},
		{"not exists present", cond(`{"claim":"x-ms-sevsnpvm-hostdata","exists":false}`), false},
		{"dotted path", cond(`{"claim":"x-ms-isolation-tee.x-ms-attestation-type","equals":"sevsnpvm"}`), true},
		{"dotted path number", cond(`{"claim":"x-ms-isolation-tee.x-ms-sevsnpvm-vmpl","equals":0}`), true},
		{"dotted path missing", cond(`{"claim":"x-ms-isolation-tee.nope","exists":true}`), false},
		{"dotted path through scalar", cond(`{"claim":"x-ms-attestation-type.x","exists":true}`), false},
		{"allOf all hold", cond(`{"claim":"x-ms-attestation-type","equals":"sevsnpvm"},{"claim":"x-ms-sevsnpvm-guestsvn","equals":3}`), true},
		{"allOf one fails", cond(`{"claim":"x-ms-attestation-type","equals":"sevsnpvm"},{"claim":"x-ms-sevsnpvm-guestsvn","equals":4}`), false},
		{"authority anyOf one holds", `{"version":"1.0.0","anyOf":[{"authority":"parley.test","anyOf":[{"claim":"a","exists":true},{"claim":"x-ms-sevsnpvm-guestsvn","equals":3}]}]}`, true},
		{"authority anyOf none holds", `{"version":"1.0.0","anyOf":[{"authority":"parley.test","anyOf":[{"claim":"a","exists":true},{"claim":"b","exists":true}]}]}`, false},
		{"nested anyOf in allOf", cond(`{"claim":"x-ms-attestation-type","equals":"sevsnpvm"},{"anyOf":[{"claim":"a","exists":true},{"claim":"x-ms-sevsnpvm-is-debuggable","equals":false}]}`), true},
		{"nested allOf in anyOf fails", cond(`{"anyOf":[{"allOf":[{"claim":"a","exists":true},{"claim":"x-ms-sevsnpvm-is-debuggable","equals":false}]}]}`), false},
		{"other authority", `{"version":"1.0.0","anyOf":[{"authority":"elsewhere.test","allOf":[{"claim":"x-ms-attestation-type","exists":true}]}]}`, false},
		{"authority with scheme and slash", `{"version":"1.0.0","anyOf":[{"authority":"https://parley.test/","allOf":[{"claim":"x-ms-attestation-type","exists":true}]}]}`, true},
		{"second authority matches", `{"version":"1.0.0","anyOf":[{"authority":"elsewhere.test","allOf":[{"claim":"iss","exists":true}]},{"authority":"parley.test","allOf":[{"claim":"iss","exists":true}]}]}`, true},
		{"top allOf needs every authority", `{"version":"1.0.0","allOf":[{"authority":"elsewhere.test","allOf":[{"claim":"iss","exists":true}]},{"authority":"parley.test","allOf":[{"claim":"iss","exists":true}]}]}`, false},
		{"version 1.0", `{"version":"1.0","anyOf":[{"authority":"parley.test","allOf":[{"claim":"iss","exists":true}]}]}`, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePolicy([]byte(tc.policy))
			if err != nil {
				t.Fatalf("ParsePolicy = %v", err)
			}
			err = p.Evaluate(claims)
			if tc.ok && err != nil {
				t.Errorf("Evaluate = %v, want nil", err)
			}
			if !tc.ok && !errors.Is(err, ErrPolicyNotSatisfied) {
				t.Errorf("Evaluate = %v, want ErrPolicyNotSatisfied", err)
			}
		})
	}
}

func TestParsePolicyRefuses(t *testing.T) {
	deep := `{"claim":"a","exists":true}`
	for range MaxDepth + 1 {
		deep = `{"anyOf":[` + deep + `]}`
	}
	many := strings.Repeat(`{"claim":"a","exists":true},`, MaxConditions) + `{"claim":"a","exists":true}`
	wrap := func(c string) string {
		return `{"version":"1.0.0","anyOf":[{"authority":"a","allOf":[` + c + `]}]}`
	}
	tests := []struct{ name, in string }{
		{"not json", `{`},
		{"array", `[]`},
		{"no version", `{"anyOf":[{"authority":"a","allOf":[{"claim":"a","exists":true}]}]}`},
		{"bad version", `{"version":"2.0.0","anyOf":[{"authority":"a","allOf":[{"claim":"a","exists":true}]}]}`},
		{"no authorities", `{"version":"1.0.0"}`},
		{"both anyOf and allOf", `{"version":"1.0.0","anyOf":[],"allOf":[]}`},
		{"empty anyOf", `{"version":"1.0.0","anyOf":[]}`},
		{"extra field", `{"version":"1.0.0","x":1,"anyOf":[{"authority":"a","allOf":[{"claim":"a","exists":true}]}]}`},
		{"duplicate field", `{"version":"1.0.0","version":"1.0.0","anyOf":[{"authority":"a","allOf":[{"claim":"a","exists":true}]}]}`},
		{"trailing data", wrap(`{"claim":"a","exists":true}`) + `{}`},
		{"empty authority", `{"version":"1.0.0","anyOf":[{"authority":"https://","allOf":[{"claim":"a","exists":true}]}]}`},
		{"authority without conditions", `{"version":"1.0.0","anyOf":[{"authority":"a"}]}`},
		{"unknown operator", wrap(`{"claim":"a","matches":"x"}`)},
		{"two operators", wrap(`{"claim":"a","equals":"x","notEquals":"y"}`)},
		{"no operator", wrap(`{"claim":"a"}`)},
		{"empty claim", wrap(`{"claim":"","equals":"x"}`)},
		{"object value", wrap(`{"claim":"a","equals":{}}`)},
		{"null value", wrap(`{"claim":"a","equals":null}`)},
		{"exists string", wrap(`{"claim":"a","exists":"true"}`)},
		{"less string", wrap(`{"claim":"a","less":"x"}`)},
		{"too deep", wrap(deep)},
		{"too many", wrap(many)},
		{"empty group", wrap(`{"anyOf":[]}`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParsePolicy([]byte(tc.in)); !errors.Is(err, ErrInvalidPolicy) {
				t.Errorf("ParsePolicy = %v, want ErrInvalidPolicy", err)
			}
		})
	}
}

func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(`{"version":"1.0.0","anyOf":[{"authority":"parley.test","allOf":[{"claim":"x-ms-attestation-type","equals":"sevsnpvm"},{"anyOf":[{"claim":"a.b","exists":false},{"claim":"n","greaterOrEquals":2}]}]}]}`))
	claims := map[string]any{"iss": iss, "a": map[string]any{"b": 1.0}, "n": 2.0, "x-ms-attestation-type": "sevsnpvm"}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePolicy(b)
		if err != nil {
			return
		}
		if err := p.Evaluate(claims); err != nil && !errors.Is(err, ErrPolicyNotSatisfied) {
			t.Fatalf("Evaluate = %v", err)
		}
	})
}

func BenchmarkEvaluate(b *testing.B) {
	p, err := ParsePolicy([]byte(`{"version":"1.0.0","anyOf":[{"authority":"parley.test","allOf":[
		{"claim":"x-ms-attestation-type","equals":"sevsnpvm"},
		{"claim":"x-ms-sevsnpvm-is-debuggable","equals":false},
		{"claim":"x-ms-sevsnpvm-guestsvn","greaterOrEquals":2},
		{"claim":"x-ms-runtime.client","exists":true}]}]}`))
	if err != nil {
		b.Fatal(err)
	}
	claims := map[string]any{"iss": iss, "x-ms-attestation-type": "sevsnpvm", "x-ms-sevsnpvm-is-debuggable": false,
		"x-ms-sevsnpvm-guestsvn": 3.0, "x-ms-runtime": map[string]any{"client": "x"}}
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Evaluate(claims); err != nil {
			b.Fatal(err)
		}
	}
}

// TestEveryConditionMatters: with every condition of a policy met the
// release is allowed, and breaking any single one of them refuses it.
func TestEveryConditionMatters(t *testing.T) {
	p, err := ParsePolicy([]byte(`{"version":"1.0.0","anyOf":[{"authority":"parley.test","allOf":[
		{"claim":"x-ms-attestation-type","equals":"sevsnpvm"},
		{"claim":"x-ms-sevsnpvm-is-debuggable","equals":false},
		{"claim":"x-ms-sevsnpvm-hostdata","notEquals":"00"},
		{"claim":"x-ms-sevsnpvm-guestsvn","greaterOrEquals":2},
		{"claim":"x-ms-sevsnpvm-vmpl","lessOrEquals":0},
		{"claim":"svn","less":10},
		{"claim":"tcb","greater":1},
		{"claim":"x-ms-runtime.keys","exists":true},
		{"claim":"x-parley-virtual","exists":false}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	good := func() map[string]any {
		return map[string]any{"iss": iss, "x-ms-attestation-type": "sevsnpvm", "x-ms-sevsnpvm-is-debuggable": false,
			"x-ms-sevsnpvm-hostdata": "ab", "x-ms-sevsnpvm-guestsvn": 2.0, "x-ms-sevsnpvm-vmpl": 0.0, "svn": 9.0, "tcb": 2.0,
			"x-ms-runtime": map[string]any{"keys": []any{}}}
	}
	if err := p.Evaluate(good()); err != nil {
		t.Fatalf("Evaluate(all met) = %v", err)
	}
	breaks := map[string]func(c map[string]any){
		"type":      func(c map[string]any) { c["x-ms-attestation-type"] = "virtual" },
		"debug":     func(c map[string]any) { c["x-ms-sevsnpvm-is-debuggable"] = true },
		"hostdata":  func(c map[string]any) { c["x-ms-sevsnpvm-hostdata"] = "00" },
		"guestsvn":  func(c map[string]any) { c["x-ms-sevsnpvm-guestsvn"] = 1.0 },
		"vmpl":      func(c map[string]any) { c["x-ms-sevsnpvm-vmpl"] = 1.0 },
		"svn":       func(c map[string]any) { c["svn"] = 10.0 },
		"tcb":       func(c map[string]any) { c["tcb"] = 1.0 },
		"keys":      func(c map[string]any) { c["x-ms-runtime"] = map[string]any{} },
		"virtual":   func(c map[string]any) { c["x-parley-virtual"] = true },
		"issuer":    func(c map[string]any) { c["iss"] = "https://elsewhere" },
		"no issuer": func(c map[string]any) { delete(c, "iss") },
	}
	for name, brk := range breaks {
		c := good()
		brk(c)
		if err := p.Evaluate(c); !errors.Is(err, ErrPolicyNotSatisfied) {
			t.Errorf("%s broken: Evaluate = %v, want ErrPolicyNotSatisfied", name, err)
		}
	}
}
