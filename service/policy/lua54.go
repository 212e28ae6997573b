package policy

import "strings"

// feature is a use of Lua 5.3/5.4-only syntax found in a policy's source.
type feature struct {
	line int
	name string
}

var featureHints = map[string]string{
	"//":      "integer division // is Lua 5.3+; in Lua 5.1 write math.floor(a / b)",
	"&":       "bitwise operators are Lua 5.3+; Lua 5.1 has none: use arithmetic (math.floor(x / 2^n) % 2 tests bit n)",
	"|":       "bitwise operators are Lua 5.3+; Lua 5.1 has none: use arithmetic",
	"~":       "bitwise operators are Lua 5.3+; Lua 5.1 has none: use arithmetic (~= is the only ~ operator in Lua 5.1)",
	"<<":      "shifts are Lua 5.3+; in Lua 5.1 write x * 2^n",
	">>":      "shifts are Lua 5.3+; in Lua 5.1 write math.floor(x / 2^n)",
	"<const>": "local attributes are Lua 5.4; drop <const> and write a plain local",
	"<close>": "to-be-closed variables are Lua 5.4; call the close function explicitly",
}

func (f feature) hint() string { return featureHints[f.name] }

// lua54Operator reports the Lua 5.3/5.4-only operator or attribute starting at
// src[i], if any, and its length, so a load error can say what to write instead.
func lua54Operator(src []byte, i int) (string, int) {
	next := byte(0)
	if i+1 < len(src) {
		next = src[i+1]
	}
	switch c := src[i]; {
	case c == '/' && next == '/':
		return "//", 2
	case c == '<' && next == '<':
		return "<<", 2
	case c == '>' && next == '>':
		return ">>", 2
	case c == '<':
		rest := strings.ReplaceAll(string(src[i:min(len(src), i+8)]), " ", "")
		for _, attr := range []string{"<const>", "<close>"} {
			if strings.HasPrefix(rest, attr) {
				return attr, 1
			}
		}
	case c == '&' || c == '|':
		return string(c), 1
	case c == '~' && next != '=':
		return "~", 1
	}
	return "", 1
}

// skipComment skips the comment whose "--" is at i and returns the index of
// its last byte, short of a closing newline so the caller counts it.
func skipComment(src []byte, i int, line *int) int {
	i += 2
	if level, ok := longBracket(src, i); ok {
		return skipLong(src, i, level, line)
	}
	for i < len(src) && src[i] != '\n' {
		i++
	}
	return i - 1
}

// longBracket reports whether a long bracket ([[, [==[ ...) opens at i and
// its level.
func longBracket(src []byte, i int) (int, bool) {
	if i >= len(src) || src[i] != '[' {
		return 0, false
	}
	j := i + 1
	for j < len(src) && src[j] == '=' {
		j++
	}
	if j < len(src) && src[j] == '[' {
		return j - i - 1, true
	}
	return 0, false
}

// skipLong skips a long string or comment opening at i and returns the
// index of its last byte, counting the lines it spans.
func skipLong(src []byte, i, level int, line *int) int {
	closing := "]" + strings.Repeat("=", level) + "]"
	for j := i + level + 2; j < len(src); j++ {
		if src[j] == '\n' {
			*line++
		}
		if src[j] == ']' && strings.HasPrefix(string(src[j:min(len(src), j+len(closing))]), closing) {
			return j + len(closing) - 1
		}
	}
	return len(src)
}
