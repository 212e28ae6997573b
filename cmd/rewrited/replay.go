package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rewrited/rewrited/service/policy"
	"github.com/rewrited/rewrited/service/replay"
	"github.com/rewrited/rewrited/service/rewrite"
)

const replayUsage = `Usage: rewrited replay --policy FILE [--name POLICY] [--lua-path PATH] [--json] [DECISIONS.jsonl[.gz]...]

Runs the candidate policy on every decision recorded by rewrited serve
(--decision-log FILE, or its JSON process log with --decision-log-sample), and
prints how many recorded replies it would keep the same, change, break (policy
error, timeout, invalid result) or have refused by the DATA guard (protected),
with the differences grouped by status class and command verb. Records that
lack what a replay needs (conn_meta logged as keys only, a redacted command)
are counted by what they lack and skipped. Records of several policies need
--name to pick the one the candidate replaces. Files may be gzip'd; no file or
"-" reads standard input. Exit status: 0 when nothing differs, 1 when
something does, 2 on bad input or a policy that does not load.

Flags:
`

type replayConfig struct {
	policyFile  string
	name        string
	luaPath     *string
	jsonOut     bool
	protectData bool
	evalTimeout time.Duration
	examples    int
}

func (c *replayConfig) bind(fs *flag.FlagSet) {
	fs.StringVar(&c.policyFile, "policy", "", "candidate policy `file` (required)")
	fs.StringVar(&c.name, "name", "", "replay only the records of this `policy` (needed when the records hold several)")
	c.luaPath = luaPathFlag(fs)
	fs.BoolVar(&c.jsonOut, "json", false, "print the report as JSON")
	fs.BoolVar(&c.protectData, "protect-data", true, "apply the DATA guard, as rewrited serve does by default")
	fs.DurationVar(&c.evalTimeout, "eval-timeout", policy.DefaultEvalTimeout, "time budget of one evaluation, as in rewrited serve")
	fs.IntVar(&c.examples, "examples", 3, "examples shown per group of differences")
}

func runReplay(args []string, stdout, stderr io.Writer) int {
	var cfg replayConfig
	fs := newFlagSet("replay", stderr)
	cfg.bind(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, replayUsage)
		fs.PrintDefaults()
	}
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "rewrited replay: "+format+"\n", a...)
		return 2
	}
	if cfg.policyFile == "" {
		return fail("--policy: no candidate policy given")
	}
	if cfg.examples < 0 {
		return fail("--examples: %d is negative", cfg.examples)
	}
	src, err := os.ReadFile(cfg.policyFile)
	if err != nil {
		return fail("--policy: %v", err)
	}
	p, warnings, err := policy.Compile(cfg.policyFile, src, policy.Options{
		Name:        rewrite.DefaultPolicy,
		EvalTimeout: cfg.evalTimeout,
		ProtectData: cfg.protectData,
		LuaPath:     *cfg.luaPath,
		Logger:      policyLogger(io.Discard),
	})
	for _, w := range warnings {
		fmt.Fprintln(stderr, w)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	defer p.Close()

	inputs, closeAll, err := openInputs(fs.Args())
	defer closeAll()
	if err != nil {
		return fail("%v", err)
	}
	rep, err := replay.Run(context.Background(), p, inputs, replay.Options{Examples: max(cfg.examples, 1), Policy: cfg.name})
	if err != nil {
		return fail("%v", err)
	}
	if len(rep.RecordedPolicies) > 1 {
		return fail("the records hold decisions of several policies (%s): pick the one the candidate replaces with --name", strings.Join(rep.RecordedPolicies, ", "))
	}
	if cfg.examples == 0 {
		for _, g := range rep.Differences {
			g.Examples = nil
		}
	}
	if cfg.jsonOut {
		out, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return fail("encoding the report: %v", err)
		}
		fmt.Fprintf(stdout, "%s\n", out)
	} else {
		writeReport(stdout, rep)
	}
	if rep.Differs() {
		return 1
	}
	return 0
}

// openInputs opens the files, gzip'd or not; none, or "-", is standard input.
func openInputs(names []string) ([]replay.Input, func(), error) {
	if len(names) == 0 {
		names = []string{"-"}
	}
	var closers []io.Closer
	closeAll := func() {
		for _, c := range closers {
			c.Close()
		}
	}
	inputs := make([]replay.Input, 0, len(names))
	for _, name := range names {
		var r io.Reader = os.Stdin
		label := "stdin"
		if name != "-" {
			f, err := os.Open(name)
			if err != nil {
				return nil, closeAll, err
			}
			closers = append(closers, f)
			r, label = f, name
		}
		r, err := replay.Decompress(r)
		if err != nil {
			return nil, closeAll, fmt.Errorf("%s: %w", label, err)
		}
		if c, ok := r.(io.Closer); ok {
			closers = append(closers, c)
		}
		inputs = append(inputs, replay.Input{Name: label, Reader: r})
	}
	return inputs, closeAll, nil
}

// writeReport prints the report for a person.
func writeReport(w io.Writer, rep *replay.Report) {
	fmt.Fprintf(w, "candidate %s (version %s)", rep.Policy, rep.Version)
	if len(rep.RecordedPolicies) == 1 {
		fmt.Fprintf(w, " in place of policy %s", rep.RecordedPolicies[0])
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%d decision records: %d replayed, %d skipped\n", rep.Records, rep.Replayed, rep.SkippedTotal)
	fmt.Fprintf(w, "  same       %d\n", rep.Same)
	fmt.Fprintf(w, "  changed    %d\n", rep.Changed)
	fmt.Fprintf(w, "  broken     %d%s\n", rep.Broken, breakdown(rep.BrokenBy))
	fmt.Fprintf(w, "  protected  %d\n", rep.Protected)
	if rep.SkippedTotal > 0 {
		fmt.Fprintf(w, "skipped, lacking what a replay needs: %s\n", counts(rep.Skipped))
	}
	if rep.OtherPolicies > 0 {
		fmt.Fprintf(w, "%d records of other policies ignored\n", rep.OtherPolicies)
	}
	if rep.OtherLines > 0 {
		fmt.Fprintf(w, "%d other log lines ignored\n", rep.OtherLines)
	}
	if len(rep.Differences) == 0 {
		fmt.Fprintln(w, "no differences")
		return
	}
	fmt.Fprintln(w, "differences by status class and command:")
	for _, g := range rep.Differences {
		fmt.Fprintf(w, "  %s %s: %d%s\n", g.StatusClass, g.Verb, g.Count, breakdown(g.Kinds))
		for _, ex := range g.Examples {
			fmt.Fprintf(w, "    %s: %d %s -> %d %s (%s", ex.Source, ex.Recorded.Status, strconv.Quote(ex.Recorded.Response),
				ex.Candidate.Status, strconv.Quote(ex.Candidate.Response), ex.Outcome)
			if ex.Error != "" {
				fmt.Fprintf(w, ": %s", ex.Error)
			}
			fmt.Fprintln(w, ")")
		}
	}
}

// breakdown renders n as " (a 1, b 2)", or nothing when n is empty.
func breakdown(n map[string]int) string {
	if len(n) == 0 {
		return ""
	}
	return " (" + counts(n) + ")"
}

// counts renders n as "a 1, b 2", keys sorted.
func counts(n map[string]int) string {
	keys := make([]string, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, n[k])
	}
	return strings.Join(parts, ", ")
}
