package stdlib

import (
	"math/rand/v2"

	lua "github.com/yuin/gopher-lua"
)

// openTable54 replaces table.insert, table.remove and table.sort with Lua 5.4's
// (position checks, an optional comparator, metamethods honoured) and adds
// table.pack.
func (b *lib) openTable54(L *lua.LState) {
	setFuncs(L, globalTable(L, "table"), map[string]lua.LGFunction{
		"insert": tableInsert,
		"remove": tableRemove,
		"sort":   b.tableSort,
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

// tableSort sorts t[1..#t] in place, with the comparator or '<', by Lua 5.4's
// quicksort: the same comparisons in the same order, so equal elements end where
// Lua 5.4 puts them and an inconsistent comparator is caught the same way.
func (b *lib) tableSort(L *lua.LState) int {
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
	s := &sorter{L: L, cmp: cmp, rng: b.rng, a: make([]lua.LValue, n+1)}
	for i := int64(1); i <= n; i++ {
		s.a[i] = tableGet(L, t, i)
	}
	s.sort(1, int(n), 0)
	for i := int64(1); i <= n; i++ {
		tableSet(L, t, i, s.a[i])
	}
	return 0
}

// sorter is ltablib.c's auxsort over a copy of the array, indexed from 1.
type sorter struct {
	L     *lua.LState
	cmp   *lua.LFunction
	rng   *rand.Rand
	a     []lua.LValue
	calls int
}

// sortRandomLimit is RANLIMIT: smaller intervals take the middle as pivot.
const sortRandomLimit = 100

func (s *sorter) less(x, y lua.LValue) bool {
	s.calls++
	checkCtx(s.L, s.calls)
	if s.cmp == nil {
		return lessThan(s.L, x, y)
	}
	s.L.Push(s.cmp)
	s.L.Push(x)
	s.L.Push(y)
	s.L.Call(2, 1)
	r := s.L.Get(-1)
	s.L.Pop(1)
	return lua.LVAsBool(r)
}

func (s *sorter) swap(i, j int) { s.a[i], s.a[j] = s.a[j], s.a[i] }

func (s *sorter) invalidOrder() { raise(s.L, "invalid order function for sorting") }

// partition splits a[lo..up] around the pivot p, which sits at a[up-1].
func (s *sorter) partition(lo, up int, p lua.LValue) int {
	i, j := lo, up-1
	for {
		for i++; s.less(s.a[i], p); i++ {
			if i == up-1 {
				s.invalidOrder()
			}
		}
		for j--; s.less(p, s.a[j]); j-- {
			if j < i {
				s.invalidOrder()
			}
		}
		if j < i {
			s.a[up-1], s.a[i] = s.a[i], p
			return i
		}
		s.swap(i, j)
	}
}

func (s *sorter) sort(lo, up int, rnd uint) {
	for lo < up {
		if s.less(s.a[up], s.a[lo]) {
			s.swap(lo, up)
		}
		if up-lo == 1 {
			return
		}
		p := (lo + up) / 2
		if up-lo >= sortRandomLimit && rnd != 0 {
			r4 := uint(up-lo) / 4
			p = int(rnd%(r4*2)) + lo + int(r4)
		}
		if s.less(s.a[p], s.a[lo]) {
			s.swap(p, lo)
		} else if s.less(s.a[up], s.a[p]) {
			s.swap(p, up)
		}
		if up-lo == 2 {
			return
		}
		pivot := s.a[p]
		s.swap(p, up-1)
		p = s.partition(lo, up, pivot)
		var n int
		if p-lo < up-p {
			s.sort(lo, p-1, rnd)
			n, lo = p-lo, p+1
		} else {
			s.sort(p+1, up, rnd)
			n, up = up-p, p-1
		}
		if (up-lo)/128 > n {
			rnd = uint(s.rng.Uint32())
		}
	}
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
