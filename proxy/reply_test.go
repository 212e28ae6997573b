package proxy

import (
	"bufio"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/rewrited/rewrited/smtpreply"
)

func TestReadReply(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		status   int
		lines    []string
		err      error
	}{
		{"one line", "250 2.0.0 Ok\r\n", 250, []string{"2.0.0 Ok"}, nil},
		{"multi-line", "250-mx.test\r\n250-PIPELINING\r\n250 SIZE 1000\r\n", 250, []string{"mx.test", "PIPELINING", "SIZE 1000"}, nil},
		{"bare code", "354\r\n", 354, []string{""}, nil},
		{"bare LF", "221 bye\n", 221, []string{"bye"}, nil},
		{"no code", "hello\r\n", 0, nil, errBadReply},
		{"bad separator", "250_ok\r\n", 0, nil, errBadReply},
		{"invalid status", "999 what\r\n", 0, nil, errBadReply},
		{"status changes", "250-a\r\n550 b\r\n", 0, nil, errBadReply},
		{"line too long", "250 " + strings.Repeat("x", 5000) + "\r\n", 0, nil, errBadReply},
		{"too many lines", strings.Repeat("250-x\r\n", maxReplyLines+1) + "250 x\r\n", 0, nil, errBadReply},
		{"closed mid-reply", "250-first\r\n", 0, nil, io.EOF},
		{"closed mid-line", "250 fir", 0, nil, io.EOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, lines, err := readReply(bufio.NewReaderSize(strings.NewReader(tc.in), ioBuffer))
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil || status != tc.status || !slices.Equal(lines, tc.lines) {
				t.Errorf("got %d %q %v, want %d %q", status, lines, err, tc.status, tc.lines)
			}
		})
	}
}

func TestFilterEHLO(t *testing.T) {
	in := []string{"mx.test", "PIPELINING", "SIZE 10240000", "STARTTLS", "AUTH PLAIN LOGIN", "XCLIENT NAME ADDR",
		"XFORWARD NAME ADDR", "CHUNKING", "binarymime", "8BITMIME", "SMTPUTF8"}
	want := []string{"mx.test", "PIPELINING", "SIZE 10240000", "AUTH PLAIN LOGIN", "8BITMIME", "SMTPUTF8"}
	if got := filterEHLO(in, false); !slices.Equal(got, want) {
		t.Errorf("without TLS: %q, want %q", got, want)
	}
	if got := filterEHLO(in, true); !slices.Equal(got, append(want, "STARTTLS")) {
		t.Errorf("with TLS: %q, want STARTTLS added once", got)
	}
	if !hasExtension(in, "xclient") || hasExtension(in, "mx.test") {
		t.Error("hasExtension must match keywords, case-insensitively, and not the greeting line")
	}
}

func TestReadLine(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     string
		err      error
	}{
		{"command", "MAIL FROM:<a@b>\r\n", "MAIL FROM:<a@b>", nil},
		{"bare LF", "NOOP\n", "NOOP", nil},
		{"at the limit", strings.Repeat("x", maxCommandLine-2) + "\r\n", strings.Repeat("x", maxCommandLine-2), nil},
		{"over the limit", strings.Repeat("x", maxCommandLine-1) + "\r\n", "", errLineTooLong},
		{"endless", strings.Repeat("x", 2*maxDiscard), "", errGarbage},
		{"half a line", "NOO", "", io.EOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readLine(bufio.NewReaderSize(strings.NewReader(tc.in), ioBuffer), maxCommandLine)
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Errorf("got %q, %v; want %q, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

// FuzzReadReply: whatever a backend sends, readReply returns an error or a
// reply with a valid status and at most maxReplyLines lines, none holding a
// line feed.
func FuzzReadReply(f *testing.F) {
	for _, s := range []string{"250 ok\r\n", "250-a\r\n250 b\r\n", "354\r\n", "hello\r\n", "250-a\r\n550 b\r\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		status, lines, err := readReply(bufio.NewReaderSize(strings.NewReader(in), ioBuffer))
		if err != nil {
			return
		}
		if !smtpreply.ValidStatus(status) || len(lines) == 0 || len(lines) > maxReplyLines {
			t.Fatalf("accepted %d %q", status, lines)
		}
		for _, l := range lines {
			if strings.ContainsAny(l, "\n") {
				t.Fatalf("line %q holds a line feed", l)
			}
		}
	})
}
