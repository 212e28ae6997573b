// Package policy compiles a KumoMTA smtp_server_rewrite_response Lua policy
// once and evaluates it on a pool of sandboxed gopher-lua states.
package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// Event is the only KumoMTA event rewrited runs.
const Event = "smtp_server_rewrite_response"

// Defaults for Options fields left zero.
const (
	DefaultEvalTimeout    = 20 * time.Millisecond
	DefaultLoadTimeout    = time.Second
	DefaultMaxStringBytes = 1 << 20
	// DefaultMaxUses recycles a state after this many evaluations, so that
	// whatever a policy piles up in its globals is bounded.
	DefaultMaxUses = 10000
)

// Options tune a compiled policy; the zero value is usable.
type Options struct {
	// Name identifies the policy in logs and metrics ("default" if empty).
	Name string
	// EvalTimeout is the time budget of one evaluation.
	EvalTimeout time.Duration
	// LoadTimeout bounds running the policy's top level on a new state.
	LoadTimeout time.Duration
	// MaxStringBytes bounds the strings a Go builtin may build.
	MaxStringBytes int
	// PoolSize is how many idle states are kept (default 2×GOMAXPROCS, at least 4).
	PoolSize int
	// MaxUses recycles a state after that many evaluations.
	MaxUses int
	// Shadow evaluates and reports what would change, but keeps the original.
	Shadow bool
	// ProtectData keeps the original when the policy turns a successful DATA
	// reply into a failure, which would cause duplicate deliveries.
	ProtectData bool
	// Logger receives kumo.log_* and print output; nil discards it.
	Logger *slog.Logger
	// MaxStateBytes refuses a policy whose Lua state holds more once its
	// top level has run (default DefaultMaxStateBytes).
	MaxStateBytes int
	// LuaPath is where require looks after the policy's folder, in Lua's
	// package.path syntax (DefaultLuaPath if empty).
	LuaPath string
	// Validating sets the global _VALIDATING_CONFIG to true, as KumoMTA does
	// while it validates a configuration (rewrited check).
	Validating bool
}

func (o Options) withDefaults() Options {
	if o.Name == "" {
		o.Name = "default"
	}
	if o.EvalTimeout <= 0 {
		o.EvalTimeout = DefaultEvalTimeout
	}
	if o.LoadTimeout <= 0 {
		o.LoadTimeout = DefaultLoadTimeout
	}
	if o.MaxStringBytes <= 0 {
		o.MaxStringBytes = DefaultMaxStringBytes
	}
	if o.PoolSize <= 0 {
		o.PoolSize = max(4, 2*runtime.GOMAXPROCS(0))
	}
	if o.MaxUses <= 0 {
		o.MaxUses = DefaultMaxUses
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o
}

// Input is one reply the SMTP server is about to send. The caller has
// checked the status and normalised the text.
type Input struct {
	Status   int
	Response string
	// Command is nil when the reply answers no command (Lua nil).
	Command *string
	// Meta is the connection metadata; it is read lazily, only as far as the
	// policy asks for it.
	Meta Meta
}

// Reply is a status and text.
type Reply struct {
	Status   int
	Response string
}

// Decision is the result of one evaluation. Status and Response always hold
// the reply to send.
type Decision struct {
	Reply
	Rewritten       bool
	CloseConnection bool
	Outcome         Outcome
	// Err says why the original reply was kept (nil when it was not).
	Err error
	// MetaUpdates holds what the policy stored with conn_meta:set_meta.
	MetaUpdates map[string]any
	// Proposed is the rewrite the policy asked for when shadow mode or
	// ProtectData kept the original.
	Proposed *Reply
}

// Stats are a policy's state-pool counters.
type Stats struct {
	Idle      int    // states waiting in the pool
	Created   uint64 // states built, including at compile time
	Misses    uint64 // evaluations that found the pool empty
	Discarded uint64 // states thrown away after a timeout or a crash
}

// Policy is a compiled policy; it is safe for concurrent use.
type Policy struct {
	opts    Options
	file    string
	version string
	proto   *lua.FunctionProto

	// sourceVersion is Version of the policy's own source; version also
	// covers the modules it loaded.
	sourceVersion string
	search        searchPath
	modules       modules

	hasHandler bool
	// Idle states, a stack: an evaluation takes the state returned last,
	// whose memory is the likeliest still to be in the CPU's caches, and
	// calls one after another reuse one state instead of cycling through
	// every idle one. mu guards idleStates and closed.
	mu         sync.Mutex
	idleStates []*state
	closed     bool

	created, misses, discarded atomic.Uint64
}

// Errors that classify a failed evaluation; Decision.Err wraps one of them.
var (
	ErrPolicy  = errors.New("policy error")
	ErrTimeout = errors.New("policy timed out")
	ErrInvalid = errors.New("invalid policy result")
	ErrClosed  = errors.New("policy closed")
)

// Version returns a digest of the source the policy was compiled from.
func Version(src []byte) string {
	sum := sha256.Sum256(src)
	return hex.EncodeToString(sum[:6])
}

// Compile parses and compiles src (read from file, used in messages), runs
// its top level once to register the handler, and fills the state pool.
// Problems found at load time are returned as *LoadError; warnings (such as
// handlers for other events, which are ignored) are returned alongside a
// usable policy.
func Compile(file string, src []byte, opts Options) (*Policy, []Warning, error) {
	opts = opts.withDefaults()
	proto, err := compileChunk(file, src)
	if err != nil {
		var le *LoadError
		if errors.As(err, &le) {
			le.Syntax = true
		}
		return nil, nil, err
	}
	p := &Policy{
		opts:          opts,
		file:          file,
		sourceVersion: Version(src),
		proto:         proto,
		search:        newSearchPath(file, opts.LuaPath),
		idleStates:    make([]*state, 0, opts.PoolSize),
	}
	p.version = p.sourceVersion
	own := &chunk{file: file, src: src, sum: sha256.Sum256(src), proto: proto}
	p.modules.chunks = map[string]*chunk{file: own}
	p.modules.resolved = map[string]string{}
	first, warnings, err := p.newMeasuredState()
	if err != nil {
		return nil, nil, err
	}
	p.version = p.versionOf(src)
	p.hasHandler = first.handler != nil
	if !p.hasHandler {
		warnings = append(warnings, Warning{File: file, Message: "no " + Event + " handler is registered: every reply passes unchanged"})
	}
	p.idleStates = append(p.idleStates, first)
	return p, warnings, nil
}

func (p *Policy) idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idleStates)
}

// Version returns the digest of the policy's source and of the modules it
// loaded.
func (p *Policy) Version() string { return p.version }

// Name returns the policy's name.
func (p *Policy) Name() string { return p.opts.Name }

// File returns the file the policy was compiled from.
func (p *Policy) File() string { return p.file }

// Options returns the options the policy was compiled with, defaults filled in.
func (p *Policy) Options() Options { return p.opts }

// Stats returns the state-pool counters.
func (p *Policy) Stats() Stats {
	return Stats{Idle: p.idle(), Created: p.created.Load(), Misses: p.misses.Load(), Discarded: p.discarded.Load()}
}

// Warm fills the pool with idle states, so the first requests after a load
// or reload do not pay for building them.
func (p *Policy) Warm() error {
	for p.idle() < p.opts.PoolSize {
		s, _, err := p.newState(false)
		if err != nil {
			return err
		}
		if !p.put(s) {
			return nil
		}
	}
	return nil
}

// Close releases the idle states. Evaluations still running finish; their
// states are closed when they return.
func (p *Policy) Close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idleStates
	p.idleStates = nil
	p.mu.Unlock()
	for _, s := range idle {
		s.close()
	}
}

// Evaluate runs the policy's handler for one reply. It never panics and
// never fails: whatever the policy does, the decision holds a reply to send.
func (p *Policy) Evaluate(ctx context.Context, in Input) Decision {
	keep := Decision{Reply: Reply{Status: in.Status, Response: in.Response}}
	if !p.hasHandler {
		keep.Outcome = OutcomeUnchanged
		return p.finish(keep, in)
	}
	if err := ctx.Err(); err != nil {
		return fail(keep, OutcomeTimeout, fmt.Errorf("%w: %w", ErrTimeout, err))
	}
	s, err := p.get()
	if err != nil {
		return fail(keep, OutcomePolicyError, fmt.Errorf("%w: %w", ErrPolicy, err))
	}
	ret, healthy := s.call(in, p.opts.EvalTimeout)
	switch {
	case !healthy:
		p.discarded.Add(1)
		s.close()
	case s.uses >= p.opts.MaxUses:
		s.close()
	default:
		p.put(s)
	}
	d := p.decide(keep, in, ret)
	return p.finish(d, in)
}

// finish applies close_connection, shadow mode and the DATA guard.
func (p *Policy) finish(d Decision, in Input) Decision {
	if d.Outcome == OutcomeRewritten {
		switch {
		case p.opts.Shadow:
			d = keepProposing(d, in, OutcomeShadowed)
			d.MetaUpdates = nil
		case p.opts.ProtectData && BreaksDataSemantics(in, d.Status):
			d.Err = fmt.Errorf("%w: refused to turn the successful DATA reply %d into %d: the message is already queued, so the client would retry and deliver it twice", ErrInvalid, in.Status, d.Status)
			d = keepProposing(d, in, OutcomeProtected)
		}
	}
	d.CloseConnection = d.Status == 421
	return d
}

// keepProposing restores the original reply and records the rewrite the
// policy asked for in Proposed.
func keepProposing(d Decision, in Input, outcome Outcome) Decision {
	proposed := d.Reply
	d.Proposed = &proposed
	d.Reply = Reply{Status: in.Status, Response: in.Response}
	d.Rewritten = false
	d.Outcome = outcome
	return d
}

func fail(d Decision, outcome Outcome, err error) Decision {
	d.Outcome = outcome
	d.Err = err
	return d
}

// BreaksDataSemantics reports whether turning in into a reply with status
// would change the outcome of a mail transaction: a successful DATA reply
// (the message is queued) rewritten to a failure.
func BreaksDataSemantics(in Input, status int) bool {
	return in.Command != nil && *in.Command == "DATA" && in.Status/100 == 2 && status/100 != 2
}

// get takes the idle state returned last, or builds one when none is idle.
func (p *Policy) get() (*state, error) {
	p.mu.Lock()
	if n := len(p.idleStates); n > 0 {
		s := p.idleStates[n-1]
		p.idleStates[n-1] = nil
		p.idleStates = p.idleStates[:n-1]
		p.mu.Unlock()
		return s, nil
	}
	p.mu.Unlock()
	p.misses.Add(1)
	s, _, err := p.newState(false)
	return s, err
}

// put returns s to the idle states, or closes it when they are full or the
// policy is closed; it reports whether s was kept.
func (p *Policy) put(s *state) bool {
	p.mu.Lock()
	if p.closed || len(p.idleStates) >= p.opts.PoolSize {
		p.mu.Unlock()
		s.close()
		return false
	}
	p.idleStates = append(p.idleStates, s)
	p.mu.Unlock()
	return true
}
