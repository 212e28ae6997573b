package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestExamplePolicies runs `rewrited test` over the example policies, as CI
// must: every recipe and the bundled default policy pass their tests.
func TestExamplePolicies(t *testing.T) {
	code, stdout, stderr := runArgs(t, "test", "--eval-timeout", evalSlack, "../../examples/policies")
	if code != 0 {
		t.Fatalf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	m := regexp.MustCompile(`(?m)\A(?:.*\n)*?(\d+) passed, 0 failed\n\z`).FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("no final %q line, or lines before it:\n%s", "N passed, 0 failed", stdout)
	}
	if n, _ := strconv.Atoi(m[1]); n == 0 {
		t.Fatalf("no case ran:\n%s", stdout)
	}
	if strings.TrimSuffix(stdout, m[1]+" passed, 0 failed\n") != "" {
		t.Errorf("passing run printed more than the summary (a DATA warning?):\n%s", stdout)
	}
	// Every recipe comes with its tests.
	policies, err := filepath.Glob("../../examples/policies/*.lua")
	if err != nil || len(policies) == 0 {
		t.Fatalf("no example policies: %v", err)
	}
	for _, p := range policies {
		tests := strings.TrimSuffix(p, ".lua") + testFileSuffix
		if _, err := os.Stat(tests); err != nil {
			t.Errorf("%s has no test file: %v", p, err)
		}
	}
}

// TestTestReportsFailures runs the deliberately failing file and checks the
// exact report: FILE:LINE: CASE: expected ..., got ..., warnings, summary.
func TestTestReportsFailures(t *testing.T) {
	code, stdout, stderr := runArgs(t, "test", "--eval-timeout", evalSlack, "testdata/tests")
	if code != 1 {
		t.Errorf("exit %d, want 1; stderr:\n%s", code, stderr)
	}
	want := `testdata/tests/failing_test.yaml:20: wrong status and response: expected status 550, got 250
testdata/tests/failing_test.yaml:20: wrong status and response: expected response "OK", got "amended\nOK"
testdata/tests/failing_test.yaml:27: wrong outcome: expected outcome unchanged, got policy_error (error: "policy error: amend.lua:6: boom")
testdata/tests/failing_test.yaml:32: wrong meta updates and close: expected close true, got false
testdata/tests/failing_test.yaml:32: wrong meta updates and close: expected meta updates {"x_seen":false}, got {"x_seen":true}
testdata/tests/failing_test.yaml:39: load error expected: expected a load error containing "syntax error", got a policy that loads
testdata/tests/failing_test.yaml:42: invalid request: expected a decision, got error InvalidArgument: status: invalid SMTP status 999: want 200-559 with a second digit 0-5
testdata/tests/nested/warning_test.yaml:10: rejects the queued message: warning: turns the successful DATA reply 250 into 550: the message is already queued, so the client will retry and deliver it twice
3 passed, 5 failed
`
	if stdout != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", stdout, want)
	}
}

// TestTestVerbose checks that -v lists passing cases too.
func TestTestVerbose(t *testing.T) {
	code, stdout, _ := runArgs(t, "test", "--eval-timeout", evalSlack, "-v", "testdata/tests/nested/warning_test.yaml")
	if code != 0 {
		t.Errorf("exit %d, want 0 (a warning is not a failure)", code)
	}
	for _, want := range []string{
		"testdata/tests/nested/warning_test.yaml:10: rejects the queued message: ok\n",
		"testdata/tests/nested/warning_test.yaml:15: protect_data keeps the original: ok\n",
		"2 passed, 0 failed\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
}

// TestTestExitStatus checks bad invocations and unusable test files: exit 2
// with a message naming the problem.
func TestTestExitStatus(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string // a substring
		stderr string // a substring
	}{
		{"no path", nil, 2, "", "rewrited test: no test file or directory given"},
		{"missing file", []string{"testdata/absent_test.yaml"}, 2, "", "rewrited test: stat testdata/absent_test.yaml: no such file or directory"},
		{"directory without tests", []string{"testdata/eval"}, 2, "", "rewrited test: testdata/eval: no *_test.yaml files"},
		{"misspelt field", []string{"testdata/bad/misspelt_test.yaml"}, 2, "0 passed, 0 failed", "field want_stauts not found"},
		{"case checking nothing", []string{"testdata/bad/checks_nothing_test.yaml"}, 2, "", `testdata/bad/checks_nothing_test.yaml:5: case "asserts nothing" checks nothing`},
		{"file without cases", []string{"testdata/bad/empty_test.yaml"}, 2, "", "testdata/bad/empty_test.yaml: no cases"},
		{"bad file does not stop the others", []string{"testdata/bad/misspelt_test.yaml", "testdata/tests/nested"}, 2, "2 passed, 0 failed", "want_stauts"},
		{"unknown flag", []string{"--bogus", "x"}, 2, "", "flag provided but not defined: -bogus"},
		{"help", []string{"--help"}, 0, "", "Usage: rewrited test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runArgs(t, append([]string{"test", "--eval-timeout", evalSlack}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, stderr)
			}
			if !strings.Contains(stdout, tt.stdout) {
				t.Errorf("stdout = %q, want it to contain %q", stdout, tt.stdout)
			}
			if !strings.Contains(stderr, tt.stderr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tt.stderr)
			}
		})
	}
}

// TestTestFiles checks directory expansion: *_test.yaml files only,
// recursively and sorted; files named on the command line are taken as is.
func TestTestFiles(t *testing.T) {
	got, err := testFiles([]string{"testdata/tests", "testdata/bad/misspelt_test.yaml", "testdata/tests/ignored.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		filepath.Join("testdata", "tests", "failing_test.yaml"),
		filepath.Join("testdata", "tests", "nested", "warning_test.yaml"),
		"testdata/bad/misspelt_test.yaml",
		"testdata/tests/ignored.yaml",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("testFiles = %q, want %q", got, want)
	}
}
