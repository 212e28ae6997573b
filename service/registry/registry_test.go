package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rewrited/rewrited/internal/rewritedtest"
	"github.com/rewrited/rewrited/service/policy"
)

// rewriteTo is a policy that rewrites every reply to 250 text.
func rewriteTo(text string) string {
	return fmt.Sprintf("kumo.on('smtp_server_rewrite_response', function() return 250, %q end)\n", text)
}

const broken = "kumo.on('smtp_server_rewrite_response', function()\n  return 250,\nend)\n"

func write(t *testing.T, file, src string) {
	t.Helper()
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
}

// loads records Config.OnLoad calls.
type loads struct {
	mu   sync.Mutex
	list []string
}

func (l *loads) record(name string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	result := "ok"
	if err != nil {
		result = "failed"
	}
	l.list = append(l.list, name+":"+result)
}

func (l *loads) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	list := l.list
	l.list = nil
	slices.Sort(list)
	return list
}

func open(t *testing.T, cfg Config) (*Registry, *loads, *rewritedtest.LogBuffer) {
	t.Helper()
	l, logs := &loads{}, &rewritedtest.LogBuffer{}
	cfg.OnLoad = l.record
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	cfg.Options.PoolSize = 2
	r, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v\nlogs:\n%s", err, logs)
	}
	t.Cleanup(r.Close)
	return r, l, logs
}

// reply evaluates the named policy for a 250 reply.
func reply(t *testing.T, r *Registry, name string) (policy.Decision, bool) {
	t.Helper()
	p, ok := r.Policy(name)
	if !ok {
		return policy.Decision{}, false
	}
	return p.Evaluate(context.Background(), policy.Input{Status: 250, Response: "OK"}), true
}

func TestOpenDirServesLuaFilesOnly(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "target.lua")
	write(t, outside, rewriteTo("linked"))
	write(t, filepath.Join(dir, "default.lua"), rewriteTo("default"))
	write(t, filepath.Join(dir, "trial.shadow.lua"), rewriteTo("trial"))
	write(t, filepath.Join(dir, ".hidden.lua"), broken)
	write(t, filepath.Join(dir, "notes.txt"), broken)
	write(t, filepath.Join(dir, "bad name.lua"), broken)
	if err := os.Mkdir(filepath.Join(dir, "sub.lua"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "linked.lua")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "missing"), filepath.Join(dir, "dangling.lua")); err != nil {
		t.Fatal(err)
	}

	r, l, _ := open(t, Config{Dir: dir})
	if got, want := r.Names(), []string{"default", "linked", "trial"}; !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	if got, want := l.take(), []string{"default:ok", "linked:ok", "trial:ok"}; !slices.Equal(got, want) {
		t.Errorf("loads = %v, want %v", got, want)
	}
	tests := []struct {
		name     string
		outcome  policy.Outcome
		response string
	}{
		{"default", policy.OutcomeRewritten, "default"},
		{"linked", policy.OutcomeRewritten, "linked"},
		{"trial", policy.OutcomeShadowed, "OK"},
	}
	for _, tt := range tests {
		d, ok := reply(t, r, tt.name)
		if !ok || d.Outcome != tt.outcome || d.Response != tt.response {
			t.Errorf("%s: served %v, outcome %v, response %q; want %v, %q", tt.name, ok, d.Outcome, d.Response, tt.outcome, tt.response)
		}
	}
}

// TestOpenServesWhatLoads: a broken configuration opens, serves the
// policies that load and is not Ready; only a missing directory fails.
func TestOpenServesWhatLoads(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		served  []string
		refused []string
	}{
		{"syntax error", map[string]string{"default.lua": broken, "ok.lua": rewriteTo("ok")}, []string{"ok"}, []string{"default"}},
		{"empty file", map[string]string{"default.lua": ""}, []string{}, []string{"default"}},
		{"empty directory", map[string]string{"README": "x"}, []string{}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, src := range tt.files {
				write(t, filepath.Join(dir, name), src)
			}
			r, _, logs := open(t, Config{Dir: dir})
			if got := r.Names(); !slices.Equal(got, tt.served) {
				t.Errorf("Names() = %v, want %v", got, tt.served)
			}
			var refused []string
			for _, f := range r.Refused() {
				refused = append(refused, f.Policy)
				if f.Serving || f.Err == nil || f.File != filepath.Join(dir, f.Policy+".lua") {
					t.Errorf("refusal %+v", f)
				}
			}
			if !slices.Equal(refused, tt.refused) {
				t.Errorf("Refused() = %v, want %v", refused, tt.refused)
			}
			if r.Ready() {
				t.Error("Ready() with a broken configuration")
			}
			if !strings.Contains(logs.String(), "level=ERROR") {
				t.Errorf("nothing logged at error level:\n%s", logs)
			}
		})
	}
	t.Run("missing directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "missing")
		r, err := Open(Config{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
		if err == nil {
			r.Close()
			t.Fatal("Open succeeded")
		}
		if !strings.Contains(err.Error(), "--policy-dir: open "+dir+": no such file or directory") {
			t.Errorf("error %q does not name the directory", err)
		}
	})
}

// TestReadyOnceTheBrokenFileLoads: a policy refused at start makes the
// registry not Ready until a reload loads it; a later refused change, with
// the previous version serving, keeps it Ready.
func TestReadyOnceTheBrokenFileLoads(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.lua")
	write(t, filepath.Join(dir, "good.lua"), rewriteTo("good"))
	write(t, bad, broken)
	reloads := 0
	r, _, logs := open(t, Config{Dir: dir, OnReload: func() { reloads++ }})
	if r.Ready() || !maps.Equal(r.RefusedPolicies(), map[string]bool{"bad": false}) {
		t.Fatalf("after Open: Ready %v, refused %v", r.Ready(), r.RefusedPolicies())
	}
	if d, ok := reply(t, r, "good"); !ok || d.Response != "good" {
		t.Errorf("good answers %q (served %v)", d.Response, ok)
	}
	write(t, bad, rewriteTo("fixed"))
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if !r.Ready() || len(r.RefusedPolicies()) != 0 {
		t.Fatalf("after the fix: Ready %v, refused %v", r.Ready(), r.RefusedPolicies())
	}
	if !strings.Contains(logs.String(), `msg="every policy loaded: ready"`) {
		t.Errorf("readiness not logged:\n%s", logs)
	}
	write(t, bad, broken)
	if err := r.Reload(); err == nil {
		t.Fatal("Reload accepted a broken file")
	}
	if !r.Ready() || !maps.Equal(r.RefusedPolicies(), map[string]bool{"bad": true}) {
		t.Errorf("after a refused change: Ready %v, refused %v", r.Ready(), r.RefusedPolicies())
	}
	if reloads != 3 {
		t.Errorf("OnReload called %d times, want 3", reloads)
	}
}

// TestSkippedFileWarnedOnce: a file whose name cannot be served is reported
// once, and again only when it changes.
func TestSkippedFileWarnedOnce(t *testing.T) {
	dir := t.TempDir()
	odd := filepath.Join(dir, "bad name.lua")
	write(t, filepath.Join(dir, "default.lua"), rewriteTo("default"))
	write(t, odd, rewriteTo("x"))
	r, _, logs := open(t, Config{Dir: dir})
	const warning = "policy file skipped"
	for range 2 {
		if err := r.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), warning); n != 1 {
		t.Errorf("warned %d times over three scans, want 1:\n%s", n, logs)
	}
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(odd, later, later); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), warning); n != 2 {
		t.Errorf("warned %d times after the file changed, want 2:\n%s", n, logs)
	}
}

func TestReloadSwapsChangesAndKeepsWhatFails(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.lua"), filepath.Join(dir, "b.lua")
	write(t, a, rewriteTo("a1"))
	write(t, b, rewriteTo("b1"))
	r, l, logs := open(t, Config{Dir: dir})
	l.take()
	b1, _ := r.Policy("b")

	// a changes, b is broken, c appears.
	write(t, a, rewriteTo("a2"))
	write(t, b, broken)
	write(t, filepath.Join(dir, "c.lua"), rewriteTo("c1"))
	err := r.Reload()
	var le *policy.LoadError
	if !errors.As(err, &le) || le.File != b || le.Line != 3 {
		t.Fatalf("Reload() = %v, want a LoadError at %s:3", err, b)
	}
	if got, want := l.take(), []string{"a:ok", "b:failed", "c:ok"}; !slices.Equal(got, want) {
		t.Errorf("loads = %v, want %v", got, want)
	}
	for name, want := range map[string]string{"a": "a2", "b": "b1", "c": "c1"} {
		if d, ok := reply(t, r, name); !ok || d.Response != want {
			t.Errorf("%s answers %q (served %v), want %q", name, d.Response, ok, want)
		}
	}
	if p, _ := r.Policy("b"); p != b1 {
		t.Error("the refused policy's previous version was replaced")
	}
	for _, want := range []string{
		`msg="policy loaded" policy=a file=` + a + ` version=` + policy.Version([]byte(rewriteTo("a2"))),
		`msg="policy refused: the previous version keeps serving" policy=b file=` + b,
		b + `:3:`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}

	// Unchanged files are not compiled again; a removed one stops serving.
	if err := os.Remove(filepath.Join(dir, "c.lua")); err != nil {
		t.Fatal(err)
	}
	write(t, b, rewriteTo("b2"))
	a2, _ := r.Policy("a")
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if got, want := l.take(), []string{"b:ok"}; !slices.Equal(got, want) {
		t.Errorf("loads = %v, want %v", got, want)
	}
	if p, _ := r.Policy("a"); p != a2 {
		t.Error("the unchanged policy was compiled again")
	}
	if _, ok := r.Policy("c"); ok {
		t.Error("the removed policy is still served")
	}
	if !strings.Contains(logs.String(), `msg="policy removed" policy=c`) {
		t.Errorf("no removal logged:\n%s", logs)
	}
	// The replaced versions were closed: their pools are empty.
	if st := b1.Stats(); st.Idle != 0 {
		t.Errorf("the replaced policy still holds %d idle states", st.Idle)
	}
}

// TestReloadKeepsUnchangedShadowPolicies: with Options.Shadow on, a reload
// that finds nothing changed compiles nothing.
func TestReloadKeepsUnchangedShadowPolicies(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.lua"), rewriteTo("a"))
	write(t, filepath.Join(dir, "b.shadow.lua"), rewriteTo("b"))
	r, l, _ := open(t, Config{Dir: dir, Options: policy.Options{Shadow: true}})
	l.take()
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := l.take(); len(got) != 0 {
		t.Errorf("unchanged policies compiled again: %v", got)
	}
	for _, name := range []string{"a", "b"} {
		if d, _ := reply(t, r, name); d.Outcome != policy.OutcomeShadowed {
			t.Errorf("%s: outcome %v, want shadowed", name, d.Outcome)
		}
	}
}

// TestCandidateBesideLivePolicy: NAME.shadow.lua beside NAME.lua is NAME's
// candidate, compiled as the live policy is; without a live NAME.lua it is
// served in shadow mode; renamed over NAME.lua it goes live.
func TestCandidateBesideLivePolicy(t *testing.T) {
	dir := t.TempDir()
	live, shadow := filepath.Join(dir, "a.lua"), filepath.Join(dir, "a.shadow.lua")
	write(t, live, rewriteTo("v1"))
	write(t, shadow, rewriteTo("v2"))
	r, l, _ := open(t, Config{Dir: dir})
	if got, want := l.take(), []string{"a:ok", "a:ok"}; !slices.Equal(got, want) {
		t.Errorf("loads = %v, want %v", got, want)
	}
	if got, want := r.Names(), []string{"a"}; !slices.Equal(got, want) {
		t.Errorf("Names() = %v, want %v", got, want)
	}
	if got := len(r.Policies()); got != 1 {
		t.Errorf("Policies() holds %d policies, want the live one only", got)
	}
	if d, ok := reply(t, r, "a"); !ok || d.Outcome != policy.OutcomeRewritten || d.Response != "v1" {
		t.Errorf("a answers %v %q (served %v), want v1 rewritten", d.Outcome, d.Response, ok)
	}
	c, ok := r.Candidate("a")
	if !ok || c.File() != shadow || c.Name() != "a" || c.Options().Shadow {
		t.Fatalf("Candidate(a) = %v, %v: want %s compiled live", c, ok, shadow)
	}
	if d := c.Evaluate(context.Background(), policy.Input{Status: 250, Response: "OK"}); d.Response != "v2" {
		t.Errorf("the candidate answers %q, want v2", d.Response)
	}
	if _, ok := r.Candidate("b"); ok {
		t.Error("Candidate(b) found a policy that does not exist")
	}

	// An unchanged candidate is kept; the rename makes v2 live.
	if err := r.Reload(); err != nil || len(l.take()) != 0 {
		t.Fatalf("a reload with nothing changed: %v", err)
	}
	if err := os.Rename(shadow, live); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if d, _ := reply(t, r, "a"); d.Response != "v2" || d.Outcome != policy.OutcomeRewritten {
		t.Errorf("after the rename a answers %v %q, want v2 rewritten", d.Outcome, d.Response)
	}
	if _, ok := r.Candidate("a"); ok {
		t.Error("the candidate outlived its file")
	}
	if st := c.Stats(); st.Idle != 0 {
		t.Errorf("the replaced candidate still holds %d idle states", st.Idle)
	}

	// Without a live policy, NAME.shadow.lua is NAME in shadow mode.
	if err := os.Rename(live, shadow); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if d, ok := reply(t, r, "a"); !ok || d.Outcome != policy.OutcomeShadowed {
		t.Errorf("a alone in shadow: %v (served %v), want shadowed", d.Outcome, ok)
	}
	if _, ok := r.Candidate("a"); ok {
		t.Error("a shadow policy without a live one is also a candidate")
	}
}

// waitFor polls until cond holds or 5 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func answers(t *testing.T, r *Registry, name, want string) func() bool {
	return func() bool {
		d, ok := reply(t, r, name)
		return ok && d.Response == want
	}
}

// TestWatchKubernetesConfigMapSwap reproduces how the kubelet updates a
// mounted ConfigMap: the files are symlinks through ..data, and an update
// writes a new timestamped directory, points ..data_tmp at it and renames
// ..data_tmp over ..data. The files themselves are never written.
func TestWatchKubernetesConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	mustDo := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	data := func(name string, files map[string]string) {
		mustDo(os.Mkdir(filepath.Join(dir, name), 0o755))
		for f, src := range files {
			write(t, filepath.Join(dir, name, f), src)
		}
	}
	data("..2026_a", map[string]string{"default.lua": rewriteTo("v1"), "old.lua": rewriteTo("old")})
	mustDo(os.Symlink("..2026_a", filepath.Join(dir, "..data")))
	for _, f := range []string{"default.lua", "old.lua"} {
		mustDo(os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)))
	}
	r, _, logs := open(t, Config{Dir: dir})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mustDo(r.Watch(ctx, 50*time.Millisecond))

	data("..2026_b", map[string]string{"default.lua": rewriteTo("v2"), "new.lua": rewriteTo("new")})
	mustDo(os.Symlink("..2026_b", filepath.Join(dir, "..data_tmp")))
	mustDo(os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	mustDo(os.Symlink(filepath.Join("..data", "new.lua"), filepath.Join(dir, "new.lua")))
	mustDo(os.Remove(filepath.Join(dir, "old.lua")))
	mustDo(os.RemoveAll(filepath.Join(dir, "..2026_a")))

	waitFor(t, "default serves v2", answers(t, r, "default", "v2"))
	waitFor(t, "new is served", answers(t, r, "new", "new"))
	waitFor(t, "old is gone", func() bool { _, ok := r.Policy("old"); return !ok })
	if t.Failed() {
		t.Log(logs)
	}
}

// TestWatchFileReplacedByRename covers --policy FILE edited the way editors
// and configuration tools save: a new file renamed over the old one.
func TestWatchFileReplacedByRename(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.lua")
	write(t, file, rewriteTo("v1"))
	r, _, _ := open(t, Config{File: file})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := r.Watch(ctx, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, ".policy.lua.swp")
	write(t, tmp, rewriteTo("v2"))
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the default policy serves v2", answers(t, r, "default", "v2"))

	// Removing the file keeps the last version serving.
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if d, ok := reply(t, r, "default"); !ok || d.Response != "v2" {
		t.Errorf("after the file was removed: served %v, %q", ok, d.Response)
	}
}

// BenchmarkReload is the cost of one reload that finds the policy changed:
// compiling it and warming its pool.
func BenchmarkReload(b *testing.B) {
	dir := b.TempDir()
	file := filepath.Join(dir, "default.lua")
	srcs := [2][]byte{[]byte(rewriteTo("a")), []byte(rewriteTo("b"))}
	if err := os.WriteFile(file, srcs[0], 0o644); err != nil {
		b.Fatal(err)
	}
	r, err := Open(Config{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	for i := 0; b.Loop(); i++ {
		if err := os.WriteFile(file, srcs[(i+1)%2], 0o644); err != nil {
			b.Fatal(err)
		}
		if err := r.Reload(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCompileLimits: a file over MaxPolicyBytes is refused unread, a
// compilation past CompileTimeout is refused, and a file that failed is not
// compiled again until it changes.
func TestCompileLimits(t *testing.T) {
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "a.lua"), filepath.Join(dir, "b.lua"), filepath.Join(dir, "c.lua")
	small := rewriteTo("a1")
	write(t, a, small)
	r, l, logs := open(t, Config{Dir: dir, MaxPolicyBytes: len(small), CompileTimeout: time.Minute})
	l.take()

	write(t, b, rewriteTo("b1")+"-- "+strings.Repeat("x", len(small))+"\n")
	var le *policy.LoadError
	if err := r.Reload(); !errors.As(err, &le) || le.File != b || !strings.Contains(le.Message, fmt.Sprintf("over %d bytes", len(small))) {
		t.Errorf("policy over the size cap: %v", err)
	}
	if _, ok := r.Policy("b"); ok {
		t.Error("the policy over the size cap is served")
	}
	os.Remove(b)

	// A broken file is compiled once, however often the registry reloads.
	write(t, c, broken)
	for range 3 {
		if err := r.Reload(); !errors.As(err, &le) || le.File != c {
			t.Errorf("broken policy: %v", err)
		}
	}
	if got, want := l.take(), []string{"b:failed", "c:failed"}; !slices.Equal(got, want) {
		t.Errorf("loads = %v, want %v: the broken file was compiled again", got, want)
	}
	if n := strings.Count(logs.String(), `msg="policy refused: not served" policy=c`); n != 1 {
		t.Errorf("the broken file was refused %d times in the log, want once", n)
	}
	write(t, c, rewriteTo("c1"))
	if err := r.Reload(); err != nil {
		t.Errorf("the fixed file: %v", err)
	}
	if d, ok := reply(t, r, "c"); !ok || d.Response != "c1" {
		t.Errorf("the fixed file answers %q (served %v)", d.Response, ok)
	}
}

func TestCompileTimeout(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.lua"), rewriteTo("a1"))
	r, _, _ := open(t, Config{Dir: dir})
	r.cfg.CompileTimeout = time.Millisecond
	slow := "local n = 0\nfor i = 1, 2000000 do n = n + i end\n" + rewriteTo("a2")
	write(t, filepath.Join(dir, "a.lua"), slow)
	var le *policy.LoadError
	if err := r.Reload(); !errors.As(err, &le) || !strings.Contains(le.Message, "took longer than 1ms") {
		t.Errorf("slow policy: %v", err)
	}
	if d, _ := reply(t, r, "a"); d.Response != "a1" {
		t.Errorf("after the refused reload: %q, want the previous version", d.Response)
	}
}

// modulePolicy writes a policy in dir that answers with the text of module
// greeting, found through luaPath, and returns the options to load it.
func modulePolicy(t *testing.T, dir, moduleDir, text string) policy.Options {
	t.Helper()
	write(t, filepath.Join(dir, "default.lua"), "local g = require 'greeting'\nkumo.on('smtp_server_rewrite_response', function() return 250, g.text end)\n")
	write(t, filepath.Join(moduleDir, "greeting.lua"), fmt.Sprintf("return {text = %q}\n", text))
	return policy.Options{LuaPath: filepath.Join(moduleDir, "?.lua")}
}

// TestReloadNoticesAModuleEdit is what SIGHUP does after a module outside
// the policy folder changed: the policy using it is compiled again.
func TestReloadNoticesAModuleEdit(t *testing.T) {
	dir, moduleDir := t.TempDir(), t.TempDir()
	opts := modulePolicy(t, dir, moduleDir, "v1")
	r, l, _ := open(t, Config{Dir: dir, Options: opts})
	l.take()
	before, _ := r.Policy("default")
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := l.take(); len(got) != 0 {
		t.Errorf("an unchanged module recompiled %v", got)
	}
	write(t, filepath.Join(moduleDir, "greeting.lua"), "return {text = 'v2'}\n")
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if d, _ := reply(t, r, "default"); d.Response != "v2" {
		t.Errorf("after the module changed: %q", d.Response)
	}
	if after, _ := r.Policy("default"); after.Version() == before.Version() {
		t.Error("the version did not change with the module")
	}
}

// TestWatchModuleFolder covers a module outside the policy folder edited
// while the watch runs.
func TestWatchModuleFolder(t *testing.T) {
	dir, moduleDir := t.TempDir(), t.TempDir()
	opts := modulePolicy(t, dir, moduleDir, "v1")
	r, _, _ := open(t, Config{Dir: dir, Options: opts})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := r.Watch(ctx, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(moduleDir, "greeting.lua"), "return {text = 'v2'}\n")
	waitFor(t, "the policy serves the edited module", answers(t, r, "default", "v2"))
}

// TestMissingModuleRetried: a policy refused for a module it cannot find is
// compiled again on the next reload, although its own text is unchanged,
// since adding the module mends it; a syntax error is not.
func TestMissingModuleRetried(t *testing.T) {
	dir, moduleDir := t.TempDir(), t.TempDir()
	opts := modulePolicy(t, dir, moduleDir, "v1")
	r, l, _ := open(t, Config{Dir: dir, Options: opts})
	l.take()
	write(t, filepath.Join(dir, "default.lua"), "local g = require 'farewell'\nkumo.on('smtp_server_rewrite_response', function() return 250, g.text end)\n")
	for range 2 {
		if err := r.Reload(); err == nil || !strings.Contains(err.Error(), "module 'farewell' not found") {
			t.Fatalf("reload with the module missing: %v", err)
		}
	}
	if got, want := l.take(), []string{"default:failed", "default:failed"}; !slices.Equal(got, want) {
		t.Errorf("loads = %v, want %v: the policy was not retried", got, want)
	}
	write(t, filepath.Join(moduleDir, "farewell.lua"), "return {text = 'v2'}\n")
	if err := r.Reload(); err != nil {
		t.Fatalf("reload once the module exists: %v", err)
	}
	if d, _ := reply(t, r, "default"); d.Response != "v2" {
		t.Errorf("after the module appeared: %q", d.Response)
	}
}

// TestBrokenCandidateKeepsReady: a candidate that fails to load is logged
// and counted, but answers no request, so the replica stays ready.
func TestBrokenCandidateKeepsReady(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.lua"), rewriteTo("a"))
	write(t, filepath.Join(dir, "a.shadow.lua"), broken)
	r, l, logs := open(t, Config{Dir: dir})
	if !r.Ready() || len(r.Refused()) != 0 {
		t.Errorf("Ready() = %v, Refused() = %v with only the candidate broken", r.Ready(), r.Refused())
	}
	if _, ok := r.Candidate("a"); ok {
		t.Error("the broken candidate is served")
	}
	if got := l.take(); !slices.Contains(got, "a:failed") {
		t.Errorf("loads = %v: the candidate's failure was not counted", got)
	}
	if !strings.Contains(logs.String(), "a.shadow.lua:3:") {
		t.Errorf("the candidate's error is not logged:\n%s", logs)
	}
}

// TestSlowCompileHoldsNoOtherChange: a policy that takes seconds to
// compile is compiled outside the registry's lock, so another policy's edit
// is served meanwhile, and a newer edit of the slow policy itself replaces
// it without waiting for it; the slow compilation, superseded, is dropped.
func TestSlowCompileHoldsNoOtherChange(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.lua"), filepath.Join(dir, "b.lua")
	write(t, a, rewriteTo("a1"))
	write(t, b, rewriteTo("b1"))
	r, _, _ := open(t, Config{Dir: dir, Options: policy.Options{LoadTimeout: time.Minute}})
	compiling := func(key string) bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.pending[key] != nil
	}

	// Every state of it runs the top level: seconds per state.
	write(t, a, "local t = os.clock()\nwhile os.clock() - t < 4 do end\n"+rewriteTo("a2"))
	slow := make(chan error, 1)
	go func() { slow <- r.Reload() }()
	waitFor(t, "a is compiling", func() bool { return compiling("a") })

	write(t, b, rewriteTo("b2"))
	go func() { _ = r.Reload() }() // waits for a's compilation too, but swaps b in first
	waitFor(t, "b serves its edit", answers(t, r, "b", "b2"))
	if !compiling("a") {
		t.Fatal("a finished compiling before b's edit was served: the test proves nothing")
	}

	write(t, a, rewriteTo("a3"))
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if d, _ := reply(t, r, "a"); d.Response != "a3" {
		t.Errorf("a answers %q while its slow version compiles, want the newer a3", d.Response)
	}
	if err := <-slow; err != nil {
		t.Errorf("the reload of the slow version: %v", err)
	}
	if d, _ := reply(t, r, "a"); d.Response != "a3" {
		t.Errorf("once the slow version compiled, a answers %q, want a3: a superseded compilation was swapped in", d.Response)
	}
}
