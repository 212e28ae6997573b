package reliability_test

import (
	"context"
	"errors"
	"testing"

	"github.com/rewrited/rewrited/client"
	"github.com/rewrited/rewrited/internal/rewritedtest"
	"github.com/rewrited/rewrited/test/reliability/knownbug"
	"github.com/rewrited/rewrited/test/reliability/load"
	"github.com/rewrited/rewrited/test/reliability/record"
)

// faultyPolicy misbehaves according to the command it is given.
const faultyPolicy = `
kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  if command == 'not-utf8-error' then error(response:sub(2)) end
  if command == 'big-meta' then
    local s = string.rep('x', 2^20)
    for i = 1, 8 do conn_meta:set_meta('x_' .. i, s) end
  end
  if command == 'loop' then while true do end end
  if command == 'bad-result' then return 250, 'a\r250 injected' end
  return 250, 'ok: ' .. response
end)
`

// TestPolicyFaultsEndToEnd: through a real process and the client, a
// failing policy costs the frontend nothing but the rewrite: the original
// comes back with a policy error, never as a failed call (which the breaker
// would count against the fleet), and the next call is rewritten.
func TestPolicyFaultsEndToEnd(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, "default.lua", faultyPolicy)
	srv := rewritedtest.Start(t, "--policy-dir", dir, "--eval-timeout", "20ms")
	c := newClient(t, srv.Addr)
	for _, tc := range []struct {
		command, text, bug string
	}{
		{"loop", "OK", ""},
		{"bad-result", "OK", ""},
		{"not-utf8-error", "é", ""},
		{"big-meta", "OK", ""},
	} {
		t.Run(tc.command, func(t *testing.T) {
			rec := record.New(t, "fault", "end to end: "+tc.command)
			rec.Bug = tc.bug
			orig := client.Reply{Status: 250, Text: tc.text, Command: tc.command}
			res := c.Rewrite(context.Background(), orig, nil)
			rec.Calls = 2
			rec.Detail = "client: " + load.Class(orig, res)
			if res.Err != nil {
				rec.Detail += ": " + res.Err.Error()
			}
			if !load.Valid(orig, res) {
				rec.Lost = 1
				t.Fatalf("no valid reply: %+v", res)
			}
			if res.Rewritten || !errors.Is(res.Err, client.ErrPolicy) {
				if tc.bug != "" {
					knownbug.Skip(t, tc.bug)
				}
				t.Errorf("got %+v, want the original with a policy error", res)
			}
			next := client.Reply{Status: 250, Text: "OK", Command: "DATA"}
			if res := c.Rewrite(context.Background(), next, nil); res.Err != nil || res.Text != "ok: OK" {
				t.Errorf("the next call: %+v", res)
			}
		})
	}
}
