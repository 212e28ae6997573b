package stdlib

import (
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestMemoizeTTLFollowsTheClock(t *testing.T) {
	clock := &fakeClock{t: time.Date(2000, 1, 2, 3, 4, 5, 0, time.UTC)}
	L := newState(t, Limits{Now: clock.now})
	if _, err := eval(L, `
		calls = 0
		f = kumo.memoize(function(x) calls = calls + 1; return x end, {name = 'ttl', ttl = '10 seconds', capacity = 8})`); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		advance   time.Duration
		wantCalls string
	}{
		{0, "1"},                       // first call computes
		{9 * time.Second, "1"},         // still fresh
		{time.Second, "2"},             // exactly ttl old: expired
		{5 * time.Second, "2"},         // the recomputed entry is fresh again
		{10 * time.Second, "3"},        // and expires in turn
		{-100 * time.Second, "3"},      // a clock stepping back keeps the entry
		{time.Hour + time.Second, "4"}, // long after
	}
	for i, s := range steps {
		clock.t = clock.t.Add(s.advance)
		got, err := eval(L, "f('k'); return calls")
		if err != nil || got != s.wantCalls {
			t.Fatalf("step %d: calls = %q, %v; want %s", i, got, err, s.wantCalls)
		}
	}
}

func TestTimeNowUsesTheClock(t *testing.T) {
	clock := &fakeClock{t: time.Date(2025, 8, 7, 4, 4, 29, 960_000_000, time.UTC)}
	L := newState(t, Limits{Now: clock.now})
	L.SetGlobal("advance", L.NewFunction(func(*lua.LState) int {
		clock.t = clock.t.Add(1500 * time.Millisecond)
		return 0
	}))
	got, err := eval(L, `
		local now = kumo.time.now()
		local timer = kumo.time.start_timer 'x'
		local ms = kumo.time.epoch_millis()
		advance()
		return now:format '%Y-%m-%d %H:%M:%S.%3f', now:elapsed(), now.elapsed.human, timer:done(), kumo.time.since_millis(ms)`)
	want := "2025-08-07 04:04:29.960\t1500000000\t1s 500ms\t1.5\t1500"
	if err != nil || got != want {
		t.Fatalf("got %q, %v; want %q", got, err, want)
	}
}

func TestLoadersReadThroughReadFile(t *testing.T) {
	files := map[string]string{
		"/p/data.json": `{"a": [1, 2], // a comment
			"b": {"c": "d"}}`,
		"/p/data.toml": "title = 't'\n[owner]\nname = 'n'\nlist = [1, 2]\n",
		"/p/bad.json":  `{"a": }`,
		"/p/key":       "Jefe",
		"/p/big.json":  `"` + strings.Repeat("x", 300) + `"`,
	}
	read := func(name string) ([]byte, error) {
		if s, ok := files[name]; ok {
			return []byte(s), nil
		}
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	L := newState(t, Limits{ReadFile: read, MaxStringBytes: 64})
	for _, c := range []struct{ code, want, wantErr string }{
		{code: "local v = kumo.json_load '/p/data.json' return v.a[2], v.b.c", want: "2\td"},
		{code: "local v = kumo.serde.json_load '/p/data.json' return #v.a", want: "2"},
		{code: "local v = kumo.serde.toml_load '/p/data.toml' return v.title, v.owner.name, v.owner.list[2]", want: "t\tn\t2"},
		{code: "local v = kumo.toml_load '/p/data.toml' return v.owner.list[1]", want: "1"},
		{code: "return kumo.digest.hmac_sha256('/p/key', 'what do ya want for nothing?').hex", want: "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
		{code: "return kumo.json_load '/p/missing.json'", wantErr: "kumo.serde.json_load: open /p/missing.json: file does not exist"},
		{code: "return kumo.json_load '/p/bad.json'", wantErr: "kumo.serde.json_load: /p/bad.json: invalid JSON"},
		{code: "return kumo.json_load '/p/big.json'", wantErr: "kumo.serde.json_load: /p/big.json is too large"},
		{code: "return kumo.json_load(nil)", wantErr: "bad argument #1 to 'kumo.serde.json_load' (string expected, got nil)"},
	} {
		got, err := eval(L, c.code)
		switch {
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%s: got %q, %v; want error %q", c.code, got, err, c.wantErr)
		case c.wantErr == "" && (err != nil || got != c.want):
			t.Errorf("%s: got %q, %v; want %q", c.code, got, err, c.want)
		}
	}

	// Without ReadFile the loaders say so.
	L2 := newState(t, Limits{})
	if _, err := eval(L2, "return kumo.toml_load 'x.toml'"); err == nil || !strings.Contains(err.Error(), "kumo.serde.toml_load: reading files is not available here") {
		t.Errorf("got %v", err)
	}
}

// The KumoMTA helper modules join TestNoGoPanics' list of builtins.
func init() {
	installed = append(installed,
		"kumo.memoize", "kumo.traceback", "kumo.memoize(print, {name = 'fuzz', ttl = 60, capacity = 2})",
		"kumo.time.now", "kumo.time.from_unix_timestamp", "kumo.time.parse_rfc3339", "kumo.time.parse_rfc2822",
		"kumo.time.with_ymd_hms", "kumo.time.parse_duration", "kumo.time.sleep", "kumo.time.start_timer",
		"kumo.time.epoch_millis", "kumo.time.since_millis", "kumo.time.now().format",
		"getmetatable(kumo.time.now()).__add", "getmetatable(kumo.time.now()).__sub",
		"getmetatable(kumo.time.now()).__lt", "getmetatable(kumo.time.now()).__index",
		"getmetatable(kumo.time.parse_duration(1)).__add", "getmetatable(kumo.time.parse_duration(1)).__sub",
		"getmetatable(kumo.time.parse_duration(1)).__unm", "getmetatable(kumo.time.parse_duration(1)).__call",
		"getmetatable(kumo.time.parse_duration(1)).__index", "kumo.time.start_timer('t').done",
		"kumo.digest.sha256", "kumo.digest.crc32", "kumo.digest.hmac_sha256", "getmetatable(kumo.digest.sha1('')).__index",
		"kumo.encode.base64_encode", "kumo.encode.base64_decode", "kumo.encode.base32hex_nopad_decode",
		"kumo.encode.hex_decode", "kumo.encode.charset_encode", "kumo.encode.charset_decode",
		"kumo.uuid.new_v4", "kumo.uuid.new_v7", "kumo.uuid.parse", "getmetatable(kumo.uuid.new_v4()).__index",
		"kumo.json_load", "kumo.serde.toml_load", "kumo.serde.toml_parse", "kumo.serde.toml_encode",
		"kumo.string.eval_template", "kumo.string.normalize_smtp_response", "kumo.string.psl_domain",
		"kumo.string.psl_suffix", "kumo.string.psl_domain_is_known", "kumo.string.psl_suffix_is_known",
		"kumo.cidr.make_map", "getmetatable(kumo.cidr.make_map()).__index", "getmetatable(kumo.cidr.make_map()).__newindex",
		"kumo.domain_map.new", "getmetatable(kumo.domain_map.new()).__index", "getmetatable(kumo.domain_map.new()).__newindex",
		"kumo.regex_set_map.new", "getmetatable(kumo.regex_set_map.new()).__index",
	)
}

func BenchmarkMemoizeHit(b *testing.B) {
	L := newState(b, Limits{})
	if err := L.DoString(`
		cached = kumo.memoize(function(domain, code) return domain .. code end, {name = 'bench', ttl = '5 minutes', capacity = 100})
		cached('example.com', 250)
	`); err != nil {
		b.Fatal(err)
	}
	fn := L.GetGlobal("cached")
	b.ReportAllocs()
	for b.Loop() {
		if err := L.CallByParam(lua.P{Fn: fn, NRet: 1, Protect: true}, lua.LString("example.com"), lua.LNumber(250)); err != nil {
			b.Fatal(err)
		}
		L.Pop(1)
	}
}

func BenchmarkDigestSHA256Hex(b *testing.B) {
	L := newState(b, Limits{})
	if err := L.DoString(`function digest(s) return kumo.digest.sha256(s).hex end`); err != nil {
		b.Fatal(err)
	}
	fn := L.GetGlobal("digest")
	arg := lua.LString("550 5.1.1 The email account that you tried to reach does not exist")
	b.ReportAllocs()
	for b.Loop() {
		if err := L.CallByParam(lua.P{Fn: fn, NRet: 1, Protect: true}, arg); err != nil {
			b.Fatal(err)
		}
		L.Pop(1)
	}
}

// BenchmarkOpen is the cost of installing every library into a new state.
func BenchmarkOpen(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		L := lua.NewState(lua.Options{SkipOpenLibs: true})
		OpenStandard(L)
		Open(L, nil, Limits{})
		L.Close()
	}
}

// TestEvalTemplateConcurrent renders templates from several states at once, as a
// pool of states does; the engine's environment is shared. Run with -race.
func TestEvalTemplateConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			L := newState(t, Limits{})
			for i := range 50 {
				code := fmt.Sprintf(`return kumo.string.eval_template('x.json', [[{%% for k, v in m | items %%}{{ k }}={{ v }};{%% endfor %%}]], {m = {a = %d, b = %d}})`, g, i)
				got, err := eval(L, code)
				if want := fmt.Sprintf(`"a"=%d;"b"=%d;`, g, i); err != nil || got != want {
					errs <- fmt.Errorf("got %q, %v; want %q", got, err, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
