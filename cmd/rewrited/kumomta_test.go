package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rewrited/rewrited/internal/rewritedtest"
	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
)

// kumoLuaPath finds the test's KumoMTA-style helper modules as a host with
// KumoMTA installed finds policy-extras.
const kumoLuaPath = "testdata/kumomta/share/?.lua;testdata/kumomta/share/?/init.lua"

// TestKumoMTAPolicy loads a whole policy written as KumoMTA policies are
// (require 'kumo', package.path extended, os.getenv and configuration calls
// at the top level, handlers for other events, modules found through
// --lua-path, a dofile) with check and eval.
func TestKumoMTAPolicy(t *testing.T) {
	const file = "testdata/kumomta/init.lua"
	code, stdout, stderr := runArgs(t, "check", "--lua-path", kumoLuaPath, file)
	want, err := os.ReadFile("testdata/kumomta/init.check")
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 || stdout != string(want) {
		t.Errorf("check: exit %d\nstdout:\n%s\nwant:\n%s\nstderr: %s", code, stdout, want, stderr)
	}

	t.Setenv("REWRITED_TEST_ENVIRONMENT", "staging")
	for _, tc := range []struct {
		name      string
		args      []string
		wantReply string
		outcome   string
	}{
		{"DATA 250 is rewritten", []string{"--status", "250", "--response", "OK queued as 1F2A", "--command", "DATA"},
			"250-super fantastic! [staging]\n250 OK queued as 1F2A\n", "rewritten"},
		{"RCPT 250 is kept", []string{"--status", "250", "--response", "OK", "--command", "RCPT TO:<user@example.com>"},
			"250 OK\n", "unchanged"},
		{"a maintenance reply closes", []string{"--status", "451", "--response", "maintenance window", "--command", "MAIL FROM:<a@example.com>"},
			"421 mx.example.net closing for maintenance, try again later\n", "rewritten"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"eval", "--lua-path", kumoLuaPath, "--policy", file, "--eval-timeout", evalSlack}, tc.args...)
			code, stdout, stderr := runArgs(t, args...)
			if code != 0 || !strings.HasPrefix(stdout, tc.wantReply+"\noutcome: "+tc.outcome+"\n") {
				t.Errorf("exit %d\nstdout:\n%s\nwant it to start with:\n%s\noutcome: %s\nstderr: %s", code, stdout, tc.wantReply, tc.outcome, stderr)
			}
			if strings.Count(stderr, "handler for event 'init' is ignored") != 1 {
				t.Errorf("eval should warn once about the init handler, stderr:\n%s", stderr)
			}
		})
	}
}

// TestKumoMTAPolicyNeedsLuaPath checks that a module missing from the search
// path fails the load with every place searched.
func TestKumoMTAPolicyNeedsLuaPath(t *testing.T) {
	code, stdout, _ := runArgs(t, "check", "--lua-path", "testdata/nowhere/?.lua", "testdata/kumomta/init.lua")
	for _, want := range []string{"testdata/kumomta/init.lua:12: module 'policy-extras.site_utils' not found:",
		"no file 'testdata/nowhere/policy-extras/site_utils.lua'", "no file 'testdata/kumomta/lib/policy-extras/site_utils.lua'"} {
		if code != 1 || !strings.Contains(stdout, want) {
			t.Errorf("exit %d, stdout lacks %q:\n%s", code, want, stdout)
		}
	}
}

// TestKumoMTAMemoizedModule loads a policy whose module calls kumo.memoize
// while it loads and kumo.traceback in the handler.
func TestKumoMTAMemoizedModule(t *testing.T) {
	const file = "testdata/kumomta/cached.lua"
	code, stdout, _ := runArgs(t, "check", "--lua-path", kumoLuaPath, file)
	if code != 0 || stdout != "" {
		t.Fatalf("check: exit %d, stdout:\n%s", code, stdout)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--status", "250", "--response", "OK", "--command", "DATA"}, "250-super fantastic! (example.net)\n250 OK\n"},
		{[]string{"--status", "550", "--response", "no such user", "--command", "RCPT TO:<x@example.net>"}, "550 no such user (traced)\n"},
	} {
		args := append([]string{"eval", "--lua-path", kumoLuaPath, "--policy", file, "--eval-timeout", evalSlack}, tc.args...)
		code, stdout, stderr := runArgs(t, args...)
		if code != 0 || !strings.HasPrefix(stdout, tc.want+"\n") {
			t.Errorf("exit %d\nstdout:\n%s\nwant it to start with:\n%s\nstderr: %s", code, stdout, tc.want, stderr)
		}
	}
}

// TestServeKumoMTAPolicyReloadsModules serves the KumoMTA-style policy with
// its helper modules in another folder, edits one module, and expects the
// policy to answer with the new code and a new version.
func TestServeKumoMTAPolicyReloadsModules(t *testing.T) {
	share := filepath.Join(t.TempDir(), "share")
	if err := os.CopyFS(share, os.DirFS("testdata/kumomta/share")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("REWRITED_TEST_ENVIRONMENT", "production")
	p := rewritedtest.Start(t, "--policy", "testdata/kumomta/init.lua", "--lua-path", filepath.Join(share, "?.lua"), "--eval-timeout", evalSlack)
	client := rewritev1.NewRewriteServiceClient(dial(t, p.Addr))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	data := "DATA"
	ask := func() *rewritev1.RewriteResponseResponse {
		t.Helper()
		resp, err := client.RewriteResponse(ctx, &rewritev1.RewriteResponseRequest{Status: 250, Response: "OK", Command: &data})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	first := ask()
	if first.Response != "super fantastic!\nOK" || !first.Rewritten {
		t.Fatalf("got %v\nlogs:\n%s", first, p.Logs())
	}
	utils := filepath.Join(share, "policy-extras", "site_utils.lua")
	src, err := os.ReadFile(utils)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(src), "return command == 'DATA'", "return command == 'NEVER'", 1)
	if err := os.WriteFile(utils, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	for {
		resp := ask()
		if !resp.Rewritten {
			if resp.PolicyVersion == first.PolicyVersion {
				t.Errorf("the module changed the answer but not the version %s", resp.PolicyVersion)
			}
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("the edited module was never loaded\nlogs:\n%s", p.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
