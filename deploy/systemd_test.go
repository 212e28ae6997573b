package deploy

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rewrited/rewrited/internal/rewritedtest"
)

const unitFile = "systemd/rewrited.service"

// unitDirectives returns the unit's directives, each with its values in
// order.
func unitDirectives(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			d[k] = append(d[k], v)
		}
	}
	return d
}

// TestSystemdUnit checks the unit's reload and hardening, that the real
// binary serves with its arguments, and, where systemd-analyze exists, that
// systemd accepts it and rates its exposure low.
func TestSystemdUnit(t *testing.T) {
	d := unitDirectives(t)
	for key, want := range map[string]string{
		"ExecReload":      "/bin/kill -HUP $MAINPID",
		"DynamicUser":     "yes",
		"NoNewPrivileges": "yes",
		"ProtectSystem":   "strict",
		"ProtectHome":     "yes",
		"PrivateTmp":      "yes",
		"KillSignal":      "SIGTERM",
		"Restart":         "on-failure",
	} {
		if got := d[key]; len(got) != 1 || got[0] != want {
			t.Errorf("%s=%v, want %s", key, got, want)
		}
	}
	exec0 := strings.Fields(d["ExecStart"][0])
	if exec0[0] != "/usr/local/bin/rewrited" || exec0[len(exec0)-1] != "$REWRITED_ARGS" {
		t.Fatalf("ExecStart=%v", exec0)
	}
	args := exec0[1 : len(exec0)-1]
	p := rewritedtest.Start(t, localArgs(args, "../examples/policies")...)
	if code, body := rewritedtest.HTTPGet(t, "http://"+metricsAddr(t, p)+"/readyz"); code != 200 {
		t.Errorf("/readyz with the unit's arguments: %d %q", code, body)
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed: the unit's syntax and security are not checked")
	}
	dir := t.TempDir()
	src, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	// verify checks that ExecStart's binary exists: point it at the build.
	unit := filepath.Join(dir, "rewrited.service")
	if err := os.WriteFile(unit, []byte(strings.ReplaceAll(string(src), "/usr/local/bin/rewrited", rewritedtest.Binary(t))), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(analyze, "verify", "--man=no", unit).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// Exposure from 0 (locked down) to 10, as tenths for --threshold;
	// systemd rates up to 2 "OK".
	if out, err := exec.Command(analyze, "security", "--offline=yes", "--threshold=20", unit).CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze security: exposure above 2: %v\n%s", err, out)
	}
}
