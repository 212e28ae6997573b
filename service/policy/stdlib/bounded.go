package stdlib

import (
	"strings"

	lua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/pm"
)

// matchChunk is how many pattern matches are collected per pm.Find call: gopher-lua's
// matcher returns all matches at once, which for a long subject would allocate far
// more than the subject itself.
const matchChunk = 256

func (b *lib) openBounded(L *lua.LState) {
	str := globalTable(L, "string")
	str.RawSetString("rep", L.NewFunction(b.strRep))
	str.RawSetString("gsub", L.NewFunction(b.strGsub))
	str.RawSetString("gmatch", L.NewFunction(strGmatch))
	globalTable(L, "table").RawSetString("concat", L.NewFunction(b.tableConcat))
}

// strRep is Lua 5.4's string.rep(s, n [, sep]); the size is checked before allocating.
func (b *lib) strRep(L *lua.LState) int {
	const fname = "rep"
	s := checkString(L, 1, fname)
	n := checkInteger(L, 2, fname)
	sep := optString(L, 3, fname, "")
	unit := int64(len(s) + len(sep))
	if n <= 0 || unit == 0 {
		L.Push(lua.LString(""))
		return 1
	}
	if n > int64(b.max)/unit+1 || n*unit-int64(len(sep)) > int64(b.max) {
		tooLarge(L, "string.rep", b.max)
	}
	if sep == "" {
		L.Push(lua.LString(strings.Repeat(s, int(n))))
		return 1
	}
	var sb strings.Builder
	sb.Grow(int(n*unit) - len(sep))
	for i := int64(0); i < n; i++ {
		if i > 0 {
			sb.WriteString(sep)
		}
		sb.WriteString(s)
	}
	L.Push(lua.LString(sb.String()))
	return 1
}

// matcher yields the matches of a Lua pattern with Lua 5.4's rule that an empty match
// right where the previous match ended is skipped (5.1 and gopher-lua accept it).
// It asks pm.Find for a bounded number of matches at a time.
type matcher struct {
	L         *lua.LState
	pat       string
	src       []byte
	anchored  bool
	next      int // where pm.Find resumes
	buf       []*pm.MatchData
	done      bool
	lastMatch int // end of the previous accepted match, -1 before the first
}

func newMatcher(L *lua.LState, s, pat string, init int) *matcher {
	return &matcher{L: L, pat: pat, src: []byte(s), anchored: strings.HasPrefix(pat, "^"), next: init, lastMatch: -1}
}

// Next returns the next accepted match, or nil at the end of the subject.
func (m *matcher) Next() *pm.MatchData {
	for {
		if len(m.buf) == 0 {
			if m.done {
				return nil
			}
			mds, err := pm.Find(m.pat, m.src, m.next, matchChunk)
			if err != nil {
				raise(m.L, err.Error())
			}
			if len(mds) < matchChunk || m.anchored {
				m.done = true
			}
			if len(mds) > 0 {
				last := mds[len(mds)-1]
				m.next = max(last.Capture(0)+1, last.Capture(1))
			}
			m.buf = mds
			if len(mds) == 0 {
				return nil
			}
		}
		md := m.buf[0]
		m.buf = m.buf[1:]
		start, end := md.Capture(0), md.Capture(1)
		if start == end && end == m.lastMatch {
			continue
		}
		m.lastMatch = end
		return md
	}
}

// capture returns capture idx (0-based) of md as a Lua value, with Lua's rule that
// capture 0 of a pattern without captures is the whole match.
func capture(L *lua.LState, md *pm.MatchData, s string, idx int) lua.LValue {
	n := md.CaptureLength()/2 - 1
	if idx >= n {
		if idx != 0 {
			L.RaiseError("invalid capture index %%%d", idx+1)
		}
		return lua.LString(s[md.Capture(0):md.Capture(1)])
	}
	k := 2 * (idx + 1)
	if md.IsPosCapture(k) {
		return lua.LNumber(md.Capture(k))
	}
	return lua.LString(s[md.Capture(k):md.Capture(k+1)])
}

func pushCaptures(L *lua.LState, md *pm.MatchData, s string) int {
	n := md.CaptureLength()/2 - 1
	if n == 0 {
		L.Push(lua.LString(s[md.Capture(0):md.Capture(1)]))
		return 1
	}
	for i := 0; i < n; i++ {
		L.Push(capture(L, md, s, i))
	}
	return n
}

// strGsub is Lua 5.4's string.gsub, built in one pass so the result can be checked
// against MaxStringBytes before each piece is appended. gopher-lua's version copies the
// whole result once per match, which is quadratic.
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
	m := newMatcher(L, s, pat, 0)
	last, count := 0, int64(0)
	for count < maxN {
		md := m.Next()
		if md == nil {
			break
		}
		count++
		checkCtx(L, int(count))
		start, end := md.Capture(0), md.Capture(1)
		add(s[last:start])
		whole := s[start:end]
		switch r := repl.(type) {
		case lua.LString:
			b.expandGsub(L, md, s, string(r), &out)
		case lua.LNumber:
			add(r.String())
		default:
			var v lua.LValue
			if t, ok := r.(*lua.LTable); ok {
				v = L.GetTable(t, capture(L, md, s, 0))
			} else {
				L.Push(r)
				L.Call(pushCaptures(L, md, s), 1)
				v = L.Get(-1)
				L.Pop(1)
			}
			switch rv := v.(type) {
			case lua.LString, lua.LNumber:
				add(rv.String())
			default:
				if lua.LVIsFalse(v) {
					add(whole)
				} else {
					L.RaiseError("invalid replacement value (a %s)", v.Type().String())
				}
			}
		}
		last = end
	}
	add(s[last:])
	L.Push(lua.LString(out.String()))
	L.Push(lua.LNumber(count))
	return 2
}

// expandGsub appends a string replacement with its %0-%9 and %% escapes, sizing each
// piece before it is written.
func (b *lib) expandGsub(L *lua.LState, md *pm.MatchData, s, repl string, out *strings.Builder) {
	for i := 0; i < len(repl); i++ {
		c := repl[i]
		piece := repl[i : i+1]
		if c == '%' {
			i++
			switch {
			case i < len(repl) && repl[i] == '%':
				piece = "%"
			case i < len(repl) && repl[i] == '0':
				piece = s[md.Capture(0):md.Capture(1)]
			case i < len(repl) && repl[i] >= '1' && repl[i] <= '9':
				piece = lua.LVAsString(capture(L, md, s, int(repl[i]-'1')))
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

// strGmatch is Lua 5.4's string.gmatch(s, pattern [, init]), finding one match per
// call instead of all matches up front.
func strGmatch(L *lua.LState) int {
	const fname = "gmatch"
	s := checkString(L, 1, fname)
	pat := checkString(L, 2, fname)
	init := posRelat(optInteger(L, 3, fname, 1), len(s))
	if init < 1 {
		init = 1
	}
	m := newMatcher(L, s, pat, int(min(init, int64(len(s))+1)-1))
	// Lua 5.4 starts after the end of the subject, where not even an empty match is found.
	m.done = init > int64(len(s))+1
	iter := func(L *lua.LState) int {
		m.L = L
		md := m.Next()
		if md == nil {
			return 0
		}
		return pushCaptures(L, md, s)
	}
	L.Push(L.NewFunction(iter))
	return 1
}

// tableConcat is Lua 5.4's table.concat. A plain table is measured before anything
// is allocated; with metamethods each value is fetched once and the size is checked
// as the result grows.
func (b *lib) tableConcat(L *lua.LState) int {
	const fname = "concat"
	t, ok := L.Get(1).(*lua.LTable)
	if !ok {
		typeError(L, 1, fname, "table")
	}
	sep := optString(L, 2, fname, "")
	i := optInteger(L, 3, fname, 1)
	var last int64
	if L.Get(4) == lua.LNil {
		last = int64(L.ObjLen(t))
	} else {
		last = checkInteger(L, 4, fname)
	}
	if i > last {
		L.Push(lua.LString(""))
		return 1
	}
	field := func(k int64, v lua.LValue) string {
		switch v := v.(type) {
		case lua.LString:
			return string(v)
		case lua.LNumber:
			return v.String()
		}
		L.RaiseError("invalid value (%s) at index %d in table for 'concat'", v.Type().String(), k)
		return ""
	}
	if t.Metatable != lua.LNil && uint64(last-i) >= maxLoopItems {
		// Metamethods can invent values for every index, so only the count bounds the loop.
		argError(L, 4, fname, "too many elements to concat")
	}
	var out strings.Builder
	if t.Metatable == lua.LNil {
		total := int64(0)
		for k := i; k <= last; k++ {
			checkCtx(L, int(k-i))
			total += int64(len(field(k, t.RawGetInt(int(k)))))
			if k < last {
				total += int64(len(sep))
			}
			if total > int64(b.max) {
				tooLarge(L, "table.concat", b.max)
			}
		}
		out.Grow(int(total))
	}
	for k := i; k <= last; k++ {
		checkCtx(L, int(k-i))
		var v lua.LValue
		if t.Metatable == lua.LNil {
			v = t.RawGetInt(int(k))
		} else {
			v = L.GetTable(t, lua.LNumber(k))
		}
		s := field(k, v)
		if k < last {
			s += sep
		}
		if out.Len()+len(s) > b.max {
			tooLarge(L, "table.concat", b.max)
		}
		out.WriteString(s)
	}
	L.Push(lua.LString(out.String()))
	return 1
}
