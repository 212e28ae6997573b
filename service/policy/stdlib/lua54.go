package stdlib

import (
	"strings"

	lua "github.com/yuin/gopher-lua"
)

// gopher-lua numbers are all float64, so the integer limits are the widest range in
// which every integer is exact: math.type reports them as integers and arithmetic on
// them near the limits does not silently round.
const (
	maxInteger = 1<<53 - 1
	minInteger = -(1<<53 - 1)
)

// Lua 5.4 limits for the utf8 library.
const (
	maxUTF     = 0x7FFFFFFF
	maxUnicode = 0x10FFFF
	msgInvalid = "invalid UTF-8 code"
)

func (b *lib) openLua54(L *lua.LState) {
	tbl := globalTable(L, "table")
	setFuncs(L, tbl, map[string]lua.LGFunction{
		"unpack": tableUnpack,
		"move":   tableMove,
	})

	m := globalTable(L, "math")
	setFuncs(L, m, map[string]lua.LGFunction{
		"type":      mathType,
		"tointeger": mathToInteger,
	})
	m.RawSetString("maxinteger", lua.LNumber(maxInteger))
	m.RawSetString("mininteger", lua.LNumber(minInteger))

	u := L.NewTable()
	setFuncs(L, u, map[string]lua.LGFunction{
		"char":      utf8Char,
		"codepoint": utf8Codepoint,
		"len":       utf8Len,
		"offset":    utf8Offset,
		"codes":     utf8Codes,
	})
	u.RawSetString("charpattern", lua.LString("[\x00-\x7F\xC2-\xFD][\x80-\xBF]*"))
	L.SetGlobal("utf8", u)
}

// tableUnpack is Lua 5.4's table.unpack: it indexes with metamethods, like lua_geti.
func tableUnpack(L *lua.LState) int {
	const fname = "unpack"
	t := L.Get(1)
	if _, ok := t.(*lua.LTable); !ok && L.GetMetatable(t) == lua.LNil {
		if L.Get(3) == lua.LNil {
			L.RaiseError("attempt to get length of a %s value", t.Type().String())
		}
		L.RaiseError("attempt to index a %s value", t.Type().String())
	}
	i := optInteger(L, 2, fname, 1)
	j := optEnd(L, 3, fname, t)
	if i > j {
		return 0
	}
	if uint64(j-i) >= maxLoopItems {
		raise(L, "too many results to unpack")
	}
	n := int(j - i + 1)
	for k := 0; k < n; k++ {
		L.Push(L.GetTable(t, lua.LNumber(i+int64(k))))
	}
	return n
}

// tableMove is Lua 5.4's table.move(a1, f, e, t [,a2]).
func tableMove(L *lua.LState) int {
	const fname = "move"
	f := checkInteger(L, 2, fname)
	e := checkInteger(L, 3, fname)
	t := checkInteger(L, 4, fname)
	dst := 1
	if L.Get(5) != lua.LNil {
		dst = 5
	}
	src, ok := L.Get(1).(*lua.LTable)
	if !ok {
		typeError(L, 1, fname, "table")
	}
	to, ok := L.Get(dst).(*lua.LTable)
	if !ok {
		typeError(L, dst, fname, "table")
	}
	if e >= f {
		if !(f > 0 || e < maxInt64+f) {
			argError(L, 3, fname, "too many elements to move")
		}
		n := e - f + 1
		if t > maxInt64-n+1 {
			argError(L, 4, fname, "destination wrap around")
		}
		// Past maxLoopItems elements the move stops with an error, after the
		// accesses Lua 5.4 would have made by then.
		tooMany := func(i int64) {
			if i >= maxLoopItems {
				argError(L, 3, fname, "too many elements to move")
			}
			checkCtx(L, int(i))
		}
		if t > e || t <= f || src != to {
			for i := int64(0); i < n; i++ {
				tooMany(i)
				L.SetTable(to, lua.LNumber(t+i), L.GetTable(src, lua.LNumber(f+i)))
			}
		} else {
			for i := n - 1; i >= 0; i-- {
				tooMany(n - 1 - i)
				L.SetTable(to, lua.LNumber(t+i), L.GetTable(src, lua.LNumber(f+i)))
			}
		}
	}
	L.Push(to)
	return 1
}

const maxInt64 = 1<<63 - 1

func mathType(L *lua.LState) int {
	if L.GetTop() < 1 {
		argError(L, 1, "type", "value expected")
	}
	n, ok := L.Get(1).(lua.LNumber)
	if !ok {
		L.Push(lua.LNil)
		return 1
	}
	if _, isInt := toInteger(float64(n)); isInt && !negativeZero(float64(n)) {
		L.Push(lua.LString("integer"))
	} else {
		L.Push(lua.LString("float"))
	}
	return 1
}

// mathToInteger follows Lua 5.4.6, where numeric strings are converted too.
func mathToInteger(L *lua.LState) int {
	if L.GetTop() < 1 {
		argError(L, 1, "tointeger", "value expected")
	}
	var f float64
	switch v := L.Get(1).(type) {
	case lua.LNumber:
		f = float64(v)
	case lua.LString:
		var ok bool
		if f, ok = strToNumber(string(v)); !ok {
			L.Push(lua.LNil)
			return 1
		}
	default:
		L.Push(lua.LNil)
		return 1
	}
	if i, ok := toInteger(f); ok {
		L.Push(lua.LNumber(i))
	} else {
		L.Push(lua.LNil)
	}
	return 1
}

// utf8Encode writes code as Lua 5.4's luaO_utf8esc does: up to 6 bytes, so values
// above U+10FFFF and surrogates are encoded too.
func utf8Encode(sb *strings.Builder, code uint32) {
	if code < 0x80 {
		sb.WriteByte(byte(code))
		return
	}
	var buf [8]byte
	n := 1
	mfb := uint32(0x3f) // largest value that fits in the first byte
	for {
		buf[8-n] = byte(0x80 | (code & 0x3f))
		n++
		code >>= 6
		mfb >>= 1
		if code <= mfb {
			break
		}
	}
	buf[8-n] = byte((^mfb << 1) | code)
	sb.Write(buf[8-n:])
}

// EncodeUTF8 is the byte sequence of code as Lua 5.4's utf8.char and \u{XXX}
// escape write it.
func EncodeUTF8(code uint32) string {
	var sb strings.Builder
	utf8Encode(&sb, code)
	return sb.String()
}

func utf8Char(L *lua.LState) int {
	top := L.GetTop()
	var sb strings.Builder
	for i := 1; i <= top; i++ {
		c := checkInteger(L, i, "char")
		if c < 0 || c > maxUTF {
			argError(L, i, "char", "value out of range")
		}
		utf8Encode(&sb, uint32(c))
	}
	L.Push(lua.LString(sb.String()))
	return 1
}

// utf8Decode is Lua 5.4's utf8_decode: it returns the code at s[i:] and the index of
// the following byte, or ok=false for an invalid sequence.
func utf8Decode(s string, i int, strict bool) (code uint32, next int, ok bool) {
	at := func(k int) uint32 {
		if k < len(s) {
			return uint32(s[k])
		}
		return 0
	}
	limits := [...]uint32{^uint32(0), 0x80, 0x800, 0x10000, 0x200000, 0x4000000}
	c := at(i)
	var res uint32
	count := 0
	if c < 0x80 {
		res = c
	} else {
		for ; c&0x40 != 0; c <<= 1 {
			count++
			cc := at(i + count)
			if cc&0xC0 != 0x80 {
				return 0, 0, false
			}
			res = res<<6 | cc&0x3F
		}
		if count > 5 {
			return 0, 0, false
		}
		res |= (c & 0x7F) << (count * 5)
		if res > maxUTF || res < limits[count] {
			return 0, 0, false
		}
	}
	if strict && (res > maxUnicode || (res >= 0xD800 && res <= 0xDFFF)) {
		return 0, 0, false
	}
	return res, i + count + 1, true
}

// posRelat converts a relative string position: negative means back from the end.
func posRelat(pos int64, n int) int64 {
	if pos >= 0 {
		return pos
	}
	if -pos > int64(n) {
		return 0
	}
	return int64(n) + pos + 1
}

func isCont(s string, i int) bool {
	return i < len(s) && s[i]&0xC0 == 0x80
}

func utf8Codepoint(L *lua.LState) int {
	const fname = "codepoint"
	s := checkString(L, 1, fname)
	posi := posRelat(optInteger(L, 2, fname, 1), len(s))
	pose := posRelat(optInteger(L, 3, fname, posi), len(s))
	lax := lua.LVAsBool(L.Get(4))
	if posi < 1 {
		argError(L, 2, fname, "out of bounds")
	}
	if pose > int64(len(s)) {
		argError(L, 3, fname, "out of bounds")
	}
	if posi > pose {
		return 0
	}
	if pose-posi >= maxLoopItems {
		raise(L, "string slice too long")
	}
	n := 0
	for i := int(posi - 1); i < int(pose); {
		code, next, ok := utf8Decode(s, i, !lax)
		if !ok {
			raise(L, msgInvalid)
		}
		L.Push(lua.LNumber(code))
		n++
		i = next
	}
	return n
}

// utf8Len returns the character count, or nil and the 1-based position of the first
// invalid byte.
func utf8Len(L *lua.LState) int {
	const fname = "len"
	s := checkString(L, 1, fname)
	posi := posRelat(optInteger(L, 2, fname, 1), len(s))
	posj := posRelat(optInteger(L, 3, fname, -1), len(s))
	lax := lua.LVAsBool(L.Get(4))
	posi--
	if !(0 <= posi && posi <= int64(len(s))) {
		argError(L, 2, fname, "initial position out of bounds")
	}
	posj--
	if !(posj < int64(len(s))) {
		argError(L, 3, fname, "final position out of bounds")
	}
	n := 0
	for i := int(posi); int64(i) <= posj; {
		_, next, ok := utf8Decode(s, i, !lax)
		if !ok {
			L.Push(lua.LNil)
			L.Push(lua.LNumber(i + 1))
			return 2
		}
		i = next
		n++
	}
	L.Push(lua.LNumber(n))
	return 1
}

func utf8Offset(L *lua.LState) int {
	const fname = "offset"
	s := checkString(L, 1, fname)
	n := checkInteger(L, 2, fname)
	def := int64(1)
	if n < 0 {
		def = int64(len(s)) + 1
	}
	posi := posRelat(optInteger(L, 3, fname, def), len(s))
	posi--
	if !(0 <= posi && posi <= int64(len(s))) {
		argError(L, 3, fname, "position out of bounds")
	}
	p := int(posi)
	if n == 0 {
		for p > 0 && isCont(s, p) {
			p--
		}
	} else {
		if isCont(s, p) {
			raise(L, "initial position is a continuation byte")
		}
		if n < 0 {
			for n < 0 && p > 0 {
				p--
				for p > 0 && isCont(s, p) {
					p--
				}
				n++
			}
		} else {
			n--
			for n > 0 && p < len(s) {
				p++
				for isCont(s, p) {
					p++
				}
				n--
			}
		}
	}
	if n == 0 {
		L.Push(lua.LNumber(p + 1))
	} else {
		L.Push(lua.LNil)
	}
	return 1
}

func utf8Codes(L *lua.LState) int {
	s := checkString(L, 1, "codes")
	lax := lua.LVAsBool(L.Get(2))
	if isCont(s, 0) {
		argError(L, 1, "codes", msgInvalid)
	}
	iter := func(L *lua.LState) int {
		s := checkString(L, 1, "for iterator")
		ctl, _ := L.Get(2).(lua.LNumber)
		n := int64(ctl)
		if n < 0 {
			return 0
		}
		i := int(min(n, int64(len(s))))
		for i < len(s) && isCont(s, i) {
			i++
		}
		if i >= len(s) {
			return 0
		}
		code, next, ok := utf8Decode(s, i, !lax)
		if !ok || isCont(s, next) {
			raise(L, msgInvalid)
		}
		L.Push(lua.LNumber(i + 1))
		L.Push(lua.LNumber(code))
		return 2
	}
	L.Push(L.NewFunction(iter))
	L.Push(lua.LString(s))
	L.Push(lua.LNumber(0))
	return 3
}

// optEnd is argument n of a table function that ranges up to an index:
// the given integer, or the length of t (honouring __len) when absent.
func optEnd(L *lua.LState, n int, fname string, t lua.LValue) int64 {
	if L.Get(n) == lua.LNil {
		return int64(L.ObjLen(t))
	}
	return checkInteger(L, n, fname)
}
