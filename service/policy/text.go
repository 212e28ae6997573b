package policy

import (
	"strings"
	"unicode/utf8"
)

// MaxEchoBytes is how much of a value a client sent an error or a log line
// repeats: enough to recognise it, too little to fill a disk.
const MaxEchoBytes = 256

// BoundText returns s as valid UTF-8 of at most maxBytes bytes, cut at a
// character boundary and marked with "…" when cut: text from a policy or a
// request, bounded before it goes into a response or a log line.
func BoundText(s string, maxBytes int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= maxBytes {
		return s
	}
	cut := maxBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
