// Package registry serves the compiled policies of one file or one
// directory and swaps in new versions atomically when the files change.
package registry

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
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
	mu  sync.Mutex // serialises reloads
	// failed remembers, by file, the version that last failed to compile
	// and why, so that an unchanged broken file is not compiled again on
	// every reload. Guarded by mu.
	failed map[string]failure
	// refused holds the policies whose file the last reload refused.
	refused atomic.Pointer[map[string]Refusal]
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
	r := &Registry{cfg: cfg, failed: map[string]failure{}, skipped: map[string]time.Time{}}
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

// Close releases every policy's idle Lua states.
func (r *Registry) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range *r.cur.Swap(&map[string]*policy.Policy{}) {
		p.Close()
	}
}

// Reload scans the files again and swaps in what changed: a changed file,
// or one whose modules changed, is compiled and warmed before the swap, a
// removed file stops being served, an unchanged one keeps its policy. A policy that fails to load keeps its
// old version; the failures are returned joined. The replaced policies are
// closed after the swap, so evaluations already running on them finish.
func (r *Registry) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	found, errs := r.scan()
	old := *r.cur.Load()
	next := make(map[string]*policy.Policy, len(found))
	refused := map[string]Refusal{}
	if len(errs) > 0 && found == nil {
		// The directory itself could not be read: keep everything.
		for name, p := range old {
			next[name] = p
		}
		refused = *r.refused.Load()
	}
	for _, s := range found {
		prev := old[s.key()]
		if s.err == nil && prev != nil && prev.File() == s.file && prev.Options().Shadow == s.shadow && !prev.Stale(s.src) {
			next[s.key()] = prev
			continue
		}
		if f, ok := r.failed[s.file]; ok && s.err == nil && f.version == policy.Version(s.src) {
			// Refused already, and logged and counted then.
			errs = append(errs, f.err)
			s.refuse(refused, f.err, prev != nil)
			if prev != nil {
				next[s.key()] = prev
			}
			continue
		}
		p, err := s.compile(r.cfg)
		if r.cfg.OnLoad != nil {
			r.cfg.OnLoad(s.name, err)
		}
		delete(r.failed, s.file)
		if s.err == nil && failsAgain(err) {
			r.failed[s.file] = failure{policy.Version(s.src), err}
		}
		if err != nil {
			errs = append(errs, err)
			s.refuse(refused, err, prev != nil)
			if prev == nil {
				r.cfg.Logger.Error("policy refused: not served", "policy", s.name, "file", s.file, "error", err.Error())
				continue
			}
			r.cfg.Logger.Error("policy refused: the previous version keeps serving", "policy", s.name, "file", s.file, "error", err.Error(), "version", prev.Version())
			next[s.key()] = prev
			continue
		}
		attrs := []any{"policy", s.name, "file", s.file, "version", p.Version(), "shadow", p.Options().Shadow, "candidate", s.candidate}
		if prev != nil {
			attrs = append(attrs, "previous_version", prev.Version())
		}
		r.cfg.Logger.Info("policy loaded", attrs...)
		next[s.key()] = p
	}
	r.cur.Store(&next)
	for key, p := range old {
		if next[key] == p {
			continue
		}
		if _, ok := next[key]; !ok {
			r.cfg.Logger.Info("policy removed", "policy", p.Name(), "file", p.File(), "version", p.Version(), "candidate", key != p.Name())
		}
		p.Close()
	}
	r.settle(refused)
	return errors.Join(errs...)
}

// refuse records that s failed to load. A candidate's failure leaves the
// replica ready: candidates answer no request.
func (s source) refuse(refused map[string]Refusal, err error, serving bool) {
	if !s.candidate {
		refused[s.name] = Refusal{Policy: s.name, File: s.file, Err: err, Serving: serving}
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
