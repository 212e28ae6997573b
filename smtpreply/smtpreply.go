// Package smtpreply holds the SMTP reply rules shared by the server and the
// client: status-code validity, KumoMTA's line splitting, text sanitising and
// the wire format.
package smtpreply

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxLineOctets is RFC 5321's limit for one reply line, code and CRLF included.
const MaxLineOctets = 512

// MaxTextLine is the longest text one reply line may carry: the limit less
// the three-digit code, the separator and the CRLF.
const MaxTextLine = MaxLineOctets - 6

// Errors returned by CheckStatus and Sanitize; wrapped with the detail.
var (
	ErrStatus      = errors.New("invalid SMTP status")
	ErrEmptyText   = errors.New("empty reply text")
	ErrControlChar = errors.New("control character in reply text")
	ErrLongLine    = errors.New("reply line too long")
	ErrUTF8        = errors.New("reply text is not valid UTF-8")
)

// ValidStatus reports whether code is a valid SMTP reply code: 2xx to 5xx
// with a second digit from 0 to 5.
func ValidStatus(code int) bool {
	return code >= 200 && code <= 559 && (code/10)%10 <= 5
}

// CheckStatus returns an error naming code when it is not a valid SMTP reply code.
func CheckStatus(code int) error {
	if !ValidStatus(code) {
		return fmt.Errorf("%w %d: want 200-559 with a second digit 0-5", ErrStatus, code)
	}
	return nil
}

// Lines splits text as Rust's str::lines does, which is how KumoMTA splits a
// reply: on "\n" and "\r\n", with a trailing line ending adding no line.
func Lines(text string) []string {
	if text == "" {
		return nil
	}
	lines := make([]string, 0, strings.Count(text, "\n")+1)
	for text != "" {
		i := strings.IndexByte(text, '\n')
		if i < 0 {
			lines = append(lines, text)
			break
		}
		lines = append(lines, strings.TrimSuffix(text[:i], "\r"))
		text = text[i+1:]
	}
	return lines
}

// Sanitize checks reply text and returns it with every "\r\n" turned into
// "\n" and a trailing line ending removed; Lines gives the same lines for the
// result as for text, and Sanitize returns the result unchanged. It refuses
// text with no visible character (empty or blank lines only), a bare CR,
// NUL and other control characters (TAB is allowed, as RFC 5321 allows it),
// lines longer than MaxTextLine octets, and invalid UTF-8 (SMTPUTF8 allows
// UTF-8; anything else cannot travel in a protobuf string). Text that needs no change is
// returned as is, without allocating.
func Sanitize(text string) (string, error) {
	clean, ascii := true, true
	lineStart, lineNo := 0, 1
	for i := 0; i < len(text); i++ {
		// Skip the run of printable ASCII, most of any reply, with one
		// table lookup per byte.
		for i < len(text) && plain[text[i]] {
			i++
		}
		if i == len(text) {
			break
		}
		c := text[i]
		switch {
		case c >= 0x80:
			ascii = false
		case c == '\n':
			if err := checkLineLength(i-lineStart, lineNo); err != nil {
				return "", err
			}
			lineStart, lineNo = i+1, lineNo+1
		case c == '\r':
			if i+1 >= len(text) || text[i+1] != '\n' {
				return "", fmt.Errorf("%w: bare CR at byte %d", ErrControlChar, i)
			}
			clean = false
			if err := checkLineLength(i-lineStart, lineNo); err != nil {
				return "", err
			}
			i++
			lineStart, lineNo = i+1, lineNo+1
		case c < 0x20 && c != '\t', c == 0x7f:
			return "", fmt.Errorf("%w: byte 0x%02x at byte %d", ErrControlChar, c, i)
		}
	}
	if err := checkLineLength(len(text)-lineStart, lineNo); err != nil {
		return "", err
	}
	if !ascii && !utf8.ValidString(text) {
		return "", ErrUTF8
	}
	if strings.TrimSpace(text) == "" {
		return "", ErrEmptyText
	}
	if strings.HasSuffix(text, "\n") && !strings.HasSuffix(text, "\n\n") {
		clean = false
	}
	if !clean {
		text = normalize(text)
	}
	return text, nil
}

// normalize rewrites text with "\n" between lines and without the line
// ending that Lines ignores, so that Lines gives the same lines for both. A
// last line that is empty keeps one "\n" after it, which Lines needs to see it.
func normalize(text string) string {
	lines := Lines(text)
	out := strings.Join(lines, "\n")
	if lines[len(lines)-1] == "" {
		out += "\n"
	}
	return out
}

// plain marks the bytes Sanitize passes over: printable ASCII and TAB.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = true
	}
	t['\t'] = true
	return t
}()

func checkLineLength(n, lineNo int) error {
	if n > MaxTextLine {
		return fmt.Errorf("%w: line %d has %d octets, the limit is %d", ErrLongLine, lineNo, n, MaxTextLine)
	}
	return nil
}

// Wire renders a reply as written on the wire: "NNN-" before every line but
// the last, "NNN " before the last, each line ended by CRLF. Empty text is
// written as one line holding just the code.
func Wire(status int, text string) string {
	code := strconv.Itoa(status)
	lines := Lines(text)
	if len(lines) == 0 {
		return code + " \r\n"
	}
	var b strings.Builder
	b.Grow(len(text) + len(lines)*(len(code)+3))
	for i, line := range lines {
		b.WriteString(code)
		if i == len(lines)-1 {
			b.WriteByte(' ')
		} else {
			b.WriteByte('-')
		}
		b.WriteString(line)
		b.WriteString("\r\n")
	}
	return b.String()
}
