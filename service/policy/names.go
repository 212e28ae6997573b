package policy

import (
	"bytes"
	"strings"

	lua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/ast"
	"github.com/yuin/gopher-lua/parse"
)

// gopher-lua reports calling or indexing nil as "attempt to call a
// non-function object" or "attempt to index a non-table object(nil)",
// naming neither the value nor the variable. rewrited gives nil, booleans,
// numbers and strings metamethods that raise Lua 5.4's messages instead
// ("attempt to call a nil value (global 'require')"). The variable is named
// from the source: the calls or indexings on the failing line are found in
// the syntax tree, and a name is given only when every one that could have
// failed, judged by the values the variables hold now, has the same name.

// siteIndex locates, by line, the calls, indexings, operands and functions
// of a chunk.
type siteIndex struct {
	calls     map[int][]*ast.FuncCallExpr
	indexes   map[int][]indexSite
	functions map[int]*ast.FunctionExpr
	// operands of .., of arithmetic and of #, by operator kind
	operands map[operator]map[int][]ast.Expr
}

// operator is a kind of operation whose operand may be what failed.
type operator int

const (
	concatenate operator = iota
	arithmetic
	length
)

// operatorErrors are Lua 5.4's verbs for each operator, and the metamethods
// that raise them.
var operatorErrors = []struct {
	op     operator
	verb   string
	events []string
}{
	{concatenate, "concatenate", []string{"__concat"}},
	{arithmetic, "perform arithmetic on", []string{"__add", "__sub", "__mul", "__div", "__mod", "__pow", "__unm"}},
	{length, "get length of", []string{"__len"}},
}

// indexSite is obj[key] in the source, a method call's receiver included.
type indexSite struct {
	obj ast.Expr
	key string
}

// index returns the chunk's sites, parsing its source the first time.
func (c *chunk) index() *siteIndex {
	c.once.Do(func() {
		c.sites = &siteIndex{calls: map[int][]*ast.FuncCallExpr{}, indexes: map[int][]indexSite{}, functions: map[int]*ast.FunctionExpr{},
			operands: map[operator]map[int][]ast.Expr{concatenate: {}, arithmetic: {}, length: {}}}
		// The same pre-pass as compileChunk, so that the lines match and
		// what compiled parses.
		src, _, perr := prepass(c.src)
		if perr != nil {
			return
		}
		stmts, err := parse.Parse(bytes.NewReader(src), c.file)
		if err != nil {
			return
		}
		c.sites.add(stmts)
	})
	return c.sites
}

func (x *siteIndex) add(stmts []ast.Stmt) {
	lines := func(e ast.Expr) []int {
		if e.LastLine() > e.Line() {
			return []int{e.Line(), e.LastLine()}
		}
		return []int{e.Line()}
	}
	walkExprs(stmts, func(e ast.Expr) bool {
		switch e := e.(type) {
		case *ast.FuncCallExpr:
			for _, line := range lines(e) {
				x.calls[line] = append(x.calls[line], e)
				if e.Receiver != nil {
					x.indexes[line] = append(x.indexes[line], indexSite{e.Receiver, e.Method})
				}
			}
		case *ast.AttrGetExpr:
			if key, ok := e.Key.(*ast.StringExpr); ok {
				for _, line := range lines(e) {
					x.indexes[line] = append(x.indexes[line], indexSite{e.Object, key.Value})
				}
			}
		case *ast.FunctionExpr:
			if _, dup := x.functions[e.Line()]; !dup {
				x.functions[e.Line()] = e
			}
		case *ast.StringConcatOpExpr:
			x.addOperands(concatenate, lines(e), e.Lhs, e.Rhs)
		case *ast.ArithmeticOpExpr:
			x.addOperands(arithmetic, lines(e), e.Lhs, e.Rhs)
		case *ast.UnaryMinusOpExpr:
			x.addOperands(arithmetic, lines(e), e.Expr)
		case *ast.UnaryLenOpExpr:
			x.addOperands(length, lines(e), e.Expr)
		}
		return true
	})
}

func (x *siteIndex) addOperands(op operator, lines []int, operands ...ast.Expr) {
	for _, line := range lines {
		x.operands[op][line] = append(x.operands[op][line], operands...)
	}
}

// function returns the function defined at line.
func (x *siteIndex) function(line int) *ast.FunctionExpr { return x.functions[line] }

// nameErrors installs the metamethods that raise Lua 5.4's messages when a
// policy calls or indexes nil, a boolean, a number, or calls a string.
func (s *state) nameErrors() {
	L := s.L
	for _, v := range []lua.LValue{lua.LNil, lua.LFalse, lua.LNumber(0)} {
		mt := L.NewTable()
		mt.RawSetString("__index", L.NewFunction(s.indexError))
		mt.RawSetString("__newindex", L.NewFunction(s.indexError))
		mt.RawSetString("__call", L.NewFunction(s.callError))
		L.SetMetatable(v, mt)
	}
	if mt, ok := L.GetMetatable(lua.LString("")).(*lua.LTable); ok {
		mt.RawSetString("__call", L.NewFunction(s.callError))
	}
	for _, v := range []lua.LValue{lua.LNil, lua.LFalse} {
		mt := L.GetMetatable(v).(*lua.LTable)
		for _, oe := range operatorErrors {
			fn := L.NewFunction(s.operandError(oe.op, oe.verb))
			for _, event := range oe.events {
				mt.RawSetString(event, fn)
			}
		}
	}
}

// operandError raises Lua 5.4's message for an operand of op that has no
// meaning there: the first one that is not a number (or, for .., a string).
func (s *state) operandError(op operator, verb string) lua.LGFunction {
	return func(L *lua.LState) int {
		bad := L.Get(1)
		if op != length {
			if _, ok := bad.(lua.LNumber); ok {
				bad = L.Get(2)
			} else if _, ok := bad.(lua.LString); ok && op == concatenate {
				bad = L.Get(2)
			}
		}
		name, _ := s.nameSite(L, bad.Type(), func(x *siteIndex, line int) []site {
			var out []site
			for _, e := range x.operands[op][line] {
				out = append(out, site{expr: e})
			}
			return out
		})
		L.RaiseError("attempt to %s a %s value%s", verb, bad.Type(), name)
		return 0
	}
}

func (s *state) indexError(L *lua.LState) int {
	obj := L.Get(1)
	key, isString := L.Get(2).(lua.LString)
	name, kumoName := "", ""
	if isString {
		name, kumoName = s.nameSite(L, obj.Type(), func(x *siteIndex, line int) []site {
			var out []site
			for _, ix := range x.indexes[line] {
				if ix.key == string(key) {
					out = append(out, site{expr: ix.obj, kumoSuffix: "." + ix.key})
				}
			}
			return out
		})
	}
	if kumoName != "" {
		L.RaiseError("%s is not available in rewrited", kumoName)
	}
	L.RaiseError("attempt to index a %s value%s", obj.Type(), name)
	return 0
}

func (s *state) callError(L *lua.LState) int {
	obj := L.Get(1)
	name, kumoName := s.nameSite(L, obj.Type(), func(x *siteIndex, line int) []site {
		var out []site
		for _, call := range x.calls[line] {
			if call.Receiver != nil {
				out = append(out, site{expr: call.Receiver, method: call.Method})
			} else {
				out = append(out, site{expr: call.Func})
			}
		}
		return out
	})
	if kumoName != "" {
		L.RaiseError("%s is not available in rewrited", kumoName)
	}
	L.RaiseError("attempt to call a %s value%s", obj.Type(), name)
	return 0
}

// site is an expression that may be the one that failed: expr itself, or
// expr's method when method is set.
type site struct {
	expr       ast.Expr
	method     string
	kumoSuffix string // appended to a kumo path: the key being indexed
}

// nameSite returns " (global 'x')"-style text naming the failing variable,
// or the kumo path rewrited lacks ("kumo.dns.lookup"), or nothing when the
// sites of the caller's line leave it in doubt.
func (s *state) nameSite(L *lua.LState, typ lua.LValueType, sites func(*siteIndex, int) []site) (name, kumoName string) {
	dbg, ok := L.GetStack(1)
	if !ok {
		return "", ""
	}
	fnValue, err := L.GetInfo("Slf", dbg, lua.LNil)
	fn, isFn := fnValue.(*lua.LFunction)
	if err != nil || !isFn || fn.IsG {
		return "", ""
	}
	c := s.p.chunkOf(dbg.Source)
	if c == nil {
		return "", ""
	}
	f := frame{L: L, dbg: dbg, fn: fn, kumo: s.kumo}
	names, kumoNames := map[string]bool{}, map[string]bool{}
	candidates := 0
	for _, st := range sites(c.index(), dbg.CurrentLine) {
		v, known := f.eval(st.expr)
		what := f.describe(st.expr)
		if st.method != "" {
			v, known = f.field(v, known, st.method)
			what = "method '" + st.method + "'"
		}
		if known && v.Type() != typ {
			continue
		}
		candidates++
		names[what] = true
		if path, _ := kumoPath(st.expr); path != nil && f.isKumo(st.expr) {
			if missing := missingField(s.kumo, path); missing != "" {
				kumoNames["kumo."+strings.Join(path, ".")+st.kumoSuffix] = true
			}
		}
	}
	if candidates == 0 {
		return "", ""
	}
	if len(kumoNames) == 1 && len(names) == 1 {
		for k := range kumoNames {
			kumoName = k
		}
	}
	if len(names) == 1 {
		for n := range names {
			if n != "" {
				name = " (" + n + ")"
			}
		}
	}
	return name, kumoName
}

// frame reads the variables of the failing function without running any
// Lua code: a value behind a metamethod is reported unknown.
type frame struct {
	L    *lua.LState
	dbg  *lua.Debug
	fn   *lua.LFunction
	kumo *lua.LTable
}

// resolve says whether name is a local, an upvalue or a global of the
// frame, and gives its value; ok is false when that cannot be told.
// gopher-lua does not see a local at the very instruction that starts its
// scope, so a name the function declares as a local anywhere, but that is
// not visible here, stays in doubt.
func (f frame) resolve(name string) (kind string, v lua.LValue, ok bool) {
	kind, v = "", lua.LNil
	for no := 1; ; no++ {
		local, value := f.L.GetLocal(f.dbg, no)
		if local == "" {
			break
		}
		if local == name {
			kind, v = "local", value
		}
	}
	if kind != "" {
		return kind, v, true
	}
	for _, local := range f.fn.Proto.DbgLocals {
		if local.Name == name {
			return "", lua.LNil, false
		}
	}
	for no := 1; no <= len(f.fn.Upvalues); no++ {
		if up, value := f.L.GetUpvalue(f.fn, no); up == name {
			return "upvalue", value, true
		}
	}
	if f.fn.Env != nil {
		return "global", f.fn.Env.RawGetString(name), true
	}
	return "", lua.LNil, false
}

// describe is Lua 5.4's name for the value of e: "global 'x'", "local
// 'x'", "upvalue 'x'", "field 'x'", or "" when Lua gives none.
func (f frame) describe(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.IdentExpr:
		if kind, _, ok := f.resolve(e.Value); ok {
			return kind + " '" + e.Value + "'"
		}
	case *ast.AttrGetExpr:
		if key, ok := e.Key.(*ast.StringExpr); ok {
			return "field '" + key.Value + "'"
		}
	}
	return ""
}

// eval returns the value of e when it can be read without a metamethod.
func (f frame) eval(e ast.Expr) (lua.LValue, bool) {
	switch e := e.(type) {
	case *ast.IdentExpr:
		_, v, ok := f.resolve(e.Value)
		return v, ok
	case *ast.AttrGetExpr:
		key, ok := e.Key.(*ast.StringExpr)
		if !ok {
			return lua.LNil, false
		}
		obj, known := f.eval(e.Object)
		return f.field(obj, known, key.Value)
	case *ast.NilExpr:
		return lua.LNil, true
	case *ast.TrueExpr:
		return lua.LTrue, true
	case *ast.FalseExpr:
		return lua.LFalse, true
	case *ast.NumberExpr:
		return lua.LNumber(0), true
	case *ast.StringExpr:
		return lua.LString(e.Value), true
	case *ast.StringConcatOpExpr:
		// Strings and numbers concatenate to a string without a metamethod.
		lhs, lok := f.eval(e.Lhs)
		rhs, rok := f.eval(e.Rhs)
		if lok && rok && concatenable(lhs) && concatenable(rhs) {
			return lua.LString(""), true
		}
	}
	return lua.LNil, false
}

func concatenable(v lua.LValue) bool {
	t := v.Type()
	return t == lua.LTString || t == lua.LTNumber
}

// field returns obj[key] when it can be read without running a
// metamethod; the kumo table's is rewrited's own, and known.
func (f frame) field(obj lua.LValue, known bool, key string) (lua.LValue, bool) {
	t, ok := obj.(*lua.LTable)
	if !known || !ok {
		return lua.LNil, false
	}
	v := t.RawGetString(key)
	if v != lua.LNil || t.Metatable == lua.LNil {
		return v, true
	}
	if t == f.kumo && !isConfigFunction(key) {
		return lua.LNil, true
	}
	return lua.LNil, false
}

// isKumo reports whether the identifier at the root of e holds the kumo
// module.
func (f frame) isKumo(e ast.Expr) bool {
	for {
		switch x := e.(type) {
		case *ast.AttrGetExpr:
			e = x.Object
		case *ast.IdentExpr:
			_, v, ok := f.resolve(x.Value)
			return ok && v == f.kumo
		default:
			return false
		}
	}
}

// missingField walks path from t and names the first field that is not
// there ("kumo.dns"), or returns "" when the whole path exists.
func missingField(t *lua.LTable, path []string) string {
	var v lua.LValue = t
	for i, key := range path {
		tbl, ok := v.(*lua.LTable)
		if !ok {
			return ""
		}
		v = tbl.RawGetString(key)
		if v == lua.LNil {
			return "kumo." + strings.Join(path[:i+1], ".")
		}
	}
	return ""
}

// walkExprs calls visit on every expression of stmts, outermost first; it
// descends into an expression's parts when visit returns true.
func walkExprs(stmts []ast.Stmt, visit func(ast.Expr) bool) {
	w := walker{visit}
	w.stmts(stmts)
}

type walker struct{ visit func(ast.Expr) bool }

func (w walker) stmts(stmts []ast.Stmt) {
	for _, st := range stmts {
		w.stmt(st)
	}
}

func (w walker) stmt(st ast.Stmt) {
	switch st := st.(type) {
	case *ast.AssignStmt:
		w.exprs(st.Lhs)
		w.exprs(st.Rhs)
	case *ast.LocalAssignStmt:
		w.exprs(st.Exprs)
	case *ast.FuncCallStmt:
		w.expr(st.Expr)
	case *ast.DoBlockStmt:
		w.stmts(st.Stmts)
	case *ast.WhileStmt:
		w.expr(st.Condition)
		w.stmts(st.Stmts)
	case *ast.RepeatStmt:
		w.stmts(st.Stmts)
		w.expr(st.Condition)
	case *ast.IfStmt:
		w.expr(st.Condition)
		w.stmts(st.Then)
		w.stmts(st.Else)
	case *ast.NumberForStmt:
		w.expr(st.Init)
		w.expr(st.Limit)
		if st.Step != nil {
			w.expr(st.Step)
		}
		w.stmts(st.Stmts)
	case *ast.GenericForStmt:
		w.exprs(st.Exprs)
		w.stmts(st.Stmts)
	case *ast.FuncDefStmt:
		if st.Name != nil {
			if st.Name.Func != nil {
				w.expr(st.Name.Func)
			}
			if st.Name.Receiver != nil {
				w.expr(st.Name.Receiver)
			}
		}
		w.expr(st.Func)
	case *ast.ReturnStmt:
		w.exprs(st.Exprs)
	}
}

func (w walker) exprs(es []ast.Expr) {
	for _, e := range es {
		w.expr(e)
	}
}

func (w walker) expr(e ast.Expr) {
	if e == nil || !w.visit(e) {
		return
	}
	switch e := e.(type) {
	case *ast.AttrGetExpr:
		w.expr(e.Object)
		w.expr(e.Key)
	case *ast.TableExpr:
		for _, f := range e.Fields {
			if f.Key != nil {
				w.expr(f.Key)
			}
			w.expr(f.Value)
		}
	case *ast.FuncCallExpr:
		if e.Func != nil {
			w.expr(e.Func)
		}
		if e.Receiver != nil {
			w.expr(e.Receiver)
		}
		w.exprs(e.Args)
	case *ast.LogicalOpExpr:
		w.expr(e.Lhs)
		w.expr(e.Rhs)
	case *ast.RelationalOpExpr:
		w.expr(e.Lhs)
		w.expr(e.Rhs)
	case *ast.StringConcatOpExpr:
		w.expr(e.Lhs)
		w.expr(e.Rhs)
	case *ast.ArithmeticOpExpr:
		w.expr(e.Lhs)
		w.expr(e.Rhs)
	case *ast.UnaryMinusOpExpr:
		w.expr(e.Expr)
	case *ast.UnaryNotOpExpr:
		w.expr(e.Expr)
	case *ast.UnaryLenOpExpr:
		w.expr(e.Expr)
	case *ast.FunctionExpr:
		w.stmts(e.Stmts)
	}
}
