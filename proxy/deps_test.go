package proxy

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestDependencies keeps the proxy a plain client of rewrited: from this
// module it imports only the client and smtpreply packages (and the command
// this package), never the server's.
func TestDependencies(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	const module = "github.com/rewrited/rewrited/"
	allowed := map[string][]string{
		".":                     {"client", "smtpreply"},
		"../cmd/rewrited-proxy": {"client", "smtpreply", "proxy"},
	}
	for pkg, ok := range allowed {
		out, err := exec.Command("go", "list", "-f", `{{join .Imports "\n"}}`, pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		for _, imp := range strings.Fields(string(out)) {
			own, found := strings.CutPrefix(imp, module)
			if found && !slices.Contains(ok, own) {
				t.Errorf("%s imports %s; allowed from this module: %v", pkg, imp, ok)
			}
		}
		deps, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, deps)
		}
		for _, dep := range strings.Fields(string(deps)) {
			if strings.Contains(dep, "gopher-lua") || strings.HasPrefix(dep, module+"service") {
				t.Errorf("%s depends on %s", pkg, dep)
			}
		}
	}
}
