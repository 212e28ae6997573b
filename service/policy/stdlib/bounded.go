package stdlib

import (
	"strings"

	lua "github.com/yuin/gopher-lua"
)

func (b *lib) openBounded(L *lua.LState) {
	str := globalTable(L, "string")
	str.RawSetString("rep", L.NewFunction(b.strRep))
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
	last := optEnd(L, 4, fname, t)
	if i > last {
		L.Push(lua.LString(""))
		return 1
	}
	field := func(k int64, v lua.LValue) string {
		switch v := v.(type) {
		case lua.LString:
			return string(v)
		case lua.LNumber:
			return luaNumberString(float64(v))
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
			total += int64(len(field(k, rawIndex(t, k))))
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
			v = rawIndex(t, k)
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
