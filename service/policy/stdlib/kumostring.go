package stdlib

import (
	"math"
	"strings"
	"unicode"
	"unicode/utf8"

	lua "github.com/yuin/gopher-lua"
)

// Defaults of kumo.string.wrap, from KumoMTA's kumo-wrap crate.
const (
	wrapSoftWidth = 75
	wrapHardWidth = 900
)

func (b *lib) openKumoString(L *lua.LState, kumo *lua.LTable) {
	setFuncs(L, subModule(L, kumo, "string"), map[string]lua.LGFunction{
		"replace":                b.kstrReplace,
		"replacen":               b.kstrReplacen,
		"split":                  splitFunc("kumo.string.split", false, splitN),
		"splitn":                 splitFunc("kumo.string.splitn", true, splitN),
		"rsplit":                 splitFunc("kumo.string.rsplit", false, rsplitN),
		"rsplitn":                splitFunc("kumo.string.rsplitn", true, rsplitN),
		"split_whitespace":       kstrSplitWhitespace,
		"split_ascii_whitespace": kstrSplitASCIIWhitespace,
		"starts_with":            kstrStartsWith,
		"ends_with":              kstrEndsWith,
		"trim":                   kstrTrim,
		"trim_start":             kstrTrimStart,
		"trim_end":               kstrTrimEnd,
		"wrap":                   b.kstrWrap,
	})
}

// checkUTF8 is checkString for arguments KumoMTA declares as Rust `String`, whose
// conversion from Lua fails on invalid UTF-8.
func checkUTF8(L *lua.LState, n int, fname string) string {
	return stringArg(L, n, n, fname, true)
}

// stringArg reads argument n, reporting it as argument `shown` (methods do not count
// their receiver).
func stringArg(L *lua.LState, n, shown int, fname string, needUTF8 bool) string {
	var s string
	switch v := L.Get(n).(type) {
	case lua.LString:
		s = string(v)
	case lua.LNumber:
		s = v.String()
	default:
		argError(L, shown, fname, "string expected, got "+typeName(L, n))
	}
	if needUTF8 && !utf8.ValidString(s) {
		argError(L, shown, fname, "invalid UTF-8")
	}
	return s
}

func checkUsize(L *lua.LState, n int, fname string) int {
	return usizeArg(L, n, n, fname)
}

// usizeArg converts like mlua's usize: floats are truncated, negative values and NaN
// are out of range.
func usizeArg(L *lua.LState, n, shown int, fname string) int {
	var f float64
	switch v := L.Get(n).(type) {
	case lua.LNumber:
		f = float64(v)
	case lua.LString:
		var ok bool
		if f, ok = strToNumber(string(v)); !ok {
			argError(L, shown, fname, "number expected, got string")
		}
	default:
		argError(L, shown, fname, "number expected, got "+typeName(L, n))
	}
	if math.IsNaN(f) || f <= -1 {
		argError(L, shown, fname, "out of range")
	}
	f = math.Trunc(f)
	if f >= math.MaxInt {
		return math.MaxInt
	}
	return int(f)
}

func optUsize(L *lua.LState, n int, fname string, def int) int {
	if L.Get(n) == lua.LNil {
		return def
	}
	return checkUsize(L, n, fname)
}

func pushList(L *lua.LState, items []string) {
	t := L.CreateTable(len(items), 0)
	for i, s := range items {
		t.RawSetInt(i+1, lua.LString(s))
	}
	L.Push(t)
}

// replaceCount applies Rust's str::replacen (limit < 0 means all) after checking that
// the result fits. An empty `from` matches at every character boundary, as in Rust
// and Go.
func (b *lib) replaceCount(L *lua.LState, fname, s, from, to string, limit int) string {
	k := strings.Count(s, from)
	if limit >= 0 && limit < k {
		k = limit
	}
	if int64(len(s))+int64(k)*(int64(len(to))-int64(len(from))) > int64(b.max) {
		tooLarge(L, fname, b.max)
	}
	return strings.Replace(s, from, to, k)
}

func (b *lib) kstrReplace(L *lua.LState) int {
	const fname = "kumo.string.replace"
	s := checkUTF8(L, 1, fname)
	from := checkUTF8(L, 2, fname)
	to := checkUTF8(L, 3, fname)
	L.Push(lua.LString(b.replaceCount(L, fname, s, from, to, -1)))
	return 1
}

func (b *lib) kstrReplacen(L *lua.LState) int {
	const fname = "kumo.string.replacen"
	s := checkUTF8(L, 1, fname)
	from := checkUTF8(L, 2, fname)
	to := checkUTF8(L, 3, fname)
	n := checkUsize(L, 4, fname)
	L.Push(lua.LString(b.replaceCount(L, fname, s, from, to, n)))
	return 1
}

// nextMatch finds pat in s at or after i, Rust-style: an empty pattern matches at
// every character boundary, including the end of s.
func nextMatch(s, pat string, i int) (int, bool) {
	if i > len(s) {
		return 0, false
	}
	if pat == "" {
		return i, true
	}
	j := strings.Index(s[i:], pat)
	if j < 0 {
		return 0, false
	}
	return i + j, true
}

// prevMatch finds the last pat in s[:end]; Rust's rsplit searches from the right, so
// overlapping candidates resolve differently from split.
func prevMatch(s, pat string, end int) (int, bool) {
	if end < 0 {
		return 0, false
	}
	if pat == "" {
		return end, true
	}
	j := strings.LastIndex(s[:end], pat)
	return j, j >= 0
}

// splitN is Rust's str::splitn (limit < 0 for split): at most limit pieces, the last
// one holding the rest of the string.
func splitN(L *lua.LState, s, pat string, limit int) []string {
	if limit == 0 {
		return nil
	}
	var out []string
	start, pos := 0, 0
	for limit < 0 || len(out) < limit-1 {
		checkCtx(L, len(out)+1)
		at, ok := nextMatch(s, pat, pos)
		if !ok {
			break
		}
		out = append(out, s[start:at])
		start = at + len(pat)
		pos = start
		if pat == "" {
			// step over one character so the next empty match is at the next boundary
			if at == len(s) {
				break
			}
			_, size := utf8.DecodeRuneInString(s[at:])
			pos = at + size
		}
	}
	return append(out, s[start:])
}

// rsplitN is Rust's str::rsplitn (limit < 0 for rsplit), yielding pieces from the right.
func rsplitN(L *lua.LState, s, pat string, limit int) []string {
	if limit == 0 {
		return nil
	}
	var out []string
	end, pos := len(s), len(s)
	for limit < 0 || len(out) < limit-1 {
		checkCtx(L, len(out)+1)
		at, ok := prevMatch(s, pat, pos)
		if !ok {
			break
		}
		out = append(out, s[at+len(pat):end])
		end = at
		pos = at
		if pat == "" {
			if at == 0 {
				break
			}
			_, size := utf8.DecodeLastRuneInString(s[:at])
			pos = at - size
		}
	}
	return append(out, s[:end])
}

// splitFunc builds kumo.string.split and its variants: (s, pat) when
// limited is false, (s, n, pat) when it is true, as in KumoMTA.
func splitFunc(fname string, limited bool, split func(L *lua.LState, s, pat string, limit int) []string) lua.LGFunction {
	return func(L *lua.LState) int {
		s := checkUTF8(L, 1, fname)
		n, patArg := -1, 2
		if limited {
			n, patArg = checkUsize(L, 2, fname), 3
		}
		pat := checkUTF8(L, patArg, fname)
		pushList(L, split(L, s, pat, n))
		return 1
	}
}

// kstrSplitWhitespace splits on Unicode White_Space like Rust's split_whitespace;
// Go's unicode.IsSpace is the same property.
func kstrSplitWhitespace(L *lua.LState) int {
	pushList(L, strings.FieldsFunc(checkUTF8(L, 1, "kumo.string.split_whitespace"), unicode.IsSpace))
	return 1
}

// isASCIIWhitespace is Rust's u8::is_ascii_whitespace, which excludes vertical tab.
func isASCIIWhitespace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\f' || r == '\r'
}

func kstrSplitASCIIWhitespace(L *lua.LState) int {
	pushList(L, strings.FieldsFunc(checkUTF8(L, 1, "kumo.string.split_ascii_whitespace"), isASCIIWhitespace))
	return 1
}

// starts_with and ends_with take byte strings in KumoMTA, so any bytes are accepted.
func kstrStartsWith(L *lua.LState) int {
	s := checkString(L, 1, "kumo.string.starts_with")
	p := checkString(L, 2, "kumo.string.starts_with")
	L.Push(lua.LBool(strings.HasPrefix(s, p)))
	return 1
}

func kstrEndsWith(L *lua.LState) int {
	s := checkString(L, 1, "kumo.string.ends_with")
	p := checkString(L, 2, "kumo.string.ends_with")
	L.Push(lua.LBool(strings.HasSuffix(s, p)))
	return 1
}

func kstrTrim(L *lua.LState) int {
	L.Push(lua.LString(strings.TrimFunc(checkUTF8(L, 1, "kumo.string.trim"), unicode.IsSpace)))
	return 1
}

func kstrTrimStart(L *lua.LState) int {
	L.Push(lua.LString(strings.TrimLeftFunc(checkUTF8(L, 1, "kumo.string.trim_start"), unicode.IsSpace)))
	return 1
}

func kstrTrimEnd(L *lua.LState) int {
	L.Push(lua.LString(strings.TrimRightFunc(checkUTF8(L, 1, "kumo.string.trim_end"), unicode.IsSpace)))
	return 1
}

// kstrWrap is kumo.string.wrap(text [, soft [, hard]]): words (split on each ASCII
// whitespace byte) are packed into lines shorter than soft; a word longer than hard is
// broken every hard bytes. Breaks are "\r\n\t" and trailing whitespace is trimmed.
func (b *lib) kstrWrap(L *lua.LState) int {
	const fname = "kumo.string.wrap"
	text := checkUTF8(L, 1, fname)
	soft := optUsize(L, 2, fname, wrapSoftWidth)
	hard := optUsize(L, 3, fname, wrapHardWidth)

	var out, line []byte
	emit := func() {
		if len(out) > 0 {
			out = append(out, '\t')
		}
		out = append(out, line...)
		if len(out) > b.max {
			tooLarge(L, fname, b.max)
		}
	}
	for i, word := range splitBytes(text) {
		checkCtx(L, i+1)
		if len(line)+len(word) < soft {
			if len(line) > 0 {
				line = append(line, ' ')
			}
			line = append(line, word...)
			continue
		}
		if len(line) > 0 {
			emit()
			out = append(out, '\r', '\n')
			line = line[:0]
		}
		if len(word) <= hard {
			line = append(line, word...)
			continue
		}
		for k := 0; k < len(word); k++ {
			line = append(line, word[k])
			if len(line) >= hard {
				emit()
				out = append(out, '\r', '\n')
				line = line[:0]
			}
		}
	}
	if len(line) > 0 {
		emit()
	}
	L.Push(lua.LString(strings.TrimRightFunc(string(out), unicode.IsSpace)))
	return 1
}

// splitBytes splits at every ASCII whitespace byte, keeping empty words, like Rust's
// slice::split with is_ascii_whitespace.
func splitBytes(s string) []string {
	var words []string
	start := 0
	for i := 0; i < len(s); i++ {
		if isASCIIWhitespace(rune(s[i])) {
			words = append(words, s[start:i])
			start = i + 1
		}
	}
	return append(words, s[start:])
}
