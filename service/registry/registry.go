// Package registry serves the compiled policies of one file or one
// directory and swaps in new versions atomically when the files change.
package registry

import (
	"errors"
	"fmt"
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
	"github.com/rewrited/rewrited/service/rewrite"
)

// Policy file suffixes in a directory: NAME.lua is served as NAME, and
// NAME.shadow.lua is served as NAME in shadow mode.
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
	// ignored).
	Dir string
	// Options are the compile options of every policy; Name is set per
	// policy, and Shadow is turned on for NAME.shadow.lua files.
	Options policy.Options
	Logger  *slog.Logger
	// OnLoad is told of every compile attempt, for metrics.
	OnLoad func(name string, err error)
	// OnReload is called after every reload, once Ready and Refused tell
	// its result.
	OnReload func()
}

// Registry is a rewrite.Resolver over the policies currently loaded. Readers
// never block: the policies live in an immutable map behind an atomic
// pointer, replaced as a whole by each reload.
type Registry struct {
	cfg Config
	cur atomic.Pointer[map[string]*policy.Policy]
	mu  sync.Mutex // serialises reloads
	// refused holds the policies whose file the last reload refused.
	refused atomic.Pointer[map[string]Refusal]
	// skipped remembers the files whose name cannot be served, so each is
	// reported once until it changes.
	skipped map[string]time.Time
}

// source is one policy file found by a scan; shadow says whether it is
// served in shadow mode, by its name or by Config.Options.
type source struct {
	name   string
	file   string
	shadow bool
	src    []byte
	err    error
}

// Open loads the policies of cfg that load. A policy that fails is not
// served, and the registry is not Ready until a reload loads it: a replica
// that starts while one file is broken serves the others and waits for the
// fix instead of exiting. Open fails only when Dir cannot be read.
func Open(cfg Config) (*Registry, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Registry{cfg: cfg, skipped: map[string]time.Time{}}
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

// Names implements rewrite.Resolver.
func (r *Registry) Names() []string {
	m := *r.cur.Load()
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Policies returns the policies currently served, sorted by name.
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

// Reload scans the files again and swaps in what changed: a changed file is
// compiled and warmed before the swap, a removed file stops being served,
// an unchanged one keeps its policy. A policy that fails to load keeps its
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
		prev := old[s.name]
		if s.err == nil && prev != nil && prev.File() == s.file && prev.Options().Shadow == s.shadow && prev.Version() == policy.Version(s.src) {
			next[s.name] = prev
			continue
		}
		p, err := s.compile(r.cfg)
		if r.cfg.OnLoad != nil {
			r.cfg.OnLoad(s.name, err)
		}
		if err != nil {
			errs = append(errs, err)
			refused[s.name] = Refusal{Policy: s.name, File: s.file, Err: err, Serving: prev != nil}
			if prev == nil {
				r.cfg.Logger.Error("policy refused: not served", "policy", s.name, "file", s.file, "error", err.Error())
				continue
			}
			r.cfg.Logger.Error("policy refused: the previous version keeps serving", "policy", s.name, "file", s.file, "error", err.Error(), "version", prev.Version())
			next[s.name] = prev
			continue
		}
		attrs := []any{"policy", s.name, "file", s.file, "version", p.Version(), "shadow", p.Options().Shadow}
		if prev != nil {
			attrs = append(attrs, "previous_version", prev.Version())
		}
		r.cfg.Logger.Info("policy loaded", attrs...)
		next[s.name] = p
	}
	r.cur.Store(&next)
	for name, p := range old {
		if next[name] == p {
			continue
		}
		if _, ok := next[name]; !ok {
			r.cfg.Logger.Info("policy removed", "policy", name, "file", p.File(), "version", p.Version())
		}
		p.Close()
	}
	r.settle(refused)
	return errors.Join(errs...)
}

// compile builds and warms the policy of s, or returns why s cannot serve.
func (s source) compile(cfg Config) (*policy.Policy, error) {
	if s.err != nil {
		return nil, s.err
	}
	opts := cfg.Options
	opts.Name = s.name
	opts.Shadow = s.shadow
	p, warnings, err := policy.Compile(s.file, s.src, opts)
	for _, w := range warnings {
		cfg.Logger.Warn(w.String(), "policy", s.name)
	}
	if err != nil {
		return nil, err
	}
	if err := p.Warm(); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// scan reads the policy sources; a source that could not be read carries
// the error. It returns nil sources when the directory cannot be listed.
func (r *Registry) scan() ([]source, []error) {
	switch {
	case r.cfg.Dir != "":
		return r.scanDir()
	case r.cfg.Src != nil:
		return []source{{name: rewrite.DefaultPolicy, file: r.cfg.File, shadow: r.cfg.Options.Shadow, src: r.cfg.Src}}, nil
	default:
		s := source{name: rewrite.DefaultPolicy, file: r.cfg.File, shadow: r.cfg.Options.Shadow}
		s.src, s.err = readPolicy(s.file)
		return []source{s}, nil
	}
}

// scanDir lists NAME.lua and NAME.shadow.lua: regular files or symlinks to
// them, skipping dotfiles (such as Kubernetes' ..data) and anything else.
func (r *Registry) scanDir() ([]source, []error) {
	entries, err := os.ReadDir(r.cfg.Dir)
	if err != nil {
		r.cfg.Logger.Error("policy directory unreadable: every policy keeps serving", "dir", r.cfg.Dir, "error", err.Error())
		return nil, []error{fmt.Errorf("--policy-dir: %w", err)}
	}
	found := []source{}
	var errs []error
	byName := map[string]string{}
	skipped := map[string]time.Time{}
	defer func() { r.skipped = skipped }()
	// ReadDir sorts by file name, and "a.lua" sorts before "a.shadow.lua":
	// when both exist, the live policy wins.
	for _, e := range entries {
		base := e.Name()
		if strings.HasPrefix(base, ".") || !strings.HasSuffix(base, luaSuffix) {
			continue
		}
		name, shadow := strings.CutSuffix(strings.TrimSuffix(base, luaSuffix), shadowSuffix)
		s := source{name: name, file: filepath.Join(r.cfg.Dir, base), shadow: shadow || r.cfg.Options.Shadow}
		if !rewrite.ValidPolicyName(name) {
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
			s.src, s.err = readPolicy(s.file)
		}
		if other, dup := byName[name]; dup {
			err := &policy.LoadError{File: s.file, Message: fmt.Sprintf("policy %q is already served by %s: remove one of the two files", name, other)}
			r.cfg.Logger.Error("policy refused", "policy", name, "file", s.file, "error", err.Error())
			if r.cfg.OnLoad != nil {
				r.cfg.OnLoad(name, err)
			}
			errs = append(errs, err)
			continue
		}
		byName[name] = s.file
		found = append(found, s)
	}
	return found, errs
}

// readPolicy reads a policy file. An empty one is refused: it is far more
// likely a file caught between truncation and write than a policy.
func readPolicy(file string) ([]byte, error) {
	src, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading the policy: %w", err)
	}
	if len(src) == 0 {
		return nil, &policy.LoadError{File: file, Message: "the file is empty"}
	}
	return src, nil
}
