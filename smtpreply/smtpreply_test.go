package smtpreply

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestValidStatus(t *testing.T) {
	for _, tc := range []struct {
		code int
		want bool
	}{
		{199, false}, {200, true}, {250, true}, {354, true}, {421, true},
		{451, true}, {550, true}, {554, true}, {559, true}, {560, false},
		{599, false}, {600, false}, {999, false}, {0, false}, {-250, false}, {260, false}, {299, false},
	} {
		if got := ValidStatus(tc.code); got != tc.want {
			t.Errorf("ValidStatus(%d) = %v, want %v", tc.code, got, tc.want)
		}
		if err := CheckStatus(tc.code); (err == nil) != tc.want {
			t.Errorf("CheckStatus(%d) = %v", tc.code, err)
		}
	}
}

func TestLines(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"OK", []string{"OK"}},
		{"a\nb", []string{"a", "b"}},
		{"a\r\nb\r\n", []string{"a", "b"}},
		{"a\n", []string{"a"}},
		{"a\n\nb", []string{"a", "", "b"}},
		{"\n", []string{""}},
		{"a\n\n", []string{"a", ""}},
		{"a\rb", []string{"a\rb"}},
	} {
		if got := Lines(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Lines(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSanitize(t *testing.T) {
	long := strings.Repeat("x", MaxTextLine)
	for _, tc := range []struct {
		in      string
		want    string
		wantErr error
	}{
		{"OK", "OK", nil},
		{"a\r\nb", "a\nb", nil},
		{"a\nb\n", "a\nb", nil},
		{"a\tb", "a\tb", nil},
		{"héllo", "héllo", nil},
		{long, long, nil},
		{"a\n" + long, "a\n" + long, nil},
		{long + "x", "", ErrLongLine},
		{"a\n" + long + "x\nb", "", ErrLongLine},
		{"", "", ErrEmptyText},
		{"\n", "", ErrEmptyText},
		{"\r\n", "", ErrEmptyText},
		{"a\rb", "", ErrControlChar},
		{"a\r", "", ErrControlChar},
		{"a\x00b", "", ErrControlChar},
		{"a\x1bb", "", ErrControlChar},
		{"a\x7f", "", ErrControlChar},
		{"OK\r\n250 injected", "OK\n250 injected", nil},
		{"a\n\n", "a\n\n", nil},
		{"a\r\n\r\n", "a\n\n", nil},
		{"a\n\nb", "a\n\nb", nil},
		{"\nb", "\nb", nil},
		{"\n\n", "", ErrEmptyText},
		{" \t\n ", "", ErrEmptyText},
		{"caf\xe9", "", ErrUTF8},
	} {
		got, err := Sanitize(tc.in)
		if !errors.Is(err, tc.wantErr) || got != tc.want {
			t.Errorf("Sanitize(%q) = %q, %v; want %q, %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

// TestSanitizeKeepsLines checks that sanitising never changes the lines a
// reply is made of, and that sanitised text is left as it is.
func TestSanitizeKeepsLines(t *testing.T) {
	for _, in := range []string{"a", "a\n", "a\n\n", "a\r\n\r\nb\r\n", "\nb", "x\n\n\n", "a\nb\n\n"} {
		out, err := Sanitize(in)
		if err != nil {
			t.Fatalf("Sanitize(%q): %v", in, err)
		}
		if !reflect.DeepEqual(Lines(out), Lines(in)) {
			t.Errorf("Sanitize(%q) = %q: lines %q, want %q", in, out, Lines(out), Lines(in))
		}
		if again, err := Sanitize(out); err != nil || again != out {
			t.Errorf("Sanitize(%q) = %q, %v; want it unchanged", out, again, err)
		}
	}
}

func TestWire(t *testing.T) {
	for _, tc := range []struct {
		status int
		text   string
		want   string
	}{
		{250, "OK", "250 OK\r\n"},
		{250, "super fantastic!\nOK ids=1", "250-super fantastic!\r\n250 OK ids=1\r\n"},
		{250, "a\r\nb\r\n", "250-a\r\n250 b\r\n"},
		{421, "a\n\nb", "421-a\r\n421-\r\n421 b\r\n"},
		{220, "", "220 \r\n"},
	} {
		if got := Wire(tc.status, tc.text); got != tc.want {
			t.Errorf("Wire(%d, %q) = %q, want %q", tc.status, tc.text, got, tc.want)
		}
	}
}

func BenchmarkSanitizeClean(b *testing.B) {
	text := "super fantastic!\nOK ids=8f2a"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Sanitize(text); err != nil {
			b.Fatal(err)
		}
	}
}
