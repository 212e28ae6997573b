package policy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"

	"github.com/rewrited/rewrited/service/policy/stdlib"
)

// The differential test runs every expression of testdata/lua54/corpus.txt
// through the real Lua 5.4 interpreter and through the engine's Lua (the
// policy compiler with its source pre-pass, the engine's libraries), both
// printing serialize(pcall(expression)) from testdata/lua54/serialize.lua.
const (
	corpusFile      = "testdata/lua54/corpus.txt"
	differencesFile = "testdata/lua54/expected-differences.txt"
	serializeFile   = "testdata/lua54/serialize.lua"
	driverFile      = "testdata/lua54/driver.lua"
)

// lua54Path is the reference interpreter, or the test is skipped when it is
// missing (CI installs Debian's lua5.4).
func lua54Path(tb testing.TB) string {
	tb.Helper()
	path, err := exec.LookPath("lua5.4")
	if err != nil {
		tb.Skip("lua5.4 is not installed (apt-get install -y lua5.4): the Lua 5.4 differential test needs the reference interpreter")
	}
	return path
}

// corpusLines is the corpus' expressions in order, without comments and blank lines.
func corpusLines(tb testing.TB) []string {
	tb.Helper()
	data, err := os.ReadFile(corpusFile)
	if err != nil {
		tb.Fatal(err)
	}
	var exprs []string
	for _, line := range strings.Split(string(data), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			exprs = append(exprs, line)
		}
	}
	return exprs
}

// lua54Version is the reference interpreter's release ("5.4.4"), from lua5.4 -v.
func lua54Version(tb testing.TB, path string) string {
	tb.Helper()
	out, err := exec.Command(path, "-v").Output()
	if err != nil {
		tb.Fatalf("lua5.4 -v: %v", err)
	}
	m := luaVersionRE.FindStringSubmatch(string(out))
	if m == nil {
		tb.Fatalf("lua5.4 -v printed %q, which names no Lua 5.4 release", out)
	}
	return m[1]
}

var (
	luaVersionRE = regexp.MustCompile(`^Lua (5\.4\.\d+)`)
	// A reason that holds only while the reference interpreter is older than
	// the Lua 5.4 release the engine follows.
	olderReasonRE = regexp.MustCompile(`^# reason while the reference is older than (5\.4\.\d+): (.*)$`)
)

// olderRelease reports whether Lua release a ("5.4.4") comes before b.
func olderRelease(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := range min(len(pa), len(pb)) {
		x, _ := strconv.Atoi(pa[i])
		y, _ := strconv.Atoi(pb[i])
		if x != y {
			return x < y
		}
	}
	return len(pa) < len(pb)
}

// expectedDifferences reads the list of expressions whose results may differ
// from the reference interpreter of release version: "# reason: ..." lines
// give the reason for the expressions that follow; "# reason while the
// reference is older than 5.4.N: ..." ones apply only to an older reference,
// and with a newer one the expressions that follow must agree.
func expectedDifferences(tb testing.TB, version string) map[string]string {
	tb.Helper()
	data, err := os.ReadFile(differencesFile)
	if err != nil {
		tb.Fatal(err)
	}
	diffs := map[string]string{}
	reason, applies := "", true
	for n, line := range strings.Split(string(data), "\n") {
		m := olderReasonRE.FindStringSubmatch(line)
		switch {
		case strings.HasPrefix(line, "# reason: "):
			reason, applies = strings.TrimPrefix(line, "# reason: "), true
		case m != nil:
			reason, applies = m[2], olderRelease(version, m[1])
		case line == "" || strings.HasPrefix(line, "#"):
		case reason == "":
			tb.Fatalf("%s:%d: %q has no reason above it", differencesFile, n+1, line)
		case applies:
			diffs[line] = reason
		default:
			// Listed, but expected to agree with this reference.
			diffs[line] = ""
		}
	}
	return diffs
}

// engineEvaluator runs expressions in a state built like a policy's, with the
// serializer loaded.
type engineEvaluator struct {
	L         *lua.LState
	serialize lua.LValue
}

func newEngineEvaluator(tb testing.TB) *engineEvaluator {
	tb.Helper()
	e, err := buildEngineEvaluator()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.L.Close)
	return e
}

func buildEngineEvaluator() (*engineEvaluator, error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: true, CallStackSize: callStackSize, RegistrySize: registrySize})
	openLibs(L)
	kumo := L.NewTable()
	L.SetGlobal("kumo", kumo)
	stdlib.Open(L, kumo, stdlib.Limits{})
	src, err := os.ReadFile(serializeFile)
	if err == nil {
		var proto *lua.FunctionProto
		if proto, err = compileChunk("serialize.lua", src); err == nil {
			L.Push(L.NewFunctionFromProto(proto))
			err = L.PCall(0, 0, nil)
		}
	}
	if err != nil {
		L.Close()
		return nil, err
	}
	return &engineEvaluator{L: L, serialize: L.GetGlobal("serialize")}, nil
}

// eval returns the serialised outcome of one expression, as driver.lua does.
func (e *engineEvaluator) eval(expr string) string {
	L := e.L
	proto, err := compileChunk("input", []byte("return "+expr))
	if err != nil {
		return "syntax " + err.Error()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	L.SetContext(ctx)
	defer L.RemoveContext()
	L.SetTop(0)
	L.Push(e.serialize)
	L.Push(L.GetGlobal("pcall"))
	L.Push(L.NewFunctionFromProto(proto))
	if err := L.PCall(1, lua.MultRet, nil); err != nil {
		return "engine failure " + err.Error()
	}
	if err := L.PCall(L.GetTop()-1, 1, nil); err != nil {
		return "engine failure " + err.Error()
	}
	out := L.Get(-1).String()
	L.SetTop(0)
	return out
}

// TestLua54Differential compares every corpus expression's result in the
// engine with Lua 5.4's; only the listed expected differences may differ, and
// each of them must still differ.
func TestLua54Differential(t *testing.T) {
	lua54 := lua54Path(t)
	exprs := corpusLines(t)
	if len(exprs) < 1000 {
		t.Fatalf("the corpus has %d expressions, want at least 1000", len(exprs))
	}
	version := lua54Version(t, lua54)
	diffs := expectedDifferences(t, version)
	inCorpus := map[string]bool{}
	for _, e := range exprs {
		if inCorpus[e] {
			t.Errorf("%s: %q appears twice", corpusFile, e)
		}
		inCorpus[e] = true
	}
	for e, reason := range diffs {
		if !inCorpus[e] {
			t.Errorf("%s: %q is not in the corpus", differencesFile, e)
		}
		if reason == "" {
			delete(diffs, e)
		}
	}

	out, err := exec.Command(lua54, driverFile, corpusFile).Output()
	if err != nil {
		t.Fatalf("lua5.4 %s: %v", driverFile, err)
	}
	want := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(want) != len(exprs) {
		t.Fatalf("lua5.4 printed %d results for %d expressions", len(want), len(exprs))
	}
	e := newEngineEvaluator(t)
	agree := 0
	for i, expr := range exprs {
		got := e.eval(expr)
		reason, expected := diffs[expr]
		switch {
		case got == want[i] && expected:
			t.Errorf("%s now agrees with Lua 5.4 (%s): remove it from %s", expr, want[i], differencesFile)
		case got != want[i] && !expected:
			t.Errorf("%s\n  lua5.4: %s\n  engine: %s", expr, want[i], got)
		case got == want[i]:
			agree++
		default:
			t.Logf("expected difference (%s): %s\n  lua5.4: %s\n  engine: %s", reason, expr, want[i], got)
		}
	}
	t.Logf("%d of %d expressions agree with Lua %s; %d expected differences", agree, len(exprs), version, len(diffs))
}

// lua54Process is a long-lived lua5.4 running driver.lua on standard input,
// with the engine evaluator it is compared with; the fuzz target's iterations
// in one process share both.
type lua54Process struct {
	mu     sync.Mutex
	in     io.WriteCloser
	out    *bufio.Reader
	engine *engineEvaluator
	err    error
}

var (
	lua54Once sync.Once
	lua54Proc *lua54Process
)

func startLua54(tb testing.TB) *lua54Process {
	path := lua54Path(tb)
	lua54Once.Do(func() {
		p := &lua54Process{}
		lua54Proc = p
		if p.engine, p.err = buildEngineEvaluator(); p.err != nil {
			return
		}
		cmd := exec.Command(path, driverFile)
		in, err := cmd.StdinPipe()
		if err == nil {
			var out io.ReadCloser
			if out, err = cmd.StdoutPipe(); err == nil {
				err = cmd.Start()
				p.in, p.out = in, bufio.NewReader(out)
			}
		}
		p.err = err
	})
	if lua54Proc.err != nil {
		tb.Fatalf("starting lua5.4: %v", lua54Proc.err)
	}
	return lua54Proc
}

// eval sends one expression (no newline in it) to lua5.4 and reads its answer,
// then evaluates it in the engine.
func (p *lua54Process) eval(expr string) (want, got string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := fmt.Fprintln(p.in, expr); err != nil {
		return "", "", fmt.Errorf("writing to lua5.4: %w", err)
	}
	line, err := p.out.ReadString('\n')
	if err != nil {
		return "", "", fmt.Errorf("reading from lua5.4: %w", err)
	}
	return strings.TrimSuffix(line, "\n"), p.engine.eval(expr), nil
}

// The pieces random patterns and string.format calls are built from, and the
// subjects and values they are applied to.
var (
	fuzzPatternItems = []string{
		"a", "b", ".", "%a", "%d", "%s", "%w", "%p", "%x", "%u", "%l", "%c", "%g",
		"%A", "%D", "%S", "[ab]", "[^a]", "[%d.]", "[a-c]", "*", "+", "-", "?",
		"(", ")", "()", "%1", "%b()", "%f[%w]", "^", "$", "%%", "[]", "[^]", "%",
	}
	fuzzSubjects = []string{"", "abc", "a.b-c", "(x(y)z)", "hello world 42", "aaa", "A1 b2\tC3", "\x00\xff%"}
	fuzzFormats  = "diuoxXcaAeEfgGsq%"
	fuzzFlags    = "-+ #0"
	// Integral floats inside the int64 range print as integers in rewrited (an
	// expected difference), so the values avoid them.
	fuzzValues = []string{"0", "1", "-1", "3.5", "-2.25", "255", "1e300", "2^63", "1/0", "-1/0", "0/0", "'x'", "'12'", "1e-310", "0.1", "nil", "true"}
)

// fuzzExpression turns fuzz bytes into a string.find/gsub call with a random
// pattern, or a string.format call with a random spec.
func fuzzExpression(data []byte) string {
	next := func() int {
		if len(data) == 0 {
			return 0
		}
		b := int(data[0])
		data = data[1:]
		return b
	}
	if next()%2 == 0 {
		var pat strings.Builder
		for n := next() % 6; n >= 0; n-- {
			pat.WriteString(fuzzPatternItems[next()%len(fuzzPatternItems)])
		}
		subject := fuzzSubjects[next()%len(fuzzSubjects)]
		fn := []string{"string.find(%q, %q)", "string.match(%q, %q)", "string.gsub(%q, %q, '<%%0>')", "string.find(%q, %q, 2, true)"}[next()%4]
		return fmt.Sprintf(fn, subject, pat.String())
	}
	var spec strings.Builder
	spec.WriteByte('%')
	for n := next() % 4; n > 0; n-- {
		spec.WriteByte(fuzzFlags[next()%len(fuzzFlags)])
	}
	if w := next() % 24; w < 20 {
		fmt.Fprint(&spec, w)
	}
	if p := next() % 24; p < 20 {
		fmt.Fprintf(&spec, ".%d", p)
	}
	spec.WriteByte(fuzzFormats[next()%len(fuzzFormats)])
	return fmt.Sprintf("string.format(%q, %s)", spec.String(), fuzzValues[next()%len(fuzzValues)])
}

// FuzzLua54Differential: random patterns and format specs give the same
// result, or the same error, in the engine as in Lua 5.4.
func FuzzLua54Differential(f *testing.F) {
	for _, seed := range []string{"\x00\x03\x04\x05\x01", "\x01\x02\x01\x05\x03\x07", "\x00\x01\x21\x02\x03", "\x01\x00\x10\x02\x0b\x05"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := startLua54(t)
		expr := fuzzExpression(data)
		want, got, err := p.eval(expr)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s\n  lua5.4: %s\n  engine: %s", expr, want, got)
		}
	})
}

func TestOlderRelease(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"5.4.4", "5.4.6", true},
		{"5.4.6", "5.4.6", false},
		{"5.4.8", "5.4.6", false},
		{"5.4.10", "5.4.6", false},
		{"5.4", "5.4.6", true},
	} {
		if got := olderRelease(tc.a, tc.b); got != tc.want {
			t.Errorf("olderRelease(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

// mathResults is how many results each TestLua54MathDifferential expression has.
const mathResults = 16

// TestLua54MathDifferential compares math.log (natural, base 2, 10 and 3),
// exp, log10, sin, cos, tan, asin, acos, atan (one and two arguments) and pow
// with Lua 5.4's, which are the C library's, on arguments spread over the
// float range. The C library rounds correctly but
// for rare arguments, so a result may be one unit in the last place off, and
// only for a few of them.
func TestLua54MathDifferential(t *testing.T) {
	p := startLua54(t)
	const n = 500
	rng := rand.New(rand.NewPCG(14, 54))
	exact, total := 0, 0
	var offByOne [mathResults]int
	for i := range n {
		var x float64
		switch i % 4 {
		case 0:
			x = rng.Float64() * 10
		case 1:
			x = rng.Float64() * 1000
		case 2:
			x = float64(rng.IntN(100000) + 1)
		default:
			x = math.Pow(10, rng.Float64()*600-300)
		}
		arg := strconv.FormatFloat(x, 'x', -1, 64)
		frac := strconv.FormatFloat(x-math.Floor(x), 'x', -1, 64)
		expr := fmt.Sprintf("string.format('"+strings.Repeat("%%a ", mathResults-1)+"%%a', "+
			"math.log(%[1]s), math.log(%[1]s, 2), math.log(%[1]s, 10), math.log(%[1]s, 3), math.exp(%[1]s / 100), math.log10(%[1]s), "+
			"math.sin(%[1]s), math.cos(%[1]s), math.tan(%[1]s), math.asin(%[2]s), math.acos(%[2]s), math.atan(%[1]s), "+
			"math.atan(%[2]s, -%[1]s), math.atan(-%[1]s, %[2]s), math.pow(%[1]s, 0.37), math.pow(%[2]s, -%[1]s / 1000))", arg, frac)
		want, got, err := p.eval(expr)
		if err != nil {
			t.Fatal(err)
		}
		results := func(out string) []string {
			return strings.Fields(strings.TrimSuffix(strings.TrimPrefix(out, `ok 1 "`), `"`))
		}
		wf, gf := results(want), results(got)
		if len(wf) != mathResults || len(gf) != mathResults {
			t.Fatalf("%s\n  lua5.4: %s\n  engine: %s", expr, want, got)
		}
		for j := range wf {
			w, err1 := strconv.ParseFloat(wf[j], 64)
			g, err2 := strconv.ParseFloat(gf[j], 64)
			if err1 != nil || err2 != nil {
				t.Fatalf("%s\n  lua5.4: %s\n  engine: %s", expr, want, got)
			}
			total++
			switch {
			case w == g:
				exact++
			case math.Nextafter(w, g) == g:
				offByOne[j]++
			default:
				t.Errorf("%s, result %d: lua5.4 %s, engine %s: more than one unit in the last place apart", expr, j+1, wf[j], gf[j])
			}
		}
	}
	if exact*1000 < total*995 {
		t.Errorf("%d of %d results equal Lua 5.4's, want at least 99.5%%", exact, total)
	}
	t.Logf("%d of %d results equal Lua 5.4's, the others are one unit in the last place apart (per result: %v)", exact, total, offByOne)
}
