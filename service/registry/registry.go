// Package registry serves the compiled policies of one file or one
// directory and swaps in new versions atomically when the files change.
package registry

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rewrited/rewrited/service/policy"
)

// Policy file suffixes in a directory: NAME.lua is served as NAME, and
// NAME.shadow.lua is served as NAME in shadow mode, or, beside a NAME.lua,
// is NAME's candidate: evaluated on NAME's requests, never answering them.
const (
	luaSuffix    = ".lua"
	shadowSuffix = ".shadow"
)

// Config says where the policies come from and how they are compiled.
type Config struct {
	// File is served as the default policy. With Src set, File only names
	// Src in messages and is never read or watched.
	File string
	Src  []byte
	// Dir serves every NAME.lua and NAME.shadow.lua in it (File is then
	// ignored); a NAME.shadow.lua beside a NAME.lua is NAME's candidate.
	Dir string
	// Options are the compile options of every policy; Name is set per
	// policy, and Shadow is turned on for NAME.shadow.lua files.
	Options policy.Options
	Logger  *slog.Logger
	// OnLoad is told of every compile attempt, for metrics.
	OnLoad func(name string, err error)
	// MaxPolicyBytes refuses a larger policy file unread; zero means
	// DefaultMaxPolicyBytes.
	MaxPolicyBytes int
	// CompileTimeout refuses a policy whose compilation and warm-up take
	// longer; zero means DefaultCompileTimeout.
	CompileTimeout time.Duration
	// OnReload is called after every reload, once Ready and Refused tell
	// its result.
	OnReload func()
}

// Compile limits. Compilation time grows faster than the file, so a file
// several times the size of a large real policy (a table of 20,000
// domains) could hold reloads for minutes.
const (
	DefaultMaxPolicyBytes = 1 << 20
	DefaultCompileTimeout = 30 * time.Second
)

// Registry is a rewrite.Resolver over the policies currently loaded. Readers
// never block: the policies live in an immutable map behind an atomic
// pointer, replaced as a whole by each reload.
type Registry struct {
	cfg Config
	cur atomic.Pointer[map[string]*policy.Policy]
	// mu guards the swaps of cur and the fields below; it is never held
	// while a policy compiles.
	mu sync.Mutex
	// pending holds, by key, the compilation whose result is to be served.
	pending map[string]*task
	// failed remembers, by file, the version that last failed to compile
	// and why, so that an unchanged broken file is not compiled again on
	// every reload.
	failed map[string]failure
	// refusals holds the policies whose current file failed to load, and
	// refused a copy of it that readers load without the lock.
	refusals map[string]Refusal
	refused  atomic.Pointer[map[string]Refusal]
	closed   bool
	// skipped remembers the files whose name cannot be served, so each is
	// reported once until it changes.
	skipped map[string]time.Time
}

type failure struct {
	version string
	err     error
}

// source is one policy file found by a scan; shadow says whether it is
// served in shadow mode, by its name or by Config.Options, and candidate
// whether it is the candidate beside a live policy of the same name.
type source struct {
	name      string
	file      string
	shadow    bool
	candidate bool
	src       []byte
	err       error
}

// candidateKey is the key of name's candidate in the map of policies: not a
// policy name a request can ask for.
func candidateKey(name string) string { return name + " (candidate)" }

// key is the source's key in the map of policies.
func (s source) key() string {
	if s.candidate {
		return candidateKey(s.name)
	}
	return s.name
}

// Open loads the policies of cfg that load. A policy that fails is not
// served, and the registry is not Ready until a reload loads it: a replica
// that starts while one file is broken serves the others and waits for the
// fix instead of exiting. Open fails only when Dir cannot be read.
func Open(cfg Config) (*Registry, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxPolicyBytes <= 0 {
		cfg.MaxPolicyBytes = DefaultMaxPolicyBytes
	}
	if cfg.CompileTimeout <= 0 {
		cfg.CompileTimeout = DefaultCompileTimeout
	}
	r := &Registry{cfg: cfg, pending: map[string]*task{}, failed: map[string]failure{}, refusals: map[string]Refusal{}, skipped: map[string]time.Time{}}
	r.cur.Store(&map[string]*policy.Policy{})
	r.refused.Store(&map[string]Refusal{})
	if cfg.Dir != "" {
		if _, err := os.ReadDir(cfg.Dir); err != nil {
			return nil, fmt.Errorf("--policy-dir: %w", err)
		}
	}
	_ = r.Reload() // logged, counted and reported by Ready
	return r, nil
}

// Policy implements rewrite.Resolver.
func (r *Registry) Policy(name string) (*policy.Policy, bool) {
	p, ok := (*r.cur.Load())[name]
	return p, ok
}

// Candidate returns the candidate of the live policy name: the
// NAME.shadow.lua beside its NAME.lua.
func (r *Registry) Candidate(name string) (*policy.Policy, bool) {
	p, ok := (*r.cur.Load())[candidateKey(name)]
	return p, ok
}

// Names implements rewrite.Resolver.
func (r *Registry) Names() []string {
	m := *r.cur.Load()
	names := make([]string, 0, len(m))
	for name := range m {
		if policy.ValidName(name) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// Policies returns the policies currently served, sorted by name; the
// candidates are left out (see Candidate).
func (r *Registry) Policies() []*policy.Policy {
	m := *r.cur.Load()
	ps := make([]*policy.Policy, 0, len(m))
	for _, name := range r.Names() {
		if p, ok := m[name]; ok {
			ps = append(ps, p)
		}
	}
	return ps
}

// Close releases every policy's idle Lua states; a compilation still
// running closes its policy when it ends.
func (r *Registry) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for _, p := range *r.cur.Swap(&map[string]*policy.Policy{}) {
		p.Close()
	}
}

// task is one policy file compiling outside the registry's lock. The
// newest task of a key is the one whose policy is swapped in; an older one
// that ends after it was superseded closes its policy.
type task struct {
	s       source
	version string // digest of s.src
	done    chan struct{}
	err     error // why it failed; set before done is closed
}

// Reload scans the files again and swaps in what changed: a changed file,
// or one whose modules changed, is compiled and warmed before it is swapped
// in, a removed file stops being served, an unchanged one keeps its policy.
// A policy that fails to load keeps its old version. Compilations run
// outside the registry's lock, each swapped in as soon as it is ready, so a
// slow policy delays no other policy's change; a reload that finds the same
// text already compiling waits for that compilation rather than starting
// another. Reload returns once its compilations have ended, with the
// failures joined. The replaced policies are closed after the swap, so
// evaluations already running on them finish.
func (r *Registry) Reload() error {
	tasks, errs := r.plan()
	for _, t := range tasks {
		<-t.done
		if t.err != nil {
			errs = append(errs, t.err)
		}
	}
	return errors.Join(errs...)
}

// plan scans the files and, under the lock, applies what needs no
// compilation (removals, unchanged files, failures already known) and
// starts or joins a compilation for each changed file.
func (r *Registry) plan() ([]*task, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	found, errs := r.scan()
	if len(errs) > 0 && found == nil {
		// The directory itself could not be read: keep everything.
		r.settle()
		return nil, errs
	}
	cur := *r.cur.Load()
	wanted := make(map[string]bool, len(found))
	var tasks []*task
	for _, s := range found {
		key := s.key()
		wanted[key] = true
		prev := cur[key]
		version := policy.Version(s.src)
		if s.err == nil && prev != nil && prev.File() == s.file && prev.Options().Shadow == s.shadow && !prev.Stale(s.src) {
			delete(r.pending, key) // whatever else was compiling for it is outdated
			r.accept(s)
			continue
		}
		if t := r.pending[key]; t != nil && s.err == nil && t.s.err == nil && t.version == version && t.s.file == s.file && t.s.shadow == s.shadow {
			tasks = append(tasks, t)
			continue
		}
		if f, ok := r.failed[s.file]; ok && s.err == nil && f.version == version {
			// Refused already, and logged and counted then.
			delete(r.pending, key)
			errs = append(errs, f.err)
			r.refuse(s, f.err, prev != nil)
			continue
		}
		t := &task{s: s, version: version, done: make(chan struct{})}
		r.pending[key] = t
		tasks = append(tasks, t)
		go r.run(t)
	}
	for key := range r.pending {
		if !wanted[key] {
			delete(r.pending, key)
		}
	}
	for name := range r.refusals {
		if !wanted[name] {
			delete(r.refusals, name)
		}
	}
	var removed []*policy.Policy
	next := make(map[string]*policy.Policy, len(cur))
	for key, p := range cur {
		if wanted[key] {
			next[key] = p
			continue
		}
		r.cfg.Logger.Info("policy removed", "policy", p.Name(), "file", p.File(), "version", p.Version(), "candidate", key != p.Name())
		removed = append(removed, p)
	}
	if len(removed) > 0 {
		r.cur.Store(&next)
		for _, p := range removed {
			p.Close()
		}
	}
	r.settle()
	return tasks, errs
}

// run compiles t's policy, then, under the lock, swaps it in unless a
// newer scan superseded t meanwhile.
func (r *Registry) run(t *task) {
	p, err := t.s.compile(r.cfg)
	r.mu.Lock()
	defer r.mu.Unlock()
	defer close(t.done)
	t.err = err
	s := t.s
	if r.cfg.OnLoad != nil {
		r.cfg.OnLoad(s.name, err)
	}
	if r.pending[s.key()] != t || r.closed {
		// A newer text, a removal or Close came while it compiled.
		if p != nil {
			p.Close()
		}
		return
	}
	delete(r.pending, s.key())
	cur := *r.cur.Load()
	prev := cur[s.key()]
	delete(r.failed, s.file)
	if s.err == nil && failsAgain(err) {
		r.failed[s.file] = failure{t.version, err}
	}
	if err != nil {
		r.refuse(s, err, prev != nil)
		if prev == nil {
			r.cfg.Logger.Error("policy refused: not served", "policy", s.name, "file", s.file, "error", err.Error())
		} else {
			r.cfg.Logger.Error("policy refused: the previous version keeps serving", "policy", s.name, "file", s.file, "error", err.Error(), "version", prev.Version())
		}
		r.settle()
		return
	}
	attrs := []any{"policy", s.name, "file", s.file, "version", p.Version(), "shadow", p.Options().Shadow, "candidate", s.candidate}
	if prev != nil {
		attrs = append(attrs, "previous_version", prev.Version())
	}
	r.cfg.Logger.Info("policy loaded", attrs...)
	next := maps.Clone(cur)
	next[s.key()] = p
	r.cur.Store(&next)
	if prev != nil {
		prev.Close()
	}
	r.accept(s)
	r.settle()
}

// accept records that s is served as it is: whatever an earlier version
// of its file failed with no longer stands.
func (r *Registry) accept(s source) {
	if !s.candidate {
		delete(r.refusals, s.name)
	}
}

// refuse records that s failed to load. A candidate's failure leaves the
// replica ready: candidates answer no request.
func (r *Registry) refuse(s source, err error, serving bool) {
	if !s.candidate {
		r.refusals[s.name] = Refusal{Policy: s.name, File: s.file, Err: err, Serving: serving}
	}
}

// failsAgain reports whether err would come back from compiling the same
// policy text again, whatever its modules hold: a syntax error, or a
// compilation past the deadline. Other failures (a missing or broken module,
// an error in the top level) are retried on every reload, since a module
// edit can mend them.
func failsAgain(err error) bool {
	var le *policy.LoadError
	var timeout *compileTimeout
	return errors.As(err, &timeout) || errors.As(err, &le) && le.Syntax
}

// compileTimeout is a compilation refused for taking longer than
// Config.CompileTimeout.
type compileTimeout struct{ *policy.LoadError }

func (e *compileTimeout) Unwrap() error { return e.LoadError }

// compile builds and warms the policy of s, or returns why s cannot serve.
// Past cfg.CompileTimeout it stops waiting and refuses the policy; the
// compilation, which cannot be interrupted, finishes on its own and its
// policy is closed.
func (s source) compile(cfg Config) (*policy.Policy, error) {
	if s.err != nil {
		return nil, s.err
	}
	type compiled struct {
		p   *policy.Policy
		err error
	}
	done := make(chan compiled, 1)
	go func() {
		opts := cfg.Options
		opts.Name = s.name
		opts.Shadow = s.shadow
		p, warnings, err := policy.Compile(s.file, s.src, opts)
		for _, w := range warnings {
			cfg.Logger.Warn(w.String(), "policy", s.name)
		}
		if err == nil {
			if err = p.Warm(); err != nil {
				p.Close()
				p = nil
			}
		}
		done <- compiled{p, err}
	}()
	timer := time.NewTimer(cfg.CompileTimeout)
	defer timer.Stop()
	select {
	case c := <-done:
		return c.p, c.err
	case <-timer.C:
		go func() {
			if c := <-done; c.p != nil {
				c.p.Close()
			}
		}()
		return nil, &compileTimeout{&policy.LoadError{File: s.file, Message: fmt.Sprintf("compiling and warming the policy took longer than %v: make it smaller, or split its tables", cfg.CompileTimeout)}}
	}
}

// scan reads the policy sources; a source that could not be read carries
// the error. It returns nil sources when the directory cannot be listed.
func (r *Registry) scan() ([]source, []error) {
	switch {
	case r.cfg.Dir != "":
		return r.scanDir()
	case r.cfg.Src != nil:
		return []source{{name: policy.DefaultName, file: r.cfg.File, shadow: r.cfg.Options.Shadow, src: r.cfg.Src}}, nil
	default:
		s := source{name: policy.DefaultName, file: r.cfg.File, shadow: r.cfg.Options.Shadow}
		s.src, s.err = readPolicy(s.file, r.cfg.MaxPolicyBytes)
		return []source{s}, nil
	}
}

// scanDir lists NAME.lua and NAME.shadow.lua: regular files or symlinks to
// them, skipping dotfiles (such as Kubernetes' ..data) and anything else.
// A NAME.shadow.lua beside a NAME.lua is NAME's candidate, compiled as the
// live policy would be: what it answers is compared, never sent.
func (r *Registry) scanDir() ([]source, []error) {
	entries, err := os.ReadDir(r.cfg.Dir)
	if err != nil {
		r.cfg.Logger.Error("policy directory unreadable: every policy keeps serving", "dir", r.cfg.Dir, "error", err.Error())
		return nil, []error{fmt.Errorf("--policy-dir: %w", err)}
	}
	found := []source{}
	live := map[string]bool{}
	skipped := map[string]time.Time{}
	defer func() { r.skipped = skipped }()
	// ReadDir sorts by file name, and "a.lua" sorts before "a.shadow.lua":
	// the live policy is known when its candidate comes.
	for _, e := range entries {
		base := e.Name()
		if strings.HasPrefix(base, ".") || !strings.HasSuffix(base, luaSuffix) {
			continue
		}
		name, shadow := strings.CutSuffix(strings.TrimSuffix(base, luaSuffix), shadowSuffix)
		s := source{name: name, file: filepath.Join(r.cfg.Dir, base), shadow: shadow || r.cfg.Options.Shadow, candidate: shadow && live[name]}
		if s.candidate {
			s.shadow = r.cfg.Options.Shadow
		}
		if !policy.ValidName(name) {
			r.skip(e, s.file, skipped)
			continue
		}
		fi, err := os.Stat(s.file)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue // removed since the listing, or a dangling symlink
		case err != nil:
			s.err = err
		case !fi.Mode().IsRegular():
			continue
		default:
			s.src, s.err = readPolicy(s.file, r.cfg.MaxPolicyBytes)
		}
		live[name] = live[name] || !shadow
		found = append(found, s)
	}
	return found, nil
}

// readPolicy reads a policy file of at most maxBytes. An empty one is
// refused: it is far more likely a file caught between truncation and write
// than a policy.
func readPolicy(file string, maxBytes int) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("reading the policy: %w", err)
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, int64(maxBytes)+1))
	if err != nil {
		return nil, fmt.Errorf("reading the policy: %w", err)
	}
	if len(src) == 0 {
		return nil, &policy.LoadError{File: file, Message: "the file is empty"}
	}
	if len(src) > maxBytes {
		return nil, &policy.LoadError{File: file, Message: fmt.Sprintf("the file is over %d bytes, the limit (--max-policy-bytes)", maxBytes)}
	}
	return src, nil
}
