package main

import (
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/rewrited/rewrited/internal/rewritedtest"
)

// TestVersionCommand runs the built binary: --version and `version` print
// the version, `version --help` prints help.
func TestVersionCommand(t *testing.T) {
	bin := rewritedtest.Binary(t)
	want := regexp.MustCompile(`^rewrited \S+ \(revision \S+, ` + regexp.QuoteMeta(runtime.Version()) + `\)\n$`)
	for _, args := range [][]string{{"--version"}, {"-version"}, {"version"}} {
		out, err := exec.Command(bin, args...).Output()
		if err != nil || !want.Match(out) {
			t.Errorf("rewrited %s: %q, %v", strings.Join(args, " "), out, err)
		}
	}
	out, err := exec.Command(bin, "version", "--help").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "Usage: rewrited version\n") {
		t.Errorf("rewrited version --help: %q, %v", out, err)
	}
	out, err = exec.Command(bin, "version", "extra").CombinedOutput()
	if code := exitCode(err); code != 2 || !strings.Contains(string(out), `unexpected argument "extra"`) {
		t.Errorf("rewrited version extra: exit %d, %q", code, out)
	}
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestServeReportsItsBuild: the startup log and /metrics name the version,
// the revision and the Go version of a binary built with -ldflags.
func TestServeReportsItsBuild(t *testing.T) {
	bin := t.TempDir() + "/rewrited"
	build := exec.Command("go", "build", "-ldflags", "-X main.version=v9.8.7-test", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	p := rewritedtest.StartBinary(t, bin, "--metrics-listen", "127.0.0.1:0")
	recs := logRecords(p, "serving")
	if len(recs) == 0 || recs[0]["version"] != "v9.8.7-test" {
		t.Errorf("startup log: %v", recs)
	}
	body := scrape(t, metricsURL(t, p))
	sample := regexp.MustCompile(`(?m)^rewrited_build_info\{goversion="` + regexp.QuoteMeta(runtime.Version()) + `",revision="([^"]+)",version="v9.8.7-test"\} 1$`)
	if m := sample.FindStringSubmatch(body); m == nil {
		t.Errorf("no rewrited_build_info sample in:\n%s", grepLines(body, "rewrited_build_info"))
	} else if want := stampedRevision(t, bin); m[1] != want {
		t.Errorf("revision %q, the binary was stamped with %q", m[1], want)
	}
}

// stampedRevision is the VCS revision `go version -m` reads from bin, as
// rewrited_build_info should label it.
func stampedRevision(t *testing.T, bin string) string {
	out, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatalf("go version -m: %v", err)
	}
	settings := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if kv, ok := strings.CutPrefix(strings.TrimSpace(line), "build\t"); ok {
			k, v, _ := strings.Cut(kv, "=")
			settings[k] = v
		}
	}
	rev, ok := settings["vcs.revision"]
	switch {
	case !ok:
		return "unknown"
	case settings["vcs.modified"] == "true":
		return rev + "-dirty"
	}
	return rev
}
