package stdlib

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// installed lists every function Open provides, by the expression that reaches it.
var installed = []string{
	"string.format", "string.rep", "string.find", "string.match", "string.gsub", "string.gmatch", "table.concat",
	"table.unpack", "table.move", "math.type", "math.tointeger",
	"utf8.char", "utf8.codepoint", "utf8.len", "utf8.offset", "utf8.codes",
	"kumo.string.replace", "kumo.string.replacen", "kumo.string.split", "kumo.string.splitn",
	"kumo.string.rsplit", "kumo.string.rsplitn", "kumo.string.split_whitespace",
	"kumo.string.split_ascii_whitespace", "kumo.string.starts_with", "kumo.string.ends_with",
	"kumo.string.trim", "kumo.string.trim_start", "kumo.string.trim_end", "kumo.string.wrap",
	"kumo.regex.compile", "kumo.regex.escape",
	"kumo.serde.json_encode", "kumo.serde.json_encode_pretty", "kumo.serde.json_parse",
	"re.is_match", "re.captures", "re.find", "re.find_all", "re.replace", "re.replace_all",
	"re.replacen", "re.split",
}

// TestNoGoPanics calls every builtin with many argument combinations, including wrong
// types, huge and negative numbers, NaN and invalid UTF-8. Each call must succeed or
// raise a Lua error; a Go runtime panic would show up as an ApiErrorPanic.
func TestNoGoPanics(t *testing.T) {
	L := newState(t, Limits{MaxStringBytes: 1 << 16})
	if err := L.DoString(`
		re = kumo.regex.compile('(a)(?P<n>b)?')
		args = {
		  nil, true, 0, -1, 1, 2, 3.5, 2^53, -2^63, 1e300, -1e300, 0/0, 1/0, -1/0,
		  '', 'abc', 'a,b,,c', '\255\254', '%', '%d', '%5.2s', '%q', '(', '[a', '%1', '$1', '${n}',
		  '\195\164\226\130\172', string.rep('ab', 100), '[1,{"a":null}]', '{"a":',
		  {}, {1, 2, 3}, {a = 1}, setmetatable({}, {__index = function() return 'x' end}),
		  print, re, '%b', '%f', '%fx', '[^', '%g', '%z', '()', '%0',
		}
	`); err != nil {
		t.Fatal(err)
	}
	args := L.GetGlobal("args").(*lua.LTable)
	var vals []lua.LValue
	for i := 1; i <= args.MaxN(); i++ {
		vals = append(vals, args.RawGetInt(i))
	}
	re := L.GetGlobal("re")
	rng := rand.New(rand.NewSource(1))
	calls := 1500
	if testing.Short() {
		calls = 200
	}
	for _, name := range installed {
		L.SetContext(context.Background())
		var fn lua.LValue
		if strings.HasPrefix(name, "re.") {
			fn = L.GetField(L.GetMetatable(re).(*lua.LTable).RawGetString("__index"), strings.TrimPrefix(name, "re."))
		} else {
			v, err := eval(L, "return "+name)
			if err != nil || v == "nil" {
				t.Fatalf("%s is not installed", name)
			}
			if err := L.DoString("__fn = " + name); err != nil {
				t.Fatal(err)
			}
			fn = L.GetGlobal("__fn")
		}
		for i := 0; i < calls; i++ {
			n := rng.Intn(5)
			callArgs := make([]lua.LValue, n)
			for k := range callArgs {
				callArgs[k] = vals[rng.Intn(len(vals))]
			}
			if strings.HasPrefix(name, "re.") && n > 0 && rng.Intn(4) > 0 {
				callArgs[0] = re
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			L.SetContext(ctx)
			L.Push(fn)
			for _, a := range callArgs {
				L.Push(a)
			}
			err := L.PCall(n, lua.MultRet, nil)
			cancel()
			L.SetTop(0)
			var apiErr *lua.ApiError
			if errors.As(err, &apiErr) && apiErr.Type == lua.ApiErrorPanic {
				t.Fatalf("%s%v: Go panic: %v", name, describe(callArgs), err)
			}
		}
	}
}

func describe(args []lua.LValue) string {
	parts := make([]string, len(args))
	for i, a := range args {
		s := a.String()
		if len(s) > 20 {
			s = s[:20] + "..."
		}
		parts[i] = fmt.Sprintf("%q", s)
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// TestRegexCacheConcurrent compiles more patterns than the cache holds from many
// states at once; run with -race.
func TestRegexCacheConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			L := lua.NewState()
			defer L.Close()
			Open(L, nil, Limits{})
			for i := 0; i < regexCacheSize/2; i++ {
				code := fmt.Sprintf("return kumo.regex.compile('^x%d_%d$'):is_match('x%d_%d'), kumo.regex.compile('^shared$'):is_match('shared')", i, g, i, g)
				got, err := eval(L, code)
				if err == nil && got != "true\ttrue" {
					err = fmt.Errorf("%s: got %q", code, got)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := regexCacheCount.Load(); n > regexCacheSize+8 {
		t.Errorf("cache holds %d entries, cap %d", n, regexCacheSize)
	}
}

func BenchmarkRegexCompileCachedIsMatch(b *testing.B) {
	L := newState(b, Limits{})
	if err := L.DoString(`
		function check(s)
		  return kumo.regex.compile('^(\\d{3}) (\\d\\.\\d\\.\\d) (.*)$'):is_match(s)
		end
	`); err != nil {
		b.Fatal(err)
	}
	fn := L.GetGlobal("check")
	arg := lua.LString("550 5.1.1 The email account that you tried to reach does not exist")
	b.ReportAllocs()
	for b.Loop() {
		if err := L.CallByParam(lua.P{Fn: fn, NRet: 1, Protect: true}, arg); err != nil {
			b.Fatal(err)
		}
		if L.Get(-1) != lua.LTrue {
			b.Fatal("no match")
		}
		L.Pop(1)
	}
}

func BenchmarkJSONEncode(b *testing.B) {
	L := newState(b, Limits{})
	if err := L.DoString(`
		value = {
		  status = 250, response = 'OK ids=8f3a2c1e', command = 'DATA',
		  meta = {received_from = '192.0.2.1:4321', ehlo_domain = 'client.example', tls = true,
		          tls_peer_subject_name = {'CN=client.example', 'O=Example'}},
		  scores = {0.5, 1, 2.25, 1e-7},
		}
	`); err != nil {
		b.Fatal(err)
	}
	fn := L.GetField(L.GetField(L.GetGlobal("kumo"), "serde"), "json_encode")
	value := L.GetGlobal("value")
	b.ReportAllocs()
	for b.Loop() {
		if err := L.CallByParam(lua.P{Fn: fn, NRet: 1, Protect: true}, value); err != nil {
			b.Fatal(err)
		}
		L.Pop(1)
	}
}
