package policy

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	lua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/parse"
)

// LoadError is a problem that stops a policy from loading, located in its
// source.
type LoadError struct {
	File    string
	Line    int // 0 when unknown
	Message string
	Hint    string // how to write a Lua 5.4-only construct in Lua 5.1
	// Syntax is set when the policy's own text does not compile: the same
	// text always fails the same way, whatever its modules hold.
	Syntax bool
}

func (e *LoadError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	b.WriteString(": " + e.Message)
	if e.Hint != "" {
		b.WriteString(" (hint: " + e.Hint + ")")
	}
	return b.String()
}

// Warning is a problem that does not stop a policy from loading.
type Warning struct {
	File    string
	Line    int
	Message string
}

func (w Warning) String() string {
	if w.Line > 0 {
		return fmt.Sprintf("%s:%d: warning: %s", w.File, w.Line, w.Message)
	}
	return fmt.Sprintf("%s: warning: %s", w.File, w.Message)
}

// warningAt builds a warning from a gopher-lua position such as "p.lua:3".
func warningAt(where, msg string) Warning {
	file, line := splitWhere(where)
	return Warning{File: file, Line: line, Message: msg}
}

func splitWhere(where string) (string, int) {
	i := strings.LastIndexByte(where, ':')
	if i < 0 {
		return where, 0
	}
	line, err := strconv.Atoi(where[i+1:])
	if err != nil {
		return where, 0
	}
	return where[:i], line
}

// compileChunk parses and compiles src, after the pre-pass that translates Lua
// 5.4 lexical forms gopher-lua misreads, refusing Lua 5.4-only syntax with a hint.
func compileChunk(file string, src []byte) (*lua.FunctionProto, error) {
	src, features, perr := prepass(src)
	if perr != nil {
		return nil, &LoadError{File: file, Line: perr.line, Message: perr.msg, Hint: perr.hint}
	}
	chunk, err := parse.Parse(bytes.NewReader(src), file)
	if err != nil {
		le := parseErrorToLoadError(file, src, err)
		for _, f := range features {
			if f.line == le.Line || le.Line == 0 {
				le.Line, le.Hint = f.line, f.hint()
				break
			}
		}
		return nil, le
	}
	keepNegativeZero(chunk)
	proto, err := lua.Compile(chunk, file)
	if err != nil {
		return nil, parseErrorToLoadError(file, src, err)
	}
	return proto, nil
}

var (
	// gopher-lua's parser: "p.lua line:3(column:5) near 'x': syntax error".
	parseLineRE = regexp.MustCompile(`line:(\d+)\(column:\d+\) near '(.*)':\s*(.*)$`)
	// Runtime and compile errors: "p.lua:3: message".
	runtimeLineRE = regexp.MustCompile(`(?s)^(.*?):(\d+):\s*(.*)$`)
	compileLineRE = regexp.MustCompile(`line\((\d+)\)`)
)

func parseErrorToLoadError(file string, src []byte, err error) *LoadError {
	msg := strings.TrimSpace(err.Error())
	if m := parseLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &LoadError{File: file, Line: line, Message: fmt.Sprintf("%s near '%s'", strings.TrimSpace(m[3]), m[2])}
	}
	if _, rest, ok := strings.Cut(msg, " at EOF:"); ok {
		lastLine := bytes.Count(bytes.TrimRight(src, "\n"), []byte("\n")) + 1
		return &LoadError{File: file, Line: lastLine, Message: "unexpected end of file: " + strings.TrimSpace(rest)}
	}
	if m := compileLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &LoadError{File: file, Line: line, Message: msg}
	}
	return &LoadError{File: file, Message: msg}
}

// runtimeLoadError locates an error raised while running the top level.
func runtimeLoadError(file string, err error) *LoadError {
	msg := errorText(err)
	if m := runtimeLineRE.FindStringSubmatch(msg); m != nil && m[1] == file {
		line, _ := strconv.Atoi(m[2])
		return &LoadError{File: file, Line: line, Message: m[3]}
	}
	var apiErr *lua.ApiError
	if errors.As(err, &apiErr) && apiErr.Type == lua.ApiErrorPanic {
		msg = "loading the policy crashed the Lua VM: " + msg
	}
	return &LoadError{File: file, Message: msg}
}
