package decisionlog

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

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
		{"AUTH XOAUTH2-BUT-FAR-TOO-LONG-NAME token", "AUTH [redacted]"},
		// KumoMTA passes the raw SASL response as the command on failure.
		{"AGFsaWNlAHMzY3JldA==", "[redacted]"},
		{"YWxpY2U= trailing", "[redacted]"},
		{"", "[redacted]"},
		{"*", "[redacted]"},
		{"DATA " + strings.Repeat("x", 300), "DATA " + strings.Repeat("x", maxTextBytes-5) + "…"},
	}
	for _, tt := range tests {
		if got := Command(tt.in); got != tt.want {
			t.Errorf("Command(%q) = %q, want %q", tt.in, got, tt.want)
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

func TestObserveLogsSampledDecisionsWithoutSecrets(t *testing.T) {
	const secret = "AGFsaWNlAHMzY3JldA=="
	const src = `kumo.on('smtp_server_rewrite_response', function(status) if status == 535 then return 454, 'try later' end end)`
	tests := []struct {
		name                 string
		shadow               bool
		sample, shadowSample float64
		command              string
		wantMsg              string
		wantAttrs            map[string]any
	}{
		{name: "AUTH line", sample: 1, command: "AUTH PLAIN " + secret, wantMsg: "decision",
			wantAttrs: map[string]any{"policy": "p", "outcome": "rewritten", "status_in": 535.0, "status_out": 454.0, "command": "AUTH PLAIN [redacted]"}},
		{name: "SASL continuation", sample: 1, command: secret, wantMsg: "decision",
			wantAttrs: map[string]any{"command": "[redacted]"}},
		{name: "shadowed", shadow: true, shadowSample: 1, command: "AUTH PLAIN " + secret, wantMsg: "shadow: would rewrite",
			wantAttrs: map[string]any{"outcome": "shadowed", "status_out": 535.0, "proposed_status": 454.0, "proposed_response": "try later", "response_in": "authentication failed"}},
		{name: "sampling off", sample: 0, shadowSample: 1, command: "DATA"},
		{name: "shadow sampling off", shadow: true, sample: 1, command: "DATA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := compile(t, src, tt.shadow)
			var buf bytes.Buffer
			l := New(slog.New(slog.NewJSONHandler(&buf, nil)), tt.sample, tt.shadowSample)
			cmd := tt.command
			in := policy.Input{Status: 535, Response: "authentication failed", Command: &cmd}
			d := p.Evaluate(context.Background(), in)
			l.Observe(context.Background(), p, in, d, 42*time.Microsecond)

			if strings.Contains(buf.String(), secret) {
				t.Fatalf("the log holds the secret: %s", buf.String())
			}
			if tt.wantMsg == "" {
				if buf.Len() != 0 {
					t.Fatalf("logged %s", buf.String())
				}
				return
			}
			var rec map[string]any
			if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
				t.Fatalf("%v: %s", err, buf.String())
			}
			if rec["msg"] != tt.wantMsg || rec["version"] != p.Version() || rec["elapsed"] != 42000.0 {
				t.Errorf("logged %v", rec)
			}
			for k, v := range tt.wantAttrs {
				if rec[k] != v {
					t.Errorf("%s = %v, want %v (%s)", k, rec[k], v, buf.String())
				}
			}
		})
	}
}
