package policy

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// globalsOf is a policy whose top level keeps n distinct 1 KB strings in
// a global table.
func globalsOf(n int) string {
	return fmt.Sprintf(`big = {}
for i = 1, %d do big[i] = string.rep('x', 1000) .. i end
kumo.on('smtp_server_rewrite_response', function() end)`, n)
}

func TestStateMemoryCap(t *testing.T) {
	tests := []struct {
		name    string
		src     string
		max     int
		refused bool
	}{
		{"1 MB of globals under a 4 MiB cap", globalsOf(1000), 4 << 20, false},
		{"10 MB of globals over a 4 MiB cap", globalsOf(10_000), 4 << 20, true},
		{"10 MB of globals under the default cap", globalsOf(10_000), 0, false},
		{"40 MB of globals over the default cap", globalsOf(40_000), 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The load budget is generous: a busy machine running the race
			// detector must not turn the size check into a timeout.
			p, _, err := Compile("globals.lua", []byte(tt.src), Options{MaxStateBytes: tt.max, PoolSize: 1, LoadTimeout: time.Minute})
			if p != nil {
				p.Close()
			}
			var le *LoadError
			refused := errors.As(err, &le) && strings.Contains(le.Message, "(--max-state-bytes)")
			if refused != tt.refused || (err != nil && !refused) {
				t.Errorf("Compile: %v, want refused %v", err, tt.refused)
			}
		})
	}
}
