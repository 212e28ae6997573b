package policy

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/rewrited/rewrited/service/policy/stdlib"
)

// prepassError is a Lua 5.4 lexical construct the pre-pass cannot translate.
type prepassError struct {
	line      int
	msg, hint string
}

// prepassHint shows the Lua 5.1 spelling of Lua 5.4's escapes.
const prepassHint = `write the byte in decimal: \x41 is \65, and \u{E9} is \195\169`

// prepass rewrites the Lua 5.4 lexical forms gopher-lua misreads into forms it
// reads the same way, keeping every token on its line:
//   - `--[`, `--[==` not opening a long bracket start a short comment (gopher-lua
//     refuses them as an invalid multiline comment);
//   - the escapes \xXX, \z and \u{XXX} in short strings become decimal escapes
//     (gopher-lua would read them as the letters x, z and u); the newlines a \z
//     skips move after the closing quote;
//   - hexadecimal numerals with a fraction or a binary exponent, and hexadecimal
//     integers beyond 2^63 (which wrap around in Lua 5.4), become decimal numerals.
//
// Escapes Lua 5.4 refuses (an unknown letter, \x without two hex digits, a decimal
// escape above 255) are refused here too, with the line. src is returned as it is
// when nothing needs rewriting. The Lua 5.3/5.4-only operators and attributes
// found outside strings and comments are reported for the load error's hint.
func prepass(src []byte) ([]byte, []feature, *prepassError) {
	var features []feature
	var out []byte // nil until the first change
	last := 0      // src[last:i] is not yet copied to out
	edit := func(from, to int, repl string) {
		if out == nil {
			out = make([]byte, 0, len(src)+16)
		}
		out = append(out, src[last:from]...)
		out = append(out, repl...)
		last = to
	}
	line := 1
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch {
		case c == '\n':
			line++
		case c == '-' && i+1 < len(src) && src[i+1] == '-':
			if _, long := longBracket(src, i+2); !long && i+2 < len(src) && src[i+2] == '[' {
				edit(i+2, i+3, " ")
			}
			i = skipComment(src, i, &line)
		case c == '[':
			if level, ok := longBracket(src, i); ok {
				i = skipLong(src, i, level, &line)
			}
		case c == '"' || c == '\'':
			end, err := prepassString(src, i, &line, edit)
			if err != nil {
				return nil, nil, err
			}
			i = end
		case c == '0' && i+1 < len(src) && (src[i+1] == 'x' || src[i+1] == 'X') && (i == 0 || !isNameByte(src[i-1]) && src[i-1] != '.'):
			end := i + 2
			for end < len(src) && (isHexByte(src[end]) || src[end] == '.' ||
				(src[end] == 'p' || src[end] == 'P') ||
				(src[end] == '+' || src[end] == '-') && (src[end-1] == 'p' || src[end-1] == 'P')) {
				end++
			}
			if repl, ok := hexNumeral(string(src[i:end])); ok {
				edit(i, end, repl)
			}
			i = end - 1
		default:
			if name, width := lua54Operator(src, i); name != "" {
				features = append(features, feature{line, name})
				i += width - 1
			}
		}
	}
	if out == nil {
		return src, features, nil
	}
	return append(out, src[last:]...), features, nil
}

func isNameByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func isHexByte(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// hexNumeral is the decimal spelling of a hexadecimal numeral gopher-lua cannot
// read, or false when it reads it correctly (or it is not a numeral at all).
func hexNumeral(num string) (string, bool) {
	digits := num[2:]
	if !strings.ContainsAny(digits, ".pP") {
		long := len(strings.TrimLeft(digits, "0")) > 16
		if long {
			// Lua 5.4 keeps the low 64 bits.
			digits = digits[len(digits)-16:]
		}
		u, err := strconv.ParseUint(digits, 16, 64)
		if err != nil || u <= 1<<63-1 && !long {
			return "", false
		}
		return "(" + strconv.FormatInt(int64(u), 10) + ")", true
	}
	if !strings.ContainsAny(digits, "pP") {
		num += "p0"
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return "", false
	}
	dec := strconv.FormatFloat(f, 'g', -1, 64)
	if !strings.ContainsAny(dec, ".eIN") {
		// Still a float numeral, so that a negated zero stays -0.0.
		dec += ".0"
	}
	return dec, true
}

// prepassString handles the short string opening at src[start] and returns the
// index of its closing quote.
func prepassString(src []byte, start int, line *int, edit func(from, to int, repl string)) (int, *prepassError) {
	quote := src[start]
	movedLines := 0
	for i := start + 1; i < len(src); i++ {
		switch src[i] {
		case quote:
			if movedLines > 0 {
				edit(i, i+1, string(quote)+strings.Repeat("\n", movedLines))
			}
			return i, nil
		case '\n':
			return i, nil // unterminated: the parser reports it
		case '\\':
			if i+1 >= len(src) {
				return i, nil
			}
			esc := src[i+1]
			switch {
			case esc == 'x':
				if i+3 >= len(src) || !isHexByte(src[i+2]) || !isHexByte(src[i+3]) {
					return 0, &prepassError{*line, "hexadecimal digit expected in a \\x escape", prepassHint}
				}
				v, _ := strconv.ParseUint(string(src[i+2:i+4]), 16, 8)
				edit(i, i+4, fmt.Sprintf("\\%03d", v))
				i += 3
			case esc == 'z':
				j := i + 2
				for j < len(src) && strings.IndexByte(" \f\n\r\t\v", src[j]) >= 0 {
					if src[j] == '\n' {
						movedLines++
						*line++
					}
					j++
				}
				edit(i, j, "")
				i = j - 1
			case esc == 'u':
				r, end, err := unicodeEscape(src, i+2, *line)
				if err != nil {
					return 0, err
				}
				var b strings.Builder
				for _, c := range []byte(stdlib.EncodeUTF8(r)) {
					fmt.Fprintf(&b, "\\%03d", c)
				}
				edit(i, end, b.String())
				i = end - 1
			case esc >= '0' && esc <= '9':
				j := i + 1
				for j < len(src) && j < i+4 && src[j] >= '0' && src[j] <= '9' {
					j++
				}
				if v, _ := strconv.Atoi(string(src[i+1 : j])); v > 255 {
					return 0, &prepassError{*line, fmt.Sprintf("decimal escape too large: \\%d", v), "a decimal escape is one byte, 0 to 255"}
				}
				i = j - 1
			case esc == '\n':
				*line++
				i++
			case strings.IndexByte("abfnrtv\\\"'\r", esc) >= 0:
				i++
			default:
				return 0, &prepassError{*line, fmt.Sprintf("invalid escape sequence '\\%c'", esc), `escape a backslash as \\`}
			}
		}
	}
	return len(src), nil
}

// unicodeEscape reads the "{XXX}" of a \u escape at src[i:], returning the code
// point and the index after '}'. Lua 5.4 accepts up to 2^31-1.
func unicodeEscape(src []byte, i, line int) (uint32, int, *prepassError) {
	bad := &prepassError{line, `invalid \u{XXX} escape`, prepassHint}
	if i >= len(src) || src[i] != '{' {
		return 0, 0, bad
	}
	j := i + 1
	var r uint64
	for j < len(src) && isHexByte(src[j]) {
		d, _ := strconv.ParseUint(string(src[j]), 16, 8)
		r = r<<4 | d
		if r > 0x7FFFFFFF {
			return 0, 0, &prepassError{line, "UTF-8 value too large", prepassHint}
		}
		j++
	}
	if j == i+1 || j >= len(src) || src[j] != '}' {
		return 0, 0, bad
	}
	return uint32(r), j + 1, nil
}
