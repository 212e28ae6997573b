package policy

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	lua "github.com/yuin/gopher-lua"
)

// DefaultLuaPath is where KumoMTA installs its helper modules (policy-extras),
// so a host that has KumoMTA finds them as KumoMTA does.
const DefaultLuaPath = "/opt/kumomta/share/?.lua;/opt/kumomta/share/?/init.lua"

// maxModuleBytes bounds a module or data file read by require, dofile or
// ReadFile: gopher-lua has no memory limit.
const maxModuleBytes = 8 << 20

// chunk is one Lua file a policy runs: the policy itself, or a module or a
// dofile'd file. It is compiled once per policy and run once per state.
type chunk struct {
	file  string
	src   []byte
	sum   [sha256.Size]byte
	proto *lua.FunctionProto

	once  sync.Once
	sites *siteIndex // built on first need, from the source
}

// modules holds the chunks a policy loaded, and where each required name was
// found, so that every state runs the same files as the first one did, and a
// state built at request time reads no file.
type modules struct {
	mu       sync.Mutex
	chunks   map[string]*chunk // by file
	order    []*chunk          // in the order they were first loaded
	resolved map[string]string // name and search path → file
}

// searchPath is where a policy's require and dofile look, and what they may
// read.
type searchPath struct {
	// templates are the policy's folder and --lua-path, in search order.
	templates []string
	// roots are the folders of templates: what dofile and ReadFile may read.
	roots []string
}

func newSearchPath(policyFile, luaPath string) searchPath {
	if luaPath == "" {
		luaPath = DefaultLuaPath
	}
	dir := filepath.Dir(policyFile)
	sp := searchPath{templates: []string{filepath.Join(dir, "?.lua"), filepath.Join(dir, "?", "init.lua")}}
	for _, t := range splitTemplates(luaPath) {
		if !contains(sp.templates, t) {
			sp.templates = append(sp.templates, t)
		}
	}
	for _, t := range sp.templates {
		if root := templateRoot(t); !contains(sp.roots, root) {
			sp.roots = append(sp.roots, root)
		}
	}
	return sp
}

// splitTemplates splits a package.path value into its templates.
func splitTemplates(path string) []string {
	var out []string
	for _, t := range strings.Split(path, ";") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

// templateRoot is the folder a template such as /a/b/?.lua or /a/?/init.lua
// searches under: the part before the first '?'.
func templateRoot(t string) string {
	prefix, _, _ := strings.Cut(t, "?")
	if strings.HasSuffix(prefix, string(filepath.Separator)) || prefix == "" {
		return canonical(prefix)
	}
	return canonical(filepath.Dir(prefix))
}

// canonical is the absolute path with symlinks resolved when they resolve,
// so that a link out of a root is seen for what it is.
func canonical(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		return filepath.Clean(path)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		return real
	}
	return abs
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// under reports whether file lies in one of roots.
func under(file string, roots []string) bool {
	file = canonical(file)
	for _, root := range roots {
		if rel, err := filepath.Rel(root, file); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// openPackage installs require, dofile, the package table and package.loaded
// entries for the libraries and the kumo module.
func (s *state) openPackage(kumo *lua.LTable) {
	L := s.L
	pkg := L.NewTable()
	loaded, ok := L.GetField(L.Get(lua.RegistryIndex), "_LOADED").(*lua.LTable)
	if !ok {
		loaded = L.NewTable()
	}
	loaded.RawSetString("_G", L.G.Global)
	loaded.RawSetString("kumo", kumo)
	loaded.RawSetString("package", pkg)
	// As in Lua 5.4, require returns the standard libraries by name.
	for _, lib := range []string{"coroutine", "math", "os", "string", "table", "utf8"} {
		if t, ok := L.GetGlobal(lib).(*lua.LTable); ok {
			loaded.RawSetString(lib, t)
		}
	}
	pkg.RawSetString("loaded", loaded)
	pkg.RawSetString("preload", L.NewTable())
	pkg.RawSetString("path", lua.LString(strings.Join(s.p.search.templates, ";")))
	pkg.RawSetString("config", lua.LString("/\n;\n?\n!\n-\n"))
	L.SetGlobal("package", pkg)
	L.SetGlobal("require", L.NewFunction(s.require))
	L.SetGlobal("dofile", L.NewFunction(s.dofile))
	s.pkg = pkg
}

// require is Lua's require over the policy's search path. kumo and its
// provided submodules come from the state; package.preload is honoured.
func (s *state) require(L *lua.LState) int {
	name := L.CheckString(1)
	loaded := s.pkgTable("loaded")
	if v := loaded.RawGetString(name); lua.LVAsBool(v) {
		L.Push(v)
		return 1
	}
	if sub, ok := strings.CutPrefix(name, "kumo."); ok {
		kumo, _ := loaded.RawGetString("kumo").(*lua.LTable)
		if kumo == nil {
			L.RaiseError("module '%s' not found: package.loaded.kumo was removed", name)
		}
		mod, ok := kumo.RawGetString(sub).(*lua.LTable)
		if !ok {
			L.RaiseError("module '%s' not found: %s is not available in rewrited", name, name)
		}
		loaded.RawSetString(name, mod)
		L.Push(mod)
		return 1
	}
	if s.loading[name] {
		L.RaiseError("loop or previous error loading module '%s'", name)
	}
	var loader lua.LValue
	var extra lua.LValue
	if f := s.pkgTable("preload").RawGetString(name); f != lua.LNil {
		loader, extra = f, lua.LString(":preload:")
	} else {
		c, err := s.findModule(name)
		if err != nil {
			L.RaiseError("%s", err.Error())
		}
		loader, extra = L.NewFunctionFromProto(c.proto), lua.LString(c.file)
	}
	s.loading[name] = true
	defer delete(s.loading, name)
	L.Push(loader)
	L.Push(lua.LString(name))
	L.Push(extra)
	L.Call(2, 1)
	if v := L.Get(-1); v != lua.LNil {
		loaded.RawSetString(name, v)
	}
	L.Pop(1)
	if loaded.RawGetString(name) == lua.LNil {
		loaded.RawSetString(name, lua.LTrue)
	}
	L.Push(loaded.RawGetString(name))
	L.Push(extra)
	return 2
}

// pkgTable returns package[field], which a policy may have replaced.
func (s *state) pkgTable(field string) *lua.LTable {
	if t, ok := s.pkg.RawGetString(field).(*lua.LTable); ok {
		return t
	}
	s.L.RaiseError("package.%s is not a table", field)
	return nil
}

// templates is the search order: the policy's folder and --lua-path, then
// what the policy added to package.path.
func (s *state) templates() (all []string, added map[string]bool) {
	all = append(all, s.p.search.templates...)
	path, ok := s.pkg.RawGetString("path").(lua.LString)
	if !ok {
		s.L.RaiseError("package.path must be a string")
	}
	added = map[string]bool{}
	for _, t := range splitTemplates(strings.ReplaceAll(string(path), ";;", ";"+strings.Join(s.p.search.templates, ";")+";")) {
		if !contains(all, t) {
			all = append(all, t)
			added[t] = true
		}
	}
	return all, added
}

// findModule returns the compiled file of module name, searched as Lua's
// package.searchpath does. A template the policy added finds .lua files only.
func (s *state) findModule(name string) (*chunk, error) {
	templates, added := s.templates()
	key := name + "\x00" + strings.Join(templates, ";")
	m := &s.p.modules
	m.mu.Lock()
	file, seen := m.resolved[key]
	m.mu.Unlock()
	if seen {
		return s.p.load(file)
	}
	rel := strings.ReplaceAll(name, ".", string(filepath.Separator))
	var tried strings.Builder
	fmt.Fprintf(&tried, "module '%s' not found:\n\tno field package.preload['%s']", name, name)
	for _, t := range templates {
		candidate := strings.ReplaceAll(t, "?", rel)
		if added[t] && !strings.HasSuffix(candidate, ".lua") {
			fmt.Fprintf(&tried, "\n\tno file '%s' (only .lua files are searched through templates a policy adds)", candidate)
			continue
		}
		if fi, err := os.Stat(candidate); err == nil && fi.Mode().IsRegular() {
			c, err := s.p.load(candidate)
			if err != nil {
				return nil, fmt.Errorf("error loading module '%s' from file '%s':\n\t%w", name, candidate, err)
			}
			m.mu.Lock()
			m.resolved[key] = candidate
			m.mu.Unlock()
			return c, nil
		}
		fmt.Fprintf(&tried, "\n\tno file '%s'", candidate)
	}
	return nil, errors.New(tried.String())
}

// dofile runs a file under the policy's roots and returns what it returns.
func (s *state) dofile(L *lua.LState) int {
	file := L.CheckString(1)
	_, added := s.templates()
	roots := s.p.search.roots
	if strings.HasSuffix(file, ".lua") {
		for t := range added {
			roots = append(roots, templateRoot(t))
		}
	}
	if !under(file, roots) {
		L.RaiseError("dofile: %s is outside the folders a policy may read (%s)", file, strings.Join(roots, ", "))
	}
	c, err := s.p.load(file)
	if err != nil {
		L.RaiseError("dofile: %s", err.Error())
	}
	top := L.GetTop()
	L.Push(L.NewFunctionFromProto(c.proto))
	L.Call(0, lua.MultRet)
	return L.GetTop() - top
}

// ReadFile reads a file named as a policy names it (relative to the working
// directory, as Lua does), refusing one outside the policy's folder and the
// --lua-path folders. It is for helpers such as kumo.json_load.
func (s *state) ReadFile(name string) ([]byte, error) {
	if !under(name, s.p.search.roots) {
		return nil, fmt.Errorf("%s is outside the folders a policy may read (%s)", name, strings.Join(s.p.search.roots, ", "))
	}
	return readBounded(name)
}

func readBounded(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		var pathErr *fs.PathError
		if errors.As(err, &pathErr) {
			return nil, fmt.Errorf("cannot open %s: %w", file, pathErr.Err)
		}
		return nil, err
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, maxModuleBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	if len(src) > maxModuleBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", file, maxModuleBytes)
	}
	return src, nil
}

// load returns the compiled chunk of file, reading and compiling it the
// first time this policy needs it.
func (p *Policy) load(file string) (*chunk, error) {
	m := &p.modules
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.chunks[file]; ok {
		return c, nil
	}
	src, err := readBounded(file)
	if err != nil {
		return nil, err
	}
	proto, err := compileChunk(file, src)
	if err != nil {
		return nil, err
	}
	c := &chunk{file: file, src: src, sum: sha256.Sum256(src), proto: proto}
	m.chunks[file] = c
	m.order = append(m.order, c)
	return c, nil
}

// chunkOf returns the chunk compiled from file, nil when the policy ran no
// such file.
func (p *Policy) chunkOf(file string) *chunk {
	m := &p.modules
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.chunks[file]
}

// Modules returns the files the policy loaded with require or dofile, in
// the order they were first loaded.
func (p *Policy) Modules() []string {
	m := &p.modules
	m.mu.Lock()
	defer m.mu.Unlock()
	var files []string
	for _, c := range m.order {
		if c.file != p.file {
			files = append(files, c.file)
		}
	}
	return files
}

// Stale reports whether src or a file the policy loaded differs from what
// the policy was compiled from, so that a reload recompiles it.
func (p *Policy) Stale(src []byte) bool {
	if Version(src) != p.sourceVersion {
		return true
	}
	m := &p.modules
	m.mu.Lock()
	chunks := append([]*chunk(nil), m.order...)
	m.mu.Unlock()
	for _, c := range chunks {
		if c.file == p.file {
			continue
		}
		now, err := readBounded(c.file)
		if err != nil || sha256.Sum256(now) != c.sum {
			return true
		}
	}
	return false
}

// versionOf digests the policy's source and the files its first state
// loaded; with no module it is Version(src).
func (p *Policy) versionOf(src []byte) string {
	mods := p.Modules()
	if len(mods) == 0 {
		return Version(src)
	}
	sort.Strings(mods)
	h := sha256.New()
	h.Write(src)
	for _, file := range mods {
		c := p.chunkOf(file)
		fmt.Fprintf(h, "\x00%s\x00%x", file, c.sum)
	}
	return fmt.Sprintf("%x", h.Sum(nil)[:6])
}
