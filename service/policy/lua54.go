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

// scanLua54 lexes src just enough to skip comments and strings, and reports
// the Lua 5.3/5.4-only operators and attributes it contains, so a
// load error can say what to write instead.
func scanLua54(src []byte) []feature {
	var found []feature
	line := 1
	add := func(name string) { found = append(found, feature{line, name}) }
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch {
		case c == '\n':
			line++
		case c == '-' && i+1 < len(src) && src[i+1] == '-':
			i = skipComment(src, i, &line)
		case c == '[':
			if level, ok := longBracket(src, i); ok {
				i = skipLong(src, i, level, &line)
			}
		case c == '"' || c == '\'':
			for i++; i < len(src) && src[i] != c && src[i] != '\n'; i++ {
				if src[i] == '\\' && i+1 < len(src) {
					i++
					if src[i] == '\n' {
						line++
					}
				}
			}
		case c == '/' && i+1 < len(src) && src[i+1] == '/':
			add("//")
			i++
		case c == '<' && i+1 < len(src) && src[i+1] == '<':
			add("<<")
			i++
		case c == '>' && i+1 < len(src) && src[i+1] == '>':
			add(">>")
			i++
		case c == '<':
			rest := string(src[i:min(len(src), i+8)])
			for _, attr := range []string{"<const>", "<close>"} {
				if strings.HasPrefix(strings.ReplaceAll(rest, " ", ""), attr) {
					add(attr)
				}
			}
		case c == '&' || c == '|':
			add(string(c))
		case c == '~' && (i+1 >= len(src) || src[i+1] != '='):
			add("~")
		}
	}
	return found
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
