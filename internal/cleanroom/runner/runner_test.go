package runner

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parleyhq/parley/internal/cleanroom/dataset"
)

var (
	schemaA = dataset.Schema{Columns: []dataset.Column{
		col("account", dataset.Varchar), col("customer", dataset.Varchar), col("region", dataset.Varchar),
		col("amount", dataset.Bigint), col("ssn", dataset.Varchar),
	}}
	schemaB = dataset.Schema{Columns: []dataset.Column{
		col("account", dataset.Varchar), col("flagged", dataset.Boolean), col("score", dataset.Double),
	}}
	rulesA = Rules{
		Forbidden:     []string{"ssn"},
		JoinOnly:      []string{"account", "customer"},
		AggregateOnly: []string{"amount"},
		Entity:        "customer",
		MinEntities:   2,
	}
	rulesB = Rules{JoinOnly: []string{"account"}}
)

// csvA: north has customers c1, c2 (2 entities), south only c3 (1 entity).
const csvA = `account,customer,region,amount,ssn
acc1,c1,north,100,111-11-1111
acc2,c1,north,50,111-11-1111
acc3,c2,north,10,222-22-2222
acc4,c3,south,7,333-33-3333
acc5,c3,south,3,333-33-3333
`

const csvB = `account,flagged,score
acc1,true,0.5
acc2,false,1.5
acc3,true,2
acc4,true,
acc5,true,3
`

func col(name string, t dataset.Type) dataset.Column { return dataset.Column{Name: name, Type: t} }

func tables() []Table {
	return []Table{
		{Name: "bank_a", Schema: schemaA, CSV: []byte(csvA), Rules: rulesA},
		{Name: "bank_b", Schema: schemaB, CSV: []byte(csvB), Rules: rulesB},
	}
}

func newKey(t *testing.T, curve ecdh.Curve) *ecdh.PrivateKey {
	t.Helper()
	k, err := curve.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestRunSealsAndSuppresses(t *testing.T) {
	x := newKey(t, ecdh.X25519())
	p := newKey(t, ecdh.P256())
	jobCtx := []byte("contract-hash|job-1")
	job := Job{
		Tables: tables(),
		SQL: `SELECT a.region, count(*) AS n, sum(a.amount) AS total, avg(b.score) AS score
		      FROM bank_a a JOIN bank_b b ON a.account = b.account
		      WHERE b.flagged GROUP BY a.region ORDER BY a.region`,
		Recipients: []Recipient{{ID: "regulator", Key: x.PublicKey()}, {ID: "auditor", Key: p.PublicKey()}},
		Context:    jobCtx,
	}
	res, err := Run(context.Background(), job)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	// north: acc1 (c1) and acc3 (c2) are flagged: 2 entities, kept.
	// south: acc4, acc5 both c3: 1 entity, suppressed.
	want := "region,n,total,score\nnorth,2,110,1.25\n"
	if res.Rows != 1 || res.Suppressed != 1 {
		t.Errorf("rows %d suppressed %d, want 1 and 1", res.Rows, res.Suppressed)
	}
	if got := strings.Join(res.Columns, ","); got != "region,n,total,score" {
		t.Errorf("columns %q, want region,n,total,score", got)
	}
	for i, k := range []*ecdh.PrivateKey{x, p} {
		got, err := Open(k, jobCtx, res.Sealed[i].Ciphertext)
		if err != nil {
			t.Fatalf("Open for %s: %v", res.Sealed[i].Recipient, err)
		}
		if string(got) != want {
			t.Errorf("result for %s is %q, want %q", res.Sealed[i].Recipient, got, want)
		}
	}
	if _, err := Open(newKey(t, ecdh.X25519()), jobCtx, res.Sealed[0].Ciphertext); err == nil {
		t.Error("a stranger's key opened the result")
	}
	if _, err := Open(x, []byte("other job"), res.Sealed[0].Ciphertext); err == nil {
		t.Error("the result opened under another job context")
	}
	if _, err := Open(x, jobCtx, res.Sealed[1].Ciphertext); err == nil {
		t.Error("one recipient's key opened another's result")
	}
}

func TestRunRules(t *testing.T) {
	cases := []struct {
		name, sql, rule string
	}{
		{"forbidden in select", "SELECT ssn, count(*) FROM bank_a GROUP BY ssn", RuleForbidden},
		{"forbidden in where", "SELECT count(*) FROM bank_a WHERE ssn = '1'", RuleForbidden},
		{"forbidden inside aggregate", "SELECT count(DISTINCT bank_a.ssn) FROM bank_a", RuleForbidden},
		{"forbidden in case", "SELECT sum(CASE WHEN ssn LIKE '1%' THEN 1 ELSE 0 END) FROM bank_a", RuleForbidden},
		{"join-only in output", "SELECT account, count(*) FROM bank_a GROUP BY account", RuleJoinOnly},
		{"join-only in where", "SELECT count(*) FROM bank_a WHERE customer = 'c1'", RuleJoinOnly},
		{"join-only in count", "SELECT count(DISTINCT customer) FROM bank_a", RuleJoinOnly},
		{"join-only compared to constant in on", "SELECT count(*) FROM bank_a a JOIN bank_b b ON a.account = 'acc1'", RuleJoinOnly},
		{"join-only in on under or", "SELECT count(*) FROM bank_a a JOIN bank_b b ON a.account = b.account OR b.flagged", RuleJoinOnly},
		{"join-only in order by", "SELECT region, count(*) FROM bank_a GROUP BY region ORDER BY max(account)", RuleJoinOnly},
		{"aggregate-only in output", "SELECT amount, count(*) FROM bank_a GROUP BY amount", RuleAggregateOnly},
		{"aggregate-only in where", "SELECT region, count(*) FROM bank_a WHERE amount > 50 GROUP BY region", RuleAggregateOnly},
		{"aggregate-only in max", "SELECT region, max(amount) FROM bank_a GROUP BY region", RuleAggregateOnly},
		{"aggregate-only in having", "SELECT region, count(*) FROM bank_a GROUP BY region HAVING min(amount) > 1", RuleAggregateOnly},
		{"unqualified resolves conservatively", "SELECT count(*) FROM bank_b b JOIN bank_a a ON a.account = b.account WHERE account = 'x'", RuleJoinOnly},
		{"no aggregation", "SELECT region FROM bank_a", RuleMinEntities},
		{"self join", "SELECT count(*) FROM bank_a x JOIN bank_a y ON x.account = y.account", RuleMinEntities},
		{"star", "SELECT * FROM bank_b", RuleUnsupported},
		{"subquery", "SELECT count(*) FROM (SELECT region FROM bank_a) s", RuleUnsupported},
		{"scalar subquery", "SELECT (SELECT count(*) FROM bank_b)", RuleUnsupported},
		{"cte", "WITH s AS (SELECT 1) SELECT count(*) FROM bank_b", RuleUnsupported},
		{"union", "SELECT count(*) FROM bank_b UNION SELECT count(*) FROM bank_b", RuleUnsupported},
		{"window", "SELECT row_number() OVER () FROM bank_b", RuleUnsupported},
		{"table function", "SELECT count(*) FROM read_csv('/etc/passwd')", RuleUnsupported},
		{"unknown table", "SELECT count(*) FROM other", RuleUnsupported},
		{"two statements", "SELECT 1; SELECT 2", RuleUnsupported},
		{"copy", "COPY bank_a TO 'x.csv'", RuleUnsupported},
		{"not sql", "this is not sql", ""},
	}
	x := newKey(t, ecdh.X25519())
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Run(context.Background(), Job{Tables: tables(), SQL: tc.sql, Recipients: []Recipient{{ID: "r", Key: x.PublicKey()}}})
			if err == nil {
				t.Fatalf("Run accepted %q", tc.sql)
			}
			var re *RuleError
			if tc.rule == "" {
				return
			}
			if !errors.As(err, &re) {
				t.Fatalf("Run(%q) = %v, want a RuleError", tc.sql, err)
			}
			if re.Rule != tc.rule {
				t.Errorf("Run(%q) broke rule %s (%v), want %s", tc.sql, re.Rule, err, tc.rule)
			}
			if !strings.Contains(err.Error(), tc.rule) {
				t.Errorf("error %q does not name the rule %s", err, tc.rule)
			}
		})
	}
}

func TestRunAllowed(t *testing.T) {
	x := newKey(t, ecdh.X25519())
	cases := []struct{ sql, want string }{
		{"SELECT count(*) AS n FROM bank_b WHERE flagged", "n\n4\n"},
		{"SELECT flagged, count(*) AS n FROM bank_b GROUP BY flagged ORDER BY flagged", "flagged,n\nfalse,1\ntrue,4\n"},
		{"SELECT sum(amount) AS s FROM bank_a", "s\n170\n"},
		{"SELECT count(*) FILTER (WHERE amount BETWEEN 10 AND 60) AS n, sum(amount) FILTER (WHERE amount > 60) AS big FROM bank_a", "n,big\n2,100\n"},
		{"SELECT region, sum(amount) AS s FROM bank_a GROUP BY ALL ORDER BY s DESC", "region,s\nnorth,160\n"},
		{"SELECT CAST(sum(amount) AS DECIMAL(10,2)) AS s FROM bank_a", "s\n170\n"},
		{"SELECT CASE WHEN flagged THEN 'y' ELSE 'n' END AS f, count(*) AS n FROM bank_b WHERE score IN (0.5, 2, 3) OR score IS NULL GROUP BY 1 ORDER BY 1 LIMIT 5", "f,n\ny,4\n"},
		{"SELECT DISTINCT region FROM bank_a a JOIN bank_b b ON a.account = b.account AND a.customer = b.account GROUP BY region", "region\n"},
		{"SELECT region, count(*) AS n FROM bank_a GROUP BY ROLLUP (region) ORDER BY region NULLS FIRST", "region,n\n,5\nnorth,3\n"},
	}
	for _, tc := range cases {
		res, err := Run(context.Background(), Job{Tables: tables(), SQL: tc.sql, Recipients: []Recipient{{ID: "r", Key: x.PublicKey()}}})
		if err != nil {
			t.Errorf("Run(%q): %v", tc.sql, err)
			continue
		}
		got, err := Open(x, nil, res.Sealed[0].Ciphertext)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tc.want {
			t.Errorf("Run(%q) = %q, want %q", tc.sql, got, tc.want)
		}
	}
}

// TestNoPlaintextOnDisk runs a job whose datasets carry unique markers, with
// the working directory, TMPDIR and HOME pointing at fresh directories, and
// then scans them for the markers.
func TestNoPlaintextOnDisk(t *testing.T) {
	work, tmp, home := t.TempDir(), t.TempDir(), t.TempDir()
	t.Chdir(work)
	t.Setenv("TMPDIR", tmp)
	t.Setenv("HOME", home)

	marker := fmt.Sprintf("MARKER%x", rand.Text())
	var a, b strings.Builder
	a.WriteString("account,customer,region,amount,ssn\n")
	b.WriteString("account,flagged,score\n")
	for i := range 20000 {
		fmt.Fprintf(&a, "%s-acc%d,%s-c%d,%s-r%d,%d,%s-ssn%d\n", marker, i, marker, i%500, marker, i%3, i, marker, i)
		fmt.Fprintf(&b, "%s-acc%d,%t,%d\n", marker, i, i%2 == 0, i)
	}
	job := Job{
		Tables: []Table{
			{Name: "bank_a", Schema: schemaA, CSV: []byte(a.String()), Rules: rulesA},
			{Name: "bank_b", Schema: schemaB, CSV: []byte(b.String()), Rules: rulesB},
		},
		SQL:        "SELECT a.region, count(*) AS n, sum(a.amount) AS s FROM bank_a a JOIN bank_b b ON a.account = b.account WHERE b.flagged GROUP BY a.region",
		Recipients: []Recipient{{ID: "r", Key: newKey(t, ecdh.X25519()).PublicKey()}},
	}
	res, err := Run(context.Background(), job)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Rows != 3 {
		t.Errorf("rows %d, want 3", res.Rows)
	}
	dirs := []string{work, tmp, home}
	if found := scan(t, dirs, marker); len(found) > 0 {
		t.Errorf("dataset plaintext found on disk in %v", found)
	}
	// Control: the scan must see a marker that is on disk.
	if err := os.WriteFile(filepath.Join(work, "control"), []byte("x"+marker), 0o600); err != nil {
		t.Fatal(err)
	}
	if found := scan(t, dirs, marker); len(found) != 1 {
		t.Errorf("scan found %v, want only the control file", found)
	}
}

// scan returns the files under dirs that contain marker.
func scan(t *testing.T, dirs []string, marker string) []string {
	t.Helper()
	var found []string
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if bytes.Contains(data, []byte(marker)) {
				found = append(found, path)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return found
}
