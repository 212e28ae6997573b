// Package service_test holds the test that keeps the service packages in
// their layers (ARCHITECTURE.md): each may import only the module packages
// listed for it, so the engine never learns about the wire, logs never
// depend on metrics, and so on.
package service_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/rewrited/rewrited/"

// allowed lists, per package, the module packages it may import (a package
// may always import its own sub-packages).
var allowed = map[string][]string{
	"service/policy/stdlib/luapattern": {},
	"service/policy/stdlib":            {},
	"service/policy":                   {"smtpreply"},
	"service/decisionlog":              {"service/policy"},
	"service/metrics":                  {"service/policy"},
	"service/shadow":                   {"service/policy", "service/decisionlog"},
	"service/replay":                   {"service/policy", "service/decisionlog", "service/shadow"},
	"service/registry":                 {"service/policy", "internal/watch"},
	"service/rewrite":                  {"service/policy", "smtpreply", "proto/rewrite/v1", "proto/rewrite/wire/v1"},
	"service/server":                   {"service/policy", "service/rewrite", "proto/rewrite/v1", "internal/watch"},
	"service/policytest":               {"service/policy", "service/rewrite", "proto/rewrite/v1"},
}

func TestLayers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, module+"service/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	seen := map[string]bool{}
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], module)
		if pkg == "service" {
			continue // this test
		}
		rules, ok := allowed[pkg]
		if !ok {
			t.Errorf("%s has no entry in the layer table: add one", pkg)
			continue
		}
		seen[pkg] = true
		for _, imp := range fields[1:] {
			dep, internal := strings.CutPrefix(imp, module)
			if !internal || strings.HasPrefix(dep, pkg+"/") || permitted(dep, rules) {
				continue
			}
			t.Errorf("%s imports %s, which its layer does not allow", pkg, dep)
		}
	}
	for pkg := range allowed {
		if !seen[pkg] {
			t.Errorf("the layer table names %s, which go list did not find", pkg)
		}
	}
}

func permitted(dep string, rules []string) bool { return slices.Contains(rules, dep) }
