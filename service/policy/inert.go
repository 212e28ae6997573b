package policy

import (
	"fmt"
	"strings"

	lua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/ast"
)

// configPrefixes name KumoMTA's configuration functions (kumo.configure_*,
// kumo.define_*, kumo.make_*, kumo.set_*, kumo.start_*_listener ...): a
// KumoMTA policy calls them while it loads, and rewrited, which configures
// no MTA, lets them do nothing.
var configPrefixes = []string{"configure_", "define_", "make_", "set_", "start_"}

// configNames are KumoMTA configuration functions without such a prefix.
var configNames = map[string]bool{"bump_config_epoch": true, "add_charset_alias": true}

// isConfigFunction reports whether kumo.name is a KumoMTA configuration
// function rewrited keeps inert.
func isConfigFunction(name string) bool {
	if configNames[name] {
		return true
	}
	for _, prefix := range configPrefixes {
		if strings.HasPrefix(name, prefix) {
			return true
		}
	}
	return false
}

// guardKumo makes reading a kumo field rewrited does not provide give nil,
// as a feature test (`if kumo.dns then`) expects, and a KumoMTA
// configuration function give an inert one.
func (s *state) guardKumo(kumo *lua.LTable) {
	L := s.L
	mt := L.NewTable()
	mt.RawSetString("__index", L.NewFunction(func(L *lua.LState) int {
		name, ok := L.Get(2).(lua.LString)
		if !ok || !isConfigFunction(string(name)) {
			L.Push(lua.LNil)
			return 1
		}
		L.Push(L.NewFunction(s.inertFunction(string(name))))
		return 1
	}))
	L.SetMetatable(kumo, mt)
}

// inertFunction is what kumo.name is for a configuration function: it
// returns an empty table, and warns once per name when a policy loads.
func (s *state) inertFunction(name string) lua.LGFunction {
	return func(L *lua.LState) int {
		if !s.inert[name] {
			s.inert[name] = true
			s.warnings = append(s.warnings, warningAt(luaWhere(L),
				fmt.Sprintf("kumo.%s does nothing in rewrited (a KumoMTA configuration function): it returns an empty table", name)))
		}
		L.Push(L.NewTable())
		return 1
	}
}

// luaWhere is the position of the innermost Lua function running, past Go
// functions such as pcall, as "file:line".
func luaWhere(L *lua.LState) string {
	for level := 1; ; level++ {
		dbg, ok := L.GetStack(level)
		if !ok {
			return ""
		}
		if _, err := L.GetInfo("Sl", dbg, lua.LNil); err == nil && dbg.CurrentLine > 0 {
			return fmt.Sprintf("%s:%d", dbg.Source, dbg.CurrentLine)
		}
	}
}

// checkHandler warns about the kumo fields the handler reads that rewrited
// does not provide: at request time they would be nil, or inert.
func (s *state) checkHandler() {
	if s.handler == nil || s.handler.Proto == nil {
		return
	}
	proto := s.handler.Proto
	c := s.p.chunkOf(proto.SourceName)
	if c == nil {
		return
	}
	fn := c.index().function(proto.LineDefined)
	if fn == nil {
		return
	}
	seen := map[string]bool{}
	walkExprs(fn.Stmts, func(e ast.Expr) bool {
		path, line := kumoPath(e)
		if path == nil {
			return true
		}
		missing := missingField(s.kumo, path)
		name := "kumo." + strings.Join(path, ".")
		if missing == "" || seen[name] {
			return false
		}
		seen[name] = true
		msg := fmt.Sprintf("the %s handler uses %s, but rewrited has no %s: it reads as nil, and using it fails", Event, name, missing)
		if last := path[len(path)-1]; len(path) == 1 && isConfigFunction(last) {
			msg = fmt.Sprintf("the %s handler calls %s, a KumoMTA configuration function that does nothing in rewrited", Event, name)
		}
		s.warnings = append(s.warnings, Warning{File: c.file, Line: line, Message: msg})
		return false
	})
}

// kumoPath returns the field names of an expression such as
// kumo.dns.lookup and its line, or nil when e is not one.
func kumoPath(e ast.Expr) ([]string, int) {
	var path []string
	line := e.Line()
	for {
		switch x := e.(type) {
		case *ast.AttrGetExpr:
			key, ok := x.Key.(*ast.StringExpr)
			if !ok {
				return nil, 0
			}
			path = append([]string{key.Value}, path...)
			e = x.Object
		case *ast.IdentExpr:
			if x.Value != "kumo" || len(path) == 0 {
				return nil, 0
			}
			return path, line
		default:
			return nil, 0
		}
	}
}
