package stdlib

import (
	"strings"

	lua "github.com/yuin/gopher-lua"

	"github.com/rewrited/rewrited/service/policy/stdlib/luapattern"
)

// openPatterns replaces gopher-lua's pattern functions, whose matcher has 5.1 semantics
// and cannot be interrupted, with Lua 5.4's on top of luapattern.
func (b *lib) openPatterns(L *lua.LState) {
	setFuncs(L, globalTable(L, "string"), map[string]lua.LGFunction{
		"find":   b.strFind,
		"match":  b.strMatch,
		"gmatch": b.strGmatch,
		"gsub":   b.strGsub,
	})
}

// startPos is Lua 5.4's posrelatI minus one: the 0-based offset where a search
// starts, clipped to at least 0. It may lie beyond the subject.
func startPos(L *lua.LState, n int, fname string, s string) int64 {
	return max(posRelat(optInteger(L, n, fname, 1), len(s)), 1) - 1
}

// captureValue is capture i of the last match as a Lua value: a string, or the
// 1-based position of a position capture.
func captureValue(L *lua.LState, m *luapattern.Matcher, s string, i int) lua.LValue {
	c, err := m.Capture(i)
	if err != nil {
		raise(L, err.Error())
	}
	if c.Position {
		return lua.LNumber(c.Start + 1)
	}
	return lua.LString(s[c.Start:c.End])
}

// pushCaptures pushes the captures of the last match; with whole set, a pattern
// without captures yields the whole match, as everywhere but string.find.
func pushCaptures(L *lua.LState, m *luapattern.Matcher, s string, whole bool) int {
	n := m.Captures()
	if n == 0 && whole {
		n = 1
	}
	for i := 0; i < n; i++ {
		L.Push(captureValue(L, m, s, i))
	}
	return n
}

func (b *lib) strFind(L *lua.LState) int  { return b.find(L, "find") }
func (b *lib) strMatch(L *lua.LState) int { return b.find(L, "match") }

// find is Lua 5.4's str_find_aux: string.find(s, pattern [, init [, plain]]) and
// string.match(s, pattern [, init]).
func (b *lib) find(L *lua.LState, fname string) int {
	s := checkString(L, 1, fname)
	pat := checkString(L, 2, fname)
	init := startPos(L, 3, fname, s)
	if init > int64(len(s)) {
		L.Push(lua.LNil)
		return 1
	}
	isFind := fname == "find"
	var m luapattern.Matcher
	m.Reset(s, pat, b.check)
	found, err := m.Find(int(init), isFind && (lua.LVAsBool(L.Get(4)) || luapattern.Plain(pat)))
	if err != nil {
		raise(L, err.Error())
	}
	if !found {
		L.Push(lua.LNil)
		return 1
	}
	if isFind {
		L.Push(lua.LNumber(m.Start() + 1))
		L.Push(lua.LNumber(m.End()))
		return 2 + pushCaptures(L, &m, s, false)
	}
	return pushCaptures(L, &m, s, true)
}

// strGmatch is Lua 5.4's string.gmatch(s, pattern [, init]); each call of the
// iterator finds one match, and a '^' in the pattern is an ordinary character.
func (b *lib) strGmatch(L *lua.LState) int {
	const fname = "gmatch"
	s := checkString(L, 1, fname)
	pat := checkString(L, 2, fname)
	init := min(startPos(L, 3, fname, s), int64(len(s))+1)
	m := new(luapattern.Matcher)
	m.Reset(s, pat, b.check)
	m.Scan(int(init), false)
	L.Push(L.NewFunction(func(L *lua.LState) int {
		found, err := m.Next()
		if err != nil {
			raise(L, err.Error())
		}
		if !found {
			return 0
		}
		return pushCaptures(L, m, s, true)
	}))
	return 1
}

// strGsub is Lua 5.4's string.gsub, built in one pass so the result can be checked
// against MaxStringBytes before each piece is appended.
func (b *lib) strGsub(L *lua.LState) int {
	const fname = "gsub"
	s := checkString(L, 1, fname)
	pat := checkString(L, 2, fname)
	repl := L.Get(3)
	switch repl.(type) {
	case lua.LNumber, lua.LString, *lua.LTable, *lua.LFunction:
	default:
		typeError(L, 3, fname, "string/function/table")
	}
	maxN := optInteger(L, 4, fname, int64(len(s))+1)

	var out strings.Builder
	add := func(piece string) {
		if out.Len()+len(piece) > b.max {
			tooLarge(L, "string.gsub", b.max)
		}
		out.WriteString(piece)
	}
	var m luapattern.Matcher
	m.Reset(s, pat, b.check)
	m.Scan(0, true)
	last, count := 0, int64(0)
	// As in Lua 5.4, without a substitution the subject itself is returned.
	changed := false
	for count < maxN {
		found, err := m.Next()
		if err != nil {
			raise(L, err.Error())
		}
		if !found {
			break
		}
		count++
		add(s[last:m.Start()])
		whole := s[m.Start():m.End()]
		switch r := repl.(type) {
		case lua.LString:
			changed = true
			b.expandGsub(L, &m, s, string(r), &out)
		case lua.LNumber:
			changed = true
			add(luaNumberString(float64(r)))
		default:
			var v lua.LValue
			if t, ok := r.(*lua.LTable); ok {
				v = L.GetTable(t, captureValue(L, &m, s, 0))
			} else {
				// The callback may run other matches; m is this call's own state.
				L.Push(r)
				L.Call(pushCaptures(L, &m, s, true), 1)
				v = L.Get(-1)
				L.Pop(1)
			}
			switch rv := v.(type) {
			case lua.LString:
				changed = true
				add(string(rv))
			case lua.LNumber:
				changed = true
				add(luaNumberString(float64(rv)))
			default:
				if lua.LVIsFalse(v) {
					add(whole)
				} else {
					L.RaiseError("invalid replacement value (a %s)", v.Type().String())
				}
			}
		}
		last = m.End()
	}
	if changed {
		add(s[last:])
		s = out.String()
	}
	L.Push(lua.LString(s))
	L.Push(lua.LNumber(count))
	return 2
}

// expandGsub appends a string replacement with its %0-%9 and %% escapes, sizing each
// piece before it is written.
func (b *lib) expandGsub(L *lua.LState, m *luapattern.Matcher, s, repl string, out *strings.Builder) {
	for i := 0; i < len(repl); i++ {
		c := repl[i]
		piece := repl[i : i+1]
		if c == '%' {
			i++
			switch {
			case i < len(repl) && repl[i] == '%':
				piece = "%"
			case i < len(repl) && repl[i] == '0':
				piece = s[m.Start():m.End()]
			case i < len(repl) && repl[i] >= '1' && repl[i] <= '9':
				piece = lua.LVAsString(captureValue(L, m, s, int(repl[i]-'1')))
			default:
				raise(L, "invalid use of '%' in replacement string")
			}
		} else if j := strings.IndexByte(repl[i:], '%'); j != 0 {
			if j < 0 {
				j = len(repl) - i
			}
			piece = repl[i : i+j]
			i += j - 1
		}
		if out.Len()+len(piece) > b.max {
			tooLarge(L, "string.gsub", b.max)
		}
		out.WriteString(piece)
	}
}
