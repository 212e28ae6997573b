package policy_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rewrited/rewrited/service/policy"
)

// tree writes files (paths relative to a new temporary folder, "{{dir}}" in
// a file replaced by that folder) and returns the folder.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(body, "{{dir}}", dir)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// answer is a handler that returns, as the reply text, the value the top
// level left in the global `result`.
const answer = "\nkumo.on('smtp_server_rewrite_response', function() return 250, tostring(result) end)\n"

func compileTree(t *testing.T, dir string, opts policy.Options) (*policy.Policy, []policy.Warning, error) {
	t.Helper()
	file := filepath.Join(dir, "policy", "init.lua")
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if opts.LuaPath == "" {
		opts.LuaPath = filepath.Join(dir, "share", "?.lua") + ";" + filepath.Join(dir, "share", "?", "init.lua")
	}
	p, warnings, err := policy.Compile(file, src, opts)
	if p != nil {
		t.Cleanup(p.Close)
	}
	return p, warnings, err
}

func TestRequire(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  string   // the reply text the policy's result gives
		errs  []string // a load error containing each of these
	}{
		{
			name: "kumo and its submodules are the state's own",
			files: map[string]string{"policy/init.lua": `
local k = require 'kumo'
result = tostring(k == kumo) .. ' ' .. tostring(require('kumo.string') == kumo.string) .. ' ' ..
  tostring(require('kumo.regex') == kumo.regex) .. ' ' .. tostring(require 'kumo.serde' == kumo.serde) .. ' ' ..
  tostring(package.loaded.kumo == kumo)` + answer},
			want: "true true true true true",
		},
		{
			name: "the standard libraries are required by name",
			files: map[string]string{"policy/init.lua": `
local same = {}
for _, lib in ipairs{'coroutine', 'math', 'os', 'string', 'table', 'utf8'} do
  same[#same + 1] = tostring(require(lib) == _G[lib])
end
result = table.concat(same, ' ')` + answer},
			want: "true true true true true true",
		},
		{
			name: "the policy folder comes before --lua-path",
			files: map[string]string{
				"policy/init.lua":       `result = require('m').where .. ' ' .. require('pkg').where .. ' ' .. require('extras.deep').where` + answer,
				"policy/m.lua":          `return {where = 'policy'}`,
				"share/m.lua":           `return {where = 'share'}`,
				"share/pkg/init.lua":    `return {where = 'share init'}`,
				"share/extras/deep.lua": `return {where = 'dotted'}`,
			},
			want: "policy share init dotted",
		},
		{
			name: "a module runs once per state and gets its name and file",
			files: map[string]string{
				"policy/init.lua": `
local a = require 'counted'
local b = require 'counted'
result = tostring(a == b) .. ' ' .. loads .. ' ' .. a.name .. ' ' .. a.file:gsub('.*/', '')` + answer,
				"share/counted.lua": `loads = (loads or 0) + 1
local name, file = ...
return {name = name, file = file}`,
			},
			want: "true 1 counted counted.lua",
		},
		{
			name: "templates the policy adds to package.path are searched last",
			files: map[string]string{
				"policy/init.lua": `package.path = '{{dir}}/extra/?.lua;' .. package.path
result = require('m').where .. ' ' .. require('only_extra').where` + answer,
				"share/m.lua":          `return {where = 'share'}`,
				"extra/m.lua":          `return {where = 'extra'}`,
				"extra/only_extra.lua": `return {where = 'extra'}`,
			},
			want: "share extra",
		},
		{
			name: "package.preload and package.loaded are honoured",
			files: map[string]string{"policy/init.lua": `
package.preload.virtual = function(name) return {name = name} end
package.loaded.preset = 'preset value'
result = require('virtual').name .. ' ' .. require('preset') .. ' ' ..
  tostring(package.loaded.string == string) .. ' ' .. tostring(package.loaded.os == os)` + answer},
			want: "virtual preset value true true",
		},
		{
			name: "dofile runs a file under the policy folder and returns its values",
			files: map[string]string{
				"policy/init.lua":     `local a, b = dofile('{{dir}}/policy/settings.lua') result = a .. b` + answer,
				"policy/settings.lua": `return 'one', 'two'`,
			},
			want: "onetwo",
		},
		{
			name: "os gives the environment and clocks",
			files: map[string]string{"policy/init.lua": `
result = tostring(os.getenv('REWRITED_REQUIRE_TEST')) .. ' ' .. tostring(os.getenv('REWRITED_UNSET_VARIABLE')) .. ' ' ..
  os.date('!%Y-%m-%d %H:%M:%S', 86400 * 365) .. ' ' .. os.difftime(10, 4) .. ' ' .. type(os.time()) .. ' ' .. type(os.clock())` + answer},
			want: "from the environment nil 1971-01-01 00:00:00 6 number number",
		},
		{
			name: "a KumoMTA feature test finds nil and a configuration builder is inert",
			files: map[string]string{"policy/init.lua": `
local ok, v = pcall(kumo.make_queue_config, {max_age = '1 day'})
result = tostring(kumo.dns) .. ' ' .. tostring(ok) .. ' ' .. type(v) .. ' ' .. tostring(_VALIDATING_CONFIG)` + answer},
			want: "nil true table nil",
		},
		{
			name:  "a missing module names every place searched",
			files: map[string]string{"policy/init.lua": `require 'policy-extras.nowhere'` + answer},
			errs: []string{"init.lua:1: module 'policy-extras.nowhere' not found:", "no field package.preload['policy-extras.nowhere']",
				"policy/policy-extras/nowhere.lua'", "policy/policy-extras/nowhere/init.lua'", "share/policy-extras/nowhere.lua'", "share/policy-extras/nowhere/init.lua'"},
		},
		{
			name:  "a kumo submodule rewrited lacks is named",
			files: map[string]string{"policy/init.lua": `require 'kumo.dns'` + answer},
			errs:  []string{"module 'kumo.dns' not found: kumo.dns is not available in rewrited"},
		},
		{
			name: "a require loop is an error",
			files: map[string]string{
				"policy/init.lua": `require 'a'` + answer,
				"share/a.lua":     `require 'b'`,
				"share/b.lua":     `require 'a'`,
			},
			errs: []string{"loop or previous error loading module 'a'"},
		},
		{
			name: "a module that does not compile names the module and its line",
			files: map[string]string{
				"policy/init.lua":  `require 'broken'` + answer,
				"share/broken.lua": "local x = 1\nlocal = 2\n",
			},
			errs: []string{"error loading module 'broken' from file '", "broken.lua:2:"},
		},
		{
			name: "dofile refuses a file outside the policy's folders",
			files: map[string]string{
				"policy/init.lua": `dofile('{{dir}}/outside/x.lua')` + answer,
				"outside/x.lua":   `return 1`,
			},
			errs: []string{"dofile: ", "outside/x.lua is outside the folders a policy may read"},
		},
		{
			name: "a template the policy adds finds .lua files only",
			files: map[string]string{
				"policy/init.lua": `package.path = '{{dir}}/outside/?;' .. package.path
require 'secret'` + answer,
				"outside/secret": `return 1`,
			},
			errs: []string{"secret' (only .lua files are searched through templates a policy adds)"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("REWRITED_REQUIRE_TEST", "from the environment")
			dir := tree(t, tc.files)
			p, _, err := compileTree(t, dir, policy.Options{})
			if len(tc.errs) > 0 {
				if err == nil {
					t.Fatal("loaded, want a load error")
				}
				for _, want := range tc.errs {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("load error %q does not contain %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := p.Evaluate(context.Background(), dataInput()); d.Response != tc.want || d.Err != nil {
				t.Fatalf("got %q (%v), want %q", d.Response, d.Err, tc.want)
			}
		})
	}
}

// TestModulesPerState checks that a state built after the first runs the
// modules the first one found, without reading them again.
func TestModulesPerState(t *testing.T) {
	dir := tree(t, map[string]string{
		"policy/init.lua": `local m = require 'mod'` + "\nkumo.on('smtp_server_rewrite_response', function() return 250, m.text end)\n",
		"share/mod.lua":   `return {text = 'first'}`,
	})
	p, _, err := compileTree(t, dir, policy.Options{PoolSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "share", "mod.lua")); err != nil {
		t.Fatal(err)
	}
	if err := p.Warm(); err != nil {
		t.Fatal(err)
	}
	if d := p.Evaluate(context.Background(), dataInput()); d.Response != "first" {
		t.Fatalf("got %q (%v)", d.Response, d.Err)
	}
	if got := p.Modules(); len(got) != 1 || filepath.Base(got[0]) != "mod.lua" {
		t.Errorf("Modules() = %q", got)
	}
}

func TestModuleVersions(t *testing.T) {
	dir := tree(t, map[string]string{
		"policy/init.lua": `local m = require 'mod'` + answer,
		"share/mod.lua":   `return {}`,
	})
	p, _, err := compileTree(t, dir, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join(dir, "policy", "init.lua"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Version() == policy.Version(src) {
		t.Error("the version does not cover the module")
	}
	if p.Stale(src) {
		t.Error("Stale before any change")
	}
	if !p.Stale(append(src, '\n')) {
		t.Error("not Stale after the policy changed")
	}
	if err := os.WriteFile(filepath.Join(dir, "share", "mod.lua"), []byte("return {1}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if !p.Stale(src) {
		t.Error("not Stale after its module changed")
	}
	q, _, err := compileTree(t, dir, policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if q.Version() == p.Version() {
		t.Error("editing the module kept the version")
	}
	if err := os.Remove(filepath.Join(dir, "share", "mod.lua")); err != nil {
		t.Fatal(err)
	}
	if !q.Stale(src) {
		t.Error("not Stale after its module was removed")
	}
}

func TestKumoCompatibilityWarnings(t *testing.T) {
	dir := tree(t, map[string]string{"policy/init.lua": `
kumo.configure_local_logs {log_dir = '/var/log/kumo'}
kumo.configure_local_logs {log_dir = '/var/log/kumo'}
local ok = pcall(kumo.make_queue_config, {})
kumo.on('init', function() kumo.start_esmtp_listener {} end)
kumo.on('smtp_server_rewrite_response', function(status, response)
  if kumo.dns then
    return 250, kumo.dns.lookup_ptr(response)
  end
  return 250, kumo.string.no_such_helper(response) or _VALIDATING_CONFIG
end)
`})
	p, warnings, err := compileTree(t, dir, policy.Options{Validating: true})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range warnings {
		got = append(got, filepath.Base(w.File)+":"+strconv.Itoa(w.Line)+": "+w.Message)
	}
	want := []string{
		"init.lua:2: kumo.configure_local_logs does nothing in rewrited (a KumoMTA configuration function): it returns an empty table",
		"init.lua:4: kumo.make_queue_config does nothing in rewrited (a KumoMTA configuration function): it returns an empty table",
		"init.lua:5: handler for event 'init' is ignored: rewrited runs only smtp_server_rewrite_response",
		"init.lua:7: the smtp_server_rewrite_response handler uses kumo.dns, but rewrited has no kumo.dns: it reads as nil, and using it fails",
		"init.lua:8: the smtp_server_rewrite_response handler uses kumo.dns.lookup_ptr, but rewrited has no kumo.dns: it reads as nil, and using it fails",
		"init.lua:10: the smtp_server_rewrite_response handler uses kumo.string.no_such_helper, but rewrited has no kumo.string.no_such_helper: it reads as nil, and using it fails",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	d := p.Evaluate(context.Background(), dataInput())
	if d.Err == nil || !strings.Contains(d.Err.Error(), "init.lua:10: kumo.string.no_such_helper is not available in rewrited") {
		t.Errorf("evaluation error %v, want one naming kumo.string.no_such_helper", d.Err)
	}
}

// luaMessage runs src in the real Lua 5.4 interpreter as file name and
// returns its error message without the interpreter's name, or "" when
// lua5.4 is not installed.
func luaMessage(t *testing.T, name, src string) string {
	t.Helper()
	lua, err := exec.LookPath("lua5.4")
	if err != nil {
		return ""
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(lua, name)
	cmd.Dir = dir
	out, _ := cmd.CombinedOutput()
	first, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimPrefix(first, lua+": ")
}

// TestErrorNames checks the messages of calling and indexing what cannot be
// called or indexed. Each expected message is Lua 5.4's, checked against the
// lua5.4 interpreter when it is installed; when the line leaves the
// variable in doubt, rewrited names none rather than risk a wrong one.
func TestErrorNames(t *testing.T) {
	for _, tc := range []struct {
		name, src, want string
		ambiguous       bool // Lua 5.4 names the variable; rewrited does not
	}{
		{"call a missing global", "local x = 1\nundefined_function(x)\n", "t.lua:2: attempt to call a nil value (global 'undefined_function')", false},
		{"call a missing field", "local t = {}\nt.missing()\n", "t.lua:2: attempt to call a nil value (field 'missing')", false},
		{"call a missing method", "local t = {}\nt:missing()\n", "t.lua:2: attempt to call a nil value (method 'missing')", false},
		{"call a number", "local n = 5\nn()\n", "t.lua:2: attempt to call a number value (local 'n')", false},
		{"call a string", "local s = 'x'\ns()\n", "t.lua:2: attempt to call a string value (local 's')", false},
		{"call a boolean field", "local t = {flag = true}\nt.flag()\n", "t.lua:2: attempt to call a boolean value (field 'flag')", false},
		{"index a missing global", "print(undefined_table.field)\n", "t.lua:1: attempt to index a nil value (global 'undefined_table')", false},
		{"index a nil local", "local x\nprint(x.y)\n", "t.lua:2: attempt to index a nil value (local 'x')", false},
		{"assign into a nil local", "local x\nx.y = 1\n", "t.lua:2: attempt to index a nil value (local 'x')", false},
		{"index a nil field", "local a = {}\nprint(a.b.c)\n", "t.lua:2: attempt to index a nil value (field 'b')", false},
		{"index a nil upvalue", "local u\nlocal function f() return u.x end\nf()\n", "t.lua:2: attempt to index a nil value (upvalue 'u')", false},
		{"index a number", "local n = 1\nprint(n.x)\n", "t.lua:2: attempt to index a number value (local 'n')", false},
		{"the one of two that is nil", "local a, b = {}, nil\nprint(a.x, b.x)\n", "t.lua:2: attempt to index a nil value (local 'b')", false},
		{"two nil candidates", "local a, b = nil, nil\nprint(a.x, b.x)\n", "t.lua:2: attempt to index a nil value", true},
		{"a method call on nil", "local obj = {}\nobj.inner:go()\n", "t.lua:2: attempt to index a nil value (field 'inner')", false},
		{"a local at the first instruction of its scope", "local obj\nobj:go()\n", "t.lua:2: attempt to index a nil value", true},
		{"concatenate a nil local", "local x\nprint('a' .. x)\n", "t.lua:2: attempt to concatenate a nil value (local 'x')", false},
		{"concatenate a nil field", "local t = {}\nprint(t.name .. 'a' .. 'b')\n", "t.lua:2: attempt to concatenate a nil value (field 'name')", false},
		{"arithmetic on a nil local", "local x\nprint(x + 1)\n", "t.lua:2: attempt to perform arithmetic on a nil value (local 'x')", false},
		{"negate a nil local", "local x\nprint(-x)\n", "t.lua:2: attempt to perform arithmetic on a nil value (local 'x')", false},
		{"arithmetic on a constant", "print(1 + true)\n", "t.lua:1: attempt to perform arithmetic on a boolean value", false},
		{"arithmetic on a nil field", "local t = {}\nprint(t.n * 2)\n", "t.lua:2: attempt to perform arithmetic on a nil value (field 'n')", false},
		{"length of a nil local", "local x\nprint(#x)\n", "t.lua:2: attempt to get length of a nil value (local 'x')", false},
		{"a call result in doubt", "local function f() end\nlocal x = 1\nprint(x .. f())\n", "t.lua:3: attempt to concatenate a nil value", false},
		{"a removed loader", "loadstring('return 1')\n", "t.lua:1: attempt to call a nil value (global 'loadstring')", false},
		{"error at level 1", "local function g()\n  error('bad')\nend\ng()\n", "t.lua:2: bad", false},
		{"error at level 2 names the caller", "local function g()\n  error('bad', 2)\nend\nlocal function h()\n  g()\nend\nh()\n", "t.lua:5: bad", false},
		{"error at level 3", "local function g()\n  error('bad', 3)\nend\nlocal function h()\n  g()\nend\nh()\n", "t.lua:7: bad", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if oracle := luaMessage(t, "t.lua", tc.src); oracle != "" {
				want := tc.want
				if tc.ambiguous {
					if !strings.HasPrefix(oracle, want+" (") {
						t.Fatalf("lua5.4 says %q, which does not start with %q", oracle, want)
					}
				} else if oracle != want {
					t.Fatalf("lua5.4 says %q, the test expects %q", oracle, want)
				}
			}
			_, _, err := policy.Compile("t.lua", []byte(tc.src), policy.Options{})
			if err == nil || err.Error() != tc.want {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// TestOSDate checks os.date and os.time against Lua 5.4: the expected values
// are lua5.4's, and are checked against it when it is installed. UTC
// formats ('!') keep the test independent of the machine's time zone.
func TestOSDate(t *testing.T) {
	for _, tc := range []struct{ expr, want string }{
		{`os.date('!%c', 1700000000)`, "Tue Nov 14 22:13:20 2023"},
		{`os.date('!%x %X %p %I', 1700000000)`, "11/14/23 22:13:20 PM 10"},
		{`os.date('!%a %A %b %B %h', 1700000000)`, "Tue Tuesday Nov November Nov"},
		{`os.date('!%C %y %G %g %V %U %W %j %u %w', 1700000000)`, "20 23 2023 23 46 46 46 318 2 2"},
		{`os.date('!%D %F %R %T %e', 1700000000)`, "11/14/23 2023-11-14 22:13 22:13:20 14"},
		{`os.date('!%Ec %OH %Ey', 1700000000)`, "Tue Nov 14 22:13:20 2023 22 23"},
		{`os.date('!%z %Z %%', 1700000000)`, "+0000 GMT %"},
		{`(select(2, pcall(os.date, '!%Ez', 0)):gsub('^[^:]*:%d+: ', ''))`, "bad argument #1 to 'os.date' (invalid conversion specifier '%Ez')"},
		{`(select(2, pcall(os.date, '%Ox %H', 0)):gsub('^[^:]*:%d+: ', ''))`, "bad argument #1 to 'os.date' (invalid conversion specifier '%Ox %H')"},
		{`(select(2, pcall(os.date, 'trailing %', 0)):gsub('^[^:]*:%d+: ', ''))`, "bad argument #1 to 'os.date' (invalid conversion specifier '%')"},
		{`(function() local t = os.date('!*t', 1700000000) return table.concat({t.year, t.month, t.day, t.hour, t.min, t.sec, t.wday, t.yday, tostring(t.isdst)}, ' ') end)()`, "2023 11 14 22 13 20 3 318 false"},
		{`(function() local t = {year = 2023, month = 14, day = 1, hour = 0} os.time(t) return t.year .. ' ' .. t.month .. ' ' .. t.yday end)()`, "2024 2 32"},
		{`os.time{year = 2023, month = 1, day = 1, hour = 12} - os.time{year = 2023, month = 1, day = 1}`, "0"},
		{`os.date('!%H:%M', os.time{year = 2023, month = 6, day = 1, hour = 9, min = 5} - os.time{year = 2023, month = 6, day = 1, hour = 0})`, "09:05"},
		{`(select(2, pcall(os.time, {year = 2023})):gsub('^[^:]*:%d+: ', ''))`, "field 'month' missing in date table"},
		{`os.difftime(1700000060, 1700000000)`, "60"},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			src := "io.write(tostring(" + tc.expr + "))"
			if lua, err := exec.LookPath("lua5.4"); err == nil {
				out, err := exec.Command(lua, "-e", src).CombinedOutput()
				got := strings.TrimSuffix(string(out), ".0") // 5.4 prints float differences as 60.0
				if err != nil || got != tc.want {
					t.Fatalf("lua5.4 gives %q (%v), the test expects %q", out, err, tc.want)
				}
			}
			p := compile(t, "result = tostring("+tc.expr+")"+answer, policy.Options{})
			if d := p.Evaluate(context.Background(), dataInput()); d.Response != tc.want {
				t.Fatalf("got %q (%v), want %q", d.Response, d.Err, tc.want)
			}
		})
	}
}
