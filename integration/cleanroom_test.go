package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// marker is in every string value of every dataset: no file the service,
// the blob store or the runner writes may hold it.
const marker = "ZQXJ-PLAINTEXT-MARKER"

// roomCLI runs `parley` client commands against a dev service, in a
// directory of the client's own (the data owners' machine).
type roomCLI struct {
	t       *testing.T
	profile string
	cwd     string
	env     []string
	// output is everything every command printed.
	output bytes.Buffer
}

// run runs parley with args and returns stdout, stderr and the error.
func (c *roomCLI) run(args ...string) (string, string, error) {
	c.t.Helper()
	cmd := exec.Command(parleyBin, args...)
	cmd.Dir = c.cwd
	cmd.Env = append(os.Environ(), c.env...)
	cmd.Env = append(cmd.Env, "PARLEY_PROFILE="+c.profile)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	c.output.Write(stdout.Bytes())
	c.output.Write(stderr.Bytes())
	return stdout.String(), stderr.String(), err
}

// must runs parley and fails the test unless it succeeds.
func (c *roomCLI) must(args ...string) string {
	c.t.Helper()
	out, errOut, err := c.run(args...)
	if err != nil {
		c.t.Fatalf("parley %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// mustJSON runs parley and decodes its JSON output.
func (c *roomCLI) mustJSON(args ...string) map[string]any {
	c.t.Helper()
	out := c.must(args...)
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		c.t.Fatalf("parley %s: output is not a JSON object: %v\n%s", strings.Join(args, " "), err, out)
	}
	return v
}

// fails runs parley, wants it to fail, and returns its stderr.
func (c *roomCLI) fails(args ...string) string {
	c.t.Helper()
	out, errOut, err := c.run(args...)
	if err == nil {
		c.t.Fatalf("parley %s succeeded, want a failure\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), out, errOut)
	}
	return errOut
}

// scanFor returns the files under roots that contain needle.
func scanFor(t *testing.T, needle []byte, roots ...string) []string {
	t.Helper()
	var found []string
	for _, root := range roots {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.Type().IsRegular() {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if bytes.Contains(b, needle) {
				found = append(found, p)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("scan %s: %v", root, err)
		}
	}
	return found
}

type roomParty struct {
	name, prefix, id string
}

// TestCleanRoomEndToEnd runs a clean room with real processes: `parley dev`
// as the service, the `parley room` CLI as three banks and a regulator,
// and `parley runner` processes with virtual attestation. It checks that
// an owner that has not approved blocks the run, that a runner whose
// measurement the contract does not allow gets no key, that an allowed
// runner runs and only the recipient opens the result, that a query that
// breaks an analysis rule is refused with the rule named, that suspension
// stops runs, that `parley room audit` lists every step with a receipt that
// verifies, and that no plaintext byte reaches the service's data
// directory, the blob store, or the runner's working and temporary
// directories.
func TestCleanRoomEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes and runs DuckDB")
	}
	root := t.TempDir()
	svcDir := filepath.Join(root, "service")
	blobDir := filepath.Join(root, "blobs")
	workDir := filepath.Join(root, "runner-work")
	tmpDir := filepath.Join(root, "tmp")
	owners := filepath.Join(root, "owners") // the parties' own machines
	for _, d := range []string{blobDir, workDir, tmpDir, owners} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	n := startDev(t, svcDir)
	c := &roomCLI{t: t, profile: filepath.Join(svcDir, "profile.json"), cwd: owners, env: []string{"TMPDIR=" + tmpDir}}

	// The service's appraisal policy accepts virtual evidence of any
	// measurement: which measurements may run is each contract's call.
	policy := filepath.Join(owners, "policy.json")
	writeFile(t, policy, `{"allowVirtual":true,"allowDebug":true,"virtual":{"measurements":["*"]}}`)
	c.must("attest", "policy", "set", policy)

	parties := map[string]*roomParty{}
	for _, name := range []string{"bank1", "bank2", "bank3", "regulator", "outsider"} {
		p := &roomParty{name: name, prefix: filepath.Join(owners, name)}
		out := c.mustJSON("room", "keys", "new", p.prefix)
		p.id, _ = out["party"].(string)
		parties[name] = p
	}
	as := func(p *roomParty, args ...string) []string {
		return append(append([]string{"room"}, args...), "--party-key", p.prefix+".party.pem")
	}
	const room = "aml"
	b1, b2, b3, reg := parties["bank1"], parties["bank2"], parties["bank3"], parties["regulator"]
	c.must(as(b1, "create", room, "--name", "bank1")...)
	for _, p := range []*roomParty{b2, b3, reg} {
		c.must(as(b1, "invite", room, p.name, "--public-key", p.prefix+".party.pub.pem")...)
		c.must(as(p, "join", room)...)
	}

	// Each bank uploads its dataset. Accounts s1 and s2 are at all three
	// banks; every string value carries the marker.
	rows := map[string][][2]any{
		"bank1": {{"s1", 9100}, {"s2", 9200}, {"s3", 300}, {"x1", 50}},
		"bank2": {{"s1", 9300}, {"s2", 9400}, {"y1", 60}},
		"bank3": {{"s1", 9500}, {"s2", 9600}, {"s3", 700}, {"z1", 70}},
	}
	rules := filepath.Join(owners, "rules.json")
	writeFile(t, rules, `{"forbidden":["customer"],"join_only":["account"],"aggregate_only":["amount"]}`)
	for _, p := range []*roomParty{b1, b2, b3} {
		var csv strings.Builder
		csv.WriteString("account,customer,amount\n")
		for i, r := range rows[p.name] {
			fmt.Fprintf(&csv, "acct-%s-%s,%s-%s-customer-%d,%d\n", r[0], marker, marker, p.name, i, r[1])
		}
		file := filepath.Join(owners, p.name+".csv")
		writeFile(t, file, csv.String())
		d := c.mustJSON(as(p, "dataset", "upload", room, p.name, file, "--rules", rules, "--blob-dir", blobDir)...)
		if d["keyCommitment"] == "" || d["owner"] != p.id {
			t.Fatalf("dataset %s registered as %v", p.name, d)
		}
	}
	if got := c.mustJSON("room", "rules", room, "bank2"); fmt.Sprint(got["rules"]) != "map[aggregate_only:[amount] forbidden:[customer] join_only:[account]]" {
		t.Errorf("rules of bank2: %v", got)
	}

	allowed := strings.Repeat("a1", 32)
	other := strings.Repeat("b2", 32)
	const joinSQL = `SELECT count(*) AS links, sum(a.amount) + sum(b.amount) + sum(c.amount) AS total
		FROM bank1 a JOIN bank2 b ON a.account = b.account JOIN bank3 c ON a.account = c.account`
	contract := c.mustJSON(as(b1, "contract", "propose", room, "--name", "shared_accounts", "--sql", joinSQL,
		"--dataset", "bank1", "--dataset", "bank2", "--dataset", "bank3",
		"--recipient", reg.id+"="+reg.prefix+".hpke.pub.pem", "--measurement", allowed)...)
	cid, _ := contract["id"].(string)
	if len(cid) != 64 {
		t.Fatalf("contract id %q", cid)
	}
	runnerIn := func(blobs, measurement, contract string) []string {
		return []string{"room", "run", room, contract, "--platform", "virtual", "--measurement", measurement, "--blob-dir", blobs, "--work-dir", workDir}
	}
	runner := func(measurement, contract string) []string { return runnerIn(blobDir, measurement, contract) }

	// Two of three owners approved: no key for anyone.
	c.must(as(b1, "approve", room, cid)...)
	c.must(as(b2, "approve", room, cid)...)
	if msg := c.fails(runner(allowed, cid)...); !strings.Contains(msg, "KeyReleaseDenied") || !strings.Contains(msg, "not approved by ["+b3.id+"]") {
		t.Fatalf("run before bank3 approved: %s", msg)
	}
	if msg := c.fails(as(reg, "approve", room, cid)...); !strings.Contains(msg, "owns no dataset") {
		t.Errorf("approval by the regulator, who owns no dataset: %s", msg)
	}
	c.must(as(b3, "approve", room, cid)...)

	// A runner whose measurement the contract does not allow: no key.
	if msg := c.fails(runner(other, cid)...); !strings.Contains(msg, "KeyReleaseDenied") || !strings.Contains(msg, "is not allowed by contract") {
		t.Fatalf("run with a measurement not allowed: %s", msg)
	}

	// The allowed runner.
	job := c.mustJSON(runner(allowed, cid)...)
	jobID, _ := job["id"].(string)
	if job["measurement"] != allowed || job["rows"] != float64(1) || job["output"] == "" {
		t.Fatalf("job record %v", job)
	}

	// Only the recipient opens the result.
	res := c.must(as(reg, "result", "fetch", room, jobID, "--hpke-key", reg.prefix+".hpke.pem", "--blob-dir", blobDir)...)
	if want := fmt.Sprintf("links,total\n2,%d\n", 9100+9200+9300+9400+9500+9600); res != want {
		t.Errorf("result %q, want %q", res, want)
	}
	for _, p := range []*roomParty{b1, parties["outsider"]} {
		if msg := c.fails(as(p, "result", "fetch", room, jobID, "--hpke-key", p.prefix+".hpke.pem", "--blob-dir", blobDir)...); !strings.Contains(msg, "not a recipient") {
			t.Errorf("result fetch with %s's key: %s", p.name, msg)
		}
	}

	// A blob store that serves altered bytes is caught: the runner checks
	// each ciphertext against the ledger's digest (after the release, which
	// is recorded), and a recipient checks the result against the job's.
	tampered := filepath.Join(root, "tampered-blobs")
	copyTree(t, blobDir, tampered)
	flipLastByte(t, filepath.Join(tampered, room, "bank2"))
	if msg := c.fails(runnerIn(tampered, allowed, cid)...); !strings.Contains(msg, "dataset bank2: stored ciphertext has SHA-256") {
		t.Errorf("run over an altered ciphertext: %s", msg)
	}
	flipLastByte(t, filepath.Join(tampered, room, "results", job["output"].(string)))
	if msg := c.fails(as(reg, "result", "fetch", room, jobID, "--hpke-key", reg.prefix+".hpke.pem", "--blob-dir", tampered)...); !strings.Contains(msg, "the job record says") {
		t.Errorf("fetch of an altered result: %s", msg)
	}

	// A query that breaks join-only on account: the CLI will not propose
	// it; proposed anyway and approved by everyone, the runner still
	// refuses it with the rule named.
	badArgs := as(b2, "contract", "propose", room, "--name", "list_accounts",
		"--sql", "SELECT a.account, count(*) AS n FROM bank1 a JOIN bank2 b ON a.account = b.account GROUP BY a.account",
		"--dataset", "bank1", "--dataset", "bank2", "--recipient", b2.id+"="+b2.prefix+".hpke.pub.pem", "--measurement", allowed)
	if msg := c.fails(badArgs...); !strings.Contains(msg, "rule join-only on bank1.account") {
		t.Errorf("proposing a query that breaks join-only: %s", msg)
	}
	bad := c.mustJSON(append(badArgs, "--unchecked")...)
	badID, _ := bad["id"].(string)
	c.must(as(b1, "approve", room, badID)...)
	c.must(as(b2, "approve", room, badID)...)
	if msg := c.fails(runner(allowed, badID)...); !strings.Contains(msg, "rule join-only on bank1.account") {
		t.Fatalf("run of a query breaking join-only: %s", msg)
	}

	// Any party may suspend; a suspended contract releases no key.
	c.must(as(reg, "suspend", room, cid)...)
	if msg := c.fails(runner(allowed, cid)...); !strings.Contains(msg, "is Suspended") {
		t.Fatalf("run of a suspended contract: %s", msg)
	}

	// The audit lists every step, and every receipt verifies.
	out := c.must("room", "audit", room, "--json")
	var steps []struct {
		TransactionID string `json:"transactionId"`
		Verified      bool   `json:"verified"`
		Problem       string `json:"problem"`
		Event         struct {
			Seq     int            `json:"seq"`
			Step    string         `json:"step"`
			By      string         `json:"by"`
			Subject string         `json:"subject"`
			Detail  map[string]any `json:"detail"`
		} `json:"event"`
	}
	if err := json.Unmarshal([]byte(out), &steps); err != nil {
		t.Fatalf("audit --json: %v\n%s", err, out)
	}
	var got []string
	for i, s := range steps {
		if !s.Verified || s.TransactionID == "" {
			t.Errorf("step %d (%s, %s) did not verify: %s", i+1, s.Event.Step, s.TransactionID, s.Problem)
		}
		if s.Event.Seq != i+1 {
			t.Errorf("step %d has seq %d", i+1, s.Event.Seq)
		}
		got = append(got, s.Event.Step)
	}
	want := []string{
		"create_room", "invite", "join", "invite", "join", "invite", "join",
		"register_dataset", "register_dataset", "register_dataset",
		"propose_contract", "approve", "approve", "key_refusal", "approve", "key_refusal", "key_release", "job",
		"key_release",
		"propose_contract", "approve", "approve", "key_release", "job_refusal",
		"suspend", "key_refusal",
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("audit steps\n got %v\nwant %v", got, want)
	}
	if len(steps) == len(want) {
		if r := fmt.Sprint(steps[13].Event.Detail["reason"]); !strings.Contains(r, "not approved by") {
			t.Errorf("first refusal's reason %q", r)
		}
		if r := fmt.Sprint(steps[23].Event.Detail["reason"]); !strings.Contains(r, "join-only") {
			t.Errorf("job refusal's reason %q", r)
		}
		if steps[17].Event.Detail["job"] != jobID {
			t.Errorf("job step %v, want job %s", steps[17].Event.Detail, jobID)
		}
	}
	text := c.must("room", "audit", room)
	if !strings.Contains(text, fmt.Sprintf("%d steps, %d receipts verified, 0 failed", len(want), len(want))) {
		t.Errorf("audit output:\n%s", text)
	}

	// No plaintext on the service side, in the blob store, or in the
	// runner's working and temporary directories; the scan does find the
	// marker in the owners' own files (positive control).
	if err := n.stop(); err != nil {
		t.Fatalf("stop the service: %v", err)
	}
	if found := scanFor(t, []byte(marker), svcDir, blobDir, tampered, workDir, tmpDir); len(found) > 0 {
		t.Errorf("plaintext marker found in %v", found)
	}
	// The runner wrote nothing at all where it worked, nor in its
	// temporary directory.
	if found := scanFor(t, nil, workDir, tmpDir); len(found) > 0 {
		t.Errorf("the runner left files: %v", found)
	}
	if found := scanFor(t, []byte(marker), owners); len(found) != 3 {
		t.Errorf("positive control: marker in %v, want the three owners' CSV files", found)
	}
	if bytes.Contains(n.logs.Bytes(), []byte(marker)) {
		t.Error("the service's log holds the marker")
	}
	if bytes.Contains(c.output.Bytes(), []byte(marker)) {
		t.Error("a command (the runner, an upload, the audit, …) printed the marker")
	}
	if !bytes.Contains(n.logs.Bytes(), []byte("VIRTUAL TEE")) {
		t.Error("the service did not warn that it trusted virtual evidence")
	}

	// After a restart the audit is the same: its index is rebuilt from the
	// ledger, and every receipt still verifies.
	startDev(t, svcDir)
	if again := c.must("room", "audit", room); !strings.Contains(again, fmt.Sprintf("%d steps, %d receipts verified, 0 failed", len(want), len(want))) {
		t.Errorf("audit after a restart:\n%s", again)
	}
}

// copyTree copies the regular files under src to dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func flipLastByte(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 1
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}
