package stdlib

import (
	"fmt"
	"hash/fnv"
	"math"
	"strconv"
	"strings"
	"unsafe"

	lua "github.com/yuin/gopher-lua"
)

// Flags each conversion accepts, as in Lua 5.4's lstrlib.c.
const (
	flagsF = "-+ #0" // a A e E f g G
	flagsX = "-#0"   // o x X
	flagsI = "-+ 0"  // d i
	flagsU = "-0"    // u
	flagsC = "-"     // c p s
)

// maxFormatSpec mirrors MAX_FORMAT - 10: longer flag/width/precision runs are refused.
const maxFormatSpec = 22

func (b *lib) openFormat(L *lua.LState) {
	globalTable(L, "string").RawSetString("format", L.NewFunction(b.strFormat))
}

// spec is one parsed conversion such as "%-5.2f".
type spec struct {
	form      string // the whole conversion, with '%', for error messages
	minus     bool
	plus      bool
	space     bool
	sharp     bool
	zero      bool
	width     int
	prec      int // -1 when absent
	conv      byte
	modifiers bool // anything between '%' and the conversion letter
}

// strFormat replaces gopher-lua's fmt.Sprintf-based string.format with Lua 5.4's C
// printf semantics. Width and precision are at most two digits, so every item except
// %s and %q is bounded; the whole result is still held to MaxStringBytes.
func (b *lib) strFormat(L *lua.LState) int {
	const fname = "format"
	format := checkString(L, 1, fname)
	top := L.GetTop()
	arg := 1
	var out strings.Builder
	for i := 0; i < len(format); {
		c := format[i]
		if c != '%' {
			j := strings.IndexByte(format[i:], '%')
			if j < 0 {
				j = len(format) - i
			}
			out.WriteString(format[i : i+j])
			i += j
			if out.Len() > b.max {
				tooLarge(L, "string.format", b.max)
			}
			continue
		}
		i++
		if i < len(format) && format[i] == '%' {
			out.WriteByte('%')
			i++
			continue
		}
		arg++
		if arg > top {
			argError(L, arg, fname, "no value")
		}
		sp, next := parseSpec(L, format, i)
		i = next
		b.formatItem(L, &out, sp, arg)
		if out.Len() > b.max {
			tooLarge(L, "string.format", b.max)
		}
	}
	L.Push(lua.LString(out.String()))
	return 1
}

// parseSpec reads flags, width, precision and the conversion letter at format[i:],
// like getformat; validation per conversion happens in checkSpec.
func parseSpec(L *lua.LState, format string, i int) (spec, int) {
	start := i
	for i < len(format) && strings.IndexByte("-+ #0123456789.", format[i]) >= 0 {
		i++
	}
	if i-start+1 >= maxFormatSpec {
		raise(L, "invalid format (too long)")
	}
	sp := spec{prec: -1}
	if i < len(format) {
		sp.conv = format[i]
		sp.form = "%" + format[start:i+1]
		i++
	} else {
		sp.form = "%" + format[start:]
	}
	sp.modifiers = len(sp.form) > 2
	return sp, i
}

// checkSpec validates sp.form against the flags a conversion accepts and fills in
// flags, width and precision, exactly as checkformat does (two digits at most each).
func checkSpec(L *lua.LState, sp *spec, flags string, precision bool) {
	f := sp.form[1:]
	j := 0
	for j < len(f) && strings.IndexByte(flags, f[j]) >= 0 {
		switch f[j] {
		case '-':
			sp.minus = true
		case '+':
			sp.plus = true
		case ' ':
			sp.space = true
		case '#':
			sp.sharp = true
		case '0':
			sp.zero = true
		}
		j++
	}
	digits := func() (int, bool) {
		n, k := 0, 0
		for k < 2 && j < len(f) && f[j] >= '0' && f[j] <= '9' {
			n = n*10 + int(f[j]-'0')
			j++
			k++
		}
		return n, k > 0
	}
	if j < len(f) && f[j] != '0' {
		sp.width, _ = digits()
		if j < len(f) && f[j] == '.' && precision {
			j++
			sp.prec, _ = digits()
		}
	}
	if j != len(f)-1 || !isAlpha(f[j]) {
		raise(L, fmt.Sprintf("invalid conversion specification: '%s'", sp.form))
	}
}

func isAlpha(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func (b *lib) formatItem(L *lua.LState, out *strings.Builder, sp spec, arg int) {
	const fname = "format"
	switch sp.conv {
	case 'c':
		checkSpec(L, &sp, flagsC, false)
		n := checkInteger(L, arg, fname)
		out.WriteString(pad(sp, "", string([]byte{byte(n)}), false))
	case 'd', 'i':
		n := checkInteger(L, arg, fname)
		checkSpec(L, &sp, flagsI, true)
		out.WriteString(formatInt(sp, n))
	case 'u':
		n := checkInteger(L, arg, fname)
		checkSpec(L, &sp, flagsU, true)
		out.WriteString(formatUnsigned(sp, uint64(n), 10, ""))
	case 'o', 'x', 'X':
		n := checkInteger(L, arg, fname)
		checkSpec(L, &sp, flagsX, true)
		out.WriteString(formatRadix(sp, uint64(n)))
	case 'a', 'A':
		checkSpec(L, &sp, flagsF, true)
		out.WriteString(formatHexFloat(sp, checkNumber(L, arg, fname)))
	case 'e', 'E', 'f', 'g', 'G':
		n := checkNumber(L, arg, fname)
		checkSpec(L, &sp, flagsF, true)
		out.WriteString(formatFloat(sp, n))
	case 'p':
		checkSpec(L, &sp, flagsC, false)
		out.WriteString(pad(sp, "", pointerString(L.Get(arg)), false))
	case 'q':
		if sp.modifiers {
			raise(L, "specifier '%q' cannot have modifiers")
		}
		addLiteral(L, out, arg)
	case 's':
		s := toString(L, L.Get(arg))
		if !sp.modifiers {
			out.WriteString(s)
			return
		}
		if strings.IndexByte(s, 0) >= 0 {
			argError(L, arg, fname, "string contains zeros")
		}
		checkSpec(L, &sp, flagsC, true)
		if sp.prec >= 0 && len(s) > sp.prec {
			s = s[:sp.prec]
		}
		out.WriteString(pad(sp, "", s, false))
	default:
		raise(L, fmt.Sprintf("invalid conversion '%s' to 'format'", sp.form))
	}
}

// ToString is Lua 5.4's tostring of v, for Go code that prints Lua values
// (print, kumo.log_*): numbers spelt as 5.4 spells them.
func ToString(L *lua.LState, v lua.LValue) string { return toString(L, v) }

// toString is luaL_tolstring: the __tostring metamethod must produce a string, and
// a __name metafield names the type.
func toString(L *lua.LState, v lua.LValue) string {
	if n, ok := v.(lua.LNumber); ok {
		return luaNumberString(float64(n))
	}
	if L.GetMetaField(v, "__tostring") == lua.LNil {
		if name, ok := L.GetMetaField(v, "__name").(lua.LString); ok {
			return string(name) + ": " + pointerString(v)
		}
	}
	r := L.ToStringMeta(v)
	if !lua.LVCanConvToString(r) {
		raise(L, "'__tostring' must return a string")
	}
	return lua.LVAsString(r)
}

// pad applies the width: left-justified with '-', zero-filled after the sign/prefix
// when zeroOK, otherwise space-filled on the left.
func pad(sp spec, prefix, body string, zeroOK bool) string {
	n := len(prefix) + len(body)
	if n >= sp.width {
		return prefix + body
	}
	fill := sp.width - n
	switch {
	case sp.minus:
		return prefix + body + strings.Repeat(" ", fill)
	case sp.zero && zeroOK:
		return prefix + strings.Repeat("0", fill) + body
	default:
		return strings.Repeat(" ", fill) + prefix + body
	}
}

func signPrefix(sp spec, neg bool) string {
	switch {
	case neg:
		return "-"
	case sp.plus:
		return "+"
	case sp.space:
		return " "
	}
	return ""
}

// applyPrecision pads digits with leading zeros to the precision; a zero precision
// with a zero value prints no digits, as C does.
func applyPrecision(sp spec, digits string) string {
	if sp.prec < 0 {
		return digits
	}
	if sp.prec == 0 && digits == "0" {
		return ""
	}
	if len(digits) < sp.prec {
		return strings.Repeat("0", sp.prec-len(digits)) + digits
	}
	return digits
}

func formatInt(sp spec, n int64) string {
	neg := n < 0
	u := uint64(n)
	if neg {
		u = -u
	}
	digits := applyPrecision(sp, strconv.FormatUint(u, 10))
	return pad(sp, signPrefix(sp, neg), digits, sp.prec < 0)
}

func formatUnsigned(sp spec, u uint64, base int, prefix string) string {
	digits := applyPrecision(sp, strconv.FormatUint(u, base))
	return pad(sp, prefix, digits, sp.prec < 0)
}

// formatRadix handles %o %x %X: negative numbers print as their two's complement,
// and '#' adds "0x" only to non-zero values and makes octal start with 0.
func formatRadix(sp spec, u uint64) string {
	switch sp.conv {
	case 'o':
		digits := applyPrecision(sp, strconv.FormatUint(u, 8))
		if sp.sharp && !strings.HasPrefix(digits, "0") {
			digits = "0" + digits
		}
		return pad(sp, "", digits, sp.prec < 0)
	default:
		prefix := ""
		if sp.sharp && u != 0 {
			prefix = "0x"
		}
		s := formatUnsigned(sp, u, 16, prefix)
		if sp.conv == 'X' {
			s = strings.ToUpper(s)
		}
		return s
	}
}

// formatNonFinite prints inf and nan like glibc: never zero-padded, sign kept.
func formatNonFinite(sp spec, f float64) string {
	body := "inf"
	if math.IsNaN(f) {
		body = "nan"
	}
	if sp.conv >= 'A' && sp.conv <= 'Z' {
		body = strings.ToUpper(body)
	}
	return pad(sp, signPrefix(sp, math.Signbit(f)), body, false)
}

func formatFloat(sp spec, f float64) string {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return formatNonFinite(sp, f)
	}
	prec := sp.prec
	if prec < 0 {
		prec = 6
	}
	// Go's fmt implements C's flag semantics for these verbs once the precision is explicit.
	var fs strings.Builder
	fs.WriteByte('%')
	for _, fl := range []struct {
		on bool
		c  byte
	}{{sp.minus, '-'}, {sp.plus, '+'}, {sp.space, ' '}, {sp.sharp, '#'}, {sp.zero, '0'}} {
		if fl.on {
			fs.WriteByte(fl.c)
		}
	}
	if sp.width > 0 {
		fs.WriteString(strconv.Itoa(sp.width))
	}
	fs.WriteByte('.')
	fs.WriteString(strconv.Itoa(prec))
	fs.WriteByte(sp.conv)
	return fmt.Sprintf(fs.String(), f)
}

// formatHexFloat prints %a/%A like glibc: a leading 1 (0 for subnormals, with the
// exponent -1022), the shortest exact digits unless a precision is given, rounding
// to even into the leading digit ("%.0a" of 1.5 is "0x2p+0"), and the exponent
// without leading zeros.
func formatHexFloat(sp spec, f float64) string {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return formatNonFinite(sp, f)
	}
	bits := math.Float64bits(f)
	biased := int((bits >> 52) & 0x7ff)
	frac := bits & (1<<52 - 1)
	lead, exp := uint64(1), biased-1023
	switch {
	case biased == 0 && frac == 0:
		lead, exp = 0, 0
	case biased == 0:
		lead, exp = 0, -1022
	}
	var digits string
	if sp.prec >= 0 && sp.prec < 13 {
		shift := uint(52 - 4*sp.prec)
		full := lead<<52 | frac
		rem := full & (1<<shift - 1)
		full >>= shift
		if half := uint64(1) << (shift - 1); rem > half || rem == half && full&1 == 1 {
			full++
		}
		lead, frac = full>>(4*sp.prec), full&(1<<(4*sp.prec)-1)
		if sp.prec > 0 {
			digits = fmt.Sprintf("%0*x", sp.prec, frac)
		}
	} else {
		digits = fmt.Sprintf("%013x", frac)
		if sp.prec < 0 {
			digits = strings.TrimRight(digits, "0")
		} else {
			digits += strings.Repeat("0", sp.prec-13)
		}
	}
	mant := strconv.FormatUint(lead, 16)
	if digits != "" || sp.sharp {
		mant += "." + digits
	}
	sign := "+"
	if exp < 0 {
		sign, exp = "-", -exp
	}
	body := mant + "p" + sign + strconv.Itoa(exp)
	prefix := signPrefix(sp, math.Signbit(f)) + "0x"
	out := pad(sp, prefix, body, true)
	if sp.conv == 'A' {
		out = strings.ToUpper(out)
	}
	return out
}

// shortStringLen is Lua 5.4's LUAI_MAXSHORTLEN: strings up to this length are
// interned.
const shortStringLen = 40

// pointerString identifies reference values as Lua 5.4's %p does: tables,
// functions, coroutines and userdata by their object, strings of up to
// shortStringLen bytes by their content (Lua interns them, so equal short
// strings are one object), longer strings by their storage, which a string
// passed around or returned unchanged (gsub without a substitution) keeps.
// Values without identity print "(null)" as Lua 5.4 does for numbers, booleans
// and nil.
func pointerString(v lua.LValue) string {
	switch p := v.(type) {
	case *lua.LTable, *lua.LFunction, *lua.LUserData, *lua.LState:
		return fmt.Sprintf("%p", p)
	case lua.LChannel:
		return fmt.Sprintf("%p", p)
	case lua.LString:
		if len(p) <= shortStringLen {
			h := fnv.New64a()
			h.Write([]byte(p))
			// Aligned like an allocation and kept below 2^47 like a user-space address.
			return fmt.Sprintf("0x%x", h.Sum64()&(1<<47-1)&^7)
		}
		return fmt.Sprintf("%p", unsafe.StringData(string(p)))
	}
	return "(null)"
}

// addLiteral writes %q: a string quoted so Lua reads it back, integers in decimal,
// other numbers in hexadecimal float notation so no precision is lost.
func addLiteral(L *lua.LState, out *strings.Builder, arg int) {
	switch v := L.Get(arg).(type) {
	case lua.LString:
		addQuoted(out, string(v))
	case lua.LNumber:
		f := float64(v)
		switch {
		case math.IsInf(f, 1):
			out.WriteString("1e9999")
		case math.IsInf(f, -1):
			out.WriteString("-1e9999")
		case math.IsNaN(f):
			out.WriteString("(0/0)")
		default:
			if i, ok := toInteger(f); ok && !negativeZero(f) {
				if i == math.MinInt64 {
					out.WriteString("0x8000000000000000")
				} else {
					out.WriteString(strconv.FormatInt(i, 10))
				}
			} else {
				out.WriteString(formatHexFloat(spec{conv: 'a', prec: -1}, f))
			}
		}
	case *lua.LNilType, lua.LBool:
		out.WriteString(v.String())
	default:
		argError(L, arg, "format", "value has no literal form")
	}
}

func addQuoted(out *strings.Builder, s string) {
	out.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\' || c == '\n':
			out.WriteByte('\\')
			out.WriteByte(c)
		case c < 0x20 || c == 0x7F:
			if i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9' {
				fmt.Fprintf(out, "\\%03d", c)
			} else {
				fmt.Fprintf(out, "\\%d", c)
			}
		default:
			out.WriteByte(c)
		}
	}
	out.WriteByte('"')
}
