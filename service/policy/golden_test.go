package policy_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/rewrited/rewrited/service/policy"
	"github.com/rewrited/rewrited/service/policytest"
)

// TestGolden runs every case of testdata/*.yaml through the service path.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, path := range files {
		f, err := policytest.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		// A budget a loaded machine cannot exhaust by accident: only the
		// endless-loop case reaches it.
		for _, r := range f.Run(context.Background(), policy.Options{EvalTimeout: 300 * time.Millisecond}) {
			t.Run(r.Case.Name, func(t *testing.T) {
				for _, failure := range r.Failures {
					t.Errorf("%s:%d: %s", path, r.Case.Line, failure)
				}
			})
		}
	}
}
