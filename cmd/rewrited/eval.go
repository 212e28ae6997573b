package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
	"github.com/rewrited/rewrited/service/policy"
	"github.com/rewrited/rewrited/service/policytest"
	"github.com/rewrited/rewrited/service/rewrite"
	"github.com/rewrited/rewrited/smtpreply"
)

const evalUsage = `Usage: rewrited eval --policy FILE --status CODE [--response TEXT] [--command LINE] [--meta KEY=VALUE ...] [--meta-json OBJECT] [--json]

Evaluates the policy for one reply, through the same path as the server, and
prints the reply as it would go on the wire, then the outcome, the error, the
meta updates and the policy version (--json: the RewriteResponseResponse as
JSON). kumo.log_* and print output goes to stderr. Exit status: 0 when the
policy ran (even if it failed: the outcome says so), 1 when it does not load,
2 on a bad invocation.

Flags:
`

// evalConfig is one eval invocation.
type evalConfig struct {
	policyFile  string
	status      string
	response    string
	command     *string
	metaJSON    []*structpb.Struct
	meta        map[string]*structpb.Value
	jsonOut     bool
	evalTimeout time.Duration
	luaPath     *string
}

func (c *evalConfig) bind(fs *flag.FlagSet) {
	fs.StringVar(&c.policyFile, "policy", "", "policy `file` to evaluate (required)")
	c.luaPath = luaPathFlag(fs)
	fs.StringVar(&c.status, "status", "", "SMTP reply `code`, e.g. 250 (required)")
	fs.StringVar(&c.response, "response", "", "reply `text` without the code; lines separated by newlines (bash: $'line one\\nline two')")
	fs.Func("command", "the command `line` answered: DATA after the body, the raw line for errors; absent means Lua nil", func(s string) error {
		c.command = &s
		return nil
	})
	fs.Func("meta", "conn_meta `key=value`, repeatable; a JSON scalar value (3, true, null, \"3\") is taken as JSON, anything else as a string", c.addMeta)
	fs.Func("meta-json", "conn_meta as a JSON `object` (repeatable, merged in order); --meta entries are applied over it", c.addMetaJSON)
	fs.BoolVar(&c.jsonOut, "json", false, "print the RewriteResponseResponse as JSON")
	fs.DurationVar(&c.evalTimeout, "eval-timeout", policy.DefaultEvalTimeout, "time budget of the evaluation, as in rewrited serve")
}

// addMeta parses KEY=VALUE. Values that are JSON scalars keep their type so
// that get_meta returns numbers and booleans as the server would receive them.
func (c *evalConfig) addMeta(kv string) error {
	key, raw, ok := strings.Cut(kv, "=")
	if !ok || key == "" {
		return fmt.Errorf("%q is not KEY=VALUE", kv)
	}
	var v any = raw
	var parsed any
	if err := json.Unmarshal([]byte(raw), &parsed); err == nil {
		switch parsed.(type) {
		case nil, bool, float64, string:
			v = parsed
		}
	}
	value, err := structpb.NewValue(v)
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	if c.meta == nil {
		c.meta = map[string]*structpb.Value{}
	}
	c.meta[key] = value
	return nil
}

func (c *evalConfig) addMetaJSON(s string) error {
	obj := &structpb.Struct{}
	if err := protojson.Unmarshal([]byte(s), obj); err != nil {
		return fmt.Errorf("not a JSON object: %w", err)
	}
	c.metaJSON = append(c.metaJSON, obj)
	return nil
}

// connMeta merges --meta-json objects in order, then --meta entries over
// them; nil when neither was given.
func (c *evalConfig) connMeta() *structpb.Struct {
	if c.metaJSON == nil && c.meta == nil {
		return nil
	}
	meta := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for _, obj := range c.metaJSON {
		for k, v := range obj.Fields {
			meta.Fields[k] = v
		}
	}
	for k, v := range c.meta {
		meta.Fields[k] = v
	}
	return meta
}

// request checks the flags the service cannot check itself and builds the
// request; validation proper is left to the service, so that it is identical.
func (c *evalConfig) request() (*rewritev1.RewriteResponseRequest, error) {
	if c.policyFile == "" {
		return nil, errors.New("--policy: no policy file given")
	}
	if c.status == "" {
		return nil, errors.New("--status: no reply code given")
	}
	code, err := strconv.ParseInt(c.status, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("--status: %q is not a number", c.status)
	}
	if code < 0 || code > math.MaxUint32 {
		return nil, fmt.Errorf("--status: %d is not an SMTP reply code", code)
	}
	return &rewritev1.RewriteResponseRequest{
		Status:   uint32(code),
		Response: c.response,
		Command:  c.command,
		ConnMeta: c.connMeta(),
	}, nil
}

// requestFlags names, for each request field the service may reject, the
// flag that set it.
var requestFlags = map[string]string{
	"status":    "--status",
	"response":  "--response",
	"command":   "--command",
	"conn_meta": "--meta/--meta-json",
}

// flagError turns the service's InvalidArgument message ("response: ...")
// into one naming the flag ("--response: ...").
func flagError(err error) string {
	msg := status.Convert(err).Message()
	if field, rest, ok := strings.Cut(msg, ": "); ok {
		if flag, ok := requestFlags[field]; ok {
			return flag + ": " + rest
		}
	}
	return msg
}

func runEval(args []string, stdout, stderr io.Writer) int {
	var cfg evalConfig
	fs := newFlagSet("eval", stderr)
	cfg.bind(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, evalUsage)
		fs.PrintDefaults()
	}
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "rewrited eval: unexpected argument %q (flags come first; quote --response text)\n", fs.Arg(0))
		return 2
	}
	req, err := cfg.request()
	if err != nil {
		fmt.Fprintf(stderr, "rewrited eval: %v\n", err)
		return 2
	}
	src, err := os.ReadFile(cfg.policyFile)
	if err != nil {
		fmt.Fprintf(stderr, "rewrited eval: --policy: %v\n", err)
		return 2
	}
	logger := policyLogger(stderr)
	p, warnings, err := policy.Compile(cfg.policyFile, src, policy.Options{
		Name:        rewrite.DefaultPolicy,
		EvalTimeout: cfg.evalTimeout,
		PoolSize:    1,
		Logger:      logger,
		LuaPath:     *cfg.luaPath,
	})
	for _, w := range warnings {
		fmt.Fprintln(stderr, w)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer p.Close()

	resp, err := rewrite.New(rewrite.Static{rewrite.DefaultPolicy: p}, rewrite.WithLogger(logger)).RewriteResponse(context.Background(), req)
	if err != nil {
		fmt.Fprintf(stderr, "rewrited eval: invalid request: %s\n", flagError(err))
		return 2
	}
	if w := policytest.DataWarning(int(req.Status), req.Command, int(resp.Status)); w != "" {
		fmt.Fprintf(stderr, "rewrited eval: warning: %s; rewrited serve refuses this rewrite unless --protect-data=false\n", w)
	}
	if cfg.jsonOut {
		out, err := responseJSON(resp)
		if err != nil {
			fmt.Fprintf(stderr, "rewrited eval: %v\n", err)
			return 1
		}
		stdout.Write(out)
		return 0
	}
	writeDecision(stdout, resp)
	return 0
}

// writeDecision prints the reply as written on the wire, each CRLF shown as
// a line end, then how it was decided.
func writeDecision(w io.Writer, resp *rewritev1.RewriteResponseResponse) {
	fmt.Fprint(w, strings.ReplaceAll(smtpreply.Wire(int(resp.Status), resp.Response), "\r\n", "\n"))
	fmt.Fprintln(w)
	fmt.Fprintf(w, "outcome: %s\n", rewrite.EngineOutcome(resp.Outcome))
	if resp.Error != "" {
		fmt.Fprintf(w, "error: %s\n", resp.Error)
	}
	if resp.CloseConnection {
		fmt.Fprintln(w, "close: the server closes the connection after this 421")
	}
	if len(resp.MetaUpdates.GetFields()) > 0 {
		fmt.Fprintf(w, "meta updates: %s\n", policytest.MetaJSON(resp.MetaUpdates))
	}
	fmt.Fprintf(w, "policy version: %s\n", resp.PolicyVersion)
}

// responseJSON renders resp with every field present; protojson's spacing
// varies from build to build, so it is re-indented to read the same always.
func responseJSON(resp *rewritev1.RewriteResponseResponse) ([]byte, error) {
	raw, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(resp)
	if err != nil {
		return nil, fmt.Errorf("encoding the response: %w", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return nil, fmt.Errorf("encoding the response: %w", err)
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// policyLogger shows a policy's kumo.log_* and print output to its author,
// without the timestamps that would only clutter a one-shot run.
func policyLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}
