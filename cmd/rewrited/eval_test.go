package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
)

var updateEvalGolden = flag.Bool("update-eval-golden", false, "rewrite testdata/eval/*.golden from the current output")

// runArgs runs the rewrited command line in-process.
func runArgs(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

const evalPolicy = "testdata/eval/policy.lua"

// evalSlack is the evaluation budget the tests give: they check what policies
// decide, and a loaded machine must not turn that into a timeout.
const evalSlack = "10s"

// TestEvalWire checks the text output against golden files: the reply as
// written on the wire, then how it was decided.
func TestEvalWire(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		stderr string // a substring of stderr; "" means stderr must be empty
	}{
		{
			name: "default-data",
			args: []string{"--policy", "../../examples/policies/default.lua", "--status", "250", "--response", "OK ids=1", "--command", "DATA"},
		},
		{
			name: "default-unchanged",
			args: []string{"--policy", "../../examples/policies/default.lua", "--status", "250", "--response", "OK"},
		},
		{
			name: "close-meta",
			args: []string{"--policy", evalPolicy, "--status", "550", "--response", "close", "--command", "RCPT TO:<a@b>"},
		},
		{
			name: "policy-error",
			args: []string{"--policy", evalPolicy, "--status", "250", "--response", "boom"},
		},
		{
			name: "invalid-result",
			args: []string{"--policy", evalPolicy, "--status", "250", "--response", "bare cr"},
		},
		{
			name:   "breaks-data",
			args:   []string{"--policy", evalPolicy, "--status", "250", "--response", "OK ids=1", "--command", "DATA"},
			stderr: "warning: turns the successful DATA reply 250 into 554: the message is already queued, so the client will retry and deliver it twice; rewrited serve refuses this rewrite unless --protect-data=false",
		},
		{
			name: "meta-types",
			// --meta wins over --meta-json whatever the order.
			args: []string{"--policy", evalPolicy, "--status", "250", "--response", "types", "--meta", "n=3",
				"--meta-json", `{"n": 1, "arr": [1, 2], "obj": {"k": "v"}, "s": "from json"}`,
				"--meta", "b=true", "--meta", "s=example.de", "--meta", `quoted="3"`, "--meta", "null=null", "--meta", "list=[1,2]"},
		},
		{
			name: "command-empty",
			args: []string{"--policy", evalPolicy, "--status", "250", "--response", "command", "--command", ""},
		},
		{
			name: "command-nil",
			args: []string{"--policy", evalPolicy, "--status", "250", "--response", "command"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runArgs(t, append([]string{"eval", "--eval-timeout", evalSlack}, tt.args...)...)
			if code != 0 {
				t.Fatalf("exit %d, want 0; stderr:\n%s", code, stderr)
			}
			if tt.stderr == "" && stderr != "" {
				t.Errorf("stderr = %q, want it empty", stderr)
			}
			if !strings.Contains(stderr, tt.stderr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tt.stderr)
			}
			golden := filepath.Join("testdata", "eval", tt.name+".golden")
			if *updateEvalGolden {
				if err := os.WriteFile(golden, []byte(stdout), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update-eval-golden to create it)", err)
			}
			if stdout != string(want) {
				t.Errorf("stdout differs from %s:\ngot:\n%s\nwant:\n%s", golden, stdout, want)
			}
		})
	}
}

// TestEvalPrintOutput checks that print and kumo.log_* reach stderr with the
// caller's position, numbers spelt as Lua 5.4's tostring spells them, and
// leave stdout to the decision.
func TestEvalPrintOutput(t *testing.T) {
	_, stdout, stderr := runArgs(t, "eval", "--eval-timeout", evalSlack, "--policy", evalPolicy, "--status", "250", "--response", "log", "--command", "NOOP")
	for _, want := range []string{`msg="print says NOOP"`, "source=testdata/eval/policy.lua:26", `msg="log_warn says 250 inf true"`} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr = %q, want it to contain %q", stderr, want)
		}
	}
	if strings.Contains(stdout, "says") || strings.Contains(stderr, "time=") {
		t.Errorf("log output misplaced or timestamped: stdout %q, stderr %q", stdout, stderr)
	}
}

// TestEvalJSON checks that --json prints the service's response as protojson.
func TestEvalJSON(t *testing.T) {
	code, stdout, stderr := runArgs(t, "eval", "--eval-timeout", evalSlack, "--json", "--policy", evalPolicy, "--status", "550", "--response", "close", "--command", "RCPT TO:<a@b>")
	if code != 0 {
		t.Fatalf("exit %d; stderr: %s", code, stderr)
	}
	var resp rewritev1.RewriteResponseResponse
	if err := protojson.Unmarshal([]byte(stdout), &resp); err != nil {
		t.Fatalf("stdout is not a RewriteResponseResponse: %v\n%s", err, stdout)
	}
	if resp.Status != 421 || resp.Response != "4.7.0 Too many errors\nclosing" || !resp.CloseConnection || !resp.Rewritten ||
		resp.Outcome != rewritev1.Outcome_OUTCOME_REWRITTEN || resp.MetaUpdates.GetFields()["x_failures"].GetNumberValue() != 3 || len(resp.PolicyVersion) != 12 {
		t.Errorf("response = %v", &resp)
	}
	// Every field is present, so that scripts read false rather than null.
	for _, field := range []string{`"rewritten": true`, `"error": ""`, `"outcome": "OUTCOME_REWRITTEN"`} {
		if !strings.Contains(stdout, field) {
			t.Errorf("stdout lacks %s:\n%s", field, stdout)
		}
	}
}

// TestEvalExitStatus checks bad invocations (exit 2, naming the flag), a
// policy that does not load (exit 1) and a policy error (exit 0).
func TestEvalExitStatus(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no policy", []string{"--status", "250"}, 2, "rewrited eval: --policy: no policy file given"},
		{"no status", []string{"--policy", evalPolicy}, 2, "rewrited eval: --status: no reply code given"},
		{"status not a number", []string{"--policy", evalPolicy, "--status", "25O"}, 2, `rewrited eval: --status: "25O" is not a number`},
		{"negative status", []string{"--policy", evalPolicy, "--status", "-250"}, 2, "rewrited eval: --status: -250 is not an SMTP reply code"},
		{"invalid status", []string{"--policy", evalPolicy, "--status", "999", "--response", "x"}, 2, "rewrited eval: invalid request: --status: invalid SMTP status 999"},
		{"bare CR in response", []string{"--policy", evalPolicy, "--status", "250", "--response", "a\rb"}, 2, "rewrited eval: invalid request: --response: control character in reply text: bare CR at byte 1"},
		{"command too long", []string{"--policy", evalPolicy, "--status", "250", "--command", strings.Repeat("x", 17<<10)}, 2, "rewrited eval: invalid request: --command: 17408 bytes"},
		{"meta without =", []string{"--policy", evalPolicy, "--status", "250", "--meta", "ehlo_domain"}, 2, `invalid value "ehlo_domain" for flag -meta: "ehlo_domain" is not KEY=VALUE`},
		{"meta-json not an object", []string{"--policy", evalPolicy, "--status", "250", "--meta-json", "[1]"}, 2, `invalid value "[1]" for flag -meta-json: not a JSON object`},
		{"missing policy file", []string{"--policy", "testdata/eval/absent.lua", "--status", "250"}, 2, "rewrited eval: --policy: open testdata/eval/absent.lua: no such file or directory"},
		{"stray argument", []string{"--policy", evalPolicy, "--status", "250", "OK"}, 2, `rewrited eval: unexpected argument "OK"`},
		{"unknown flag", []string{"--polcy", evalPolicy}, 2, "flag provided but not defined: -polcy"},
		{"policy does not load", []string{"--policy", "testdata/eval/syntax.lua", "--status", "250"}, 1, "testdata/eval/syntax.lua:2: syntax error near '/' (hint: integer division // is Lua 5.3+"},
		{"policy error exits 0", []string{"--policy", evalPolicy, "--status", "250", "--response", "boom"}, 0, ""},
		{"help", []string{"--help"}, 0, "Usage: rewrited eval --policy FILE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runArgs(t, append([]string{"eval", "--eval-timeout", evalSlack}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, stderr)
			}
			if !strings.Contains(stderr, tt.stderr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tt.stderr)
			}
			if tt.code != 0 && stdout != "" {
				t.Errorf("stdout = %q, want nothing on failure", stdout)
			}
		})
	}
}
