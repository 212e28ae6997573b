// Package replay runs a candidate policy on recorded decisions (the
// decision log's JSON lines) and reports how its replies would differ from
// the replies that were sent.
package replay

import (
	"bufio"
	"cmp"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/rewrited/rewrited/service/decisionlog"
	"github.com/rewrited/rewrited/service/policy"
	"github.com/rewrited/rewrited/service/shadow"
)

// What the candidate does with a recorded reply.
const (
	Same      = "same"
	Changed   = "changed"
	Broken    = "broken"
	Protected = "protected"
)

// maxLineBytes bounds one line: a record holds at most a request's worth of
// text, and requests are bounded well below it.
const maxLineBytes = 64 << 20

// batchLines is how many lines a worker takes at a time.
const batchLines = 512

// Input is one stream of records; Name names it in messages.
type Input struct {
	Name   string
	Reader io.Reader
}

// Options tune a replay.
type Options struct {
	// Workers evaluate in parallel (default GOMAXPROCS).
	Workers int
	// Examples is how many examples each group of differences keeps
	// (default 3), the first ones in input order.
	Examples int
	// Policy, when set, replays only the records of that policy; the others
	// are counted in OtherPolicies.
	Policy string
}

// Reply is a status and text.
type Reply struct {
	Status   int    `json:"status"`
	Response string `json:"response"`
}

// Example is one recorded reply the candidate would answer differently.
type Example struct {
	Source    string `json:"source"` // FILE:LINE
	Command   string `json:"command,omitempty"`
	Recorded  Reply  `json:"recorded"`
	Candidate Reply  `json:"candidate"`
	Outcome   string `json:"outcome"`
	Error     string `json:"error,omitempty"`
	seq       uint64
}

// Group gathers the differences of one status class and command verb.
type Group struct {
	StatusClass string         `json:"status_class"` // "5xx"
	Verb        string         `json:"verb"`         // "RCPT"; "(none)" when no command
	Count       int            `json:"count"`
	Kinds       map[string]int `json:"kinds"` // changed, broken, protected
	Examples    []Example      `json:"examples"`
}

// Report is the result of a replay.
type Report struct {
	Policy  string `json:"policy"`
	Version string `json:"version"`
	// Records counts the decision records read, Replayed those replayed,
	// and Skipped those lacking what a replay needs, by what they lack (a
	// record lacking two things counts under both, once in SkippedTotal).
	Records      int            `json:"records"`
	Replayed     int            `json:"replayed"`
	Same         int            `json:"same"`
	Changed      int            `json:"changed"`
	Broken       int            `json:"broken"`
	BrokenBy     map[string]int `json:"broken_by"` // policy_error, timeout, invalid_result
	Protected    int            `json:"protected"`
	SkippedTotal int            `json:"skipped"`
	Skipped      map[string]int `json:"skipped_by"`
	// OtherLines counts process-log lines that are not decision records,
	// OtherPolicies the records of policies other than Options.Policy.
	OtherLines    int `json:"other_lines"`
	OtherPolicies int `json:"other_policies"`
	// RecordedPolicies names the policies whose records were replayed.
	RecordedPolicies []string `json:"recorded_policies"`
	Differences      []*Group `json:"differences"`
}

// Differs reports whether the candidate would answer any recorded reply
// differently, or fail or be stopped by the DATA guard where the recorded
// decision did not.
func (r *Report) Differs() bool { return r.Changed+r.Broken+r.Protected > 0 }

// BadInputError is input that is not a decision log: the replay stops.
type BadInputError struct {
	Source string // FILE:LINE, or FILE
	Err    error
}

func (e *BadInputError) Error() string { return e.Source + ": " + e.Err.Error() }
func (e *BadInputError) Unwrap() error { return e.Err }

// Decompress returns r, decompressed when it starts as gzip does.
func Decompress(r io.Reader) (io.Reader, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	magic, err := br.Peek(2)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		return gzip.NewReader(br)
	}
	return br, nil
}

// batch is a run of lines from one input.
type batch struct {
	input     int
	firstLine int
	seq       uint64 // of the first line
	lines     [][]byte
}

// Run replays every record of inputs on p, which should be compiled as the
// live policy would be (not in shadow mode).
func Run(ctx context.Context, p *policy.Policy, inputs []Input, opts Options) (*Report, error) {
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.Examples <= 0 {
		opts.Examples = 3
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	batches := make(chan batch, 2*opts.Workers)
	parts := make([]*partial, opts.Workers)
	var wg sync.WaitGroup
	for i := range parts {
		parts[i] = newPartial(opts.Examples)
		wg.Go(func() {
			for b := range batches {
				if err := parts[i].replay(ctx, p, opts.Policy, inputs[b.input].Name, b); err != nil {
					cancel(err)
				}
			}
		})
	}
	readErr := read(ctx, inputs, batches)
	close(batches)
	wg.Wait()
	if err := context.Cause(ctx); err != nil && ctx.Err() != nil {
		return nil, err
	}
	if readErr != nil {
		return nil, readErr
	}
	rep := &Report{Policy: p.File(), Version: p.Version()}
	merge(rep, parts, opts.Examples)
	return rep, nil
}

// read splits the inputs into batches of lines.
func read(ctx context.Context, inputs []Input, batches chan<- batch) error {
	var seq uint64
	for i, in := range inputs {
		sc := bufio.NewScanner(in.Reader)
		sc.Buffer(make([]byte, 0, 1<<16), maxLineBytes)
		b := batch{input: i, firstLine: 1, seq: seq}
		line := 0
		send := func() bool {
			select {
			case batches <- b:
				b = batch{input: i, firstLine: line + 1, seq: seq}
				return true
			case <-ctx.Done():
				return false
			}
		}
		for sc.Scan() {
			line++
			seq++
			b.lines = append(b.lines, slices.Clone(sc.Bytes()))
			if len(b.lines) == batchLines && !send() {
				return nil
			}
		}
		if err := sc.Err(); err != nil {
			return &BadInputError{Source: fmt.Sprintf("%s:%d", in.Name, line+1), Err: err}
		}
		if len(b.lines) > 0 && !send() {
			return nil
		}
	}
	return nil
}

// partial is one worker's share of the report.
type partial struct {
	rep      Report
	groups   map[[2]string]*Group
	policies map[string]bool
	examples int
}

func newPartial(examples int) *partial {
	return &partial{
		rep:      Report{BrokenBy: map[string]int{}, Skipped: map[string]int{}},
		groups:   map[[2]string]*Group{},
		policies: map[string]bool{},
		examples: examples,
	}
}

// line is what a decision-log line may hold: a record, and the message of
// a process-log line. The record's fields a replay does not read are
// shadowed by skipped ones, which the decoder steps over instead of
// decoding (a time to parse, objects to build).
type line struct {
	decisionlog.Record
	Msg *string `json:"msg"`

	Time          skipped `json:"time"`
	Version       skipped `json:"version"`
	MetaUpdates   skipped `json:"meta_updates"`
	Proposed      skipped `json:"proposed"`
	Error         skipped `json:"error"`
	ElapsedMicros skipped `json:"elapsed_us"`
	TraceID       skipped `json:"trace_id"`
}

// skipped is a JSON value left undecoded.
type skipped struct{}

func (*skipped) UnmarshalJSON([]byte) error { return nil }

func (pt *partial) replay(ctx context.Context, p *policy.Policy, only, name string, b batch) error {
	for i, raw := range b.lines {
		if ctx.Err() != nil {
			return nil
		}
		source := fmt.Sprintf("%s:%d", name, b.firstLine+i)
		if len(strings.TrimSpace(string(raw))) == 0 {
			continue
		}
		var l line
		if err := json.Unmarshal(raw, &l); err != nil {
			return &BadInputError{Source: source, Err: fmt.Errorf("not a JSON decision record: %w", err)}
		}
		if l.Msg != nil && *l.Msg != "decision" {
			pt.rep.OtherLines++
			continue
		}
		if err := l.Check(); err != nil {
			return &BadInputError{Source: source, Err: err}
		}
		if only != "" && l.Policy != only {
			pt.rep.OtherPolicies++
			continue
		}
		pt.rep.Records++
		if missing := l.Missing(); len(missing) > 0 {
			pt.rep.SkippedTotal++
			for _, m := range missing {
				pt.rep.Skipped[m]++
			}
			continue
		}
		in, err := input(&l.Record)
		if err != nil {
			return &BadInputError{Source: source, Err: err}
		}
		pt.rep.Replayed++
		pt.policies[l.Policy] = true
		d := p.Evaluate(ctx, in)
		if d.Outcome == policy.OutcomeTimeout {
			// Once more: on a busy machine a descheduled evaluation runs out
			// of its budget too, and a runaway policy times out again.
			d = p.Evaluate(ctx, in)
		}
		kind := classify(&l.Record, d)
		switch kind {
		case Same:
			pt.rep.Same++
			continue
		case Changed:
			pt.rep.Changed++
		case Protected:
			pt.rep.Protected++
		case Broken:
			pt.rep.Broken++
			pt.rep.BrokenBy[d.Outcome.String()]++
		}
		ex := Example{
			Source:    source,
			Recorded:  Reply{l.Reply.Status, l.Reply.Response},
			Candidate: Reply{d.Status, d.Response},
			Outcome:   d.Outcome.String(),
			seq:       b.seq + uint64(i),
		}
		if l.Command != nil {
			ex.Command = decisionlog.Command(*l.Command)
		}
		if d.Proposed != nil {
			ex.Candidate = Reply{d.Proposed.Status, d.Proposed.Response}
		}
		if d.Err != nil {
			ex.Error = d.Err.Error()
		}
		pt.add(in, kind, ex)
	}
	return nil
}

// input is the request a record holds.
func input(r *decisionlog.Record) (policy.Input, error) {
	in := policy.Input{Status: *r.Status, Response: *r.Response, Command: r.Command}
	if len(r.ConnMeta) > 0 {
		meta, err := policy.MetaFromMap(r.ConnMeta)
		if err != nil {
			return in, fmt.Errorf("conn_meta: %w", err)
		}
		in.Meta = meta
	}
	return in, nil
}

// classify compares the candidate's decision with the recorded one. A
// failure or a DATA-guard refusal the recorded decision shared is judged by
// its reply, so that replaying the live policy itself finds no difference.
func classify(r *decisionlog.Record, d policy.Decision) string {
	outcome := d.Outcome.String()
	switch {
	case shadow.Failed(d.Outcome) && outcome != r.Outcome:
		return Broken
	case d.Outcome == policy.OutcomeProtected && outcome != r.Outcome:
		return Protected
	case d.Status == r.Reply.Status && d.Response == r.Reply.Response:
		return Same
	default:
		return Changed
	}
}

// add counts a difference in its group, keeping the group's first examples.
func (pt *partial) add(in policy.Input, kind string, ex Example) {
	key := [2]string{fmt.Sprintf("%dxx", in.Status/100), verb(in.Command)}
	g := pt.groups[key]
	if g == nil {
		g = &Group{StatusClass: key[0], Verb: key[1], Kinds: map[string]int{}}
		pt.groups[key] = g
	}
	g.Count++
	g.Kinds[kind]++
	if len(g.Examples) < pt.examples {
		g.Examples = append(g.Examples, ex)
	}
}

// verb is a command's first word, upper case; "(none)" for no command.
func verb(cmd *string) string {
	if cmd == nil {
		return "(none)"
	}
	v, _, _ := strings.Cut(strings.TrimSpace(*cmd), " ")
	if v == "" {
		return "(empty)"
	}
	return strings.ToUpper(v)
}

// merge adds the workers' partial reports up. The examples kept are the
// first in input order, whichever worker saw them.
func merge(rep *Report, parts []*partial, examples int) {
	rep.BrokenBy, rep.Skipped = map[string]int{}, map[string]int{}
	groups := map[[2]string]*Group{}
	policies := map[string]bool{}
	for _, pt := range parts {
		for name := range pt.policies {
			policies[name] = true
		}
		r := &pt.rep
		rep.Records += r.Records
		rep.Replayed += r.Replayed
		rep.Same += r.Same
		rep.Changed += r.Changed
		rep.Broken += r.Broken
		rep.Protected += r.Protected
		rep.SkippedTotal += r.SkippedTotal
		rep.OtherLines += r.OtherLines
		rep.OtherPolicies += r.OtherPolicies
		for k, n := range r.BrokenBy {
			rep.BrokenBy[k] += n
		}
		for k, n := range r.Skipped {
			rep.Skipped[k] += n
		}
		for key, g := range pt.groups {
			all := groups[key]
			if all == nil {
				groups[key] = g
				continue
			}
			all.Count += g.Count
			for k, n := range g.Kinds {
				all.Kinds[k] += n
			}
			all.Examples = append(all.Examples, g.Examples...)
		}
	}
	for name := range policies {
		rep.RecordedPolicies = append(rep.RecordedPolicies, name)
	}
	slices.Sort(rep.RecordedPolicies)
	for _, g := range groups {
		slices.SortFunc(g.Examples, func(a, b Example) int { return cmp.Compare(a.seq, b.seq) })
		g.Examples = g.Examples[:min(len(g.Examples), examples)]
		rep.Differences = append(rep.Differences, g)
	}
	slices.SortFunc(rep.Differences, func(a, b *Group) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.StatusClass, b.StatusClass), cmp.Compare(a.Verb, b.Verb))
	})
}
