package stdlib

import (
	"context"
	"strings"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// TestPatternTimeout runs matches that take minutes without interruption; each must
// end with the context's error soon after its deadline, and the state must still
// work under a fresh context.
func TestPatternTimeout(t *testing.T) {
	for _, code := range []string{
		"return string.rep('a', 2^14):match('.-b')",
		"return string.rep('a', 2^14):find('(a*)*b')",
		"for _ in string.rep('a', 2^14):gmatch('a-a-b') do end",
		"return string.rep('a', 2^14):gsub('[%w%s]-b', '')",
		"return pcall(string.match, string.rep('a', 2^14), '.-b')",
	} {
		t.Run(code, func(t *testing.T) {
			L := newState(t, Limits{})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
			defer cancel()
			L.SetContext(ctx)
			start := time.Now()
			got, err := eval(L, code)
			elapsed := time.Since(start)
			if err == nil && !strings.Contains(got, "deadline exceeded") {
				t.Fatalf("got %q, want the context's error", clip(got))
			}
			if err != nil && !strings.Contains(err.Error(), "deadline exceeded") {
				t.Fatalf("got error %v, want the context's error", err)
			}
			// Generous for 2 shared cores and -race: the deadline is 30ms.
			if elapsed > time.Second {
				t.Errorf("took %v", elapsed)
			}
			L.SetContext(context.Background())
			if got, err := eval(L, "return ('550 5.1.1'):match('^(%d+)')"); err != nil || got != "550" {
				t.Errorf("after the timeout: %q, %v", got, err)
			}
		})
	}
}

// BenchmarkStringMatch compares string.match on a typical reply text with this
// package's functions installed and with gopher-lua's own.
func BenchmarkStringMatch(b *testing.B) {
	const code = `
		function check(s)
		  return s:match('^(%d%d%d) (%d%.%d%.%d)')
		end`
	for _, tc := range []struct {
		name string
		open func(*lua.LState)
	}{
		{"luapattern", func(L *lua.LState) { Open(L, nil, Limits{}) }},
		{"gopher-lua", func(*lua.LState) {}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			L := lua.NewState()
			defer L.Close()
			tc.open(L)
			if err := L.DoString(code); err != nil {
				b.Fatal(err)
			}
			fn := L.GetGlobal("check")
			arg := lua.LString("550 5.1.1 <x@y>: no such user")
			b.ReportAllocs()
			for b.Loop() {
				if err := L.CallByParam(lua.P{Fn: fn, NRet: 2, Protect: true}, arg); err != nil {
					b.Fatal(err)
				}
				if L.Get(-2).String() != "550" || L.Get(-1).String() != "5.1.1" {
					b.Fatal("no match")
				}
				L.Pop(2)
			}
		})
	}
}
