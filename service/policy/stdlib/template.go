package stdlib

import (
	"errors"
	"fmt"
	"io"
	"path"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/nikolalohinski/gonja/v2/builtins"
	"github.com/nikolalohinski/gonja/v2/config"
	"github.com/nikolalohinski/gonja/v2/exec"
	"github.com/nikolalohinski/gonja/v2/loaders"
	"github.com/nikolalohinski/gonja/v2/nodes"
	"github.com/nikolalohinski/gonja/v2/parser"
	lua "github.com/yuin/gopher-lua"
)

// Bounds of kumo.string.eval_template: the engine runs in Go, out of reach of the
// evaluation budget, so loops are charged for every item they visit.
const (
	maxTemplateIterations = 1 << 13
	maxTemplateRange      = 1 << 12
	maxTemplateSource     = 1 << 16
)

// templateBudgetKey names the per-evaluation budget in the template context; it
// contains a space so that no template can read or replace it.
const templateBudgetKey = "rewrited budget"

// jsonEscapeFilter is the filter every output of a JSON-named template goes through;
// its name cannot be written in a template either.
const jsonEscapeFilter = "json escape"

// templateStatements are the tags a template may use. Tags that read other templates
// (include, import, extends, from), define macros or call blocks are refused.
var templateStatements = []string{"if", "for", "set", "with", "filter", "raw", "autoescape", "break", "continue"}

// templateFilters are the filters a template may use: the Jinja filters whose
// output size is bounded by their input. Filters that pad or repeat by an argument
// (center, indent, wordwrap, format, batch, slice) are left out.
var templateFilters = []string{
	"abs", "attr", "capitalize", "count", "d", "default", "dictsort", "e", "escape",
	"first", "float", "forceescape", "groupby", "int", "items", "join", "last", "length",
	"list", "lower", "map", "max", "min", "reject", "rejectattr", "replace", "reverse",
	"round", "safe", "select", "selectattr", "sort", "string", "striptags", "sum", "title",
	"tojson", "trim", "truncate", "unique", "upper", "urlencode", "wordcount",
}

// unsupportedStatement finds gonja's error for a statement it does not know.
var unsupportedStatement = regexp.MustCompile(`ControlStructure '(\w+)' not found \(or beginning not provided\)`)

var (
	templateEnvOnce sync.Once
	templateEnv     *exec.Environment
)

// templateBudget counts what one evaluation has done.
type templateBudget struct {
	iterations int
	check      func() error
}

var errTemplateBudget = fmt.Errorf("template loops visit too many items (more than %d)", maxTemplateIterations)

// boundedFor is the for statement, charged against the budget before it runs.
type boundedFor struct {
	exec.ControlStructure
	items nodes.Expression
}

func (f *boundedFor) Execute(r *exec.Renderer, tag *nodes.ControlStructureBlock) error {
	v, _ := r.Environment.Context.Get(templateBudgetKey)
	budget, ok := v.(*templateBudget)
	if !ok {
		return errors.New("template budget missing")
	}
	if err := budget.check(); err != nil {
		return err
	}
	items := r.Eval(f.items)
	if !items.IsError() {
		budget.iterations += items.Len() + 1
	}
	if budget.iterations > maxTemplateIterations {
		return errTemplateBudget
	}
	return f.ControlStructure.Execute(r, tag)
}

func buildTemplateEnv() *exec.Environment {
	statements := map[string]parser.ControlStructureParser{}
	for _, name := range templateStatements {
		p, ok := builtins.ControlStructures.Get(name)
		if !ok {
			panic("gonja lacks the " + name + " statement")
		}
		statements[name] = p
	}
	forParser := statements["for"]
	statements["for"] = func(p *parser.Parser, args *parser.Parser) (nodes.ControlStructure, error) {
		cs, err := forParser(p, args)
		if err != nil {
			return nil, err
		}
		loop := reflect.ValueOf(cs).Elem()
		if loop.FieldByName("Recursive").Bool() {
			return nil, errors.New("recursive loops are not supported")
		}
		items, _ := loop.FieldByName("ObjectEvaluator").Interface().(nodes.Expression)
		return &boundedFor{ControlStructure: cs.(exec.ControlStructure), items: items}, nil
	}
	filters := map[string]exec.FilterFunction{
		"normalize_smtp_response": func(_ *exec.Evaluator, in *exec.Value, params *exec.VarArgs) *exec.Value {
			return exec.AsValue(normalizeSMTPResponse(in.String()))
		},
		jsonEscapeFilter: jsonEscape,
	}
	for _, name := range templateFilters {
		f, ok := builtins.Filters.Get(name)
		if !ok {
			panic("gonja lacks the " + name + " filter")
		}
		filters[name] = f
	}
	filters["items"] = sortedItems(filters["items"])
	globals := exec.NewContext(map[string]any{
		"range": boundedRange,
	})
	for _, name := range []string{"dict", "cycler", "joiner", "namespace"} {
		if f, ok := builtins.GlobalFunctions.Get(name); ok {
			globals.Set(name, f)
		}
	}
	return &exec.Environment{
		Context:           globals,
		Filters:           exec.NewFilterSet(filters),
		Tests:             builtins.Tests,
		ControlStructures: exec.NewControlStructureSet(statements),
		Methods:           builtins.Methods,
	}
}

// sortedItems makes the items filter list a mapping by sorted key, as a mapping
// converted from Lua has no order of its own and output must not change between runs.
func sortedItems(items exec.FilterFunction) exec.FilterFunction {
	return func(e *exec.Evaluator, in *exec.Value, params *exec.VarArgs) *exec.Value {
		out := items(e, in, params)
		if out.IsError() || !in.IsDict() {
			return out
		}
		pairs := reflect.ValueOf(out.Interface())
		if pairs.Kind() != reflect.Slice {
			return out
		}
		key := func(i int) string {
			pair := reflect.ValueOf(pairs.Index(i).Interface())
			if pair.Kind() != reflect.Slice || pair.Len() == 0 {
				return ""
			}
			return fmt.Sprint(pair.Index(0).Interface())
		}
		keys := make([]string, pairs.Len())
		for i := range keys {
			keys[i] = key(i)
		}
		swap := reflect.Swapper(pairs.Interface())
		sort.Sort(pairSorter{keys: keys, swap: swap})
		return out
	}
}

// pairSorter sorts the items filter's pairs by their keys.
type pairSorter struct {
	keys []string
	swap func(i, j int)
}

func (p pairSorter) Len() int           { return len(p.keys) }
func (p pairSorter) Less(i, j int) bool { return p.keys[i] < p.keys[j] }
func (p pairSorter) Swap(i, j int) {
	p.keys[i], p.keys[j] = p.keys[j], p.keys[i]
	p.swap(i, j)
}

// boundedRange is Jinja's range, returning a list of at most maxTemplateRange numbers.
func boundedRange(_ *exec.Evaluator, params *exec.VarArgs) ([]int, error) {
	var ints []int
	for _, a := range params.Args {
		if !a.IsInteger() {
			return nil, errors.New("range expects integers")
		}
		ints = append(ints, a.Integer())
	}
	start, stop, step := 0, 0, 1
	switch len(ints) {
	case 1:
		stop = ints[0]
	case 2:
		start, stop = ints[0], ints[1]
	case 3:
		start, stop, step = ints[0], ints[1], ints[2]
	default:
		return nil, errors.New("range expects [start, ]stop[, step]")
	}
	if step == 0 {
		return nil, errors.New("range step cannot be 0")
	}
	var out []int
	for i := start; (step > 0 && i < stop) || (step < 0 && i > stop); i += step {
		if len(out) == maxTemplateRange {
			return nil, fmt.Errorf("range is too long (more than %d items)", maxTemplateRange)
		}
		out = append(out, i)
	}
	return out, nil
}

// jsonEscape writes a value as JSON, the escaping KumoMTA applies to the output of
// templates named *.json.
func jsonEscape(_ *exec.Evaluator, in *exec.Value, _ *exec.VarArgs) *exec.Value {
	w := jsonWriter{max: MaxConvertBytes}
	if err := w.value(jsonTree(in.Interface()), 0); err != nil {
		return exec.AsValue(err)
	}
	out := exec.AsValue(string(w.buf))
	out.Safe = true
	return out
}

// jsonTree converts what a template computed into the types jsonWriter takes.
func jsonTree(v any) any {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Invalid:
		return nil
	case reflect.Bool:
		return rv.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return float64(rv.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return float64(rv.Uint())
	case reflect.Float32, reflect.Float64:
		return rv.Float()
	case reflect.String:
		return rv.String()
	case reflect.Slice, reflect.Array:
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = jsonTree(rv.Index(i).Interface())
		}
		return out
	case reflect.Map:
		out := map[string]any{}
		for _, k := range rv.MapKeys() {
			out[fmt.Sprint(k.Interface())] = jsonTree(rv.MapIndex(k).Interface())
		}
		return out
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			return nil
		}
		return jsonTree(rv.Elem().Interface())
	}
	return fmt.Sprint(v)
}

// refusingLoader is the loader behind every template: nothing is read from files.
type refusingLoader struct{}

func (refusingLoader) Read(name string) (io.Reader, error) {
	return nil, fmt.Errorf("templates cannot load %q", name)
}

func (refusingLoader) Resolve(name string) (string, error) {
	return "", fmt.Errorf("templates cannot load %q", name)
}

func (refusingLoader) Inherit(string) (loaders.Loader, error) {
	return nil, errors.New("templates cannot load other templates")
}

// escapeMode picks the escaping from the nominal file name, as minijinja does.
func escapeMode(name string) string {
	switch strings.ToLower(path.Ext(name)) {
	case ".html", ".htm", ".xml":
		return "html"
	case ".json", ".json5", ".js", ".yaml", ".yml":
		return "json"
	}
	return ""
}

// wrapOutputs sends every {{ }} output of the parsed template through filter.
// Statement bodies keep their outputs in struct fields, so the tree is walked by
// reflection.
func wrapOutputs(root any, filter string) {
	seen := map[uintptr]bool{}
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Interface:
			if !v.IsNil() {
				walk(v.Elem())
			}
		case reflect.Pointer:
			if v.IsNil() || seen[v.Pointer()] {
				return
			}
			seen[v.Pointer()] = true
			if out, ok := v.Interface().(*nodes.Output); ok {
				wrap := func(e nodes.Expression) nodes.Expression {
					if e == nil {
						return nil
					}
					return &nodes.FilteredExpression{Expression: e, Filters: []*nodes.FilterCall{{Token: out.Start, Name: filter}}}
				}
				out.Expression, out.Alternative = wrap(out.Expression), wrap(out.Alternative)
				return
			}
			walk(v.Elem())
		case reflect.Struct:
			for i := 0; i < v.NumField(); i++ {
				if v.Type().Field(i).IsExported() {
					walk(v.Field(i))
				}
			}
		case reflect.Slice:
			for i := 0; i < v.Len(); i++ {
				walk(v.Index(i))
			}
		}
	}
	walk(reflect.ValueOf(root))
}

// limitedWriter fails a write that would take it past max bytes. The builder is a
// field rather than embedded so that io.WriteString cannot bypass Write.
type limitedWriter struct {
	buf strings.Builder
	max int
}

var errTemplateTooLarge = errors.New("template output too large")

func (w *limitedWriter) Write(p []byte) (int, error) {
	if w.buf.Len()+len(p) > w.max {
		return 0, errTemplateTooLarge
	}
	return w.buf.Write(p)
}

// renderTemplate parses and runs a template. gonja panics on some malformed input,
// so a panic becomes an error here.
func renderTemplate(name, source string, data map[string]any, max int, check func() error) (out string, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("template failed: %v", p)
		}
	}()
	templateEnvOnce.Do(func() { templateEnv = buildTemplateEnv() })
	cfg := config.New()
	mode := escapeMode(name)
	cfg.AutoEscape = mode == "html"
	loader, err := loaders.NewShiftedLoader(name, strings.NewReader(source), refusingLoader{})
	if err != nil {
		return "", err
	}
	tpl, err := exec.NewTemplate(name, cfg, loader, templateEnv)
	if err != nil {
		// gonja quotes the whole source; the caller knows it, the position is enough.
		msg := strings.Replace(err.Error(), "failed to parse template '"+source+"': ", "", 1)
		msg = unsupportedStatement.ReplaceAllString(msg, "the '$1' statement is not supported")
		return "", errors.New(msg)
	}
	if mode == "json" {
		wrapOutputs(tpl.Root(), jsonEscapeFilter)
	}
	ctx := exec.NewContext(data)
	ctx.Set(templateBudgetKey, &templateBudget{check: check})
	w := &limitedWriter{max: max}
	if err := tpl.Execute(w, ctx); err != nil {
		return "", err
	}
	return w.buf.String(), nil
}

func (b *lib) openTemplate(L *lua.LState, kumo *lua.LTable) {
	subModule(L, kumo, "string").RawSetString("eval_template", L.NewFunction(b.evalTemplate))
}

// evalTemplate is kumo.string.eval_template(name, source, context).
func (b *lib) evalTemplate(L *lua.LState) int {
	const fname = "kumo.string.eval_template"
	name := checkUTF8(L, 1, fname)
	source := checkUTF8(L, 2, fname)
	if len(source) > maxTemplateSource {
		argError(L, 2, fname, fmt.Sprintf("template too long (more than %d bytes)", maxTemplateSource))
	}
	data := map[string]any{}
	if L.Get(3) != lua.LNil {
		v, err := ToGo(L.Get(3))
		if err != nil {
			argError(L, 3, fname, err.Error())
		}
		m, ok := v.(map[string]any)
		if !ok {
			typeError(L, 3, fname, "table with string keys")
		}
		// Integral numbers become integers, so a template prints 1047 and not 1047.0.
		data = integralNumbers(m).(map[string]any)
	}
	out, err := renderTemplate(name, source, data, b.max, b.check)
	if err != nil {
		if errors.Is(err, errTemplateTooLarge) {
			tooLarge(L, fname, b.max)
		}
		L.RaiseError("%s: %s: %s", fname, name, err.Error())
	}
	L.Push(lua.LString(out))
	return 1
}
