// Package decisionlog records a sample of rewrite decisions as versioned
// JSON lines (the schema is in docs/operations.md), to a file or to the
// process log, with the SMTP command redacted so that no credential is
// recorded.
package decisionlog

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/rewrited/rewrited/service/policy"
)

// SchemaVersion is the version of Record, written in every record as
// "schema". A change that a reader of the previous version would misread
// bumps it.
const SchemaVersion = 1

// maxTextBytes bounds a command or reply text in a log line (not in a
// record, which keeps the whole text for replay).
const maxTextBytes = 256

// Reply is a status and text.
type Reply struct {
	Status   int    `json:"status"`
	Response string `json:"response"`
}

// Record is one decision: its inputs, as far as they may be recorded, and
// what was decided. The fields a replay needs are pointers, so that a
// record lacking one can be told from one holding a zero.
type Record struct {
	Schema  int       `json:"schema"`
	Time    time.Time `json:"time"`
	Policy  string    `json:"policy"`
	Version string    `json:"version"`
	// The request: the reply the SMTP server was about to send and the
	// command it answers (absent: none, Lua nil).
	Status   *int    `json:"status"`
	Response *string `json:"response"`
	Command  *string `json:"command,omitempty"`
	// CommandRedacted says Command is not the command received: AUTH's
	// argument or a SASL response was removed.
	CommandRedacted bool `json:"command_redacted,omitempty"`
	// ConnMeta is the whole conn_meta (--decision-log-meta full);
	// ConnMetaKeys only its keys (keys, the default). Neither: the request
	// had none. ConnMetaInvalid: it was not a well-formed object.
	ConnMeta        map[string]any `json:"conn_meta,omitempty"`
	ConnMetaKeys    []string       `json:"conn_meta_keys,omitempty"`
	ConnMetaInvalid bool           `json:"conn_meta_invalid,omitempty"`
	// The decision: outcome, the reply sent, the meta updates returned, the
	// rewrite shadow mode or the DATA guard kept back, and the error.
	Outcome         string         `json:"outcome"`
	Reply           *Reply         `json:"reply"`
	CloseConnection bool           `json:"close_connection,omitempty"`
	MetaUpdates     map[string]any `json:"meta_updates,omitempty"`
	Proposed        *Reply         `json:"proposed,omitempty"`
	Error           string         `json:"error,omitempty"`
	ElapsedMicros   float64        `json:"elapsed_us"`
	TraceID         string         `json:"trace_id,omitempty"`
}

// Config says which decisions are recorded and where.
type Config struct {
	// Logger gets "decision" lines when File is nil, and "shadow: would
	// rewrite" lines in any case.
	Logger *slog.Logger
	// File, when set, gets the records as JSON lines instead of the log.
	File io.Writer
	// Sample is the fraction of decisions recorded; ShadowSample the
	// fraction of shadow mode's would-be rewrites logged (0 = none, 1 = all).
	Sample, ShadowSample float64
	// FullMeta records the whole conn_meta instead of its keys.
	FullMeta bool
}

// Logger is a rewrite.Observer that records a sample of decisions.
type Logger struct {
	cfg Config
	mu  sync.Mutex // serialises lines to File
}

// New returns a Logger; cfg.Logger nil discards log lines.
func New(cfg Config) *Logger {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Logger{cfg: cfg}
}

// Observe implements rewrite.Observer.
func (l *Logger) Observe(ctx context.Context, p *policy.Policy, in policy.Input, d policy.Decision, elapsed time.Duration) {
	decision := Sampled(l.cfg.Sample)
	shadow := d.Outcome == policy.OutcomeShadowed && Sampled(l.cfg.ShadowSample)
	if !decision && !shadow {
		return
	}
	rec := NewRecord(ctx, p, in, d, elapsed, l.cfg.FullMeta)
	if shadow {
		l.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "shadow: would rewrite", rec.attrs()...)
	}
	if !decision {
		return
	}
	if l.cfg.File == nil {
		l.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "decision", rec.attrs()...)
		return
	}
	var line bytes.Buffer
	enc := json.NewEncoder(&line)
	enc.SetEscapeHTML(false) // keeps "RCPT TO:<a@example.com>" readable
	err := enc.Encode(rec)
	if err == nil {
		l.mu.Lock()
		_, err = l.cfg.File.Write(line.Bytes())
		l.mu.Unlock()
	}
	if err != nil {
		l.cfg.Logger.Error("decision log: a record was lost", "error", err.Error())
	}
}

// NewRecord records one decision at the current time.
func NewRecord(ctx context.Context, p *policy.Policy, in policy.Input, d policy.Decision, elapsed time.Duration, fullMeta bool) *Record {
	rec := &Record{
		Schema:          SchemaVersion,
		Time:            time.Now().UTC(),
		Policy:          p.Name(),
		Version:         p.Version(),
		Status:          &in.Status,
		Response:        &in.Response,
		Outcome:         d.Outcome.String(),
		Reply:           &Reply{Status: d.Status, Response: d.Response},
		CloseConnection: d.CloseConnection,
		MetaUpdates:     d.MetaUpdates,
		ElapsedMicros:   float64(elapsed.Nanoseconds()) / 1e3,
	}
	if in.Command != nil {
		cmd, redacted := Redact(*in.Command)
		rec.Command, rec.CommandRedacted = &cmd, redacted
	}
	if len(in.Meta) > 0 {
		meta := &structpb.Struct{}
		switch {
		case proto.Unmarshal(in.Meta, meta) != nil:
			rec.ConnMetaInvalid = true
		case fullMeta:
			rec.ConnMeta = meta.AsMap()
		default:
			for k := range meta.GetFields() {
				rec.ConnMetaKeys = append(rec.ConnMetaKeys, k)
			}
			slices.Sort(rec.ConnMetaKeys)
		}
	}
	if d.Proposed != nil {
		rec.Proposed = &Reply{Status: d.Proposed.Status, Response: d.Proposed.Response}
	}
	if d.Err != nil {
		rec.Error = d.Err.Error()
	}
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		rec.TraceID = sc.TraceID().String()
	}
	return rec
}

// attrs are the record's fields as log attributes, under the names of its
// JSON encoding, but for the time, which the log line has already.
func (r *Record) attrs() []slog.Attr {
	attrs := []slog.Attr{
		slog.Int("schema", r.Schema),
		slog.String("policy", r.Policy),
		slog.String("version", r.Version),
		slog.Int("status", *r.Status),
		slog.String("response", *r.Response),
	}
	if r.Command != nil {
		attrs = append(attrs, slog.String("command", *r.Command))
	}
	if r.CommandRedacted {
		attrs = append(attrs, slog.Bool("command_redacted", true))
	}
	switch {
	case r.ConnMeta != nil:
		attrs = append(attrs, slog.Any("conn_meta", r.ConnMeta))
	case r.ConnMetaKeys != nil:
		attrs = append(attrs, slog.Any("conn_meta_keys", r.ConnMetaKeys))
	case r.ConnMetaInvalid:
		attrs = append(attrs, slog.Bool("conn_meta_invalid", true))
	}
	attrs = append(attrs, slog.String("outcome", r.Outcome), slog.Any("reply", r.Reply))
	if r.CloseConnection {
		attrs = append(attrs, slog.Bool("close_connection", true))
	}
	if r.MetaUpdates != nil {
		attrs = append(attrs, slog.Any("meta_updates", r.MetaUpdates))
	}
	if r.Proposed != nil {
		attrs = append(attrs, slog.Any("proposed", r.Proposed))
	}
	if r.Error != "" {
		attrs = append(attrs, slog.String("error", r.Error))
	}
	attrs = append(attrs, slog.Float64("elapsed_us", r.ElapsedMicros))
	if r.TraceID != "" {
		attrs = append(attrs, slog.String("trace_id", r.TraceID))
	}
	return attrs
}

// Missing names the fields a replay needs that the record lacks or holds
// only in part.
func (r *Record) Missing() []string {
	var missing []string
	if r.Status == nil {
		missing = append(missing, "status")
	}
	if r.Response == nil {
		missing = append(missing, "response")
	}
	if r.CommandRedacted {
		missing = append(missing, "command (redacted)")
	}
	if len(r.ConnMetaKeys) > 0 {
		missing = append(missing, "conn_meta (keys only)")
	}
	if r.ConnMetaInvalid {
		missing = append(missing, "conn_meta (not an object)")
	}
	if r.Outcome == "" {
		missing = append(missing, "outcome")
	}
	if r.Reply == nil {
		missing = append(missing, "reply")
	}
	return missing
}

// Check reports a record this version cannot read.
func (r *Record) Check() error {
	if r.Schema < 1 || r.Schema > SchemaVersion {
		return fmt.Errorf("schema %d is not a decision-log schema this version reads (1 to %d)", r.Schema, SchemaVersion)
	}
	return nil
}

// Sampled draws whether to act with probability rate.
func Sampled(rate float64) bool {
	return rate >= 1 || (rate > 0 && rand.Float64() < rate)
}

// smtpVerbs are the commands whose text is logged as is.
var smtpVerbs = map[string]bool{
	"HELO": true, "EHLO": true, "LHLO": true, "MAIL": true, "RCPT": true,
	"DATA": true, "BDAT": true, "RSET": true, "VRFY": true, "EXPN": true,
	"HELP": true, "NOOP": true, "QUIT": true, "STARTTLS": true, "TURN": true,
	"ETRN": true, "ATRN": true, "XCLIENT": true, "XFORWARD": true,
}

// Command returns cmd as it may be logged: redacted by Redact, and
// shortened.
func Command(cmd string) string {
	redacted, _ := Redact(cmd)
	return Text(redacted)
}

// Redact returns cmd as it may be recorded, and whether anything was
// removed. AUTH keeps a known mechanism's name but loses its initial
// response ("AUTH PLAIN [redacted]"); an unknown word after AUTH is
// redacted too. Any other text that does not start with a known SMTP
// verb is redacted whole: on an AUTH failure, KumoMTA passes the client's
// raw SASL response, a credential, as the command.
func Redact(cmd string) (string, bool) {
	verb, rest, _ := strings.Cut(strings.TrimSpace(cmd), " ")
	verb = strings.ToUpper(verb)
	switch {
	case verb == "AUTH":
		mech, initial, _ := strings.Cut(strings.TrimSpace(rest), " ")
		mech = strings.ToUpper(mech)
		switch {
		case mech == "":
			return "AUTH", cmd != "AUTH"
		case !saslMechanisms[mech]:
			return "AUTH [redacted]", true
		case strings.TrimSpace(initial) == "":
			return "AUTH " + mech, cmd != "AUTH "+mech
		default:
			return "AUTH " + mech + " [redacted]", true
		}
	case smtpVerbs[verb]:
		return cmd, false
	default:
		return "[redacted]", true
	}
}

// saslMechanisms are the SASL mechanisms (IANA's registry, the common
// ones) whose names a record keeps. Any other word after AUTH may be
// something the client typed by mistake, a password included, so it is
// redacted.
var saslMechanisms = map[string]bool{
	"PLAIN": true, "LOGIN": true, "CRAM-MD5": true, "DIGEST-MD5": true,
	"XOAUTH2": true, "OAUTHBEARER": true, "EXTERNAL": true, "ANONYMOUS": true,
	"GSSAPI": true, "GS2-KRB5": true, "NTLM": true, "SCRAM-SHA-1": true,
	"SCRAM-SHA-1-PLUS": true, "SCRAM-SHA-256": true, "SCRAM-SHA-256-PLUS": true,
}

// Text shortens s for a log line.
func Text(s string) string { return policy.BoundText(s, maxTextBytes) }
