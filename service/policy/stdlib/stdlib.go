// Package stdlib installs into a gopher-lua state the Lua 5.4 library functions KumoMTA policies use and the kumo.string, kumo.regex and kumo.serde helper modules.
package stdlib

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// Limits bound what one Go builtin may allocate, because gopher-lua has no memory limit
// and a context timeout cannot interrupt a Go builtin that is already running.
type Limits struct {
	// MaxStringBytes is the longest string a builtin may build (string.rep, string.format,
	// gsub, table.concat, kumo.string.*, regex replace, json_encode ...).
	// Zero or a negative value selects 1 MiB.
	MaxStringBytes int
	// Now is the clock of kumo.time and kumo.memoize; nil selects time.Now.
	Now func() time.Time
	// ReadFile reads a file a policy names (kumo.json_load, kumo.toml_load and
	// file key sources); nil makes those functions fail as not available.
	ReadFile func(name string) ([]byte, error)
}

// defaultMaxStringBytes is used when Limits.MaxStringBytes is not set.
const defaultMaxStringBytes = 1 << 20

// maxLoopItems caps the element count of table.move and table.unpack: both run
// entirely in Go, so a huge range would otherwise pin a CPU or exhaust memory.
const maxLoopItems = 1 << 20

// ctxCheckEvery is how many iterations a long Go loop runs between context checks.
const ctxCheckEvery = 4096

// lib carries the limits into the Go builtins installed by Open.
type lib struct {
	max int
	// check reports the state's context error; pattern matching polls it because the
	// VM checks the context only between instructions.
	check func() error
	now   func() time.Time
	// readFile is Limits.ReadFile.
	readFile func(name string) ([]byte, error)
	// memo holds the state's kumo.memoize caches by name.
	memo map[string]*memoCache
	// memoTotal is the size of every cached entry of the state, summed.
	memoTotal int
	// rng is the state's math.random source.
	rng *rand.Rand
}

// OpenStandard opens the gopher-lua standard libraries a policy gets (base,
// table, string, math, coroutine) in a state made with SkipOpenLibs; io, os,
// debug, package and channel are left out. Open then builds on them.
func OpenStandard(L *lua.LState) {
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
		{lua.CoroutineLibName, lua.OpenCoroutine},
	} {
		L.Push(L.NewFunction(lib.open))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
}

// Open installs everything into L, after OpenStandard, with kumo the
// global `kumo` table the engine created.
func Open(L *lua.LState, kumo *lua.LTable, lim Limits) {
	b := &lib{max: lim.MaxStringBytes, check: func() error { return ctxErr(L) }, now: lim.Now, readFile: lim.ReadFile}
	if b.max <= 0 {
		b.max = defaultMaxStringBytes
	}
	if b.now == nil {
		b.now = time.Now
	}
	b.openLua54(L)
	b.openFormat(L)
	b.openBounded(L)
	b.openPatterns(L)
	b.openBase54(L)
	b.openString54(L)
	b.openTable54(L)
	b.openMath54(L)
	b.openPack(L)
	if kumo == nil {
		kumo = L.NewTable()
		L.SetGlobal("kumo", kumo)
	}
	b.openKumoString(L, kumo)
	b.openKumoRegex(L, kumo)
	b.openKumoSerde(L, kumo)
	b.openKumoHelpers(L, kumo)
}

// globalTable returns the global library table name, creating it when the engine did not open it.
func globalTable(L *lua.LState, name string) *lua.LTable {
	if t, ok := L.GetGlobal(name).(*lua.LTable); ok {
		return t
	}
	t := L.NewTable()
	L.SetGlobal(name, t)
	return t
}

// subModule returns kumo[name], creating it like KumoMTA's get_or_create_sub_module.
func subModule(L *lua.LState, kumo *lua.LTable, name string) *lua.LTable {
	if t, ok := kumo.RawGetString(name).(*lua.LTable); ok {
		return t
	}
	t := L.NewTable()
	kumo.RawSetString(name, t)
	return t
}

func setFuncs(L *lua.LState, t *lua.LTable, funcs map[string]lua.LGFunction) {
	for name, fn := range funcs {
		t.RawSetString(name, L.NewFunction(fn))
	}
}

// argError raises Lua 5.4's "bad argument" error, naming the function as Lua 5.4
// does: by the name the caller used, or by its library name when called from Go
// (pcall, a metamethod), fname being the last resort; a method call does not
// count self. A qualified fname (kumo.string.trim) is used as it is.
func argError(L *lua.LState, n int, fname, msg string) {
	if strings.Contains(fname, ".") {
		// kumo.* helpers are Rust functions in KumoMTA, named in full whatever the call.
		L.RaiseError("bad argument #%d to '%s' (%s)", n, fname, msg)
	}
	name := callName(L, fname)
	if calledAsMethod(L) {
		n--
		if n == 0 {
			L.RaiseError("calling '%s' on bad self (%s)", name, msg)
		}
	}
	L.RaiseError("bad argument #%d to '%s' (%s)", n, name, msg)
}

// stdlibTables are searched, in order, for the name of a function that was not
// called by name, like luaL_argerror's pushglobalfuncname.
var stdlibTables = []string{"string", "table", "math", "utf8", "coroutine"}

// callName is the name the running builtin was called by.
func callName(L *lua.LState, fname string) string {
	dbg, ok := L.GetStack(0)
	if !ok {
		return fname
	}
	fn, err := L.GetInfo("nf", dbg, lua.LNil)
	if err != nil {
		return fname
	}
	if name := dbg.Name; name != "" && name != "?" && name[0] != '(' && name[0] != '<' && name != "main chunk" {
		return name
	}
	for _, lib := range stdlibTables {
		if t, ok := L.GetGlobal(lib).(*lua.LTable); ok {
			if key := keyOf(t, fn); key != "" {
				return lib + "." + key
			}
		}
	}
	if g, ok := L.Get(lua.GlobalsIndex).(*lua.LTable); ok {
		if key := keyOf(g, fn); key != "" {
			return key
		}
	}
	return fname
}

// keyOf is the string key under which t holds v, or "".
func keyOf(t *lua.LTable, v lua.LValue) string {
	found := ""
	t.ForEach(func(k, val lua.LValue) {
		if ks, ok := k.(lua.LString); ok && val == v && found == "" {
			found = string(ks)
		}
	})
	return found
}

// typeName is Lua's type name for argument n, or "no value" when it is absent.
func typeName(L *lua.LState, n int) string {
	if n > L.GetTop() {
		return "no value"
	}
	return L.Get(n).Type().String()
}

func typeError(L *lua.LState, n int, fname, expected string) {
	argError(L, n, fname, expected+" expected, got "+typeName(L, n))
}

// raise raises msg verbatim: RaiseError treats its first argument as a format.
func raise(L *lua.LState, msg string) {
	L.RaiseError("%s", msg)
}

func tooLarge(L *lua.LState, fname string, max int) {
	L.RaiseError("%s: resulting string too large (more than %d bytes)", fname, max)
}

// checkCtx lets long Go loops honour the state's context, which the VM only checks
// between Lua instructions.
func checkCtx(L *lua.LState, i int) {
	if i%ctxCheckEvery != 0 {
		return
	}
	if err := ctxErr(L); err != nil {
		raise(L, err.Error())
	}
}

// ctxErr is the error of L's context, nil while it is live or when L has none.
func ctxErr(L *lua.LState) error {
	if ctx := L.Context(); ctx != nil {
		return ctx.Err()
	}
	return nil
}

// checkString accepts strings and numbers (converted like tostring), as luaL_checklstring does.
func checkString(L *lua.LState, n int, fname string) string {
	switch v := L.Get(n).(type) {
	case lua.LString:
		return string(v)
	case lua.LNumber:
		return luaNumberString(float64(v))
	}
	typeError(L, n, fname, "string")
	return ""
}

func optString(L *lua.LState, n int, fname, def string) string {
	if L.Get(n) == lua.LNil {
		return def
	}
	return checkString(L, n, fname)
}

// checkNumber accepts numbers and numeric strings, as luaL_checknumber does.
func checkNumber(L *lua.LState, n int, fname string) float64 {
	switch v := L.Get(n).(type) {
	case lua.LNumber:
		return float64(v)
	case lua.LString:
		if f, ok := strToNumber(string(v)); ok {
			return f
		}
	}
	typeError(L, n, fname, "number")
	return 0
}

// checkInteger follows luaL_checkinteger: a float is accepted only when it has an exact
// int64 value, so 3.0 is 3 and 3.5 is an error instead of being truncated.
func checkInteger(L *lua.LState, n int, fname string) int64 {
	f := checkNumber(L, n, fname)
	i, ok := toInteger(f)
	if !ok {
		argError(L, n, fname, "number has no integer representation")
	}
	return i
}

func optInteger(L *lua.LState, n int, fname string, def int64) int64 {
	if L.Get(n) == lua.LNil {
		return def
	}
	return checkInteger(L, n, fname)
}

// toInteger reports the int64 value of f when f is integral and inside the int64 range.
// This is the rule behind math.type, math.tointeger and every integer argument.
func toInteger(f float64) (int64, bool) {
	if f >= -9223372036854775808.0 && f < 9223372036854775808.0 && f == math.Trunc(f) {
		return int64(f), true
	}
	return 0, false
}

// strToNumber converts a numeral the way Lua does: surrounding whitespace allowed,
// decimal or hexadecimal, no "inf"/"nan" words or Go-only syntax such as underscores.
func strToNumber(s string) (float64, bool) {
	s = strings.Trim(s, " \f\n\r\t\v")
	body := strings.TrimLeft(s, "+-")
	if len(s)-len(body) > 1 || body == "" {
		return 0, false
	}
	neg := strings.HasPrefix(s, "-")
	if strings.HasPrefix(body, "0x") || strings.HasPrefix(body, "0X") {
		return hexToNumber(body[2:], neg)
	}
	for i := 0; i < len(body); i++ {
		c := body[i]
		if !(c >= '0' && c <= '9' || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') {
			return 0, false
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return f, true
		}
		return 0, false
	}
	return f, true
}

// hexToNumber parses the digits after "0x": integers wrap around modulo 2^64 as in
// Lua 5.4, and a fraction or binary exponent makes it a float.
func hexToNumber(h string, neg bool) (float64, bool) {
	if h == "" {
		return 0, false
	}
	if !strings.ContainsAny(h, ".pP") {
		var u uint64
		for i := 0; i < len(h); i++ {
			d, ok := hexDigit(h[i])
			if !ok {
				return 0, false
			}
			u = u<<4 | uint64(d)
		}
		v := float64(int64(u))
		if neg {
			v = -v
		}
		return v, true
	}
	mant := h
	exp := "p0"
	if i := strings.IndexAny(h, "pP"); i >= 0 {
		mant, exp = h[:i], "p"+h[i+1:]
	}
	if mant == "" || mant == "." {
		return 0, false
	}
	sign := ""
	if neg {
		sign = "-"
	}
	f, err := strconv.ParseFloat(sign+"0x"+mant+exp, 64)
	if err != nil {
		return 0, false
	}
	return f, true
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// negativeZero reports whether f is -0.0, which only a float can be: Lua 5.4's
// integer zero has no sign.
func negativeZero(f float64) bool {
	return f == 0 && math.Signbit(f)
}

// luaNumberString formats a number as Lua 5.4 prints it: integral values in the int64
// range as integers, others with "%.14g", infinities as "inf"/"-inf".
func luaNumberString(f float64) string {
	if negativeZero(f) {
		return "-0.0"
	}
	if i, ok := toInteger(f); ok {
		return strconv.FormatInt(i, 10)
	}
	switch {
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	case math.IsNaN(f):
		if math.Signbit(f) {
			return "-nan"
		}
		return "nan"
	}
	return fmt.Sprintf("%.14g", f)
}

// lessThan is Lua 5.4's a < b for the library's comparisons (table.sort,
// math.max, math.min): numbers and strings by value, anything else through an
// __lt metamethod of either operand, whatever their types, else Lua 5.4's
// error. gopher-lua's own comparison words its errors differently and tries
// no metamethod on operands of different types.
func lessThan(L *lua.LState, a, b lua.LValue) bool {
	switch x := a.(type) {
	case lua.LNumber:
		if y, ok := b.(lua.LNumber); ok {
			return x < y
		}
	case lua.LString:
		if y, ok := b.(lua.LString); ok {
			return x < y
		}
	}
	mm := L.GetMetaField(a, "__lt")
	if mm == lua.LNil {
		mm = L.GetMetaField(b, "__lt")
	}
	if mm != lua.LNil {
		L.Push(mm)
		L.Push(a)
		L.Push(b)
		L.Call(2, 1)
		r := L.Get(-1)
		L.Pop(1)
		return lua.LVAsBool(r)
	}
	ta, tb := a.Type().String(), b.Type().String()
	if ta == tb {
		L.RaiseError("attempt to compare two %s values", ta)
	}
	L.RaiseError("attempt to compare %s with %s", ta, tb)
	return false
}
