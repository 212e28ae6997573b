package main

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rewrited/rewrited/internal/rewritedtest"
	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
	"github.com/rewrited/rewrited/service/policy"
)

// The live policy and its candidate: v2 keeps DATA and the banner, words
// 550 differently, and fails on 451.
const (
	tenantV1 = `kumo.on('smtp_server_rewrite_response', function(status, response, command)
  if command == 'DATA' then return 250, 'queued' end
  if status == 550 then return 550, '5.1.1 unknown user' end
end)
`
	tenantV2 = `kumo.on('smtp_server_rewrite_response', function(status, response, command)
  if command == 'DATA' then return 250, 'queued' end
  if status == 550 then return 550, '5.1.1 unknown user, see https://example.com/help' end
  if status == 451 then error('v2 bug') end
end)
`
)

// shadowCase is one request and the reply v1 sends for it.
type shadowCase struct {
	req  *rewritev1.RewriteResponseRequest
	want string
}

func shadowCases() []shadowCase {
	data, rcpt := "DATA", "RCPT TO:<nobody@example.com>"
	return []shadowCase{
		{&rewritev1.RewriteResponseRequest{Policy: "tenant", Status: 250, Response: "OK", Command: &data}, "queued"},
		{&rewritev1.RewriteResponseRequest{Policy: "tenant", Status: 250, Response: "OK", Command: &data}, "queued"},
		{&rewritev1.RewriteResponseRequest{Policy: "tenant", Status: 220, Response: "mx ready"}, "mx ready"},
		{&rewritev1.RewriteResponseRequest{Policy: "tenant", Status: 550, Response: "no", Command: &rcpt}, "5.1.1 unknown user"},
		{&rewritev1.RewriteResponseRequest{Policy: "tenant", Status: 550, Response: "no", Command: &rcpt}, "5.1.1 unknown user"},
		{&rewritev1.RewriteResponseRequest{Policy: "tenant", Status: 451, Response: "try later", Command: &rcpt}, "try later"},
	}
}

// TestServeShadowBesideLive serves tenant.lua (v1) with tenant.shadow.lua
// (v2) beside it: every reply is v1's, the comparisons count what differs
// and log both replies, and renaming v2 over v1 under load makes v2 live
// with no failed call.
func TestServeShadowBesideLive(t *testing.T) {
	dir := t.TempDir()
	live, candidate := filepath.Join(dir, "tenant.lua"), filepath.Join(dir, "tenant.shadow.lua")
	writeFile(t, live, tenantV1)
	writeFile(t, candidate, tenantV2)
	v1, v2 := policy.Version([]byte(tenantV1)), policy.Version([]byte(tenantV2))
	p := rewritedtest.Start(t, "--policy-dir", dir, "--metrics-listen", "127.0.0.1:0")
	conn := dial(t, p.Addr)
	ctx := testCtx(t)
	url := metricsURL(t, p)
	client := rewritev1.NewRewriteServiceClient(conn)

	for _, c := range shadowCases() {
		resp, err := client.RewriteResponse(ctx, c.req)
		if err != nil || resp.Response != c.want || resp.PolicyVersion != v1 {
			t.Fatalf("%d %s: got %v %v, want v1's %q", c.req.Status, c.req.GetCommand(), resp, err, c.want)
		}
	}
	comparisons := func(result string) string {
		return `rewrited_shadow_comparisons_total{policy="tenant",result="` + result + `"} `
	}
	eventually(t, "the six comparisons are counted", func() bool {
		body := scrape(t, url)
		return hasSample(body, comparisons("same")+"3") && hasSample(body, comparisons("different")+"2") && hasSample(body, comparisons("shadow_error")+"1")
	})
	body := scrape(t, url)
	if !hasSample(body, `rewrited_policy_info{policy="tenant",shadow_version="`+v2+`",version="`+v1+`"} 1`) {
		t.Errorf("rewrited_policy_info:\n%s", grepLines(body, "rewrited_policy_info"))
	}
	eventually(t, "the three differences are logged", func() bool { return len(logRecords(p, "shadow: candidate differs")) == 3 })
	byResult := map[string]int{}
	for _, rec := range logRecords(p, "shadow: candidate differs") {
		byResult[rec["result"].(string)]++
		if rec["policy"] != "tenant" || rec["version"] != v1 || rec["shadow_version"] != v2 || rec["command"] != "RCPT TO:<nobody@example.com>" {
			t.Errorf("logged %v", rec)
		}
		switch rec["result"] {
		case "different":
			if rec["live_response"] != "5.1.1 unknown user" || rec["shadow_response"] != "5.1.1 unknown user, see https://example.com/help" {
				t.Errorf("logged %v", rec)
			}
		case "shadow_error":
			if rec["shadow_outcome"] != "policy_error" || rec["shadow_response"] != "try later" || rec["shadow_error"] == nil {
				t.Errorf("logged %v", rec)
			}
		}
	}
	if byResult["different"] != 2 || byResult["shadow_error"] != 1 {
		t.Errorf("logged differences by result: %v", byResult)
	}

	// Going live: v2 renamed over v1 while clients call.
	l := startLoad(t, func() (*rewritev1.RewriteResponseResponse, error) {
		return client.RewriteResponse(ctx, shadowCases()[3].req)
	}, map[string]string{v1: "5.1.1 unknown user", v2: "5.1.1 unknown user, see https://example.com/help"})
	eventually(t, "v1 answers the load", l.answered(v1, 20))
	if err := os.Rename(candidate, live); err != nil {
		t.Fatal(err)
	}
	eventually(t, "v2 answers the load", l.answered(v2, 20))
	calls, seen := l.finish()
	t.Logf("%d calls during the rename, by version: %v", calls, seen)
	if seen[v1] == 0 || seen[v2] == 0 {
		t.Errorf("calls by version %v: the load did not span the rename", seen)
	}
	eventually(t, "the candidate leaves rewrited_policy_info", func() bool {
		return hasSample(scrape(t, url), `rewrited_policy_info{policy="tenant",shadow_version="",version="`+v2+`"} 1`)
	})
}

// load is four clients calling in a loop, each answer checked against the
// text its version answers.
type load struct {
	mu    sync.Mutex
	seen  map[string]int // answers by version
	calls int
	stop  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

// startLoad starts the clients; texts maps each version that may answer to
// the text it answers. A failed call or a wrong answer fails the test.
func startLoad(t *testing.T, call func() (*rewritev1.RewriteResponseResponse, error), texts map[string]string) *load {
	l := &load{seen: map[string]int{}, stop: make(chan struct{})}
	t.Cleanup(func() { l.finish() })
	for range 4 {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				resp, err := call()
				if err != nil {
					t.Errorf("a call failed: %v", err)
					return
				}
				if want, ok := texts[resp.PolicyVersion]; !ok || resp.Response != want {
					t.Errorf("version %s answered %q, want %q", resp.PolicyVersion, resp.Response, want)
					return
				}
				l.mu.Lock()
				l.seen[resp.PolicyVersion]++
				l.calls++
				l.mu.Unlock()
			}
		})
	}
	return l
}

// answered reports whether version has answered n calls.
func (l *load) answered(version string, n int) func() bool {
	return func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.seen[version] >= n
	}
}

// finish stops the clients and returns the calls made, and the answers by
// version.
func (l *load) finish() (int, map[string]int) {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls, l.seen
}

// TestServeShadowAndDecisionLogFlags checks that --help lists the flags of
// candidates and decision records, and that bad values are refused.
func TestServeShadowAndDecisionLogFlags(t *testing.T) {
	_, _, help := runArgs(t, "serve", "--help")
	for _, flag := range []string{"-shadow-sample", "-decision-log", "-decision-log-max-mb", "-decision-log-backups", "-decision-log-meta"} {
		if !strings.Contains(help, "\n  "+flag+" ") && !strings.Contains(help, "\n  "+flag+"\n") {
			t.Errorf("--help does not list %s", flag)
		}
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--shadow-sample", "1.5"}, "--shadow-sample: 1.5 is not between 0 and 1"},
		{[]string{"--shadow-log-sample", "-1"}, "--shadow-log-sample: -1 is not between 0 and 1"},
		{[]string{"--decision-log-max-mb", "0"}, "--decision-log-max-mb: 0 is not positive"},
		{[]string{"--decision-log-backups", "-2"}, "--decision-log-backups: -2 is negative"},
		{[]string{"--decision-log-meta", "all"}, `--decision-log-meta: "all" is neither keys nor full`},
	}
	for _, tt := range tests {
		code, _, stderr := runArgs(t, append([]string{"serve"}, tt.args...)...)
		if code != 2 || !strings.Contains(stderr, tt.want) {
			t.Errorf("serve %v: exit %d, stderr %q; want 2, %q", tt.args, code, stderr, tt.want)
		}
	}
}
