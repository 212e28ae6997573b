package stdlib

import (
	"encoding/json"
	"errors"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	lua "github.com/yuin/gopher-lua"
)

// maxParseDepth is serde_json's recursion limit, which KumoMTA's json_parse inherits.
const maxParseDepth = 128

var errJSONTooLarge = errors.New("too large")

func (b *lib) openKumoSerde(L *lua.LState, kumo *lua.LTable) {
	funcs := map[string]lua.LGFunction{
		"json_encode":        b.jsonEncode,
		"json_encode_pretty": b.jsonEncodePretty,
		"json_parse":         jsonParse,
	}
	setFuncs(L, subModule(L, kumo, "serde"), funcs)
	// KumoMTA keeps the older kumo.json_* names as aliases.
	setFuncs(L, kumo, funcs)
}

func (b *lib) jsonEncode(L *lua.LState) int {
	return b.encode(L, "kumo.serde.json_encode", false)
}

func (b *lib) jsonEncodePretty(L *lua.LState) int {
	return b.encode(L, "kumo.serde.json_encode_pretty", true)
}

func (b *lib) encode(L *lua.LState, fname string, pretty bool) int {
	v, err := ToGo(L.Get(1))
	if err != nil {
		L.RaiseError("%s: %s", fname, err.Error())
	}
	w := jsonWriter{max: b.max, pretty: pretty}
	if err := w.value(v, 0); err != nil {
		tooLarge(L, fname, b.max)
	}
	L.Push(lua.LString(w.buf))
	return 1
}

// jsonWriter encodes ToGo's output like serde_json: no HTML or U+2028 escaping,
// ryu-style numbers, and for the pretty form two-space indentation. Object keys are
// always sorted, so output is deterministic.
type jsonWriter struct {
	buf    []byte
	max    int
	pretty bool
}

func (w *jsonWriter) check() error {
	if len(w.buf) > w.max {
		return errJSONTooLarge
	}
	return nil
}

func (w *jsonWriter) newline(depth int) {
	if w.pretty {
		w.buf = append(w.buf, '\n')
		for i := 0; i < depth; i++ {
			w.buf = append(w.buf, ' ', ' ')
		}
	}
}

func (w *jsonWriter) value(v any, depth int) error {
	switch x := v.(type) {
	case nil:
		w.buf = append(w.buf, "null"...)
	case bool:
		w.buf = strconv.AppendBool(w.buf, x)
	case float64:
		w.buf = append(w.buf, jsonNumber(x)...)
	case string:
		if len(w.buf)+len(x)+2 > w.max {
			return errJSONTooLarge
		}
		w.buf = appendJSONString(w.buf, x)
	case []any:
		if len(x) == 0 {
			w.buf = append(w.buf, "[]"...)
			break
		}
		w.buf = append(w.buf, '[')
		for i, e := range x {
			if i > 0 {
				w.buf = append(w.buf, ',')
			}
			w.newline(depth + 1)
			if err := w.value(e, depth+1); err != nil {
				return err
			}
		}
		w.newline(depth)
		w.buf = append(w.buf, ']')
	case map[string]any:
		if len(x) == 0 {
			w.buf = append(w.buf, "{}"...)
			break
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		w.buf = append(w.buf, '{')
		for i, k := range keys {
			if i > 0 {
				w.buf = append(w.buf, ',')
			}
			w.newline(depth + 1)
			if len(w.buf)+len(k)+2 > w.max {
				return errJSONTooLarge
			}
			w.buf = appendJSONString(w.buf, k)
			w.buf = append(w.buf, ':')
			if w.pretty {
				w.buf = append(w.buf, ' ')
			}
			if err := w.value(x[k], depth+1); err != nil {
				return err
			}
		}
		w.newline(depth)
		w.buf = append(w.buf, '}')
	}
	return w.check()
}

// jsonNumber prints integral values in the int64 range as integers and other numbers
// with the shortest round-trip digits, laid out as the ryu crate (used by serde_json)
// does: plain decimals for exponents in [-5, 16], otherwise "1.5e-7" / "1e300".
func jsonNumber(f float64) string {
	if i, ok := toInteger(f); ok {
		return strconv.FormatInt(i, 10)
	}
	sci := strconv.FormatFloat(math.Abs(f), 'e', -1, 64)
	mant, exp, _ := strings.Cut(sci, "e")
	digits := strings.Replace(mant, ".", "", 1)
	e, _ := strconv.Atoi(exp)
	kk := e + 1 // digits before the decimal point
	n := len(digits)
	var s string
	switch {
	case kk > 0 && kk <= 16:
		if kk >= n {
			s = digits + strings.Repeat("0", kk-n) + ".0"
		} else {
			s = digits[:kk] + "." + digits[kk:]
		}
	case kk > -5 && kk <= 0:
		s = "0." + strings.Repeat("0", -kk) + digits
	case n == 1:
		s = digits + "e" + strconv.Itoa(kk-1)
	default:
		s = digits[:1] + "." + digits[1:] + "e" + strconv.Itoa(kk-1)
	}
	if math.Signbit(f) {
		s = "-" + s
	}
	return s
}

// appendJSONString escapes like serde_json; invalid UTF-8 becomes U+FFFD.
func appendJSONString(buf []byte, s string) []byte {
	const hex = "0123456789abcdef"
	buf = append(buf, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch c {
			case '"', '\\':
				buf = append(buf, '\\', c)
			case '\b':
				buf = append(buf, '\\', 'b')
			case '\f':
				buf = append(buf, '\\', 'f')
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				if c < 0x20 {
					buf = append(buf, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
				} else {
					buf = append(buf, c)
				}
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			buf = append(buf, "\uFFFD"...)
		} else {
			buf = append(buf, s[i:i+size]...)
		}
		i += size
	}
	return append(buf, '"')
}

// jsonParse is kumo.serde.json_parse: comments are allowed as in KumoMTA (which strips
// them with the json_comments crate), null becomes nil, and errors give the position.
func jsonParse(L *lua.LState) int {
	const fname = "kumo.serde.json_parse"
	text := checkUTF8(L, 1, fname)
	clean, err := stripJSONComments(text)
	if err != nil {
		L.RaiseError("%s: %s", fname, err.Error())
	}
	var v any
	if err := json.Unmarshal([]byte(clean), &v); err != nil {
		off := int64(len(text))
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			off = se.Offset
		case errors.As(err, &te):
			off = te.Offset
		}
		line, col := lineCol(text, int(off))
		L.RaiseError("%s: invalid JSON at line %d column %d: %s", fname, line, col, strings.TrimPrefix(err.Error(), "json: "))
	}
	L.Push(FromGo(L, v))
	return 1
}

// lineCol converts a byte offset into a 1-based line and the column of the byte
// before it, matching serde_json's convention.
func lineCol(s string, off int) (int, int) {
	off = min(max(off, 0), len(s))
	line := 1 + strings.Count(s[:off], "\n")
	return line, off - (strings.LastIndexByte(s[:off], '\n') + 1)
}

type jsonPosError struct {
	text string
	off  int
	msg  string
}

func (e *jsonPosError) Error() string {
	line, col := lineCol(e.text, e.off+1)
	return e.msg + " at line " + strconv.Itoa(line) + " column " + strconv.Itoa(col)
}

// stripJSONComments blanks out "//", "#" and "/* */" comments outside strings (so
// offsets stay valid for error positions) and enforces the nesting limit.
func stripJSONComments(s string) (string, error) {
	var out []byte // allocated only when a comment is found
	blank := func(from, to int) {
		if out == nil {
			out = []byte(s)
		}
		for i := from; i < to; i++ {
			if out[i] != '\n' {
				out[i] = ' '
			}
		}
	}
	depth := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			for i++; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' {
					i++
				}
			}
		case '[', '{':
			depth++
			if depth > maxParseDepth {
				return "", &jsonPosError{s, i, "recursion limit exceeded"}
			}
		case ']', '}':
			depth--
		case '#':
			end := strings.IndexByte(s[i:], '\n')
			if end < 0 {
				end = len(s) - i
			}
			blank(i, i+end)
			i += end
		case '/':
			if i+1 >= len(s) {
				break
			}
			switch s[i+1] {
			case '/':
				end := strings.IndexByte(s[i:], '\n')
				if end < 0 {
					end = len(s) - i
				}
				blank(i, i+end)
				i += end
			case '*':
				end := strings.Index(s[i+2:], "*/")
				if end < 0 {
					return "", &jsonPosError{s, i, "unterminated comment"}
				}
				blank(i, i+2+end+2)
				i += 2 + end + 1
			}
		}
	}
	if out == nil {
		return s, nil
	}
	return string(out), nil
}
