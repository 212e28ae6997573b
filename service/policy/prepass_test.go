package policy

import (
	"strings"
	"testing"

	lua "github.com/yuin/gopher-lua"
)

// TestPrepass runs chunks through compileChunk: each returns a string built
// from the Lua 5.4 forms the pre-pass translates, compared with what Lua 5.4
// gives, or fails to load with the line and message given.
func TestPrepass(t *testing.T) {
	for _, c := range []struct {
		name, src, want, wantErr string
	}{
		{name: "short comment after --[=", src: "--[=====]--\nreturn 'ok'", want: "ok"},
		{name: "short comment after --[ with text", src: "--[ not long\n--[==x\nreturn 'ok'", want: "ok"},
		{name: "long comments still close", src: "--[==[\n]]\n]==] return 'ok'", want: "ok"},
		{name: "hex escapes", src: `return '\x41\x62\xff' == 'Ab\255'`, want: "true"},
		{name: "hex escape next to digits", src: `return '\x411'`, want: "A1"},
		{name: "z escape skips spaces", src: "return 'a\\z   b'", want: "ab"},
		{name: "z escape keeps line numbers", src: "local s = 'a\\z\n\n   b'\nerror(s)", wantErr: "input:4: ab"},
		{name: "unicode escapes", src: `return '\u{48}\u{E9}\u{20AC}' == 'H\195\169\226\130\172'`, want: "true"},
		{name: "unicode escape beyond Unicode", src: `return #'\u{7FFFFFFF}'`, want: "6"},
		{name: "escaped backslash before x", src: `return '\\x41'`, want: `\x41`},
		{name: "long strings are left alone", src: `return [[\x41]]`, want: `\x41`},
		{name: "hex float numerals", src: "return 0x1p4, 0xA.8, 0x.8, 0x1P-1", want: "16\t10.5\t0.5\t0.5"},
		{name: "hex integers wrap around", src: "return 0xffffffffffffffff, 0x8000000000000000 == -2^63, 0x10000000000000001", want: "-1\ttrue\t1"},
		{name: "names ending in 0 are not numerals", src: "local a0x = 1 return a0x", want: "1"},
		{name: "bad hex escape", src: "local s\n= '\\x4'", wantErr: "input:2: hexadecimal digit expected"},
		{name: "unknown escape", src: `return '\q'`, wantErr: `input:1: invalid escape sequence '\q'`},
		{name: "decimal escape too large", src: `return '\256'`, wantErr: `input:1: decimal escape too large: \256`},
		{name: "bad unicode escape", src: `return '\u{}'`, wantErr: `input:1: invalid \u{XXX} escape`},
		{name: "unicode escape too large", src: `return '\u{80000000}'`, wantErr: `input:1: UTF-8 value too large`},
	} {
		t.Run(c.name, func(t *testing.T) {
			proto, err := compileChunk("input", []byte(c.src))
			if err != nil {
				if c.wantErr == "" || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("load error %v, want %q", err, c.wantErr)
				}
				return
			}
			L := lua.NewState()
			defer L.Close()
			L.Push(L.NewFunctionFromProto(proto))
			err = L.PCall(0, lua.MultRet, nil)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %v, want error %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for i := 1; i <= L.GetTop(); i++ {
				got = append(got, L.Get(i).String())
			}
			if g := strings.Join(got, "\t"); g != c.want {
				t.Errorf("got %q, want %q", g, c.want)
			}
		})
	}
}

// TestPrepassUnchanged: a source without Lua 5.4 forms is returned as it is.
func TestPrepassUnchanged(t *testing.T) {
	src := []byte("-- comment\nlocal s = 'a\\n\\65' .. [[x]] .. 0x10\n")
	got, _, err := prepass(src)
	if err != nil || &got[0] != &src[0] {
		t.Fatalf("prepass changed or copied a 5.1 source: %q, %v", got, err)
	}
}
