package stdlib

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// testMaxBytes is the MaxStringBytes the golden cases run with.
const testMaxBytes = 1 << 20

// prelude gives the cases a compact way to show a list.
const prelude = `
function list(t)
  local r = {}
  for i = 1, #t do r[i] = string.format('%q', t[i]) end
  return '{' .. table.concat(r, ',') .. '}'
end
`

// newState prepares a state the way the engine does: selected libraries, a global
// kumo table, then Open.
func newState(tb testing.TB, lim Limits) *lua.LState {
	tb.Helper()
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	OpenStandard(L)
	kumo := L.NewTable()
	L.SetGlobal("kumo", kumo)
	Open(L, kumo, lim)
	if err := L.DoString(prelude); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(L.Close)
	return L
}

// eval runs a chunk and joins its results with tabs, through tostring.
func eval(L *lua.LState, code string) (string, error) {
	fn, err := L.LoadString(code)
	if err != nil {
		return "", err
	}
	base := L.GetTop()
	L.Push(fn)
	if err := L.PCall(0, lua.MultRet, nil); err != nil {
		return "", err
	}
	var parts []string
	for i := base + 1; i <= L.GetTop(); i++ {
		parts = append(parts, L.ToStringMeta(L.Get(i)).String())
	}
	L.SetTop(base)
	return strings.Join(parts, "\t"), nil
}

type golden struct {
	file, name, code string
	want             string
	wantErr          string // substring of the error; empty when a result is expected
	line             int
}

// readGolden parses a case file: "=== name" starts a case, its Lua chunk follows, then
// "--- want" (the exact result) or "--- error" (a substring of the error message).
// Lines before the first case are comments. Trailing newlines of sections are dropped.
func readGolden(t *testing.T, path string) []golden {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []golden
	var cur *golden
	var section *strings.Builder
	var code, want strings.Builder
	isErr := false
	finish := func() {
		if cur == nil {
			return
		}
		cur.code = strings.TrimRight(code.String(), "\n")
		w := strings.TrimRight(want.String(), "\n")
		if isErr {
			cur.wantErr = w
		} else {
			cur.want = w
		}
		if section != &want {
			t.Fatalf("%s:%d: case %q has no --- want or --- error section", path, cur.line, cur.name)
		}
		cases = append(cases, *cur)
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "=== "):
			finish()
			cur = &golden{file: filepath.Base(path), name: strings.TrimPrefix(line, "=== "), line: n}
			code.Reset()
			want.Reset()
			section = &code
			isErr = false
		case cur == nil:
			// comment before the first case
		case line == "--- want" || line == "--- error":
			section = &want
			isErr = line == "--- error"
		default:
			section.WriteString(line)
			section.WriteByte('\n')
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	finish()
	return cases
}

func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, file := range files {
		for _, c := range readGolden(t, file) {
			t.Run(c.file+"/"+c.name, func(t *testing.T) {
				t.Parallel()
				L := newState(t, Limits{MaxStringBytes: testMaxBytes})
				// Every builtin must finish quickly, even when refusing a huge request.
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				L.SetContext(ctx)
				start := time.Now()
				got, err := eval(L, c.code)
				if d := time.Since(start); d > 10*time.Second {
					t.Errorf("%s:%d: took %v", c.file, c.line, d)
				}
				switch {
				case c.wantErr != "" && err == nil:
					t.Errorf("%s:%d: want error containing %q, got result %q", c.file, c.line, c.wantErr, clip(got))
				case c.wantErr != "" && !strings.Contains(err.Error(), c.wantErr):
					t.Errorf("%s:%d: want error containing %q, got %v", c.file, c.line, c.wantErr, err)
				case c.wantErr == "" && err != nil:
					t.Errorf("%s:%d: unexpected error: %v", c.file, c.line, err)
				case c.wantErr == "" && got != c.want:
					t.Errorf("%s:%d:\n got: %q\nwant: %q", c.file, c.line, clip(got), c.want)
				}
			})
		}
	}
}

// clip keeps failure messages readable when a result is huge.
func clip(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

func TestOpenDefaultsAndExistingModules(t *testing.T) {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, l := range []struct {
		name string
		fn   lua.LGFunction
	}{{lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}} {
		L.Push(L.NewFunction(l.fn))
		L.Push(lua.LString(l.name))
		L.Call(1, 0)
	}
	kumo := L.NewTable()
	existing := L.NewTable()
	existing.RawSetString("keep", lua.LString("me"))
	kumo.RawSetString("string", existing)
	L.SetGlobal("kumo", kumo)
	Open(L, kumo, Limits{}) // zero limits select the 1 MiB default
	for code, want := range map[string]string{
		"return kumo.string.keep, kumo.string.trim(' x ')": "me\tx",
		"return #string.rep('x', 2^20)":                    "1048576",
		"return pcall(string.rep, 'x', 2^20 + 1)":          "false\t<string>:1: string.rep: resulting string too large (more than 1048576 bytes)",
		"return ('x'):rep(3)":                              "xxx",
	} {
		got, err := eval(L, code)
		if err != nil || got != want {
			t.Errorf("%s: got %q, %v; want %q", code, got, err, want)
		}
	}

	// Without a kumo table, Open creates one.
	L2 := lua.NewState()
	defer L2.Close()
	Open(L2, nil, Limits{MaxStringBytes: 10})
	if got, err := eval(L2, "return kumo.json_encode({1}), pcall(string.rep, 'x', 11)"); err != nil || !strings.HasPrefix(got, "[1]\tfalse\t") {
		t.Errorf("got %q, %v", got, err)
	}
}
