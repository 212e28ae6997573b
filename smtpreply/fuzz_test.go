package smtpreply

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// parseReply reads s as exactly one SMTP reply (RFC 5321 §4.2): lines of
// "NNN-text" then one "NNN text", all with the same code, each ended by CRLF,
// with no CR or LF inside a line. It returns the code and the texts.
func parseReply(s string) (string, []string, error) {
	if !strings.HasSuffix(s, "\r\n") {
		return "", nil, fmt.Errorf("not CRLF-terminated: %q", s)
	}
	var code string
	var texts []string
	rest := s
	for rest != "" {
		i := strings.Index(rest, "\r\n")
		line := rest[:i]
		rest = rest[i+2:]
		if strings.ContainsAny(line, "\r\n") {
			return "", nil, fmt.Errorf("bare CR or LF inside line %q", line)
		}
		if len(line) < 4 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '5' || line[2] < '0' || line[2] > '9' {
			return "", nil, fmt.Errorf("line %q does not start with a reply code and a separator", line)
		}
		if code == "" {
			code = line[:3]
		} else if line[:3] != code {
			return "", nil, fmt.Errorf("line %q changes the code from %s", line, code)
		}
		last := rest == ""
		if sep := line[3]; (last && sep != ' ') || (!last && sep != '-') {
			return "", nil, fmt.Errorf("line %q: separator %q, want %q on the last line only", line, sep, ' ')
		}
		texts = append(texts, line[4:])
	}
	return code, texts, nil
}

func TestParseReplyRejects(t *testing.T) {
	for _, bad := range []string{
		"250 ok", "250 a\rb\r\n", "250-a\r\n251 b\r\n", "250 a\r\n250 b\r\n", "250-a\r\n",
		"25 x\r\n", "250x\r\n", "600 x\r\n", "250-a\r\n250-b\r\n",
	} {
		if _, _, err := parseReply(bad); err == nil {
			t.Errorf("parseReply(%q) accepted it", bad)
		}
	}
	code, texts, err := parseReply("250-a\r\n250 \r\n")
	if err != nil || code != "250" || strings.Join(texts, "|") != "a|" {
		t.Errorf("got %q %q %v", code, texts, err)
	}
}

// FuzzWire: every valid reply renders as one well-formed SMTP reply whose
// lines are the sanitised text's lines.
func FuzzWire(f *testing.F) {
	for _, seed := range []struct {
		status int
		text   string
	}{
		{250, "OK"},
		{250, "super fantastic!\nOK ids=8f2a"},
		{250, "a\r\n250 injected"},
		{250, "a\r250 injected"},
		{421, "4.3.2 closing\n"},
		{554, "\n\n"},
		{550, ""},
		{250, "tab\there"},
		{250, "\x00"},
		{999, "x"},
		{250, strings.Repeat("x", MaxTextLine+1)},
		{250, "caf\xc3\xa9"},
		{250, "\xff"},
	} {
		f.Add(seed.status, seed.text)
	}
	f.Fuzz(func(t *testing.T, status int, text string) {
		clean, err := Sanitize(text)
		if err != nil || !ValidStatus(status) {
			// Wire still renders whatever it is given, one CRLF-ended line
			// per Lines entry; it must not panic.
			if got := Wire(status, text); strings.Count(got, "\r\n") < max(1, len(Lines(text))) {
				t.Fatalf("Wire(%d, %q) = %q: fewer lines than the text has", status, text, got)
			}
			return
		}
		checkSanitized(t, text, clean)
		wire := Wire(status, clean)
		code, texts, err := parseReply(wire)
		if err != nil {
			t.Fatalf("Wire(%d, %q) = %q: %v", status, clean, wire, err)
		}
		if code != fmt.Sprint(status) {
			t.Fatalf("Wire(%d, %q) = %q: code %s", status, clean, wire, code)
		}
		if want := Lines(clean); !slices.Equal(texts, want) {
			t.Fatalf("Wire(%d, %q) = %q carries the lines %q, want %q", status, clean, wire, texts, want)
		}
		for _, line := range strings.Split(wire, "\r\n") {
			if len(line)+2 > MaxLineOctets {
				t.Fatalf("Wire(%d, %q): line of %d octets", status, clean, len(line)+2)
			}
		}
	})
}

// checkSanitized asserts what Sanitize promises of a text it accepted.
func checkSanitized(t *testing.T, text, clean string) {
	t.Helper()
	if clean == "" || strings.ContainsRune(clean, '\r') || !utf8.ValidString(clean) {
		t.Fatalf("Sanitize(%q) = %q: empty, CR or invalid UTF-8", text, clean)
	}
	if again, err := Sanitize(clean); err != nil || again != clean {
		t.Fatalf("Sanitize(%q) = %q, but Sanitize(%q) = %q, %v: not idempotent", text, clean, clean, again, err)
	}
	if got, want := Lines(clean), Lines(text); !slices.Equal(got, want) {
		t.Fatalf("Sanitize(%q) = %q changes the lines from %q to %q", text, clean, want, got)
	}
	for _, c := range []byte(clean) {
		if c < 0x20 && c != '\t' && c != '\n' || c == 0x7f {
			t.Fatalf("Sanitize(%q) = %q keeps control byte 0x%02x", text, clean, c)
		}
	}
}

// FuzzSanitize: an accepted text keeps its lines, loses its CRs and is
// accepted unchanged the second time; a refused one says why.
func FuzzSanitize(f *testing.F) {
	for _, seed := range []string{"OK", "a\r\nb\r\n", "a\n\nb", "\n", "\r\n", "a\rb", "\x7f", "\t", strings.Repeat("é", 300)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		clean, err := Sanitize(text)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("Sanitize(%q): empty error", text)
			}
			return
		}
		checkSanitized(t, text, clean)
	})
}
