package stdlib

import (
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"

	lua "github.com/yuin/gopher-lua"
	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/htmlindex"
	"golang.org/x/text/encoding/ianaindex"
)

// binaryCodec is one of the byte encodings of kumo.encode, also used for the fields
// of digest objects.
type binaryCodec struct {
	name   string
	encode func([]byte) string
	decode func(string) ([]byte, error)
}

// binaryCodecs lists the codecs by the names KumoMTA uses for them.
var binaryCodecs = []binaryCodec{
	{"hex", hex.EncodeToString, hex.DecodeString},
	{"base32", base32.StdEncoding.EncodeToString, base32.StdEncoding.DecodeString},
	{"base32_nopad", base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString, base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString},
	{"base32hex", base32.HexEncoding.EncodeToString, base32.HexEncoding.DecodeString},
	{"base32hex_nopad", base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString, base32.HexEncoding.WithPadding(base32.NoPadding).DecodeString},
	{"base64", base64.StdEncoding.EncodeToString, base64.StdEncoding.Strict().DecodeString},
	{"base64_nopad", base64.RawStdEncoding.EncodeToString, base64.RawStdEncoding.Strict().DecodeString},
	{"base64url", base64.URLEncoding.EncodeToString, base64.URLEncoding.Strict().DecodeString},
	{"base64url_nopad", base64.RawURLEncoding.EncodeToString, base64.RawURLEncoding.Strict().DecodeString},
}

// lookupCodec finds a codec by name.
func lookupCodec(name string) (binaryCodec, bool) {
	for _, c := range binaryCodecs {
		if c.name == name {
			return c, true
		}
	}
	return binaryCodec{}, false
}

func (b *lib) openKumoEncode(L *lua.LState, mod *lua.LTable) {
	for _, c := range binaryCodecs {
		mod.RawSetString(c.name+"_encode", L.NewFunction(b.encodeFunc(c)))
		mod.RawSetString(c.name+"_decode", L.NewFunction(decodeFunc(c)))
	}
	mod.RawSetString("charset_encode", L.NewFunction(b.charsetEncode))
	mod.RawSetString("charset_decode", L.NewFunction(b.charsetDecode))
}

func (b *lib) encodeFunc(c binaryCodec) lua.LGFunction {
	fname := "kumo.encode." + c.name + "_encode"
	return func(L *lua.LState) int {
		s := checkString(L, 1, fname)
		// Base32 is the widest of the codecs: 8 characters for every 5 bytes.
		if len(s)/5*8+8 > b.max {
			tooLarge(L, fname, b.max)
		}
		L.Push(lua.LString(c.encode([]byte(s))))
		return 1
	}
}

func decodeFunc(c binaryCodec) lua.LGFunction {
	fname := "kumo.encode." + c.name + "_decode"
	return func(L *lua.LState) int {
		s := checkString(L, 1, fname)
		out, err := c.decode(s)
		if err != nil {
			L.RaiseError("%s: invalid %s input: %s", fname, c.name, err.Error())
		}
		L.Push(lua.LString(out))
		return 1
	}
}

// lookupCharset finds a charset by its WHATWG label or IANA name, case-insensitively.
func lookupCharset(name string) (encoding.Encoding, error) {
	if e, err := htmlindex.Get(name); err == nil {
		return e, nil
	}
	e, err := ianaindex.IANA.Encoding(name)
	if err != nil || e == nil {
		return nil, errors.New("unknown charset " + strconv.Quote(name))
	}
	return e, nil
}

// charsetEncode is kumo.encode.charset_encode(charset, utf8 [, ignore_errors]):
// characters the charset lacks become its replacement character unless
// ignore_errors is false, when they are an error.
func (b *lib) charsetEncode(L *lua.LState) int {
	const fname = "kumo.encode.charset_encode"
	name := checkString(L, 1, fname)
	s := checkUTF8(L, 2, fname)
	ignore := L.Get(3) != lua.LFalse
	e, err := lookupCharset(name)
	if err != nil {
		argError(L, 1, fname, err.Error())
	}
	if len(s)*4 > b.max {
		tooLarge(L, fname, b.max)
	}
	enc := e.NewEncoder()
	if ignore {
		enc = encoding.ReplaceUnsupported(enc)
	}
	out, err := enc.String(s)
	if err != nil {
		L.RaiseError("%s: cannot represent the input in %s: %s", fname, name, err.Error())
	}
	L.Push(lua.LString(out))
	return 1
}

// charsetDecode is kumo.encode.charset_decode(charset, bytes): the bytes converted to
// UTF-8; bytes that are not valid in the charset are an error.
func (b *lib) charsetDecode(L *lua.LState) int {
	const fname = "kumo.encode.charset_decode"
	name := checkString(L, 1, fname)
	s := checkString(L, 2, fname)
	e, err := lookupCharset(name)
	if err != nil {
		argError(L, 1, fname, err.Error())
	}
	if len(s)*4 > b.max {
		tooLarge(L, fname, b.max)
	}
	out, err := e.NewDecoder().String(s)
	if err != nil {
		L.RaiseError("%s: invalid %s input: %s", fname, name, err.Error())
	}
	if strings.ContainsRune(out, '\uFFFD') && !strings.Contains(s, "\uFFFD") {
		L.RaiseError("%s: invalid %s input", fname, name)
	}
	L.Push(lua.LString(out))
	return 1
}
