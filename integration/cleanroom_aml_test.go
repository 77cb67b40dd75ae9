package integration

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/examples/aml/amlgen"
)

var amlRows = flag.Int("aml-rows", 5000, "TestCleanRoomAML: rows per bank")

// TestCleanRoomAML runs the anti-money-laundering example with real
// processes: three banks upload the generator's transactions (encrypted on
// their side), every bank approves both contracts, an attested runner runs
// them, and the regulator, the only recipient, finds exactly the planted
// structuring and round-trip patterns and nothing else; no bank can open
// the result. Every step's receipt verifies.
func TestCleanRoomAML(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes and runs DuckDB")
	}
	root := t.TempDir()
	svcDir := filepath.Join(root, "service")
	blobDir := filepath.Join(root, "blobs")
	workDir := filepath.Join(root, "runner-work")
	owners := filepath.Join(root, "owners")
	for _, d := range []string{blobDir, workDir, owners} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	m, err := amlgen.Generate(amlgen.Config{Seed: 7, RowsPerBank: *amlRows}, owners)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Structuring) == 0 || len(m.RoundTrips) == 0 {
		t.Fatalf("the generator planted %d structurings and %d round trips", len(m.Structuring), len(m.RoundTrips))
	}
	startDev(t, svcDir)
	c := &roomCLI{t: t, profile: filepath.Join(svcDir, "profile.json"), cwd: owners, env: []string{"TMPDIR=" + workDir}}
	writeFile(t, filepath.Join(owners, "policy.json"), `{"allowVirtual":true,"allowDebug":true,"virtual":{"measurements":["*"]}}`)
	c.must("attest", "policy", "set", filepath.Join(owners, "policy.json"))

	schema, err := json.Marshal(amlgen.Schema)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(owners, "schema.json"), string(schema))
	writeFile(t, filepath.Join(owners, "rules.json"), string(amlgen.RulesJSON()))
	parties := map[string]*roomParty{}
	for _, name := range []string{"bank1", "bank2", "bank3", "regulator"} {
		p := &roomParty{name: name, prefix: filepath.Join(owners, name)}
		out := c.mustJSON("room", "keys", "new", p.prefix)
		p.id, _ = out["party"].(string)
		parties[name] = p
	}
	as := func(p *roomParty, args ...string) []string {
		return append(append([]string{"room"}, args...), "--party-key", p.prefix+".party.pem")
	}
	const room = "aml"
	reg := parties["regulator"]
	c.must(as(parties["bank1"], "create", room, "--name", "bank1")...)
	for _, name := range []string{"bank2", "bank3", "regulator"} {
		c.must(as(parties["bank1"], "invite", room, name, "--public-key", parties[name].prefix+".party.pub.pem")...)
		c.must(as(parties[name], "join", room)...)
	}
	for i, bank := range amlgen.Banks {
		c.must(as(parties[bank], "dataset", "upload", room, bank, m.Files[i],
			"--schema", filepath.Join(owners, "schema.json"), "--rules", filepath.Join(owners, "rules.json"), "--blob-dir", blobDir)...)
	}
	measurement := strings.Repeat("5e", 32)
	for _, ct := range amlgen.Contracts() {
		args := as(parties["bank1"], "contract", "propose", room, "--name", ct.Name, "--sql", ct.SQL,
			"--recipient", reg.id+"="+reg.prefix+".hpke.pub.pem", "--measurement", measurement)
		for _, b := range amlgen.Banks {
			args = append(args, "--dataset", b)
		}
		contract := c.mustJSON(args...)
		id, _ := contract["id"].(string)
		for _, b := range amlgen.Banks {
			c.must(as(parties[b], "approve", room, id)...)
		}
		start := time.Now()
		job := c.mustJSON("room", "run", room, id, "--platform", "virtual", "--measurement", measurement, "--blob-dir", blobDir, "--work-dir", workDir)
		t.Logf("%s over %v rows: parley room run took %v", ct.Name, m.Rows, time.Since(start).Round(time.Millisecond))
		jobID, _ := job["id"].(string)
		got := c.must(as(reg, "result", "fetch", room, jobID, "--hpke-key", reg.prefix+".hpke.pem", "--blob-dir", blobDir)...)
		want, err := m.Expected(ct.Name)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("contract %s found\n%s\nwant exactly the planted patterns\n%s", ct.Name, got, want)
		}
		for _, b := range amlgen.Banks {
			if msg := c.fails(as(parties[b], "result", "fetch", room, jobID, "--hpke-key", parties[b].prefix+".hpke.pem", "--blob-dir", blobDir)...); !strings.Contains(msg, "not a recipient") {
				t.Errorf("%s opened the %s result: %s", b, ct.Name, msg)
			}
		}
	}
	if out := c.must("room", "audit", room); !strings.Contains(out, " 0 failed") {
		t.Errorf("audit:\n%s", out)
	}

	// No payment reference or holder name of the banks' data is on disk
	// outside the banks' own files.
	var needles []string
	for _, f := range m.Files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n")[1:20] {
			fields := strings.Split(line, ",")
			if len(fields) != len(amlgen.Schema.Columns) {
				t.Fatalf("%s line %d: %q", f, i+2, line)
			}
			for _, v := range []string{fields[9], fields[4]} { // payment_ref, holder_name
				if len(v) >= 8 {
					needles = append(needles, v)
				}
			}
		}
	}
	for _, n := range needles {
		if found := scanFor(t, []byte(n), svcDir, blobDir, workDir); len(found) > 0 {
			t.Errorf("plaintext %q found in %v", n, found)
		}
	}
	if len(needles) < 20 {
		t.Fatalf("only %d values to look for", len(needles))
	}
	if found := scanFor(t, []byte(needles[0]), owners); len(found) == 0 {
		t.Errorf("positive control: %q not found in the owners' files", needles[0])
	}
}
