package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"strings"

	"github.com/rewrited/rewrited/smtpreply"
)

// Bounds of a backend reply: generous against real MTAs, finite against a
// broken one.
const (
	maxReplyLine  = 4096
	maxReplyLines = 256
)

// errBadReply marks a backend reply that is not RFC 5321 syntax.
var errBadReply = errors.New("invalid reply from backend")

// readReply reads one possibly multi-line reply: the status and the lines'
// texts (enhanced status codes stay part of the text).
func readReply(r *bufio.Reader) (int, []string, error) {
	var (
		status int
		lines  []string
	)
	for {
		raw, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) || len(raw) > maxReplyLine {
			return 0, nil, fmt.Errorf("%w: line longer than %d octets", errBadReply, maxReplyLine)
		}
		if err != nil {
			return 0, nil, err
		}
		line := strings.TrimRight(string(raw), "\r\n")
		code, sep, text, ok := splitReplyLine(line)
		if !ok {
			return 0, nil, fmt.Errorf("%w: %q", errBadReply, truncate(line, 64))
		}
		if status != 0 && code != status {
			return 0, nil, fmt.Errorf("%w: status %d inside a %d reply", errBadReply, code, status)
		}
		status = code
		lines = append(lines, text)
		if sep != '-' {
			return status, lines, nil
		}
		if len(lines) >= maxReplyLines {
			return 0, nil, fmt.Errorf("%w: more than %d lines", errBadReply, maxReplyLines)
		}
	}
}

// splitReplyLine splits "250-text", "250 text" and "250".
func splitReplyLine(line string) (code int, sep byte, text string, ok bool) {
	if len(line) < 3 {
		return 0, 0, "", false
	}
	for i := range 3 {
		if line[i] < '0' || line[i] > '9' {
			return 0, 0, "", false
		}
	}
	code = int(line[0]-'0')*100 + int(line[1]-'0')*10 + int(line[2]-'0')
	if !smtpreply.ValidStatus(code) {
		return 0, 0, "", false
	}
	if len(line) == 3 {
		return code, ' ', "", true
	}
	if line[3] != ' ' && line[3] != '-' {
		return 0, 0, "", false
	}
	return code, line[3], line[4:], true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// droppedExtensions are EHLO keywords the proxy does not relay: BDAT chunks
// are not parsed (CHUNKING, and BINARYMIME which needs it), TLS is the
// proxy's own (STARTTLS), and the client address is the proxy's to send
// (XCLIENT, XFORWARD).
var droppedExtensions = map[string]bool{
	"CHUNKING":   true,
	"BINARYMIME": true,
	"STARTTLS":   true,
	"XCLIENT":    true,
	"XFORWARD":   true,
}

// filterEHLO removes the dropped extensions from an EHLO reply's lines and
// adds STARTTLS when the proxy offers it.
func filterEHLO(lines []string, offerTLS bool) []string {
	out := make([]string, 0, len(lines)+1)
	for i, l := range lines {
		if i > 0 && droppedExtensions[strings.ToUpper(firstWord(l))] {
			continue
		}
		out = append(out, l)
	}
	if offerTLS {
		out = append(out, "STARTTLS")
	}
	return out
}

// hasExtension reports whether an EHLO reply offers keyword.
func hasExtension(lines []string, keyword string) bool {
	for _, l := range lines[min(1, len(lines)):] {
		if strings.EqualFold(firstWord(l), keyword) {
			return true
		}
	}
	return false
}

func firstWord(s string) string {
	if i := strings.IndexAny(s, " \t"); i >= 0 {
		return s[:i]
	}
	return s
}
