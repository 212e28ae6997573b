package stdlib

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha3"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"hash/crc32"

	lua "github.com/yuin/gopher-lua"
)

const digestTypeName = "kumo.digest"

// digests are the algorithms of kumo.digest by KumoMTA's names.
var digests = []struct {
	name string
	new  func() hash.Hash
}{
	{"sha1", sha1.New},
	{"sha224", sha256.New224},
	{"sha256", sha256.New},
	{"sha384", sha512.New384},
	{"sha512", sha512.New},
	{"sha512_256", sha512.New512_256},
	{"sha3_256", func() hash.Hash { return sha3.New256() }},
	{"sha3_384", func() hash.Hash { return sha3.New384() }},
	{"sha3_512", func() hash.Hash { return sha3.New512() }},
}

// hmacDigests are the digests KumoMTA offers HMAC variants (hmac_NAME) of.
var hmacDigests = map[string]bool{"sha1": true, "sha224": true, "sha256": true, "sha384": true, "sha512": true}

func (b *lib) openKumoDigest(L *lua.LState, mod *lua.LTable) {
	mt := L.NewTypeMetatable(digestTypeName)
	mt.RawSetString("__index", L.NewFunction(digestIndex))
	mt.RawSetString("__tostring", L.NewFunction(digestString))
	mt.RawSetString("__eq", L.NewFunction(digestEq))
	for _, d := range digests {
		mod.RawSetString(d.name, L.NewFunction(b.digestFunc("kumo.digest."+d.name, d.new)))
		if hmacDigests[d.name] {
			mod.RawSetString("hmac_"+d.name, L.NewFunction(b.hmacFunc("kumo.digest.hmac_"+d.name, d.new)))
		}
	}
	mod.RawSetString("crc32", L.NewFunction(b.digestFunc("kumo.digest.crc32", func() hash.Hash { return crc32.NewIEEE() })))
}

func pushDigest(L *lua.LState, sum []byte) {
	ud := L.NewUserData()
	ud.Value = sum
	ud.Metatable = L.GetTypeMetatable(digestTypeName)
	L.Push(ud)
}

// digestFunc hashes every argument in turn: strings as their bytes, other values as
// their JSON encoding, as KumoMTA does.
func (b *lib) digestFunc(fname string, newHash func() hash.Hash) lua.LGFunction {
	return func(L *lua.LState) int {
		h := newHash()
		for i := 1; i <= L.GetTop(); i++ {
			h.Write(b.digestInput(L, i, i, fname))
		}
		sum := h.Sum(nil)
		if len(sum) == crc32.Size {
			// The checksum is the big-endian bytes of the CRC value, as Sum gives them.
			sum = binary.BigEndian.AppendUint32(nil, binary.BigEndian.Uint32(sum))
		}
		pushDigest(L, sum)
		return 1
	}
}

// digestInput is argument n as the bytes a digest reads.
func (b *lib) digestInput(L *lua.LState, n, shown int, fname string) []byte {
	if s, ok := L.Get(n).(lua.LString); ok {
		return []byte(s)
	}
	v, err := ToGo(L.Get(n))
	if err != nil {
		argError(L, shown, fname, err.Error())
	}
	w := jsonWriter{max: b.max}
	if err := w.value(v, 0); err != nil {
		tooLarge(L, fname, b.max)
	}
	return w.buf
}

// hmacFunc is kumo.digest.hmac_*(key, message) with key a KeySource: a table with
// key_data, or a file name read through Limits.ReadFile.
func (b *lib) hmacFunc(fname string, newHash func() hash.Hash) lua.LGFunction {
	return func(L *lua.LState) int {
		key := b.keySource(L, 1, fname)
		mac := hmac.New(newHash, key)
		mac.Write(b.digestInput(L, 2, 2, fname))
		pushDigest(L, mac.Sum(nil))
		return 1
	}
}

// keySource reads a KumoMTA KeySource argument.
func (b *lib) keySource(L *lua.LState, n int, fname string) []byte {
	switch v := L.Get(n).(type) {
	case lua.LString:
		return b.loadFile(L, fname, string(v))
	case *lua.LTable:
		if data, ok := v.RawGetString("key_data").(lua.LString); ok {
			return []byte(data)
		}
		if v.RawGetString("vault_path") != lua.LNil {
			argError(L, n, fname, "vault key sources are not available")
		}
		argError(L, n, fname, "key source table needs a key_data string")
	default:
		typeError(L, n, fname, "key source (file name or table)")
	}
	return nil
}

func checkDigest(L *lua.LState, n int) []byte {
	if ud, ok := L.Get(n).(*lua.LUserData); ok {
		if sum, ok := ud.Value.([]byte); ok {
			return sum
		}
	}
	typeError(L, n, "digest", "digest")
	return nil
}

func digestIndex(L *lua.LState) int {
	sum := checkDigest(L, 1)
	field := L.CheckString(2)
	if field == "bytes" {
		L.Push(lua.LString(sum))
		return 1
	}
	c, ok := lookupCodec(field)
	if !ok {
		L.Push(lua.LNil)
		return 1
	}
	L.Push(lua.LString(c.encode(sum)))
	return 1
}

func digestString(L *lua.LState) int {
	L.Push(lua.LString(hex.EncodeToString(checkDigest(L, 1))))
	return 1
}

func digestEq(L *lua.LState) int {
	L.Push(lua.LBool(hmac.Equal(checkDigest(L, 1), checkDigest(L, 2))))
	return 1
}
