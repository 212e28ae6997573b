package stdlib

import (
	"fmt"
	"strings"

	lua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/parse"
)

// openBase54 replaces the basic functions whose gopher-lua versions differ from
// Lua 5.4's §6.1 in results or in their error messages.
func (b *lib) openBase54(L *lua.LState) {
	g, ok := L.Get(lua.GlobalsIndex).(*lua.LTable)
	if !ok {
		return
	}
	setFuncs(L, g, map[string]lua.LGFunction{
		"tostring":     baseToString,
		"tonumber":     baseToNumber,
		"select":       baseSelect,
		"type":         baseType,
		"assert":       baseAssert,
		"error":        baseError,
		"ipairs":       ipairsWith(L.NewFunction(ipairsStep)),
		"pairs":        basePairs,
		"setmetatable": baseSetMetatable,
		"getmetatable": baseGetMetatable,
		"rawget":       baseRawGet,
		"rawset":       baseRawSet,
		"rawequal":     baseRawEqual,
		"rawlen":       baseRawLen,
		"xpcall":       baseXpcall,
	})
	co := globalTable(L, "coroutine")
	setFuncs(L, co, map[string]lua.LGFunction{
		"running":     coRunning,
		"isyieldable": coIsYieldable,
		"close":       coClose,
		"status":      coStatus,
	})
	origCreate, okCreate := co.RawGetString("create").(*lua.LFunction)
	origResume, okResume := co.RawGetString("resume").(*lua.LFunction)
	if okCreate && okResume {
		create := L.NewFunction(coCreateWith(origCreate))
		resume := L.NewFunction(coResumeWith(origResume))
		co.RawSetString("create", create)
		co.RawSetString("resume", resume)
		co.RawSetString("wrap", L.NewFunction(coWrapWith(create, resume)))
	}
}

// trampolineProto is a Lua function that makes a Lua closure calling a given
// function: gopher-lua loses the results of a Go function run directly as a
// coroutine body (coroutine.wrap(string.gmatch(...)) returned nothing).
var trampolineProto = func() *lua.FunctionProto {
	chunk, err := parse.Parse(strings.NewReader("local f = ... return function(...) return f(...) end"), "=trampoline")
	if err != nil {
		panic(err)
	}
	proto, err := lua.Compile(chunk, "=trampoline")
	if err != nil {
		panic(err)
	}
	return proto
}()

// coCreateWith wraps coroutine.create so that a Go function body runs inside a
// Lua closure.
func coCreateWith(orig *lua.LFunction) lua.LGFunction {
	return func(L *lua.LState) int {
		fn, ok := L.Get(1).(*lua.LFunction)
		if !ok {
			typeError(L, 1, "create", "function")
		}
		if fn.IsG {
			L.Push(L.NewFunctionFromProto(trampolineProto))
			L.Push(fn)
			L.Call(1, 1)
			L.Replace(1, L.Get(-1))
			L.Pop(1)
		}
		L.Insert(orig, 1)
		L.Call(L.GetTop()-1, lua.MultRet)
		return L.GetTop()
	}
}

// baseXpcall is xpcall(f, msgh, ...), passing the extra arguments to f as Lua 5.2+ does.
func baseXpcall(L *lua.LState) int {
	h, ok := L.Get(2).(*lua.LFunction)
	if !ok {
		typeError(L, 2, "xpcall", "function")
	}
	top := L.GetTop()
	L.Push(L.Get(1))
	for i := 3; i <= top; i++ {
		L.Push(L.Get(i))
	}
	if err := L.PCall(top-2, lua.MultRet, h); err != nil {
		L.SetTop(top)
		L.Push(lua.LFalse)
		if apiErr, ok := err.(*lua.ApiError); ok {
			L.Push(apiErr.Object)
		} else {
			L.Push(lua.LString(err.Error()))
		}
		return 2
	}
	L.Insert(lua.LTrue, top+1)
	return L.GetTop() - top
}

// coRunning returns the running coroutine and whether it is the main one; gopher-lua
// returns nothing in the main thread.
func coRunning(L *lua.LState) int {
	L.Push(L)
	L.Push(lua.LBool(L.Parent == nil))
	return 2
}

// coStatus is coroutine.status with Lua 5.4's "normal" for every coroutine up
// the chain of resumes.
func coStatus(L *lua.LState) int {
	co, ok := L.Get(1).(*lua.LState)
	if !ok {
		typeError(L, 1, "status", "thread")
	}
	L.Push(lua.LString(statusOf(L, co)))
	return 1
}

// statusOf is the status of co seen from L. gopher-lua calls only L's resumer
// normal and the coroutines above it suspended, so resuming one of those ran
// it again inside itself until the Go stack overflowed.
func statusOf(L, co *lua.LState) string {
	status := L.Status(co)
	if status == "suspended" {
		for p := L.Parent; p != nil; p = p.Parent {
			if p == co {
				return "normal"
			}
		}
	}
	return status
}

// coResumeWith wraps coroutine.resume so that resuming a coroutine that is not
// suspended fails with Lua 5.4's message, and a coroutine that dies in an
// error keeps it for coroutine.close.
func coResumeWith(orig *lua.LFunction) lua.LGFunction {
	return func(L *lua.LState) int {
		co, ok := L.Get(1).(*lua.LState)
		if !ok {
			typeError(L, 1, "resume", "thread")
		}
		switch statusOf(L, co) {
		case "dead":
			L.Push(lua.LFalse)
			L.Push(lua.LString("cannot resume dead coroutine"))
			return 2
		case "running", "normal":
			L.Push(lua.LFalse)
			L.Push(lua.LString("cannot resume non-suspended coroutine"))
			return 2
		}
		L.Insert(orig, 1)
		L.Call(L.GetTop()-1, lua.MultRet)
		if L.Get(1) == lua.LFalse && co.Dead {
			keepError(co, L.Get(2))
		}
		return L.GetTop()
	}
}

// deadError is the error a coroutine died in, kept until coroutine.close
// returns it.
type deadError struct{ value lua.LValue }

// keepError keeps err on the stack of co, which died in it: gopher-lua does
// not, and Lua 5.4's coroutine.close returns it. Nothing runs on a dead
// coroutine's stack, so the error lives exactly as long as the coroutine, as
// in Lua 5.4, whatever the number of coroutines a pooled state runs.
func keepError(co *lua.LState, err lua.LValue) {
	ud := co.NewUserData()
	ud.Value = deadError{err}
	co.SetTop(0)
	co.Push(ud)
}

// takeError returns and forgets the error dead coroutine co died in, if
// coroutine.close has not yet returned it: no Lua value can be a deadError,
// so one alone on the stack is the kept error.
func takeError(co *lua.LState) (lua.LValue, bool) {
	if co.GetTop() != 1 {
		return nil, false
	}
	ud, ok := co.Get(1).(*lua.LUserData)
	if !ok {
		return nil, false
	}
	e, ok := ud.Value.(deadError)
	if ok {
		co.SetTop(0)
	}
	return e.value, ok
}

// coWrapWith is Lua 5.4's coroutine.wrap on top of create and resume: an error
// in the coroutine, or calling it once dead, is raised in the caller, a string
// with the caller's position in front. The coroutine keeps no error to close:
// Lua 5.4 resets it when raising one.
func coWrapWith(create, resume *lua.LFunction) lua.LGFunction {
	return func(L *lua.LState) int {
		if _, ok := L.Get(1).(*lua.LFunction); !ok {
			typeError(L, 1, "wrap", "function")
		}
		L.Push(create)
		L.Push(L.Get(1))
		L.Call(1, 1)
		co := L.Get(-1)
		L.Pop(1)
		L.Push(L.NewFunction(func(L *lua.LState) int {
			L.Insert(co, 1)
			L.Insert(resume, 1)
			L.Call(L.GetTop()-1, lua.MultRet)
			if lua.LVAsBool(L.Get(1)) {
				return L.GetTop() - 1
			}
			if th, ok := co.(*lua.LState); ok {
				takeError(th)
			}
			err := L.Get(2)
			if s, ok := err.(lua.LString); ok {
				err = lua.LString(errorWhere(L, 1) + string(s))
			}
			L.Error(err, 0)
			return 0
		}))
		return 1
	}
}

// coClose is Lua 5.4's coroutine.close for a suspended or dead coroutine: it
// becomes dead, and the result is false and the error it died in the first
// time it is closed, else true.
func coClose(L *lua.LState) int {
	co, ok := L.Get(1).(*lua.LState)
	if !ok {
		typeError(L, 1, "close", "thread")
	}
	switch status := statusOf(L, co); status {
	case "suspended", "dead":
		if err, ok := takeError(co); ok {
			L.Push(lua.LFalse)
			L.Push(err)
			return 2
		}
		co.Dead = true
		L.Push(lua.LTrue)
		return 1
	default:
		L.RaiseError("cannot close a %s coroutine", status)
		return 0
	}
}

func coIsYieldable(L *lua.LState) int {
	L.Push(lua.LBool(L.Parent != nil))
	return 1
}

// checkAny is luaL_checkany: argument n must be present, even if nil.
func checkAny(L *lua.LState, n int, fname string) {
	if L.GetTop() < n {
		argError(L, n, fname, "value expected")
	}
}

func checkTable(L *lua.LState, n int, fname string) *lua.LTable {
	t, ok := L.Get(n).(*lua.LTable)
	if !ok {
		typeError(L, n, fname, "table")
	}
	return t
}

// baseToString is tostring with Lua 5.4's number spelling (inf, -inf, nan, -nan).
func baseToString(L *lua.LState) int {
	checkAny(L, 1, "tostring")
	L.Push(lua.LString(toString(L, L.Get(1))))
	return 1
}

// baseToNumber is Lua 5.4's tonumber: numerals as the lexer reads them (hexadecimal
// floats, exponents, surrounding whitespace), or an integer in base 2 to 36.
func baseToNumber(L *lua.LState) int {
	const fname = "tonumber"
	if L.Get(2) == lua.LNil {
		checkAny(L, 1, fname)
		switch v := L.Get(1).(type) {
		case lua.LNumber:
			L.Push(v)
			return 1
		case lua.LString:
			if f, ok := strToNumber(string(v)); ok {
				L.Push(lua.LNumber(f))
				return 1
			}
		}
		L.Push(lua.LNil)
		return 1
	}
	base := checkInteger(L, 2, fname)
	s, ok := L.Get(1).(lua.LString)
	if !ok {
		typeError(L, 1, fname, "string")
	}
	if base < 2 || base > 36 {
		argError(L, 2, fname, "base out of range")
	}
	if n, ok := strToIntBase(string(s), base); ok {
		L.Push(lua.LNumber(n))
	} else {
		L.Push(lua.LNil)
	}
	return 1
}

// strToIntBase is tonumber's l_str2int for a base: optional whitespace and '-',
// at least one digit below base, optional whitespace; it wraps around like a
// Lua integer.
func strToIntBase(s string, base int64) (int64, bool) {
	s = strings.Trim(s, " \f\n\r\t\v")
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	if s == "" {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		var d int64
		switch {
		case c >= '0' && c <= '9':
			d = int64(c - '0')
		case c >= 'a' && c <= 'z':
			d = int64(c-'a') + 10
		case c >= 'A' && c <= 'Z':
			d = int64(c-'A') + 10
		default:
			return 0, false
		}
		if d >= base {
			return 0, false
		}
		n = n*uint64(base) + uint64(d)
	}
	if neg {
		n = -n
	}
	return int64(n), true
}

func baseSelect(L *lua.LState) int {
	const fname = "select"
	top := L.GetTop()
	if s, ok := L.Get(1).(lua.LString); ok && s == "#" {
		L.Push(lua.LNumber(top - 1))
		return 1
	}
	n := checkInteger(L, 1, fname)
	if n < 0 {
		n = int64(top) + n
	} else if n > int64(top) {
		n = int64(top)
	}
	if n < 1 {
		argError(L, 1, fname, "index out of range")
	}
	return top - int(n)
}

func baseType(L *lua.LState) int {
	checkAny(L, 1, "type")
	L.Push(lua.LString(L.Get(1).Type().String()))
	return 1
}

// baseAssert raises its message argument as it is, whatever its type.
func baseAssert(L *lua.LState) int {
	checkAny(L, 1, "assert")
	if lua.LVIsFalse(L.Get(1)) {
		if L.GetTop() < 2 {
			raise(L, "assertion failed!")
		}
		L.Error(L.Get(2), 0)
	}
	return L.GetTop()
}

// baseError is error(message [, level]): a nil message stays nil, and only string
// messages get a position.
func baseError(L *lua.LState) int {
	level := optInteger(L, 2, "error", 1)
	msg := L.Get(1)
	if s, ok := msg.(lua.LString); ok && level > 0 {
		msg = lua.LString(errorWhere(L, int(level)) + string(s))
	}
	L.Error(msg, 0)
	return 0
}

// errorWhere is the "chunk:line: " of the function level calls up from error
// (1 is error's caller), or "" for a Go function or beyond the stack, as Lua
// 5.4's luaL_where. gopher-lua's own level counting is one short past 1.
func errorWhere(L *lua.LState, level int) string {
	dbg, ok := L.GetStack(level)
	if !ok {
		return ""
	}
	if _, err := L.GetInfo("Sl", dbg, lua.LNil); err != nil || dbg.CurrentLine <= 0 {
		return ""
	}
	return fmt.Sprintf("%s:%d: ", dbg.Source, dbg.CurrentLine)
}

// ipairsWith is Lua 5.4's ipairs, returning the state's one step function: it
// iterates with metamethods until a nil.
func ipairsWith(step *lua.LFunction) lua.LGFunction {
	return func(L *lua.LState) int {
		checkAny(L, 1, "ipairs")
		L.Push(step)
		L.Push(L.Get(1))
		L.Push(lua.LNumber(0))
		return 3
	}
}

func ipairsStep(L *lua.LState) int {
	i, _ := L.Get(2).(lua.LNumber)
	i++
	var v lua.LValue
	if t, ok := L.Get(1).(*lua.LTable); ok && t.Metatable == lua.LNil {
		v = t.RawGetInt(int(i))
	} else {
		v = L.GetTable(L.Get(1), i)
	}
	if v == lua.LNil {
		L.Push(lua.LNil)
		return 1
	}
	L.Push(i)
	L.Push(v)
	return 2
}

// basePairs honours __pairs and otherwise returns next, t, nil.
func basePairs(L *lua.LState) int {
	checkAny(L, 1, "pairs")
	v := L.Get(1)
	if mm := L.GetMetaField(v, "__pairs"); mm != lua.LNil {
		L.Push(mm)
		L.Push(v)
		L.Call(1, 3)
		return 3
	}
	if _, ok := v.(*lua.LTable); !ok {
		typeError(L, 1, "pairs", "table")
	}
	L.Push(L.GetGlobal("next"))
	L.Push(v)
	L.Push(lua.LNil)
	return 3
}

func baseSetMetatable(L *lua.LState) int {
	const fname = "setmetatable"
	t := checkTable(L, 1, fname)
	mt := L.Get(2)
	if _, ok := mt.(*lua.LTable); !ok && mt != lua.LNil || L.GetTop() < 2 {
		typeError(L, 2, fname, "nil or table")
	}
	if L.GetMetaField(t, "__metatable") != lua.LNil {
		raise(L, "cannot change a protected metatable")
	}
	L.SetMetatable(t, mt)
	L.Push(t)
	return 1
}

func baseGetMetatable(L *lua.LState) int {
	checkAny(L, 1, "getmetatable")
	mt := L.GetMetatable(L.Get(1))
	if t, ok := mt.(*lua.LTable); ok {
		if protected := t.RawGetString("__metatable"); protected != lua.LNil {
			mt = protected
		}
	}
	L.Push(mt)
	return 1
}

func baseRawGet(L *lua.LState) int {
	t := checkTable(L, 1, "rawget")
	checkAny(L, 2, "rawget")
	L.Push(t.RawGet(L.Get(2)))
	return 1
}

func baseRawSet(L *lua.LState) int {
	const fname = "rawset"
	t := checkTable(L, 1, fname)
	checkAny(L, 2, fname)
	checkAny(L, 3, fname)
	switch k := L.Get(2).(type) {
	case *lua.LNilType:
		raise(L, "table index is nil")
	case lua.LNumber:
		if k != k {
			raise(L, "table index is NaN")
		}
	}
	t.RawSet(L.Get(2), L.Get(3))
	L.Push(t)
	return 1
}

func baseRawEqual(L *lua.LState) int {
	checkAny(L, 1, "rawequal")
	checkAny(L, 2, "rawequal")
	L.Push(lua.LBool(L.Get(1) == L.Get(2)))
	return 1
}

func baseRawLen(L *lua.LState) int {
	switch v := L.Get(1).(type) {
	case *lua.LTable:
		L.Push(lua.LNumber(v.Len()))
	case lua.LString:
		L.Push(lua.LNumber(len(v)))
	default:
		typeError(L, 1, "rawlen", "table or string")
	}
	return 1
}
