package policy

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	lua "github.com/yuin/gopher-lua"

	"github.com/rewrited/rewrited/smtpreply"
)

// decide turns what the handler returned into a decision, keeping the
// original reply whenever the result is not a valid SMTP reply.
func (p *Policy) decide(keep Decision, in Input, r raw) Decision {
	keep.MetaUpdates = r.meta
	if r.err != nil {
		return fail(keep, r.outcome, r.err)
	}
	status, err := resultStatus(r.status, in.Status)
	if err != nil {
		return fail(keep, OutcomeInvalidResult, err)
	}
	text, err := resultText(r.text, in.Response)
	if err != nil {
		return fail(keep, OutcomeInvalidResult, err)
	}
	if status != in.Status && strings.TrimSpace(text) == "" {
		// A new status on a reply without text would go out empty, which
		// KumoMTA cannot write for 4xx/5xx either.
		return fail(keep, OutcomeInvalidResult, fmt.Errorf("%w: %w: a new status needs text", ErrInvalid, smtpreply.ErrEmptyText))
	}
	d := keep
	d.Outcome = OutcomeUnchanged
	if status != in.Status || text != in.Response {
		d.Status, d.Response = status, text
		d.Rewritten = true
		d.Outcome = OutcomeRewritten
	}
	return d
}

// resultStatus converts the returned status as KumoMTA does (a u16: floats
// truncated, numeric strings coerced), then requires a valid SMTP code.
func resultStatus(v lua.LValue, original int) (int, error) {
	var n float64
	switch v := v.(type) {
	case *lua.LNilType:
		return original, nil
	case lua.LNumber:
		n = float64(v)
	case lua.LString:
		f, ok := parseLuaNumber(string(v))
		if !ok {
			return 0, fmt.Errorf("%w: status %q is not a number", ErrInvalid, string(v))
		}
		n = f
	default:
		return 0, fmt.Errorf("%w: status must be a number or nil, got a %s", ErrInvalid, v.Type())
	}
	if math.IsNaN(n) || n < 0 || n >= 65536 {
		return 0, fmt.Errorf("%w: status %v is out of range for a 16-bit code", ErrInvalid, n)
	}
	code := int(n)
	if err := smtpreply.CheckStatus(code); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return code, nil
}

// parseLuaNumber accepts what Lua's string-to-number coercion accepts:
// decimal and hexadecimal integers and decimals, with surrounding spaces.
func parseLuaNumber(s string) (float64, bool) {
	s = strings.TrimSpace(s)
	if hex, ok := strings.CutPrefix(strings.ToLower(s), "0x"); ok {
		i, err := strconv.ParseUint(hex, 16, 64)
		return float64(i), err == nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	return f, true
}

// resultText converts the returned text (a string, or a number written as
// Lua writes it) and sanitises it.
func resultText(v lua.LValue, original string) (string, error) {
	var text string
	switch v := v.(type) {
	case *lua.LNilType:
		return original, nil
	case lua.LString:
		text = string(v)
	case lua.LNumber:
		text = v.String()
	default:
		return "", fmt.Errorf("%w: response must be a string or nil, got a %s", ErrInvalid, v.Type())
	}
	if text == original {
		return original, nil
	}
	clean, err := smtpreply.Sanitize(text)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return clean, nil
}
