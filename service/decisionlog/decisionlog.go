// Package decisionlog logs a sample of rewrite decisions, with the SMTP
// command redacted so that no credential reaches the log.
package decisionlog

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"
	"unicode/utf8"

	rewritev1 "github.com/rewrited/rewrited/proto/rewrite/v1"
	"github.com/rewrited/rewrited/service/metrics"
	"github.com/rewrited/rewrited/service/policy"
)

// maxTextBytes bounds a command or reply text in a log line.
const maxTextBytes = 256

// Logger is a rewrite.Observer that logs a sample of decisions at info
// level: "decision" lines sampled at one rate, and "shadow: would rewrite"
// lines, for decisions shadow mode kept, at another.
type Logger struct {
	log                  *slog.Logger
	sample, shadowSample float64
}

// New logs each decision with probability sample, and each shadowed one
// with probability shadowSample (0 = never, 1 = always).
func New(l *slog.Logger, sample, shadowSample float64) *Logger {
	return &Logger{log: l, sample: sample, shadowSample: shadowSample}
}

// Observe implements rewrite.Observer.
func (l *Logger) Observe(ctx context.Context, p *policy.Policy, in policy.Input, d policy.Decision, elapsed time.Duration) {
	msg, rate := "decision", l.sample
	if d.Outcome == rewritev1.Outcome_OUTCOME_SHADOWED {
		msg, rate = "shadow: would rewrite", l.shadowSample
	}
	if !sampled(rate) {
		return
	}
	attrs := []slog.Attr{
		slog.String("policy", p.Name()),
		slog.String("version", p.Version()),
		slog.String("outcome", metrics.OutcomeLabel(d.Outcome)),
		slog.Int("status_in", in.Status),
		slog.Int("status_out", d.Status),
	}
	if in.Command != nil {
		attrs = append(attrs, slog.String("command", Command(*in.Command)))
	}
	if d.Proposed != nil {
		attrs = append(attrs,
			slog.String("response_in", truncate(in.Response)),
			slog.Int("proposed_status", d.Proposed.Status),
			slog.String("proposed_response", truncate(d.Proposed.Response)))
	}
	attrs = append(attrs, slog.Duration("elapsed", elapsed))
	if d.Err != nil {
		attrs = append(attrs, slog.String("error", d.Err.Error()))
	}
	l.log.LogAttrs(ctx, slog.LevelInfo, msg, attrs...)
}

func sampled(rate float64) bool {
	return rate >= 1 || (rate > 0 && rand.Float64() < rate)
}

// smtpVerbs are the commands whose text is logged as is.
var smtpVerbs = map[string]bool{
	"HELO": true, "EHLO": true, "LHLO": true, "MAIL": true, "RCPT": true,
	"DATA": true, "BDAT": true, "RSET": true, "VRFY": true, "EXPN": true,
	"HELP": true, "NOOP": true, "QUIT": true, "STARTTLS": true, "TURN": true,
	"ETRN": true, "ATRN": true, "XCLIENT": true, "XFORWARD": true,
}

// Command returns cmd as it may be logged. AUTH keeps its mechanism but
// loses its initial response ("AUTH PLAIN [redacted]"). Any other text that
// does not start with a known SMTP verb is redacted whole: on an AUTH
// failure, KumoMTA passes the client's raw SASL response, a credential, as
// the command.
func Command(cmd string) string {
	verb, rest, _ := strings.Cut(strings.TrimSpace(cmd), " ")
	verb = strings.ToUpper(verb)
	switch {
	case verb == "AUTH":
		mech, initial, _ := strings.Cut(strings.TrimSpace(rest), " ")
		mech = strings.ToUpper(mech)
		switch {
		case mech == "":
			return "AUTH"
		case !saslMechanism(mech):
			return "AUTH [redacted]"
		case strings.TrimSpace(initial) == "":
			return "AUTH " + mech
		default:
			return "AUTH " + mech + " [redacted]"
		}
	case smtpVerbs[verb]:
		return truncate(cmd)
	default:
		return "[redacted]"
	}
}

// saslMechanism reports whether s is a SASL mechanism name (RFC 4422:
// 1 to 20 upper-case letters, digits, '-' and '_').
func saslMechanism(s string) bool {
	if len(s) == 0 || len(s) > 20 {
		return false
	}
	for _, c := range []byte(s) {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

func truncate(s string) string {
	if len(s) <= maxTextBytes {
		return s
	}
	cut := maxTextBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
