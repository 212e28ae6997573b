// Package record lets reliability tests append their measured results to the
// JSON-lines file named by RELIABILITY_RECORD, from which the report command
// rebuilds the table in docs/reliability.md.
package record

import (
	"encoding/json"
	"os"
	"sync"
	"testing"
)

// Env names the file results are appended to; unset, nothing is recorded.
const Env = "RELIABILITY_RECORD"

// Result is one measured outcome: a fault survived, a load held, a set of
// fuzz inputs tried.
type Result struct {
	Kind     string  `json:"kind"` // "fault", "overload", "fleet", "bad-client", "fuzz"
	Name     string  `json:"name"`
	Passed   bool    `json:"passed"`
	Detail   string  `json:"detail,omitempty"`
	Bug      string  `json:"bug,omitempty"`      // the open bug the test reproduces, if any
	Calls    int64   `json:"calls,omitempty"`    // decisions asked for
	Lost     int64   `json:"lost"`               // calls that returned no valid reply
	Fallback int64   `json:"fallback,omitempty"` // calls that kept the original because rewrited did not answer
	Shed     int64   `json:"shed,omitempty"`     // calls refused with ResourceExhausted
	P99ms    float64 `json:"p99_ms,omitempty"`
	MaxMs    float64 `json:"max_ms,omitempty"`
	PeakMB   float64 `json:"peak_mb,omitempty"`
	Execs    int64   `json:"execs,omitempty"`
}

var mu sync.Mutex

// New returns the Result of test t, which the test fills in as it measures;
// when t ends it is appended to the record file if RELIABILITY_RECORD is
// set, with Passed from t's state (a skipped test records nothing).
func New(t testing.TB, kind, name string) *Result {
	t.Helper()
	r := &Result{Kind: kind, Name: name}
	path := os.Getenv(Env)
	if path == "" {
		return r
	}
	t.Cleanup(func() {
		if t.Skipped() {
			return
		}
		r.Passed = !t.Failed()
		mu.Lock()
		defer mu.Unlock()
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Errorf("record: %v", err)
			return
		}
		defer f.Close()
		if err := json.NewEncoder(f).Encode(r); err != nil {
			t.Errorf("record: %v", err)
		}
	})
	return r
}
