package decisionlog

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/rewrited/rewrited/service/policy"
)

func TestCommand(t *testing.T) {
	tests := []struct{ in, want string }{
		{"DATA", "DATA"},
		{"MAIL FROM:<a@example.com> SIZE=100", "MAIL FROM:<a@example.com> SIZE=100"},
		{"rcpt to:<b@example.com>", "rcpt to:<b@example.com>"},
		{"AUTH PLAIN AGFsaWNlAHMzY3JldA==", "AUTH PLAIN [redacted]"},
		{"auth login YWxpY2U=", "AUTH LOGIN [redacted]"},
		{"AUTH PLAIN", "AUTH PLAIN"},
		{"AUTH CRAM-MD5", "AUTH CRAM-MD5"},
		{"AUTH", "AUTH"},
		{"AUTH s3cret!", "AUTH [redacted]"},
		{"AUTH hunter2", "AUTH [redacted]"},
		{"AUTH XOAUTH2-BUT-FAR-TOO-LONG-NAME token", "AUTH [redacted]"},
		// KumoMTA passes the raw SASL response as the command on failure.
		{"AGFsaWNlAHMzY3JldA==", "[redacted]"},
		{"YWxpY2U= trailing", "[redacted]"},
		{"", "[redacted]"},
		{"*", "[redacted]"},
		{"DATA " + strings.Repeat("x", 300), "DATA " + strings.Repeat("x", maxTextBytes-5) + "…"},
		{"é" + strings.Repeat("x", 300), "[redacted]"},
	}
	for _, tt := range tests {
		if got := Command(tt.in); got != tt.want {
			t.Errorf("Command(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRedactMarksWhatItRemoved(t *testing.T) {
	tests := []struct {
		in, want string
		redacted bool
	}{
		{"RCPT TO:<" + strings.Repeat("x", 400) + ">", "RCPT TO:<" + strings.Repeat("x", 400) + ">", false},
		{"AUTH PLAIN", "AUTH PLAIN", false},
		{"AUTH PLAIN AGFsaWNl", "AUTH PLAIN [redacted]", true},
		{"AGFsaWNl", "[redacted]", true},
	}
	for _, tt := range tests {
		if got, redacted := Redact(tt.in); got != tt.want || redacted != tt.redacted {
			t.Errorf("Redact(%q) = %q, %v; want %q, %v", tt.in, got, redacted, tt.want, tt.redacted)
		}
	}
}

func compile(t *testing.T, src string, shadow bool) *policy.Policy {
	t.Helper()
	p, _, err := policy.Compile("p.lua", []byte(src), policy.Options{Name: "p", Shadow: shadow, PoolSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

const secret = "AGFsaWNlAHMzY3JldA=="

// rewrites535 turns 535 into 454 and records what it saw in conn_meta.
const rewrites535 = `kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  conn_meta:set_meta('seen', status)
  if status == 535 then return 454, 'try later' end
end)`

func meta(t *testing.T, m map[string]any) policy.Meta {
	t.Helper()
	b, err := policy.MetaFromMap(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// traced is a context carrying a sampled remote span, as the gRPC server's
// tracing interceptor leaves it.
func traced(t *testing.T) (context.Context, string) {
	t.Helper()
	tid, err := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	if err != nil {
		t.Fatal(err)
	}
	sid, err := trace.SpanIDFromHex("00f067aa0ba902b7")
	if err != nil {
		t.Fatal(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
	return trace.ContextWithRemoteSpanContext(context.Background(), sc), tid.String()
}

func TestRecordsToAFile(t *testing.T) {
	p := compile(t, rewrites535, false)
	ctx, traceID := traced(t)
	tests := []struct {
		name     string
		ctx      context.Context
		fullMeta bool
		command  string
		check    func(t *testing.T, rec *Record, raw map[string]any)
	}{
		{name: "keys only, AUTH redacted, traced", ctx: ctx, command: "AUTH PLAIN " + secret, check: func(t *testing.T, rec *Record, raw map[string]any) {
			if *rec.Command != "AUTH PLAIN [redacted]" || !rec.CommandRedacted {
				t.Errorf("command %q redacted %v", *rec.Command, rec.CommandRedacted)
			}
			if !slices.Equal(rec.ConnMetaKeys, []string{"ehlo_domain", "received_from"}) || rec.ConnMeta != nil {
				t.Errorf("conn_meta %v, keys %v", rec.ConnMeta, rec.ConnMetaKeys)
			}
			if rec.TraceID != traceID {
				t.Errorf("trace_id %q, want %q", rec.TraceID, traceID)
			}
			if got := rec.Missing(); !slices.Equal(got, []string{"command (redacted)", "conn_meta (keys only)"}) {
				t.Errorf("Missing() = %v", got)
			}
		}},
		{name: "whole conn_meta, untraced", ctx: context.Background(), fullMeta: true, command: "DATA", check: func(t *testing.T, rec *Record, raw map[string]any) {
			if rec.ConnMeta["ehlo_domain"] != "mx.example.com" || rec.ConnMeta["received_from"] != "192.0.2.7:52100" || rec.ConnMetaKeys != nil {
				t.Errorf("conn_meta %v, keys %v", rec.ConnMeta, rec.ConnMetaKeys)
			}
			if _, ok := raw["trace_id"]; ok || rec.CommandRedacted {
				t.Errorf("record %v", raw)
			}
			if got := rec.Missing(); len(got) != 0 {
				t.Errorf("Missing() = %v", got)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "decisions.jsonl")
			f, err := os.Create(file)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var logs bytes.Buffer
			l := New(Config{Logger: slog.New(slog.NewJSONHandler(&logs, nil)), File: f, Sample: 1, FullMeta: tt.fullMeta})
			cmd := tt.command
			in := policy.Input{Status: 535, Response: "5.7.8 authentication failed", Command: &cmd,
				Meta: meta(t, map[string]any{"received_from": "192.0.2.7:52100", "ehlo_domain": "mx.example.com"})}
			before := time.Now().UTC()
			l.Observe(tt.ctx, p, in, p.Evaluate(context.Background(), in), 42*time.Microsecond)

			if logs.Len() != 0 {
				t.Errorf("with a file, the log got %s", logs.String())
			}
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(data), secret) {
				t.Fatalf("the record holds the secret: %s", data)
			}
			if strings.Count(string(data), "\n") != 1 || !strings.HasSuffix(string(data), "\n") {
				t.Fatalf("want one JSON line, got %q", data)
			}
			var rec Record
			var raw map[string]any
			if err := json.Unmarshal(data, &rec); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(data, &raw); err != nil {
				t.Fatal(err)
			}
			if rec.Schema != SchemaVersion || rec.Policy != "p" || rec.Version != p.Version() || rec.Time.Before(before) ||
				*rec.Status != 535 || *rec.Response != "5.7.8 authentication failed" || rec.Outcome != "rewritten" ||
				*rec.Reply != (Reply{454, "try later"}) || rec.MetaUpdates["seen"] != 535.0 || rec.ElapsedMicros != 42 || rec.Check() != nil {
				t.Errorf("record %s", data)
			}
			tt.check(t, &rec, raw)
		})
	}
}

func TestLogLinesReadAsRecords(t *testing.T) {
	const src = `kumo.on('smtp_server_rewrite_response', function(status) if status == 535 then return 454, 'try later' end end)`
	tests := []struct {
		name                 string
		shadow               bool
		sample, shadowSample float64
		wantMsgs             []string
		wantOutcome          string
		wantProposed         *Reply
	}{
		{name: "decision", sample: 1, wantMsgs: []string{"decision"}, wantOutcome: "rewritten"},
		{name: "shadowed, both sampled", shadow: true, sample: 1, shadowSample: 1,
			wantMsgs: []string{"shadow: would rewrite", "decision"}, wantOutcome: "shadowed", wantProposed: &Reply{454, "try later"}},
		{name: "shadowed, shadow lines only", shadow: true, shadowSample: 1,
			wantMsgs: []string{"shadow: would rewrite"}, wantOutcome: "shadowed", wantProposed: &Reply{454, "try later"}},
		{name: "sampling off", sample: 0, shadowSample: 1},
		{name: "shadow sampling off", shadow: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := compile(t, src, tt.shadow)
			var buf bytes.Buffer
			l := New(Config{Logger: slog.New(slog.NewJSONHandler(&buf, nil)), Sample: tt.sample, ShadowSample: tt.shadowSample})
			cmd := secret
			in := policy.Input{Status: 535, Response: "authentication failed", Command: &cmd}
			l.Observe(context.Background(), p, in, p.Evaluate(context.Background(), in), time.Millisecond)

			if strings.Contains(buf.String(), secret) {
				t.Fatalf("the log holds the secret: %s", buf.String())
			}
			var msgs []string
			for line := range strings.Lines(buf.String()) {
				var rec struct {
					Record
					Msg string `json:"msg"`
				}
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatalf("%v: %s", err, line)
				}
				msgs = append(msgs, rec.Msg)
				if rec.Check() != nil || rec.Outcome != tt.wantOutcome || *rec.Command != "[redacted]" || !rec.CommandRedacted ||
					*rec.Status != 535 || (rec.Reply.Status == 535) != tt.shadow || rec.ElapsedMicros != 1000 || rec.Time.IsZero() {
					t.Errorf("logged %s", line)
				}
				if (rec.Proposed == nil) != (tt.wantProposed == nil) || (rec.Proposed != nil && *rec.Proposed != *tt.wantProposed) {
					t.Errorf("proposed %v, want %v", rec.Proposed, tt.wantProposed)
				}
			}
			if !slices.Equal(msgs, tt.wantMsgs) {
				t.Errorf("logged %q, want %q", msgs, tt.wantMsgs)
			}
		})
	}
}

func TestCheckRefusesUnknownSchemas(t *testing.T) {
	for _, schema := range []int{0, SchemaVersion + 1} {
		if err := (&Record{Schema: schema}).Check(); err == nil {
			t.Errorf("schema %d accepted", schema)
		}
	}
}
