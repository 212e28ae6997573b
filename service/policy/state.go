package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"

	"github.com/rewrited/rewrited/service/policy/stdlib"
)

// Lua VM sizes: a call stack deep enough for real policies, and a fixed
// value stack. A growable one lets vararg recursion run for seconds inside
// gopher-lua's copying before it overflows.
const (
	callStackSize = 200
	registrySize  = 8 * 1024
)

// removedGlobals are the base library functions a policy must not reach:
// loading code from strings or arbitrary files, touching the collector, or
// swapping environments. require and dofile are replaced by versions bound
// to the policy's folders (require.go).
var removedGlobals = []string{
	"loadfile", "load", "loadstring", "module",
	"collectgarbage", "getfenv", "setfenv", "newproxy", "_printregs",
}

// statusValues holds the statuses pre-boxed as Lua values, so passing one to
// the handler does not allocate.
var statusValues = func() (v [1000]lua.LValue) {
	for i := range v {
		v[i] = lua.LNumber(i)
	}
	return v
}()

// state is one sandboxed Lua state with the policy loaded into it.
type state struct {
	p       *Policy
	L       *lua.LState
	handler *lua.LFunction
	where   string // where the handler was registered
	meta    *lua.LUserData
	cm      connMeta

	// The watchdog cancels the state's context when an evaluation runs over
	// its budget; a state whose context was cancelled is never reused.
	deadline deadline

	// The last command passed and its Lua value: most replies answer one of
	// a handful of commands ("DATA" above all), so boxing it once saves an
	// allocation per call.
	lastCommand      string
	lastCommandValue lua.LValue

	inHandler bool
	quiet     bool // drop log output while loading extra states
	uses      int
	warnings  []Warning

	kumo    *lua.LTable
	pkg     *lua.LTable     // the package table
	loading map[string]bool // modules whose require is running
	inert   map[string]bool // configuration functions already warned about
}

// raw is what one handler call produced, before validation.
type raw struct {
	status, text lua.LValue
	outcome      Outcome // set when the call failed
	err          error
	meta         map[string]any
}

func (p *Policy) newState(first bool) (_ *state, _ []Warning, err error) {
	L := lua.NewState(lua.Options{
		SkipOpenLibs:  true,
		CallStackSize: callStackSize,
		RegistrySize:  registrySize,
	})
	ctx, cancel := context.WithCancel(context.Background())
	s := &state{p: p, L: L, quiet: !first, loading: map[string]bool{}, inert: map[string]bool{}}
	s.deadline.cancel = cancel
	watchdog.add(&s.deadline)
	L.SetContext(ctx)
	defer func() {
		if r := recover(); r != nil {
			err = &LoadError{File: p.file, Message: fmt.Sprintf("loading the policy crashed the Lua VM: %v", r)}
		}
		if err != nil {
			s.close()
		}
	}()
	openLibs(L)
	kumo := L.NewTable()
	L.SetGlobal("kumo", kumo)
	s.kumo = kumo
	s.openKumo(kumo)
	stdlib.Open(L, kumo, stdlib.Limits{MaxStringBytes: p.opts.MaxStringBytes, ReadFile: s.ReadFile})
	s.guardKumo(kumo)
	s.openPackage(kumo)
	s.nameErrors()
	if p.opts.Validating {
		L.SetGlobal("_VALIDATING_CONFIG", lua.LTrue)
	}
	L.SetGlobal("print", L.NewFunction(s.print))
	s.meta = L.NewUserData()
	s.meta.Value = &s.cm
	s.meta.Metatable = connMetaMetatable(L)

	L.Push(L.NewFunctionFromProto(p.proto))
	at := s.deadline.arm(p.opts.LoadTimeout)
	callErr := L.PCall(0, 0, nil)
	if !s.deadline.disarm(at) {
		return nil, nil, &LoadError{File: p.file, Message: fmt.Sprintf("running the policy's top level took longer than %v", p.opts.LoadTimeout)}
	}
	if callErr != nil {
		return nil, nil, runtimeLoadError(p.file, callErr)
	}
	if first {
		s.checkHandler()
	}
	L.SetTop(0)
	s.quiet = false
	p.created.Add(1)
	return s, s.warnings, nil
}

// openLibs opens the standard libraries and removes what a policy must not reach.
func openLibs(L *lua.LState) {
	stdlib.OpenStandard(L)
	openOS(L)
	for _, name := range removedGlobals {
		L.SetGlobal(name, lua.LNil)
	}
}

func (s *state) close() {
	watchdog.remove(&s.deadline)
	s.deadline.cancel()
	s.L.Close()
}

// call runs the handler once. healthy is false when the state must not be
// reused: it timed out, or the VM panicked.
func (s *state) call(in Input, timeout time.Duration) (r raw, healthy bool) {
	L := s.L
	s.uses++
	s.cm.reset(in.Meta)
	defer func() {
		if rec := recover(); rec != nil {
			s.inHandler = false
			r = raw{outcome: OutcomePolicyError, err: fmt.Errorf("%w: the Lua VM crashed: %v", ErrPolicy, rec), meta: s.cm.take()}
			healthy = false
		}
	}()
	at := s.deadline.arm(timeout)
	L.Push(s.handler)
	L.Push(statusValues[in.Status%len(statusValues)])
	L.Push(lua.LString(in.Response))
	L.Push(s.commandValue(in.Command))
	L.Push(s.meta)
	s.inHandler = true
	err := L.PCall(4, 2, nil)
	s.inHandler = false
	healthy = s.deadline.disarm(at)
	r.meta = s.cm.take()
	if err != nil {
		L.SetTop(0)
		var apiErr *lua.ApiError
		switch {
		case !healthy:
			r.outcome, r.err = OutcomeTimeout, fmt.Errorf("%w: evaluation exceeded its %v budget", ErrTimeout, timeout)
		case errors.As(err, &apiErr) && apiErr.Type == lua.ApiErrorPanic:
			healthy = false
			r.outcome, r.err = OutcomePolicyError, fmt.Errorf("%w: the Lua VM crashed: %s", ErrPolicy, errorText(err))
		default:
			r.outcome, r.err = OutcomePolicyError, fmt.Errorf("%w: %s", ErrPolicy, errorText(err))
		}
		return r, healthy
	}
	r.status, r.text = L.Get(-2), L.Get(-1)
	L.SetTop(0)
	return r, healthy
}

func (s *state) commandValue(cmd *string) lua.LValue {
	if cmd == nil {
		return lua.LNil
	}
	if s.lastCommandValue == nil || *cmd != s.lastCommand {
		s.lastCommand, s.lastCommandValue = *cmd, lua.LString(*cmd)
	}
	return s.lastCommandValue
}

// maxErrorText bounds an error message: it travels in every response that
// keeps the original reply and in the logs.
const maxErrorText = 1024

// errorText is the message of a Lua error without its stack traceback, as
// valid UTF-8 of at most maxErrorText bytes; an error raised with a table is
// shown as JSON.
func errorText(err error) string {
	var apiErr *lua.ApiError
	if !errors.As(err, &apiErr) || apiErr.Object == nil {
		return BoundText(err.Error(), maxErrorText)
	}
	switch v := apiErr.Object.(type) {
	case lua.LString:
		return BoundText(string(v), maxErrorText)
	case *lua.LNilType:
		return "error(nil) raised"
	default:
		text := fmt.Sprintf("error raised with a %s value", v.Type())
		if goValue, err := stdlib.ToGo(v); err == nil {
			if js, err := json.Marshal(goValue); err == nil {
				text += ": " + string(js)
			}
		}
		return BoundText(text, maxErrorText)
	}
}

func (s *state) openKumo(kumo *lua.LTable) {
	L := s.L
	L.SetFuncs(kumo, map[string]lua.LGFunction{
		"on":        s.on,
		"reject":    reject,
		"log_error": s.logFunc(slog.LevelError),
		"log_warn":  s.logFunc(slog.LevelWarn),
		"log_info":  s.logFunc(slog.LevelInfo),
		"log_debug": s.logFunc(slog.LevelDebug),
	})
}

// on is kumo.on(event, fn): it registers the rewrite handler and ignores,
// with a warning, handlers for other KumoMTA events.
func (s *state) on(L *lua.LState) int {
	event := L.CheckString(1)
	fn := L.CheckFunction(2)
	if s.inHandler {
		L.RaiseError("kumo.on cannot be called from inside an event handler")
	}
	where := strings.TrimSuffix(L.Where(1), ":")
	if event != Event {
		s.warnings = append(s.warnings, warningAt(where, fmt.Sprintf("handler for event '%s' is ignored: rewrited runs only %s", event, Event)))
		return 0
	}
	if s.handler != nil {
		L.RaiseError("%s event already has a handler defined at %s", Event, s.where)
	}
	s.handler, s.where = fn, where
	return 0
}

// reject is kumo.reject: KumoMTA ignores errors raised in this event, so a
// reject here keeps the original reply; the error says what to do instead.
func reject(L *lua.LState) int {
	code := L.OptInt(1, 0)
	msg := L.OptString(2, "")
	L.RaiseError("kumo.reject(%d, %q) cannot change the reply in %s; return %d, %q instead", code, msg, Event, code, msg)
	return 0
}

func (s *state) logFunc(level slog.Level) lua.LGFunction {
	return func(L *lua.LState) int {
		s.log(L, level)
		return 0
	}
}

func (s *state) print(L *lua.LState) int {
	s.log(L, slog.LevelInfo)
	return 0
}

// log joins the arguments with spaces through tostring and logs them with
// the caller's position, as KumoMTA's kumo.log_* do.
func (s *state) log(L *lua.LState, level slog.Level) {
	logger := s.p.opts.Logger
	if s.quiet || !logger.Enabled(context.Background(), level) {
		return
	}
	parts := make([]string, L.GetTop())
	for i := range parts {
		parts[i] = stdlib.ToString(L, L.Get(i+1))
	}
	logger.Log(context.Background(), level, strings.Join(parts, " "),
		"policy", s.p.opts.Name, "version", s.p.version, "source", strings.TrimSuffix(L.Where(1), ":"))
}
