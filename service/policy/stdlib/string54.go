package stdlib

import (
	lua "github.com/yuin/gopher-lua"
)

// openString54 replaces the string functions whose gopher-lua versions differ from
// Lua 5.4's §6.4: byte and sub take integer positions, char checks its range, and
// upper and lower change ASCII letters only, as in the C locale.
func (b *lib) openString54(L *lua.LState) {
	setFuncs(L, globalTable(L, "string"), map[string]lua.LGFunction{
		"byte":    strByte,
		"char":    strChar,
		"sub":     strSub,
		"upper":   strUpper,
		"lower":   strLower,
		"len":     strLen,
		"reverse": strReverse,
	})
	// Lua 5.0's string.gfind is in no Lua 5.4.
	globalTable(L, "string").RawSetString("gfind", lua.LNil)
}

// startIndex is posrelatI: a 1-based start position clipped to at least 1.
func startIndex(pos int64, n int) int64 {
	switch {
	case pos > 0:
		return pos
	case pos == 0:
		return 1
	case pos < -int64(n):
		return 1
	}
	return int64(n) + pos + 1
}

// endIndex is getendpos: a 1-based end position clipped to the string.
func endIndex(pos int64, n int) int64 {
	switch {
	case pos > int64(n):
		return int64(n)
	case pos >= 0:
		return pos
	case pos < -int64(n):
		return 0
	}
	return int64(n) + pos + 1
}

func strByte(L *lua.LState) int {
	const fname = "byte"
	s := checkString(L, 1, fname)
	i := optInteger(L, 2, fname, 1)
	pe := endIndex(optInteger(L, 3, fname, i), len(s))
	pi := startIndex(i, len(s))
	if pi > pe {
		return 0
	}
	if pe-pi >= maxLoopItems {
		raise(L, "string slice too long")
	}
	for k := pi; k <= pe; k++ {
		L.Push(lua.LNumber(s[k-1]))
	}
	return int(pe - pi + 1)
}

func strChar(L *lua.LState) int {
	top := L.GetTop()
	buf := make([]byte, top)
	for i := 1; i <= top; i++ {
		c := checkInteger(L, i, "char")
		if uint64(c) > 255 {
			argError(L, i, "char", "value out of range")
		}
		buf[i-1] = byte(c)
	}
	L.Push(lua.LString(buf))
	return 1
}

func strSub(L *lua.LState) int {
	const fname = "sub"
	s := checkString(L, 1, fname)
	start := startIndex(checkInteger(L, 2, fname), len(s))
	end := endIndex(optInteger(L, 3, fname, -1), len(s))
	if start > end {
		L.Push(lua.LString(""))
	} else {
		L.Push(lua.LString(s[start-1 : end]))
	}
	return 1
}

// mapASCII applies f to each byte of s, allocating only when a byte changes.
func mapASCII(s string, f func(byte) byte) string {
	for i := 0; i < len(s); i++ {
		if f(s[i]) != s[i] {
			buf := []byte(s)
			for j := i; j < len(buf); j++ {
				buf[j] = f(buf[j])
			}
			return string(buf)
		}
	}
	return s
}

func strUpper(L *lua.LState) int { return mapCase(L, "upper", 'a', 'A') }
func strLower(L *lua.LState) int { return mapCase(L, "lower", 'A', 'a') }

// mapCase turns the 26 ASCII letters starting at from into those starting at to.
func mapCase(L *lua.LState, fname string, from, to byte) int {
	s := checkString(L, 1, fname)
	L.Push(lua.LString(mapASCII(s, func(c byte) byte {
		if c >= from && c < from+26 {
			return c - from + to
		}
		return c
	})))
	return 1
}

func strLen(L *lua.LState) int {
	L.Push(lua.LNumber(len(checkString(L, 1, "len"))))
	return 1
}

func strReverse(L *lua.LState) int {
	s := checkString(L, 1, "reverse")
	buf := make([]byte, len(s))
	for i := range buf {
		buf[i] = s[len(s)-1-i]
	}
	L.Push(lua.LString(buf))
	return 1
}
