package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		wantStatus int
		wantOut    []string
	}{
		{"bundled example loads", []string{"../../examples/policies/default.lua"}, 0, nil},
		{"Lua 5.4 syntax has a hint", []string{"testdata/lua54.lua"}, 1, []string{
			"testdata/lua54.lua:2: syntax error near '/' (hint: integer division // is Lua 5.3+; in Lua 5.1 write math.floor(a / b))"}},
		{"second handler names both places", []string{"testdata/two-handlers.lua"}, 1, []string{
			"testdata/two-handlers.lua:2: smtp_server_rewrite_response event already has a handler defined at testdata/two-handlers.lua:1"}},
		{"other events warn but load", []string{"testdata/other-event.lua"}, 0, []string{
			"testdata/other-event.lua:1: warning: handler for event 'init' is ignored"}},
		{"every file is reported", []string{"testdata/lua54.lua", "testdata/missing.lua", "../../examples/policies/default.lua"}, 1, []string{
			"testdata/lua54.lua:2:", "testdata/missing.lua: no such file or directory"}},
		{"no file is a usage error", nil, 2, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			status := run(append([]string{"check"}, tc.args...), &stdout, &stderr)
			if status != tc.wantStatus {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", status, tc.wantStatus, &stdout, &stderr)
			}
			for _, want := range tc.wantOut {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout lacks %q:\n%s", want, &stdout)
				}
			}
			if tc.wantStatus == 0 && len(tc.wantOut) == 0 && stdout.Len() != 0 {
				t.Errorf("unexpected output: %s", &stdout)
			}
		})
	}
}

func TestVersionAndUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if status := run([]string{"version"}, &stdout, &stderr); status != 0 || !strings.HasPrefix(stdout.String(), "rewrited ") {
		t.Errorf("version: exit %d, %q", status, &stdout)
	}
	if status := run([]string{"bogus"}, &stdout, &stderr); status != 2 || !strings.Contains(stderr.String(), `unknown command "bogus"`) {
		t.Errorf("unknown command: exit %d, %q", status, &stderr)
	}
	if status := run([]string{"serve", "--eval-timeout", "soon"}, &stdout, &stderr); status != 2 || !strings.Contains(stderr.String(), "eval-timeout") {
		t.Errorf("bad flag: exit %d, %q", status, &stderr)
	}
}
