package stdlib

import (
	"encoding/base64"
	"net/netip"
	"strings"
	"unicode"

	"github.com/google/uuid"
	lua "github.com/yuin/gopher-lua"
)

// Thresholds of the {hash} rule: long enough, with letters and digits both.
const (
	hashMinLength  = 8
	hashMinLetters = 2
	hashMinDigits  = 2
	base64MinLen   = 16
	maxNormalizeEq = 8
)

// tokenPunctuation is what may surround a token without being part of it.
const tokenPunctuation = "<>()[]{},;:\"'"

func openNormalize(L *lua.LState, kumo *lua.LTable) {
	subModule(L, kumo, "string").RawSetString("normalize_smtp_response", L.NewFunction(normalizeFunc))
}

func normalizeFunc(L *lua.LState) int {
	L.Push(lua.LString(normalizeSMTPResponse(checkString(L, 1, "kumo.string.normalize_smtp_response"))))
	return 1
}

// normalizeSMTPResponse replaces the per-message parts of an SMTP reply with
// placeholders, as KumoMTA documents: whitespace is kept, each word is looked at in
// turn, and timestamps, UUIDs, addresses, e-mail addresses, hash-like and base64
// tokens become {timestamp}, {uuid}, {ipaddr}, {email}, {hash} and {base64}. The
// right-hand side of name=value is normalized the same way. The result is never
// longer than the input by more than the placeholders' length.
func normalizeSMTPResponse(s string) string {
	var sb strings.Builder
	sb.Grow(len(s))
	for len(s) > 0 {
		i := strings.IndexFunc(s, unicode.IsSpace)
		if i == 0 {
			j := strings.IndexFunc(s, func(r rune) bool { return !unicode.IsSpace(r) })
			if j < 0 {
				j = len(s)
			}
			sb.WriteString(s[:j])
			s = s[j:]
			continue
		}
		if i < 0 {
			i = len(s)
		}
		sb.WriteString(normalizeToken(s[:i], 0))
		s = s[i:]
	}
	return sb.String()
}

func normalizeToken(tok string, depth int) string {
	core := strings.TrimLeft(tok, tokenPunctuation)
	lead := tok[:len(tok)-len(core)]
	trimmed := strings.TrimRight(core, tokenPunctuation+".")
	trail := core[len(trimmed):]
	core = trimmed
	if core == "" {
		return tok
	}
	if p := classifyToken(core); p != "" {
		return lead + p + trail
	}
	if depth < maxNormalizeEq {
		if lhs, rhs, ok := strings.Cut(core, "="); ok && lhs != "" && rhs != "" {
			return lead + lhs + "=" + normalizeToken(rhs, depth+1) + trail
		}
	}
	return tok
}

// classifyToken returns the placeholder for a token, or "" to keep it.
func classifyToken(t string) string {
	switch {
	case isTimestamp(t):
		return "{timestamp}"
	case isUUID(t):
		return "{uuid}"
	case isIPAddr(t):
		return "{ipaddr}"
	case isEmail(t):
		return "{email}"
	case isHashLike(t):
		return "{hash}"
	case isBase64(t):
		return "{base64}"
	}
	return ""
}

func isTimestamp(t string) bool {
	_, err := parseRFC3339(t)
	return err == nil
}

// isUUID accepts the hyphenated, simple, braced and URN forms.
func isUUID(t string) bool {
	switch len(t) {
	case 32, 36, 38, 45:
		_, err := uuid.Parse(t)
		return err == nil
	}
	return false
}

func isIPAddr(t string) bool {
	if strings.HasPrefix(t, "IPv6:") || strings.HasPrefix(t, "ipv6:") {
		t = t[5:]
	}
	_, err := netip.ParseAddr(t)
	return err == nil
}

// isEmail looks for local@domain with a dotted domain.
func isEmail(t string) bool {
	at := strings.LastIndexByte(t, '@')
	if at <= 0 || at == len(t)-1 {
		return false
	}
	domain := t[at+1:]
	if !strings.Contains(domain, ".") || strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") {
		return false
	}
	for _, r := range domain {
		if !(r == '.' || r == '-' || r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r))) {
			return false
		}
	}
	return !strings.ContainsAny(t[:at], " \t<>()[]\\,;:@\"")
}

// isHashLike is a run of letters and digits, optionally split by '.', '-' or '_',
// holding enough of both letters and digits.
func isHashLike(t string) bool {
	if len(t) < hashMinLength {
		return false
	}
	letters, digits := 0, 0
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			letters++
		case c == '.' || c == '-' || c == '_':
		default:
			return false
		}
	}
	return letters >= hashMinLetters && digits >= hashMinDigits
}

// isBase64 is a long token that decodes as base64 or base64url and mixes cases.
func isBase64(t string) bool {
	if len(t) < base64MinLen || !strings.ContainsFunc(t, unicode.IsUpper) || !strings.ContainsFunc(t, unicode.IsLower) {
		return false
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if _, err := enc.Strict().DecodeString(t); err == nil {
			return true
		}
	}
	return false
}
