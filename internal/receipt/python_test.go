package receipt

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/parleyhq/parley/api"
	"github.com/parleyhq/parley/internal/identity"
)

const python = "/usr/bin/python3"

// requirePython skips the test unless python3 with the cryptography package
// is installed (Debian: python3-cryptography).
func requirePython(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(python); err != nil {
		t.Skipf("skipping: %s not found; install python3 and python3-cryptography to compare with the independent verifier", python)
	}
	if out, err := exec.Command(python, "-c", "import cryptography").CombinedOutput(); err != nil {
		t.Skipf("skipping: the python3 cryptography module is missing (install python3-cryptography): %v: %s", err, out)
	}
}

// pyCase is a receipt document and the service certificate to check it
// against.
type pyCase struct {
	name    string
	doc     []byte
	service *x509.Certificate
	valid   bool // the expected verdict
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAgreesWithPython checks that testdata/verify_receipt.py, an
// independent implementation of the ACL algorithm, gives the same verdict
// as Verify on valid and corrupted receipts.
func TestAgreesWithPython(t *testing.T) {
	requirePython(t)

	var cases []pyCase
	type base struct {
		name    string
		r       *api.Receipt
		raw     []byte
		service *x509.Certificate
	}
	var bases []base
	for i, v := range loadAzure(t) {
		bases = append(bases, base{"azure" + strconv.Itoa(i+1), &v.receipt, v.Raw, v.service})
	}
	for _, g := range generatedReceipts(t) {
		bases = append(bases, base{g.name, g.receipt, nil, g.service})
	}
	other := newService(t)
	for _, b := range bases {
		raw := b.raw
		if raw == nil {
			raw = mustJSON(t, b.r)
		}
		cases = append(cases,
			pyCase{b.name + "/valid", raw, b.service, true},
			pyCase{b.name + "/wrapped", mustJSON(t, &api.TransactionReceipt{Receipt: b.r, State: api.StateReady}), b.service, true},
			pyCase{b.name + "/wrong-service", raw, other.Cert, false},
		)
		// The first, middle and last byte of every field.
		byField := map[string][]*api.Receipt{}
		var order []string
		forEachMutation(t, b.r, []byte{0x01}, 1, func(name string, m *api.Receipt) {
			if byField[name] == nil {
				order = append(order, name)
			}
			byField[name] = append(byField[name], m)
		})
		for _, name := range order {
			ms := byField[name]
			for _, i := range []int{0, len(ms) / 2, len(ms) - 1} {
				cases = append(cases, pyCase{b.name + "/" + name + "-" + strconv.Itoa(i), mustJSON(t, ms[i]), b.service, false})
			}
		}
	}

	// Structural corruptions of a generated receipt.
	s := newService(t)
	g := signedReceipt(t, newNode(t, s), 5, 2, [32]byte{}, nil)
	edit := func(name string, valid bool, f func(r *api.Receipt)) {
		r := clone(g)
		f(r)
		cases = append(cases, pyCase{"structure/" + name, mustJSON(t, r), s.Cert, valid})
	}
	edit("both-left-and-right", false, func(r *api.Receipt) { r.Proof[0].Right = r.Proof[0].Left })
	edit("neither-left-nor-right", false, func(r *api.Receipt) { r.Proof[1] = api.ProofElement{} })
	edit("proof-truncated", false, func(r *api.Receipt) { r.Proof = r.Proof[:1] })
	edit("stated-root-wrong", false, func(r *api.Receipt) { r.Root = strings.Repeat("ab", 32) })
	edit("stated-leaf-right", true, func(r *api.Receipt) { l := leafParts(3, [32]byte{}).Leaf(); r.Leaf = Left(l).Left })
	edit("commit-evidence-leading-zero", false, func(r *api.Receipt) {
		r.LeafComponents.CommitEvidence = strings.Replace(r.LeafComponents.CommitEvidence, "ce:3.", "ce:03.", 1)
	})
	edit("no-cert", false, func(r *api.Receipt) { r.Cert = "" })
	notCA, notCAService := notCAReceipt(t)
	cases = append(cases, pyCase{"structure/not-a-ca", mustJSON(t, notCA), notCAService, false})

	// Write every case, run the script once in batch mode, and compare.
	dir := t.TempDir()
	var stdin strings.Builder
	goErrs := make([]error, len(cases))
	for i, c := range cases {
		goErrs[i] = verifyDoc(c.doc, c.service)
		rp := filepath.Join(dir, strconv.Itoa(i)+".json")
		sp := filepath.Join(dir, strconv.Itoa(i)+".pem")
		if err := os.WriteFile(rp, c.doc, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(sp, identity.EncodeCertPEM(c.service.Raw), 0o600); err != nil {
			t.Fatal(err)
		}
		stdin.WriteString(rp + "\t" + sp + "\n")
	}
	cmd := exec.Command(python, "testdata/verify_receipt.py", "--batch")
	cmd.Stdin = strings.NewReader(stdin.String())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("verify_receipt.py --batch: %v: %s", err, stderr.String())
	}
	verdicts := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(verdicts) != len(cases) {
		t.Fatalf("verify_receipt.py gave %d verdicts for %d receipts", len(verdicts), len(cases))
	}
	valid := 0
	for i, c := range cases {
		pyOK, goOK := verdicts[i] == "ok", goErrs[i] == nil
		if pyOK != goOK {
			t.Errorf("%s: Python says %q, Go says %v", c.name, verdicts[i], goErrs[i])
		} else if goOK != c.valid {
			t.Errorf("%s: both say valid=%v (%q, %v), want %v", c.name, goOK, verdicts[i], goErrs[i], c.valid)
		}
		if c.valid {
			valid++
		}
	}
	t.Logf("%d receipts, %d valid: Python and Go agree", len(cases), valid)
}

// TestPythonExitCodes checks the script's single-receipt mode.
func TestPythonExitCodes(t *testing.T) {
	requirePython(t)
	v := loadAzure(t)
	dir := t.TempDir()
	receipt := filepath.Join(dir, "receipt.json")
	good := filepath.Join(dir, "good.pem")
	bad := filepath.Join(dir, "bad.pem")
	for name, b := range map[string][]byte{receipt: v[0].Raw, good: []byte(v[0].ServicePEM), bad: []byte(v[1].ServicePEM)} {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		args []string
		want int
	}{
		{[]string{receipt, good}, 0},
		{[]string{receipt, bad}, 1},
		{[]string{receipt}, 2},
		{[]string{receipt, filepath.Join(dir, "missing.pem")}, 2},
	} {
		err := exec.Command(python, append([]string{"testdata/verify_receipt.py"}, tt.args...)...).Run()
		got := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			got = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if got != tt.want {
			t.Errorf("verify_receipt.py %v: exit %d, want %d", tt.args, got, tt.want)
		}
	}
}

// verifyDoc verifies a receipt document the way the script reads it: a
// transaction receipt if it wraps one, else a bare receipt.
func verifyDoc(doc []byte, service *x509.Certificate) error {
	var tr api.TransactionReceipt
	if err := json.Unmarshal(doc, &tr); err == nil && tr.Receipt != nil {
		return Verify(tr.Receipt, service)
	}
	var r api.Receipt
	if err := json.Unmarshal(doc, &r); err != nil {
		return err
	}
	return Verify(&r, service)
}
