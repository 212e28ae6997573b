package shadow

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"reflect"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/rewrited/rewrited/service/policy"
)

func compile(t *testing.T, src string, opts policy.Options) *policy.Policy {
	t.Helper()
	opts.Name = "p"
	opts.PoolSize = 1
	p, _, err := policy.Compile("p.lua", []byte(src), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// one is a Candidates holding one candidate, for every name.
type one struct{ p *policy.Policy }

func (o one) Candidate(string) (*policy.Policy, bool) { return o.p, o.p != nil }

// results collects OnCompare calls.
type results struct {
	mu   sync.Mutex
	list []string
}

func (r *results) add(_, result string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.list = append(r.list, result)
}

func (r *results) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.list...)
}

func TestCompare(t *testing.T) {
	const live = `kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  conn_meta:set_meta('n', 1)
  if status == 550 then return 550, 'no such user' end
end)`
	tests := []struct {
		name, candidate string
		shadowLive      bool
		status          int
		want            string
	}{
		{"same source", live, false, 550, Same},
		{"same reply, other meta", `kumo.on('smtp_server_rewrite_response', function(status) if status == 550 then return 550, 'no such user' end end)`, false, 550, Different},
		{"other text", `kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  conn_meta:set_meta('n', 1)
  return status, 'hello'
end)`, false, 550, Different},
		{"candidate fails", `kumo.on('smtp_server_rewrite_response', function() error('boom') end)`, false, 550, Error},
		{"candidate returns an invalid code", `kumo.on('smtp_server_rewrite_response', function() return 999, 'x' end)`, false, 250, Error},
		{"both shadowed, same proposal", live, true, 550, Same},
		{"both shadowed, other proposal", `kumo.on('smtp_server_rewrite_response', function() return 451, 'later' end)`, true, 550, Different},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := compile(t, live, policy.Options{Shadow: tt.shadowLive})
			c := compile(t, tt.candidate, policy.Options{Shadow: tt.shadowLive})
			in := policy.Input{Status: tt.status, Response: "5.1.1 unknown"}
			if got := Compare(l.Evaluate(context.Background(), in), c.Evaluate(context.Background(), in)); got != tt.want {
				t.Errorf("Compare = %s, want %s", got, tt.want)
			}
		})
	}
}

// TestComparesACopyOfTheRequest: the candidate runs after the call returned
// and the server reused the request's buffer; it must see the request as
// received, and its log line show both replies, the command redacted.
func TestComparesACopyOfTheRequest(t *testing.T) {
	const echo = `kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  return 250, response .. ' ' .. command .. ' ' .. conn_meta:get_meta('id')
end)`
	live := compile(t, echo, policy.Options{})
	cand := compile(t, `kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  return 250, response .. ' ' .. command .. ' ' .. conn_meta:get_meta('id') .. ' v2'
end)`, policy.Options{})
	var logs bytes.Buffer
	var got results
	s := &Shadow{cfg: Config{Candidates: one{cand}, Sample: 1, LogSample: 1, OnCompare: got.add, Logger: slog.New(slog.NewJSONHandler(&logs, nil))}, jobs: make(chan job, 1)}

	meta, err := policy.MetaFromMap(map[string]any{"id": "abc"})
	if err != nil {
		t.Fatal(err)
	}
	buf := append(append([]byte("OK AUTH PLAIN c2VjcmV0"), meta...), "tail"...)
	response := unsafe.String(&buf[0], 2) // as the server's codec shares the message
	command := "AUTH PLAIN c2VjcmV0"
	in := policy.Input{Status: 250, Response: response, Command: &command, Meta: buf[22 : 22+len(meta)]}
	d := live.Evaluate(context.Background(), in)
	s.Observe(context.Background(), live, in, d, time.Millisecond)
	for i := range buf {
		buf[i] = 0xff
	}
	command = "garbage"
	s.compare(<-s.jobs)

	if want := []string{Different}; len(got.get()) != 1 || got.get()[0] != Different {
		t.Fatalf("results %v, want %v", got.get(), want)
	}
	var rec map[string]any
	if err := json.Unmarshal(logs.Bytes(), &rec); err != nil {
		t.Fatalf("%v: %s", err, logs.String())
	}
	for k, want := range map[string]any{
		"msg": "shadow: candidate differs", "policy": "p", "result": Different, "command": "AUTH PLAIN [redacted]",
		"version": live.Version(), "shadow_version": cand.Version(),
		"live_response": "OK AUTH PLAIN c2VjcmV0 abc", "shadow_response": "OK AUTH PLAIN c2VjcmV0 abc v2",
		"live_outcome": "rewritten", "shadow_outcome": "rewritten",
	} {
		if rec[k] != want {
			t.Errorf("%s = %v, want %v", k, rec[k], want)
		}
	}
}

// TestSkipsWhenBusy: with the one worker held by a runaway candidate and
// the queue full, a further request is skipped and counted, at once.
func TestSkipsWhenBusy(t *testing.T) {
	live := compile(t, `kumo.on('smtp_server_rewrite_response', function() end)`, policy.Options{})
	cand := compile(t, `kumo.on('smtp_server_rewrite_response', function() while true do end end)`, policy.Options{EvalTimeout: 200 * time.Millisecond})
	var got results
	s := New(Config{Candidates: one{cand}, Sample: 1, Workers: 1, Queue: 1, OnCompare: got.add})
	in := policy.Input{Status: 250, Response: "OK"}
	d := live.Evaluate(context.Background(), in)
	s.Observe(context.Background(), live, in, d, 0)
	for len(s.jobs) != 0 { // the worker took the first
		time.Sleep(time.Millisecond)
	}
	s.Observe(context.Background(), live, in, d, 0) // waits in the queue
	s.Observe(context.Background(), live, in, d, 0) // finds it full
	if r := got.get(); len(r) != 1 || r[0] != Skipped {
		t.Errorf("results %v, want [skipped]", r)
	}
	for len(got.get()) < 3 {
		time.Sleep(time.Millisecond)
	}
	s.Close()
	if r := got.get(); r[1] != Error || r[2] != Error {
		t.Errorf("results %v, want the runaway candidate's two timeouts as shadow_error", r)
	}
}

func TestNoCandidateOrNotSampled(t *testing.T) {
	live := compile(t, `kumo.on('smtp_server_rewrite_response', function() end)`, policy.Options{})
	for _, cfg := range []Config{{Candidates: one{}, Sample: 1}, {Candidates: one{live}, Sample: 0}} {
		var got results
		cfg.OnCompare = got.add
		s := &Shadow{cfg: cfg, jobs: make(chan job)}
		in := policy.Input{Status: 250, Response: "OK"}
		s.Observe(context.Background(), live, in, live.Evaluate(context.Background(), in), 0)
		if len(got.get()) != 0 {
			t.Errorf("%+v: compared %v", cfg, got.get())
		}
	}
}

func TestCloneDecisionSharesNoString(t *testing.T) {
	buf := []byte("OK nested")
	text := unsafe.String(&buf[0], len(buf))
	d := policy.Decision{
		Reply:       policy.Reply{Status: 250, Response: text},
		Proposed:    &policy.Reply{Status: 250, Response: text},
		MetaUpdates: map[string]any{"a": text, "b": []any{text, 1.0, map[string]any{"c": text}}},
	}
	c := cloneDecision(d)
	copy(buf, "XXXXXXXXX")
	want := map[string]any{"a": "OK nested", "b": []any{"OK nested", 1.0, map[string]any{"c": "OK nested"}}}
	if c.Response != "OK nested" || c.Proposed.Response != "OK nested" || !reflect.DeepEqual(c.MetaUpdates, want) {
		t.Errorf("the copy changed with the original: %+v %+v", c, c.MetaUpdates)
	}
}
