package policy_test

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/rewrited/rewrited/service/policy"
	"github.com/rewrited/rewrited/smtpreply"
)

// echoPolicy returns whatever the request's conn_meta holds under x_status
// and x_text, so the fuzzer controls the handler's return values.
const echoPolicy = `
kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  local s, t = conn_meta:get_meta('x_status'), conn_meta:get_meta('x_text')
  if command == 'APPEND' then t = response .. tostring(t) end
  return s, t
end)
`

var (
	echoOnce sync.Once
	echo     *policy.Policy
)

// metaValue builds a conn_meta value of the kind the fuzzer picked: absent
// (Lua nil), a number, a string, a boolean, a list or an object.
func metaValue(kind uint8, n float64, s string) *structpb.Value {
	switch kind % 6 {
	case 1:
		return structpb.NewNumberValue(n)
	case 2:
		return structpb.NewStringValue(s)
	case 3:
		return structpb.NewBoolValue(n > 0)
	case 4:
		return structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewStringValue(s)}})
	case 5:
		return structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"s": structpb.NewStringValue(s)}})
	}
	return nil
}

// FuzzResult: whatever the handler returns, the decision is a valid SMTP
// reply, or the original with an outcome and an error saying why.
func FuzzResult(f *testing.F) {
	for _, seed := range []struct {
		status        uint16
		orig, command string
		sKind         uint8
		sNum          float64
		sStr          string
		tKind         uint8
		tNum          float64
		tStr          string
	}{
		{250, "OK", "DATA", 1, 550, "", 2, 0, "no"},
		{250, "OK", "DATA", 2, 0, "0x1f4", 0, 0, ""},
		{250, "OK", "", 2, 0, " 421 ", 2, 0, "bye\r\n250 injected"},
		{250, "OK", "", 1, 250, "", 2, 0, "a\r250 injected"},
		{250, "OK", "", 1, 250.9, "", 1, 1e300, ""},
		{250, "OK", "", 1, -250, "", 0, 0, ""},
		{250, "OK", "", 1, 999, "", 0, 0, ""},
		{250, "OK", "", 1, math.NaN(), "", 0, 0, ""},
		{250, "OK", "", 1, math.Inf(1), "", 0, 0, ""},
		{250, "OK", "", 1, 65536 + 250, "", 0, 0, ""},
		{250, "OK", "", 3, 1, "", 3, 0, ""},
		{250, "OK", "", 4, 0, "250", 5, 0, "x"},
		{250, "OK", "", 0, 0, "", 2, 0, "\n\n"},
		{250, "OK", "", 0, 0, "", 2, 0, "\x00"},
		{250, "OK", "", 0, 0, "", 2, 0, "\xff"},
		{250, "OK", "APPEND", 0, 0, "", 2, 0, "\n"},
		{250, "OK", "", 0, 0, "", 2, 0, string(make([]byte, 600))},
	} {
		f.Add(seed.status, seed.orig, seed.command, seed.sKind, seed.sNum, seed.sStr, seed.tKind, seed.tNum, seed.tStr)
	}
	// The policy is shared by every input and closed with the fuzz target,
	// so its states (and the deadline watchdog) do not outlive the test.
	f.Cleanup(func() {
		if echo != nil {
			echo.Close()
		}
	})
	f.Fuzz(func(t *testing.T, st uint16, orig, command string, sKind uint8, sNum float64, sStr string, tKind uint8, tNum float64, tStr string) {
		// The service only passes valid requests to the engine.
		if !smtpreply.ValidStatus(int(st)) {
			return
		}
		if orig != "" {
			clean, err := smtpreply.Sanitize(orig)
			if err != nil {
				return
			}
			orig = clean
		}
		echoOnce.Do(func() {
			p, _, err := policy.Compile("echo.lua", []byte(echoPolicy), policy.Options{EvalTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			echo = p
		})
		fields := map[string]*structpb.Value{}
		if v := metaValue(sKind, sNum, sStr); v != nil {
			fields["x_status"] = v
		}
		if v := metaValue(tKind, tNum, tStr); v != nil {
			fields["x_text"] = v
		}
		meta, err := policy.MetaFromStruct(&structpb.Struct{Fields: fields})
		if err != nil {
			return // a string that is not UTF-8 cannot be in a Struct
		}
		in := policy.Input{Status: int(st), Response: orig, Command: &command, Meta: meta}
		checkDecision(t, in, echo.Evaluate(context.Background(), in))
		if k := sKind % 6; k >= 3 {
			// Tables and booleans are never statuses.
			if d := echo.Evaluate(context.Background(), in); d.Rewritten {
				t.Fatalf("a %v status was accepted: %+v", fields["x_status"], d)
			}
		}
	})
}

// checkDecision asserts Evaluate's contract for one input.
func checkDecision(t *testing.T, in policy.Input, d policy.Decision) {
	t.Helper()
	if !sendable(in, d) {
		t.Fatalf("input %+v: no reply to send in %+v", in, d)
	}
	failed := d.Outcome == policy.OutcomePolicyError || d.Outcome == policy.OutcomeTimeout || d.Outcome == policy.OutcomeInvalidResult
	switch {
	case d.Rewritten != (d.Outcome == policy.OutcomeRewritten):
		t.Fatalf("input %+v: rewritten %v with outcome %v", in, d.Rewritten, d.Outcome)
	case failed != (d.Err != nil):
		t.Fatalf("input %+v: outcome %v with error %v", in, d.Outcome, d.Err)
	case d.Outcome == policy.OutcomeUnspecified:
		t.Fatalf("input %+v: no outcome", in)
	case d.CloseConnection != (d.Status == 421):
		t.Fatalf("input %+v: close_connection %v with status %d", in, d.CloseConnection, d.Status)
	}
}

// fuzzLoadTimeout bounds a fuzzed policy's top level; a compile that runs
// far past it is a hang.
const fuzzLoadTimeout = 50 * time.Millisecond

// FuzzCompile: arbitrary source never panics the loader nor runs past its
// LoadTimeout; a policy that loads answers a request with a valid decision
// within its EvalTimeout.
func FuzzCompile(f *testing.F) {
	examples, err := filepath.Glob("../../examples/policies/*.lua")
	if err != nil || len(examples) == 0 {
		f.Fatalf("no example policies: %v", err)
	}
	for _, path := range examples {
		src, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
	for _, src := range []string{
		seed,
		"while true do end",
		"local function f(...) return f(1, ...) end f()",
		"local x = 1 // 2",
		"local s <const> = 1",
		`local s = "\u{48}"`,
		"kumo.on('smtp_server_rewrite_response', function() return 250, string.rep('x', 1e9) end)",
		"kumo.on('smtp_server_rewrite_response', function() end) kumo.on('smtp_server_rewrite_response', function() end)",
		"kumo.on('smtp_server_rewrite_response', function(s, r, c, m) return m, m end)",
		"kumo.on('other', print)",
		"goto x ::x::",
		"return",
		"\x1bLua",
		"--[==[",
		"kumo.nope()",
		"local k = require 'kumo' local x = k.dns.lookup_ptr .. #k.nope + -k.none",
		"require 'policy-extras.none'",
		"dofile('/etc/passwd')",
		"package.path = '/?;' .. package.path require 'etc.passwd'",
		"print(os.date('%Ez'), os.time{year = 2024})",
		"kumo.on('smtp_server_rewrite_response', function() return 250, kumo.make_queue_config{} .. nil end)",
	} {
		f.Add([]byte(src))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		start := time.Now()
		p, _, err := policy.Compile("fuzz.lua", src, policy.Options{LoadTimeout: fuzzLoadTimeout, EvalTimeout: fuzzLoadTimeout, PoolSize: 1})
		// Generous: 2 shared cores, and the parser runs before the timer.
		if elapsed := time.Since(start); elapsed > fuzzLoadTimeout+3*time.Second {
			t.Fatalf("Compile took %v with a LoadTimeout of %v", elapsed, fuzzLoadTimeout)
		}
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty load error")
			}
			return
		}
		defer p.Close()
		in := dataInput()
		start = time.Now()
		d := p.Evaluate(context.Background(), in)
		if elapsed := time.Since(start); elapsed > fuzzLoadTimeout+3*time.Second {
			t.Fatalf("Evaluate took %v with an EvalTimeout of %v", elapsed, fuzzLoadTimeout)
		}
		checkDecision(t, in, d)
	})
}
