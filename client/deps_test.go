package client

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps the client light enough to embed in any frontend.
func TestDependencies(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"gopher-lua", "prometheus", "github.com/rewrited/rewrited/service"} {
			if strings.Contains(dep, banned) {
				t.Errorf("client depends on %s", dep)
			}
		}
	}
}
