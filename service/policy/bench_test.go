package policy_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rewrited/rewrited/examples/policies"
	"github.com/rewrited/rewrited/service/policy"
)

// Engine benchmarks beyond BenchmarkEvaluate (the example policy with a
// 5-key conn_meta): larger metadata, policies that read it or use regexes,
// long replies, and how the cost grows with the size of each.

// readsOneKey reads one metadata key in the reply it rewrites.
const readsOneKey = `
kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  if command == 'DATA' and status == 250 then
    return 250, response .. ' via ' .. conn_meta:get_meta('hostname')
  end
end)
`

// regexInHandler compiles its regex on every call, as policies often do;
// kumo.regex.compile caches the compiled pattern.
const regexInHandler = `
kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  local re = kumo.regex.compile('^5\\.1\\.1 <[^>]+>')
  if status >= 500 and re:is_match(response) then
    return status, re:replace(response, '5.1.1 <redacted>')
  end
end)
`

// regexTopLevel compiles its regex once per state, at load.
const regexTopLevel = `
local re = kumo.regex.compile('^5\\.1\\.1 <[^>]+>')
kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  if status >= 500 and re:is_match(response) then
    return status, re:replace(response, '5.1.1 <redacted>')
  end
end)
`

// perLine drops one line of a multi-line EHLO reply.
const perLine = `
kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  if command ~= 'EHLO' then return end
  local kept = {}
  for _, line in ipairs(kumo.string.split(response, '\n')) do
    if line ~= 'CHUNKING' then kept[#kept + 1] = line end
  end
  return status, table.concat(kept, '\n')
end)
`

// benchMeta is the 5 keys an SMTP frontend sends, padded with extra keys up
// to n.
func benchMeta(b *testing.B, n int) policy.Meta {
	b.Helper()
	m := map[string]any{
		"received_from": "192.0.2.10:52344", "received_via": "192.0.2.1:25", "hostname": "mx1.example.net",
		"reception_protocol": "ESMTP", "ehlo_domain": "client.example.org",
	}
	for i := len(m); i < n; i++ {
		m[fmt.Sprintf("x_header_%03d", i)] = fmt.Sprintf("value of extra key %d", i)
	}
	meta, err := policy.MetaFromMap(m)
	if err != nil {
		b.Fatal(err)
	}
	return meta
}

// ehloReply is a 40-line EHLO reply.
func ehloReply() string {
	lines := []string{"mx1.example.net Hello client.example.org", "PIPELINING", "SIZE 36700160", "ETRN", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING"}
	for i := len(lines); i < 40; i++ {
		lines = append(lines, fmt.Sprintf("X-EXTENSION-%02d some-parameter", i))
	}
	return strings.Join(lines, "\n")
}

// responseOf is a reply text of n bytes, in lines of 80 octets: SMTP caps
// a reply line at 512.
func responseOf(n int) string {
	line := "\n" + strings.Repeat("x", 79)
	text := "OK ids=8f2a61c04be94d7e" + strings.Repeat(line, n/len(line))
	return text[:n-1] + "x" // no trailing newline, which would drop a line
}

// benchEval benchmarks one evaluation, after checking that the policy
// decides as the benchmark claims.
func benchEval(b *testing.B, src string, in policy.Input, rewritten bool) {
	p := compile(b, src, policy.Options{})
	ctx := context.Background()
	if d := p.Evaluate(ctx, in); d.Err != nil || d.Rewritten != rewritten {
		b.Fatalf("got %v (err %v), want rewritten=%v", d.Outcome, d.Err, rewritten)
	}
	b.ReportAllocs()
	for b.Loop() {
		if d := p.Evaluate(ctx, in); d.Err != nil {
			b.Fatal(d.Err)
		}
	}
}

func BenchmarkEvaluateExample(b *testing.B) {
	meta := benchMeta(b, 50)
	b.Run("rewrite/keys=50", func(b *testing.B) {
		benchEval(b, string(policies.Default), policy.Input{Status: 250, Response: "OK ids=8f2a61c04be94d7e", Command: str("DATA"), Meta: meta}, true)
	})
	b.Run("unchanged/keys=50", func(b *testing.B) {
		benchEval(b, string(policies.Default), policy.Input{Status: 250, Response: "OK", Command: str("RCPT TO:<a@example.com>"), Meta: meta}, false)
	})
}

func BenchmarkEvaluateRegex(b *testing.B) {
	in := policy.Input{Status: 550, Response: "5.1.1 <nobody@example.com>: Recipient address rejected: User unknown", Command: str("RCPT TO:<nobody@example.com>"), Meta: benchMeta(b, 5)}
	b.Run("compile-in-handler", func(b *testing.B) { benchEval(b, regexInHandler, in, true) })
	b.Run("compile-at-top-level", func(b *testing.B) { benchEval(b, regexTopLevel, in, true) })
	miss := in
	miss.Response = "5.7.1 Relaying denied"
	b.Run("no-match", func(b *testing.B) { benchEval(b, regexTopLevel, miss, false) })
}

func BenchmarkEvaluateMultiline(b *testing.B) {
	meta := benchMeta(b, 5)
	b.Run("example-policy", func(b *testing.B) {
		benchEval(b, string(policies.Default), policy.Input{Status: 250, Response: ehloReply(), Command: str("DATA"), Meta: meta}, true)
	})
	b.Run("per-line-policy", func(b *testing.B) {
		benchEval(b, perLine, policy.Input{Status: 250, Response: ehloReply(), Command: str("EHLO"), Meta: meta}, true)
	})
}

// BenchmarkEvaluateMetaSize is the growth curve in conn_meta size: a policy
// that never reads it should not notice it.
func BenchmarkEvaluateMetaSize(b *testing.B) {
	for _, pc := range []struct{ name, src string }{
		{"ignores-meta", string(policies.Default)},
		{"reads-one-key", readsOneKey},
	} {
		for _, n := range []int{5, 50, 500} {
			meta := benchMeta(b, n)
			b.Run(fmt.Sprintf("%s/keys=%d", pc.name, n), func(b *testing.B) {
				benchEval(b, pc.src, policy.Input{Status: 250, Response: "OK ids=8f2a61c04be94d7e", Command: str("DATA"), Meta: meta}, true)
			})
		}
	}
}

// BenchmarkEvaluateResponseSize is the growth curve in reply size, for a
// reply the example policy rewrites and one it leaves alone.
func BenchmarkEvaluateResponseSize(b *testing.B) {
	meta := benchMeta(b, 5)
	for _, n := range []int{100, 4 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("rewrite/bytes=%d", n), func(b *testing.B) {
			benchEval(b, string(policies.Default), policy.Input{Status: 250, Response: responseOf(n), Command: str("DATA"), Meta: meta}, true)
		})
		b.Run(fmt.Sprintf("unchanged/bytes=%d", n), func(b *testing.B) {
			benchEval(b, string(policies.Default), policy.Input{Status: 250, Response: responseOf(n), Command: str("RCPT TO:<a@example.com>"), Meta: meta}, false)
		})
	}
}

// BenchmarkEvaluateModule compares the example policy with one that does the
// same through a required module, as KumoMTA policies do, and with that
// module's code pasted into the policy: the last two differ only by
// require. The module wraps its helper in kumo.memoize when the build
// provides it.
func BenchmarkEvaluateModule(b *testing.B) {
	dir := b.TempDir()
	files := map[string]string{
		"init.lua": `local kumo = require 'kumo'
local replies = require 'site.replies'
kumo.on('smtp_server_rewrite_response', function(status, response, command, conn_meta)
  if replies.is_data_success(command, status) then
    return 250, replies.prefix('data') .. '\n' .. response
  end
end)
`,
		"site/replies.lua": `local kumo = require 'kumo'
local M = {}
function M.is_data_success(command, status) return command == 'DATA' and status == 250 end
local function prefix(kind) return kind == 'data' and 'super fantastic!' or '' end
M.prefix = prefix
if kumo.memoize then
  M.prefix = kumo.memoize(prefix, {name = 'prefix', ttl = '5 minutes', capacity = 10})
end
return M
`,
	}
	for name, body := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	in := policy.Input{Status: 250, Response: "OK ids=8f2a61c04be94d7e", Command: str("DATA"), Meta: benchMeta(b, 5)}
	b.Run("example", func(b *testing.B) { benchEval(b, string(policies.Default), in, true) })
	pasted := strings.Replace(files["init.lua"], "local replies = require 'site.replies'",
		"local replies = (function()\n"+files["site/replies.lua"]+"\nend)()", 1)
	b.Run("module-pasted", func(b *testing.B) { benchEval(b, pasted, in, true) })
	b.Run("required-module", func(b *testing.B) {
		file := filepath.Join(dir, "init.lua")
		src, err := os.ReadFile(file)
		if err != nil {
			b.Fatal(err)
		}
		p, _, err := policy.Compile(file, src, policy.Options{EvalTimeout: 2 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(p.Close)
		ctx := context.Background()
		if d := p.Evaluate(ctx, in); d.Err != nil || d.Response != "super fantastic!\n"+in.Response {
			b.Fatalf("got %q (err %v)", d.Response, d.Err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if d := p.Evaluate(ctx, in); d.Err != nil {
				b.Fatal(d.Err)
			}
		}
	})
}
