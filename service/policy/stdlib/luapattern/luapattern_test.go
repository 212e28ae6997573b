package luapattern

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/yuin/gopher-lua/pm"
)

// describe renders the last match and its captures the way Lua would return them
// from string.match: "nil", the error text, or the values joined by commas.
func describe(m *Matcher, src string, found bool, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	if !found {
		return "nil"
	}
	n := max(m.Captures(), 1)
	parts := []string{fmt.Sprintf("[%d,%d)", m.Start(), m.End())}
	for i := 0; i < n; i++ {
		c, err := m.Capture(i)
		if err != nil {
			return "error: " + err.Error()
		}
		if c.Position {
			parts = append(parts, fmt.Sprint(c.Start+1))
		} else {
			parts = append(parts, fmt.Sprintf("%q", src[c.Start:c.End]))
		}
	}
	return strings.Join(parts, " ")
}

func TestFind(t *testing.T) {
	for _, tc := range []struct {
		src, pat string
		init     int
		plain    bool
		want     string
	}{
		{"hello world", "o w", 0, false, `[4,7) "o w"`},
		{"hello world", "(o)", 5, false, `[7,8) "o"`},
		{"550 5.1.1 user", "^(%d%d%d) (%d%.%d%.%d)", 0, false, `[0,9) "550" "5.1.1"`},
		{"x550", "^%d+", 0, false, "nil"},
		{"x550", "^%d+", 1, false, `[1,4) "550"`},
		{"abc", "", 3, false, `[3,3) ""`},
		{"abc", "", 4, false, "nil"},
		{"abc", "a", -1, false, "nil"},
		{"a.b(", ".b(", 0, true, `[1,4) ".b("`},
		{"a.b(", "x", 0, true, "nil"},
		{"hello", "()ll()", 0, false, `[2,4) 3 5`},
		{"<a><b>", "<(.-)>", 0, false, `[0,3) "a"`},
		{"<a><b>", "<(.*)>", 0, false, `[0,6) "a><b"`},
		{"aaab", "a-b", 0, false, `[0,4) "aaab"`},
		{"colour", "colou?r", 0, false, `[0,6) "colour"`},
		{"abc", "c$", 0, false, `[2,3) "c"`},
		{"a$b", "a$b", 0, false, `[0,3) "a$b"`},
		{"f(a(b)c)", "%b()", 0, false, `[1,8) "(a(b)c)"`},
		{"((", "%b()", 0, false, "nil"},
		{"THE (quick) fox", "%f[%a]%a+", 4, false, `[5,10) "quick"`},
		{"abc", "%f[%a]", 1, false, "nil"},
		{"ab", "%f[%z]", 0, false, `[2,2) ""`},
		{"xyyx", "(y)%1", 0, false, `[1,3) "y"`},
		{"aa", "()%1", 0, false, "nil"},
		{"a]b", "[]]", 0, false, `[1,2) "]"`},
		{"a-b", "[b-]", 0, false, `[1,2) "-"`},
		{"A1_", "[%d_]+", 0, false, `[1,3) "1_"`},
		{"\x00x", "%z", 0, false, `[0,1) "\x00"`},
		{"\xe9a", "%a", 0, false, `[1,2) "a"`},
		{"\xe9a", "%A", 0, false, `[0,1) "\xe9"`},
		{"a", "%", 0, false, "error: malformed pattern (ends with '%')"},
		{"a", "[a", 0, false, "error: malformed pattern (missing ']')"},
		{"a", "[a%", 0, false, "error: malformed pattern (missing ']')"},
		{"a", "%fa", 0, false, "error: missing '[' after '%f' in pattern"},
		{"a", "(a)%2", 0, false, "error: invalid capture index %2"},
		{"a", "(a%1)", 0, false, "error: invalid capture index %1"},
		{"a", "a)", 0, false, "error: invalid pattern capture"},
		{"a", "(a", 0, false, "error: unfinished capture"},
		{"a", "%b", 0, false, "error: malformed pattern (missing arguments to '%b')"},
		{"abc", strings.Repeat("()", 32), 0, false, `[0,0) 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1`},
		{"abc", strings.Repeat("()", 33), 0, false, "error: too many captures"},
		{strings.Repeat("a", 300), strings.Repeat("a?", 300), 0, false, "error: pattern too complex"},
		{strings.Repeat("a", 199), strings.Repeat("a?", 199), 0, false, `[0,199) "` + strings.Repeat("a", 199) + `"`},
		// A pattern error is only found where the matcher reaches it, as in Lua.
		{"abc", "x[", 0, false, "nil"},
	} {
		t.Run(tc.src+"/"+tc.pat, func(t *testing.T) {
			var m Matcher
			m.Reset(tc.src, tc.pat, nil)
			found, err := m.Find(tc.init, tc.plain)
			if got := describe(&m, tc.src, found, err); got != tc.want {
				t.Errorf("Find(%q, %q, %d, %v) = %s, want %s", tc.src, tc.pat, tc.init, tc.plain, got, tc.want)
			}
			var pe *Error
			if err != nil && !errors.As(err, &pe) {
				t.Errorf("error %v is not an *Error", err)
			}
		})
	}
}

func TestPlain(t *testing.T) {
	for pat, want := range map[string]bool{"": true, "abc": true, "a)": true, "a]": true, "a.": false, "%d": false, "(": false, "a-": false, "^a": false, "a$": false} {
		if got := Plain(pat); got != want {
			t.Errorf("Plain(%q) = %v, want %v", pat, got, want)
		}
	}
}

// scanAll collects the iteration from init as "start-end:capture1,..." items.
func scanAll(t *testing.T, src, pat string, init int, anchor bool) string {
	t.Helper()
	var m Matcher
	m.Reset(src, pat, nil)
	m.Scan(init, anchor)
	var out []string
	for i := 0; ; i++ {
		if i > len(src)+2 {
			t.Fatalf("%q/%q: more matches than positions", src, pat)
		}
		found, err := m.Next()
		if err != nil {
			return strings.Join(append(out, "error: "+err.Error()), " ")
		}
		if !found {
			break
		}
		out = append(out, strings.TrimSpace(describe(&m, src, true, nil)))
	}
	// A finished iteration stays finished.
	if found, err := m.Next(); found || err != nil {
		t.Errorf("%q/%q: Next after the end = %v, %v", src, pat, found, err)
	}
	return strings.Join(out, " ")
}

func TestScan(t *testing.T) {
	for _, tc := range []struct {
		src, pat string
		init     int
		anchor   bool
		want     string
	}{
		{"abc", "%w*", 0, false, `[0,3) "abc"`},
		{"abc", "", 0, false, `[0,0) "" [1,1) "" [2,2) "" [3,3) ""`},
		{"abc", "b*", 0, true, `[0,0) "" [1,2) "b" [3,3) ""`},
		{"a=1, b=2", "(%w+)=(%w+)", 0, false, `[0,3) "a" "1" [5,8) "b" "2"`},
		{"abc", "()", 0, false, `[0,0) 1 [1,1) 2 [2,2) 3 [3,3) 4`},
		{"abc", ".", 1, false, `[1,2) "b" [2,3) "c"`},
		{"abc", "", 4, false, ``},
		{"aaa", "^a", 0, true, `[0,1) "a"`},
		{"baa", "^a", 0, true, ``},
		{"^a^b", "^.", 0, false, `[0,2) "^a" [2,4) "^b"`},
		{"THE (quick) fox", "%f[%a]%a+", 0, false, `[0,3) "THE" [5,10) "quick" [12,15) "fox"`},
		{"ab", "[a", 0, false, `error: malformed pattern (missing ']')`},
	} {
		if got := scanAll(t, tc.src, tc.pat, tc.init, tc.anchor); got != tc.want {
			t.Errorf("Scan(%q, %q, %d, %v) = %s, want %s", tc.src, tc.pat, tc.init, tc.anchor, got, tc.want)
		}
	}
}

func TestCaptureIndex(t *testing.T) {
	var m Matcher
	m.Reset("key=value", "(%w+)=()", nil)
	if found, err := m.Find(0, false); !found || err != nil {
		t.Fatalf("Find = %v, %v", found, err)
	}
	if c, err := m.Capture(1); err != nil || !c.Position || c.Start != 4 {
		t.Errorf("Capture(1) = %+v, %v; want position 4", c, err)
	}
	if _, err := m.Capture(2); err == nil || err.Error() != "invalid capture index %3" {
		t.Errorf("Capture(2) error = %v", err)
	}
	// Without captures, capture 0 is the whole match and capture 1 does not exist.
	m.Reset("xaby", "ab", nil)
	if found, err := m.Find(0, false); !found || err != nil {
		t.Fatalf("Find = %v, %v", found, err)
	}
	if c, err := m.Capture(0); err != nil || c != (Capture{Start: 1, End: 3}) {
		t.Errorf("Capture(0) = %+v, %v", c, err)
	}
	if _, err := m.Capture(1); err == nil {
		t.Error("Capture(1) of a pattern without captures succeeded")
	}
}

var errStop = errors.New("stop")

// TestInterrupt runs patterns whose backtracking is quadratic or worse on a subject
// where they cannot match; each must stop at the first failing check, quickly.
func TestInterrupt(t *testing.T) {
	src := strings.Repeat("a", 1<<14)
	for _, pat := range []string{".-b", "(a*)*b", "a*a*a*b", "(.-)%1b", "%f[%a].-b", "[%w%s]-b", "a-a-b"} {
		t.Run(pat, func(t *testing.T) {
			calls := 0
			check := func() error {
				calls++
				if calls == 3 {
					return errStop
				}
				return nil
			}
			var m Matcher
			m.Reset(src, pat, check)
			start := time.Now()
			found, err := m.Find(0, false)
			if d := time.Since(start); d > time.Second {
				t.Errorf("took %v", d)
			}
			if found || !errors.Is(err, errStop) || calls != 3 {
				t.Fatalf("found %v, err %v after %d checks; want errStop at the third check", found, err, calls)
			}
			// The Matcher is usable again after an interruption.
			m.Reset("ab", pat, nil)
			if _, err := m.Find(0, false); err != nil {
				t.Errorf("after the interruption: %v", err)
			}
		})
	}
	// A cheap match never calls the check.
	var m Matcher
	m.Reset("550 5.1.1 no such user", "^(%d+) ([%d.]+)", func() error { return errStop })
	if found, err := m.Find(0, false); !found || err != nil {
		t.Errorf("cheap match: %v, %v", found, err)
	}
}

// TestInterruptScan checks that the budget spans the calls of an iteration.
func TestInterruptScan(t *testing.T) {
	calls := 0
	var m Matcher
	m.Reset(strings.Repeat("ab", 1<<15), "a", func() error {
		calls++
		return errStop
	})
	m.Scan(0, false)
	n := 0
	for {
		found, err := m.Next()
		if err != nil {
			if !errors.Is(err, errStop) {
				t.Fatal(err)
			}
			break
		}
		if !found {
			t.Fatal("the iteration ended without a check")
		}
		n++
	}
	if calls != 1 || n >= CheckEvery {
		t.Errorf("%d matches, %d checks; want the first check within %d steps", n, calls, CheckEvery)
	}
}

// FuzzFind matches arbitrary patterns against arbitrary subjects: it must never
// panic, results must lie inside the subject, and a failing check must stop the
// match with its error.
func FuzzFind(f *testing.F) {
	for _, seed := range [][2]string{
		{"hello world", "(%w+) (%w+)"}, {"THE (quick) fox", "%f[%a]%a+"}, {"f(a(b)c)", "%b()"},
		{"xyyx", "(y)%1"}, {"a", "[a"}, {"a", "%"}, {"aaaa", ".-b"}, {"abc", "()"}, {"a]b", "[^]]"},
		{"550 5.1.1 <x@y>", "^(%d%d%d) (%d%.%d%.%d)"}, {"aaa", "(a*)*b"}, {"a", "%f"}, {"", "$"},
	} {
		f.Add(seed[0], seed[1], 0)
	}
	f.Fuzz(func(t *testing.T, src, pat string, init int) {
		init = max(min(init, len(src)+1), -1)
		// Backtracking can be exponential in the pattern length, so even the reference
		// run gets a budget: 64 checks, about 250k steps.
		calls := 0
		budget := func() error {
			if calls++; calls > 64 {
				return errStop
			}
			return nil
		}
		var m Matcher
		m.Reset(src, pat, budget)
		found, err := m.Find(init, false)
		var pe *Error
		switch {
		case errors.Is(err, errStop):
			return // too expensive to explore further; stopping it was the point
		case err != nil && !errors.As(err, &pe):
			t.Fatalf("unexpected error type %T: %v", err, err)
		case found && (m.Start() < init || m.Start() > m.End() || m.End() > len(src)):
			t.Fatalf("match [%d,%d) outside the subject of length %d from %d", m.Start(), m.End(), len(src), init)
		}
		for i := 0; found && i < max(m.Captures(), 1); i++ {
			c, err := m.Capture(i)
			if err == nil && (c.Start < 0 || c.Start > c.End || c.End > len(src)) {
				t.Fatalf("capture %d %+v outside the subject", i, c)
			}
		}

		// With a check that always fails, either the match ended before the first
		// check and agrees with the reference run, or it stopped at that check.
		failing := 0
		m.Reset(src, pat, func() error { failing++; return errStop })
		found2, err2 := m.Find(init, false)
		switch {
		case failing == 0 && (found2 != found || (err2 == nil) != (err == nil)):
			t.Fatalf("checked run differs: %v, %v vs %v, %v", found2, err2, found, err)
		case failing > 0 && (failing != 1 || !errors.Is(err2, errStop)):
			t.Fatalf("after %d checks: %v, %v; want errStop at the first", failing, found2, err2)
		}

		// The gsub-style iteration terminates and makes progress.
		calls = 0
		m.Reset(src, pat, budget)
		m.Scan(0, true)
		for n := 0; ; n++ {
			if n > len(src)+1 {
				t.Fatal("iteration does not terminate")
			}
			if found, err := m.Next(); !found || err != nil {
				break
			}
		}
	})
}

// replyText is a typical SMTP reply a policy inspects.
const replyText = "550 5.1.1 <x@y>: no such user"

var benchPatterns = []struct{ name, pat string }{
	{"anchored captures", "^(%d%d%d) (%d%.%d%.%d)"},
	{"unanchored word", "no such (%a+)"},
	{"set repetition", "<([^>]+)>"},
}

func BenchmarkFind(b *testing.B) {
	for _, bp := range benchPatterns {
		b.Run("luapattern/"+bp.name, func(b *testing.B) {
			b.ReportAllocs()
			check := func() error { return nil }
			for b.Loop() {
				var m Matcher
				m.Reset(replyText, bp.pat, check)
				if found, err := m.Find(0, false); !found || err != nil {
					b.Fatal(found, err)
				}
			}
		})
		b.Run("gopher-lua-pm/"+bp.name, func(b *testing.B) {
			b.ReportAllocs()
			src := []byte(replyText)
			for b.Loop() {
				if md, err := pm.Find(bp.pat, src, 0, 1); len(md) != 1 || err != nil {
					b.Fatal(md, err)
				}
			}
		})
	}
}
