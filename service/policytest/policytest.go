// Package policytest runs policy test cases written in YAML (a policy, a
// reply, and the decision expected) through the same path as the server.
package policytest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"gopkg.in/yaml.v3"

	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
	"github.com/rewrited/rewrited/service/policy"
	"github.com/rewrited/rewrited/service/rewrite"
)

// File is one test file: optional inline policies and the cases.
type File struct {
	Path string `yaml:"-"`
	// Policy is the default policy of the cases: an inline policy's name or
	// a file path relative to the test file.
	Policy   string            `yaml:"policy"`
	Policies map[string]string `yaml:"policies"`
	Cases    []Case            `yaml:"cases"`
}

// Case is one reply and the decision expected for it. Fields starting with
// want_ are checked only when present.
type Case struct {
	Name     string         `yaml:"name"`
	Policy   string         `yaml:"policy"`
	Status   int            `yaml:"status"`
	Response string         `yaml:"response"`
	Command  *string        `yaml:"command"` // absent or null: Lua nil
	Meta     map[string]any `yaml:"meta"`
	// Shadow and ProtectData run the policy in those modes.
	Shadow      bool `yaml:"shadow"`
	ProtectData bool `yaml:"protect_data"`

	WantStatus      *int           `yaml:"want_status"`
	WantResponse    *string        `yaml:"want_response"`
	WantOutcome     string         `yaml:"want_outcome"` // unchanged, rewritten, policy_error, ...
	WantError       string         `yaml:"want_error"`   // a substring of the error
	WantCode        string         `yaml:"want_code"`    // a gRPC code name, e.g. InvalidArgument
	WantMetaUpdates map[string]any `yaml:"want_meta_updates"`
	WantClose       *bool          `yaml:"want_close"`
	WantLoadError   string         `yaml:"want_load_error"` // a substring of the load error
	WantWarning     string         `yaml:"want_warning"`    // a substring of a load warning

	Line int `yaml:"-"`
}

// Result is the outcome of one case.
type Result struct {
	Case     *Case
	File     string
	Failures []string // one line per expectation not met
	// Warnings flag decisions that are legal but dangerous, such as turning
	// a successful DATA reply into a failure.
	Warnings []string
	Response *rewritev1.RewriteResponseResponse
}

// Passed reports whether every expectation was met.
func (r Result) Passed() bool { return len(r.Failures) == 0 }

// Load reads a test file. Unknown fields are errors, so that a misspelt
// want_ field cannot make a case pass without checking anything.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f := &File{Path: path}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(f.Cases) == 0 {
		return nil, fmt.Errorf("%s: no cases", path)
	}
	recordLines(&doc, f)
	for i := range f.Cases {
		c := &f.Cases[i]
		if c.Name == "" {
			c.Name = fmt.Sprintf("case %d", i+1)
		}
		if c.Policy == "" {
			c.Policy = f.Policy
		}
		if c.Policy == "" {
			return nil, fmt.Errorf("%s:%d: case %q names no policy", path, c.Line, c.Name)
		}
		if !c.checksSomething() {
			return nil, fmt.Errorf("%s:%d: case %q checks nothing: give at least one want_ field", path, c.Line, c.Name)
		}
		if c.WantOutcome != "" {
			if _, err := ParseOutcome(c.WantOutcome); err != nil {
				return nil, fmt.Errorf("%s:%d: case %q: %w", path, c.Line, c.Name, err)
			}
		}
	}
	return f, nil
}

func (c *Case) checksSomething() bool {
	return c.WantStatus != nil || c.WantResponse != nil || c.WantOutcome != "" || c.WantError != "" ||
		c.WantCode != "" || c.WantMetaUpdates != nil || c.WantClose != nil || c.WantLoadError != "" || c.WantWarning != ""
}

// recordLines notes each case's line for messages.
func recordLines(doc *yaml.Node, f *File) {
	if len(doc.Content) == 0 {
		return
	}
	root := doc.Content[0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value != "cases" {
			continue
		}
		for j, item := range root.Content[i+1].Content {
			if j < len(f.Cases) {
				f.Cases[j].Line = item.Line
			}
		}
	}
}

// ParseOutcome turns "rewritten" or "OUTCOME_REWRITTEN" into the outcome.
func ParseOutcome(s string) (policy.Outcome, error) {
	name := strings.TrimPrefix(strings.ToLower(s), "outcome_")
	for o := policy.OutcomeUnchanged; o <= policy.OutcomeProtected; o++ {
		if o.String() == name {
			return o, nil
		}
	}
	return 0, fmt.Errorf("unknown outcome %q (unchanged, rewritten, policy_error, timeout, invalid_result, shadowed, protected)", s)
}

// Run runs every case of the file; opts apply to every policy it compiles.
func (f *File) Run(ctx context.Context, opts policy.Options) []Result {
	compiled := map[policyKey]*loaded{}
	defer func() {
		for _, l := range compiled {
			if l.p != nil {
				l.p.Close()
			}
		}
	}()
	results := make([]Result, 0, len(f.Cases))
	for i := range f.Cases {
		c := &f.Cases[i]
		key := policyKey{c.Policy, c.Shadow, c.ProtectData}
		l, ok := compiled[key]
		if !ok {
			o := opts
			o.Shadow, o.ProtectData = c.Shadow, c.ProtectData
			l = f.load(c.Policy, o)
			compiled[key] = l
		}
		results = append(results, f.runCase(ctx, c, l))
	}
	return results
}

type policyKey struct {
	name                string
	shadow, protectData bool
}

type loaded struct {
	p        *policy.Policy
	warnings []policy.Warning
	err      error
}

func (f *File) load(name string, opts policy.Options) *loaded {
	file, src := name+".lua", []byte(nil)
	if inline, ok := f.Policies[name]; ok {
		src = []byte(inline)
	} else {
		file = filepath.Join(filepath.Dir(f.Path), name)
		var err error
		if src, err = os.ReadFile(file); err != nil {
			return &loaded{err: err}
		}
	}
	p, warnings, err := policy.Compile(file, src, opts)
	return &loaded{p: p, warnings: warnings, err: err}
}

func (f *File) runCase(ctx context.Context, c *Case, l *loaded) Result {
	r := Result{Case: c, File: f.Path}
	fail := func(format string, args ...any) { r.Failures = append(r.Failures, fmt.Sprintf(format, args...)) }
	if c.WantWarning != "" && !hasWarning(l.warnings, c.WantWarning) {
		fail("expected a load warning containing %q, got %q", c.WantWarning, warningTexts(l.warnings))
	}
	if c.WantLoadError != "" {
		switch {
		case l.err == nil:
			fail("expected a load error containing %q, got a policy that loads", c.WantLoadError)
		case !strings.Contains(l.err.Error(), c.WantLoadError):
			fail("expected a load error containing %q, got %q", c.WantLoadError, l.err.Error())
		}
		return r
	}
	if l.err != nil {
		fail("expected the policy to load, got %v", l.err)
		return r
	}
	req, err := c.request()
	if err != nil {
		fail("expected a valid case, got %v", err)
		return r
	}
	svc := rewrite.New(rewrite.Static{rewrite.DefaultPolicy: l.p})
	resp, err := svc.RewriteResponse(ctx, req)
	if c.WantCode != "" || err != nil {
		checkCode(c, resp, err, fail)
		return r
	}
	r.Response = resp
	if w := DataWarning(c.Status, c.Command, int(resp.Status)); w != "" {
		r.Warnings = append(r.Warnings, w)
	}
	c.check(resp, fail)
	return r
}

// DataWarning describes the danger when a reply with status, answering
// command, is rewritten to newStatus and that turns a successful DATA reply
// into a failure; it is empty otherwise.
func DataWarning(status int, command *string, newStatus int) string {
	if !policy.BreaksDataSemantics(policy.Input{Status: status, Command: command}, newStatus) {
		return ""
	}
	return fmt.Sprintf("turns the successful DATA reply %d into %d: the message is already queued, so the client will retry and deliver it twice", status, newStatus)
}

func hasWarning(warnings []policy.Warning, want string) bool {
	for _, w := range warnings {
		if strings.Contains(w.String(), want) {
			return true
		}
	}
	return false
}

func checkCode(c *Case, resp *rewritev1.RewriteResponseResponse, err error, fail func(string, ...any)) {
	st, _ := status.FromError(err)
	switch {
	case c.WantCode == "":
		fail("expected a decision, got error %s: %s", st.Code(), st.Message())
	case err == nil:
		fail("expected error code %s, got a decision (outcome %s)", c.WantCode, rewrite.EngineOutcome(resp.Outcome))
	case !strings.EqualFold(st.Code().String(), c.WantCode):
		fail("expected error code %s, got %s: %s", c.WantCode, st.Code(), st.Message())
	case c.WantError != "" && !strings.Contains(st.Message(), c.WantError):
		fail("expected an error containing %q, got %q", c.WantError, st.Message())
	}
}

func warningTexts(warnings []policy.Warning) []string {
	texts := make([]string, len(warnings))
	for i, w := range warnings {
		texts[i] = w.String()
	}
	return texts
}

func (c *Case) request() (*rewritev1.RewriteResponseRequest, error) {
	req := &rewritev1.RewriteResponseRequest{Status: uint32(c.Status), Response: c.Response, Command: c.Command}
	if c.Meta != nil {
		meta, err := structpb.NewStruct(c.Meta)
		if err != nil {
			return nil, fmt.Errorf("meta: %w", err)
		}
		req.ConnMeta = meta
	}
	return req, nil
}

func (c *Case) check(resp *rewritev1.RewriteResponseResponse, fail func(string, ...any)) {
	if c.WantStatus != nil && int(resp.Status) != *c.WantStatus {
		fail("expected status %d, got %d", *c.WantStatus, resp.Status)
	}
	if c.WantResponse != nil && resp.Response != *c.WantResponse {
		fail("expected response %q, got %q", *c.WantResponse, resp.Response)
	}
	if c.WantOutcome != "" {
		want, _ := ParseOutcome(c.WantOutcome)
		if rewrite.EngineOutcome(resp.Outcome) != want {
			got := rewrite.EngineOutcome(resp.Outcome).String()
			if resp.Error != "" {
				got += fmt.Sprintf(" (error: %q)", resp.Error)
			}
			fail("expected outcome %s, got %s", want, got)
		}
	}
	if c.WantError != "" && !strings.Contains(resp.Error, c.WantError) {
		fail("expected an error containing %q, got %q", c.WantError, resp.Error)
	}
	if c.WantClose != nil && resp.CloseConnection != *c.WantClose {
		fail("expected close %v, got %v", *c.WantClose, resp.CloseConnection)
	}
	if c.WantMetaUpdates != nil {
		want, err := structpb.NewStruct(c.WantMetaUpdates)
		if err != nil {
			fail("expected meta updates that are JSON values, got %v", err)
			return
		}
		got := resp.MetaUpdates
		if got == nil {
			got = &structpb.Struct{}
		}
		if !proto.Equal(want, got) {
			fail("expected meta updates %s, got %s", MetaJSON(want), MetaJSON(got))
		}
	}
}

// MetaJSON renders metadata as compact JSON with sorted keys, which, unlike
// protojson, reads the same on every run.
func MetaJSON(s *structpb.Struct) string {
	b, err := json.Marshal(s.AsMap())
	if err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	return string(b)
}
