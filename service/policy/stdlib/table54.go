package stdlib

import (
	"sort"

	lua "github.com/yuin/gopher-lua"
)

// openTable54 replaces table.insert, table.remove and table.sort with Lua 5.4's
// (position checks, an optional comparator, metamethods honoured) and adds
// table.pack.
func (b *lib) openTable54(L *lua.LState) {
	setFuncs(L, globalTable(L, "table"), map[string]lua.LGFunction{
		"insert": tableInsert,
		"remove": tableRemove,
		"sort":   tableSort,
		"pack":   tablePack,
	})
	// Lua 5.1's table.getn and table.maxn are in no Lua 5.4.
	for _, name := range []string{"getn", "maxn"} {
		globalTable(L, "table").RawSetString(name, lua.LNil)
	}
}

// tableGet and tableSet are lua_geti and lua_seti: raw on a table without a
// metatable, through metamethods otherwise.
func tableGet(L *lua.LState, t *lua.LTable, i int64) lua.LValue {
	if t.Metatable == lua.LNil {
		return rawIndex(t, i)
	}
	return L.GetTable(t, lua.LNumber(i))
}

func tableSet(L *lua.LState, t *lua.LTable, i int64, v lua.LValue) {
	if t.Metatable == lua.LNil {
		t.RawSet(lua.LNumber(i), v)
		return
	}
	L.SetTable(t, lua.LNumber(i), v)
}

// rawIndex is t[i] without metamethods; RawGetInt only sees the array part,
// where indices below 1 never are.
func rawIndex(t *lua.LTable, i int64) lua.LValue {
	if i >= 1 && i <= maxInt32 {
		return t.RawGetInt(int(i))
	}
	return t.RawGet(lua.LNumber(i))
}

const maxInt32 = 1<<31 - 1

// tableLen is luaL_len: the length, honouring __len, whose result must be an
// integer.
func tableLen(L *lua.LState, t *lua.LTable) int64 {
	mm := L.GetMetaField(t, "__len")
	if mm == lua.LNil {
		return int64(t.Len())
	}
	L.Push(mm)
	L.Push(t)
	L.Call(1, 1)
	n, ok := L.Get(-1).(lua.LNumber)
	L.Pop(1)
	i, isInt := toInteger(float64(n))
	if !ok || !isInt {
		raise(L, "object length is not an integer")
	}
	return i
}

func tableInsert(L *lua.LState) int {
	const fname = "insert"
	t := checkTable(L, 1, fname)
	e := tableLen(L, t) + 1
	switch L.GetTop() {
	case 2:
		tableSet(L, t, e, L.Get(2))
	case 3:
		pos := checkInteger(L, 2, fname)
		if uint64(pos)-1 >= uint64(e) {
			argError(L, 2, fname, "position out of bounds")
		}
		for i := e; i > pos; i-- {
			checkCtx(L, int(i))
			tableSet(L, t, i, tableGet(L, t, i-1))
		}
		tableSet(L, t, pos, L.Get(3))
	default:
		raise(L, "wrong number of arguments to 'insert'")
	}
	return 0
}

func tableRemove(L *lua.LState) int {
	const fname = "remove"
	t := checkTable(L, 1, fname)
	size := tableLen(L, t)
	pos := optInteger(L, 2, fname, size)
	if pos != size && uint64(pos)-1 > uint64(size) {
		argError(L, 1, fname, "position out of bounds")
	}
	v := tableGet(L, t, pos)
	for ; pos < size; pos++ {
		checkCtx(L, int(pos))
		tableSet(L, t, pos, tableGet(L, t, pos+1))
	}
	tableSet(L, t, pos, lua.LNil)
	L.Push(v)
	return 1
}

// tableSort sorts t[1..#t] in place, with the comparator or '<'. Like Lua's, it
// is not stable; a comparator that raises stops it with the error.
func tableSort(L *lua.LState) int {
	const fname = "sort"
	t := checkTable(L, 1, fname)
	n := tableLen(L, t)
	if n <= 1 {
		return 0
	}
	if n >= maxLoopItems {
		argError(L, 1, fname, "array too big")
	}
	var cmp *lua.LFunction
	if c := L.Get(2); c != lua.LNil {
		f, ok := c.(*lua.LFunction)
		if !ok {
			typeError(L, 2, fname, "function")
		}
		cmp = f
	}
	items := make([]lua.LValue, n)
	for i := range items {
		items[i] = tableGet(L, t, int64(i)+1)
	}
	calls := 0
	less := func(a, b lua.LValue) bool {
		calls++
		checkCtx(L, calls)
		if cmp == nil {
			return L.LessThan(a, b)
		}
		L.Push(cmp)
		L.Push(a)
		L.Push(b)
		L.Call(2, 1)
		r := L.Get(-1)
		L.Pop(1)
		return lua.LVAsBool(r)
	}
	sort.Slice(items, func(i, j int) bool { return less(items[i], items[j]) })
	for i, v := range items {
		tableSet(L, t, int64(i)+1, v)
	}
	return 0
}

func tablePack(L *lua.LState) int {
	top := L.GetTop()
	t := L.CreateTable(top, 1)
	for i := 1; i <= top; i++ {
		t.RawSetInt(i, L.Get(i))
	}
	t.RawSetString("n", lua.LNumber(top))
	L.Push(t)
	return 1
}
