package stdlib

import (
	"encoding/binary"
	"math"
	"strings"

	lua "github.com/yuin/gopher-lua"
)

// openPack adds Lua 5.4's string.pack, string.unpack and string.packsize (§6.4.2),
// for a 64-bit little-endian machine as KumoMTA runs on. Integers are exact up to
// 2^53, like every number in rewrited.
func (b *lib) openPack(L *lua.LState) {
	setFuncs(L, globalTable(L, "string"), map[string]lua.LGFunction{
		"pack":     b.strPack,
		"unpack":   strUnpack,
		"packsize": strPackSize,
	})
}

// packKind is the kind of one format option.
type packKind int

const (
	kInt packKind = iota
	kUint
	kFloat
	kDouble
	kChar
	kString
	kZstr
	kPadding
	kPaddAlign
	kNop
)

const (
	maxIntSize    = 16        // largest i[n]
	nativeAlign   = 8         // what '!' without a size selects
	maxPackedSize = 1<<31 - 1 // MAXSIZE: Lua 5.4 keeps sizes within a C int
)

// packFormat reads a pack format option by option, with its state: the
// endianness and the maximum alignment.
type packFormat struct {
	L        *lua.LState
	fname    string
	fmt      string
	i        int
	little   bool
	maxAlign int
}

func newPackFormat(L *lua.LState, fname string) *packFormat {
	return &packFormat{L: L, fname: fname, fmt: checkString(L, 1, fname), little: true, maxAlign: 1}
}

func (p *packFormat) more() bool { return p.i < len(p.fmt) }

// num reads an optional size, or returns def.
func (p *packFormat) num(def int) int {
	if !p.more() || p.fmt[p.i] < '0' || p.fmt[p.i] > '9' {
		return def
	}
	a := 0
	for p.more() && p.fmt[p.i] >= '0' && p.fmt[p.i] <= '9' && a <= (maxPackedSize-9)/10 {
		a = a*10 + int(p.fmt[p.i]-'0')
		p.i++
	}
	return a
}

func (p *packFormat) numLimit(def int) int {
	n := p.num(def)
	if n > maxIntSize || n <= 0 {
		p.L.RaiseError("integral size (%d) out of limits [1,%d]", n, maxIntSize)
	}
	return n
}

// option reads one option and its size.
func (p *packFormat) option() (packKind, int) {
	c := p.fmt[p.i]
	p.i++
	switch c {
	case 'b':
		return kInt, 1
	case 'B':
		return kUint, 1
	case 'h':
		return kInt, 2
	case 'H':
		return kUint, 2
	case 'l', 'j':
		return kInt, 8
	case 'L', 'J', 'T':
		return kUint, 8
	case 'f':
		return kFloat, 4
	case 'n', 'd':
		return kDouble, 8
	case 'i':
		return kInt, p.numLimit(4)
	case 'I':
		return kUint, p.numLimit(4)
	case 's':
		return kString, p.numLimit(8)
	case 'c':
		n := p.num(-1)
		if n == -1 {
			raise(p.L, "missing size for format option 'c'")
		}
		return kChar, n
	case 'z':
		return kZstr, 0
	case 'x':
		return kPadding, 1
	case 'X':
		return kPaddAlign, 0
	case ' ':
	case '<', '=':
		p.little = true
	case '>':
		p.little = false
	case '!':
		p.maxAlign = p.numLimit(nativeAlign)
	default:
		p.L.RaiseError("invalid format option '%c'", c)
	}
	return kNop, 0
}

// details reads the next option and the padding that aligns it at offset total.
func (p *packFormat) details(total int) (kind packKind, size, pad int) {
	kind, size = p.option()
	align := size
	if kind == kPaddAlign {
		if !p.more() {
			argError(p.L, 1, p.fname, "invalid next option for option 'X'")
		}
		var next packKind
		next, align = p.option()
		if next == kChar || align == 0 {
			argError(p.L, 1, p.fname, "invalid next option for option 'X'")
		}
	}
	if align <= 1 || kind == kChar {
		return kind, size, 0
	}
	align = min(align, p.maxAlign)
	if align&(align-1) != 0 {
		argError(p.L, 1, p.fname, "format asks for alignment not power of 2")
	}
	return kind, size, (align - total&(align-1)) & (align - 1)
}

// packInt appends the size low bytes of n, sign-extended beyond eight bytes.
func packInt(out *strings.Builder, n uint64, little bool, size int, negative bool) {
	buf := make([]byte, size)
	for i := 0; i < size; i++ {
		var v byte
		if i < 8 {
			v = byte(n >> (8 * i))
		} else if negative {
			v = 0xff
		}
		if little {
			buf[i] = v
		} else {
			buf[size-1-i] = v
		}
	}
	out.Write(buf)
}

func (b *lib) strPack(L *lua.LState) int {
	const fname = "pack"
	p := newPackFormat(L, fname)
	// Lua 5.4 leaves a nil above the arguments, so the first missing value is "nil".
	L.Push(lua.LNil)
	var out strings.Builder
	arg := 1
	for p.more() {
		kind, size, pad := p.details(out.Len())
		if out.Len()+pad+size > b.max {
			tooLarge(L, "string.pack", b.max)
		}
		out.WriteString(strings.Repeat("\x00", pad))
		arg++
		switch kind {
		case kInt, kUint:
			n := checkInteger(L, arg, fname)
			if size < 8 {
				if kind == kInt {
					lim := int64(1) << (size*8 - 1)
					if n < -lim || n >= lim {
						argError(L, arg, fname, "integer overflow")
					}
				} else if uint64(n) >= uint64(1)<<(size*8) {
					argError(L, arg, fname, "unsigned overflow")
				}
			}
			packInt(&out, uint64(n), p.little, size, kind == kInt && n < 0)
		case kFloat:
			var buf [4]byte
			bits := math.Float32bits(float32(checkNumber(L, arg, fname)))
			if p.little {
				binary.LittleEndian.PutUint32(buf[:], bits)
			} else {
				binary.BigEndian.PutUint32(buf[:], bits)
			}
			out.Write(buf[:])
		case kDouble:
			var buf [8]byte
			bits := math.Float64bits(checkNumber(L, arg, fname))
			if p.little {
				binary.LittleEndian.PutUint64(buf[:], bits)
			} else {
				binary.BigEndian.PutUint64(buf[:], bits)
			}
			out.Write(buf[:])
		case kChar:
			s := checkString(L, arg, fname)
			if len(s) > size {
				argError(L, arg, fname, "string longer than given size")
			}
			out.WriteString(s)
			out.WriteString(strings.Repeat("\x00", size-len(s)))
		case kString:
			s := checkString(L, arg, fname)
			if size < 8 && uint64(len(s)) >= uint64(1)<<(size*8) {
				argError(L, arg, fname, "string length does not fit in given size")
			}
			if out.Len()+len(s) > b.max {
				tooLarge(L, "string.pack", b.max)
			}
			packInt(&out, uint64(len(s)), p.little, size, false)
			out.WriteString(s)
		case kZstr:
			s := checkString(L, arg, fname)
			if strings.IndexByte(s, 0) >= 0 {
				argError(L, arg, fname, "string contains zeros")
			}
			if out.Len()+len(s) > b.max {
				tooLarge(L, "string.pack", b.max)
			}
			out.WriteString(s)
			out.WriteByte(0)
		case kPadding:
			out.WriteByte(0)
			arg--
		default:
			arg--
		}
	}
	L.Push(lua.LString(out.String()))
	return 1
}

// unpackInt reads a size-byte integer; beyond eight bytes the extra bytes must
// only extend the sign.
func unpackInt(L *lua.LState, s string, little bool, size int, signed bool) int64 {
	at := func(i int) byte {
		if little {
			return s[i]
		}
		return s[size-1-i]
	}
	limit := min(size, 8)
	var res uint64
	for i := limit - 1; i >= 0; i-- {
		res = res<<8 | uint64(at(i))
	}
	switch {
	case size < 8 && signed:
		mask := uint64(1) << (size*8 - 1)
		res = (res ^ mask) - mask
	case size > 8:
		var ext byte
		if signed && int64(res) < 0 {
			ext = 0xff
		}
		for i := limit; i < size; i++ {
			if at(i) != ext {
				L.RaiseError("%d-byte integer does not fit into Lua Integer", size)
			}
		}
	}
	return int64(res)
}

func strUnpack(L *lua.LState) int {
	const fname = "unpack"
	p := newPackFormat(L, fname)
	data := checkString(L, 2, fname)
	pos := int(startIndex(optInteger(L, 3, fname, 1), len(data))) - 1
	if pos > len(data) {
		argError(L, 3, fname, "initial position out of string")
	}
	n := 0
	for p.more() {
		kind, size, pad := p.details(pos)
		if pad+size > len(data)-pos {
			argError(L, 2, fname, "data string too short")
		}
		pos += pad
		n++
		switch kind {
		case kInt, kUint:
			L.Push(lua.LNumber(unpackInt(L, data[pos:pos+size], p.little, size, kind == kInt)))
		case kFloat:
			bits := binary.LittleEndian.Uint32([]byte(data[pos : pos+4]))
			if !p.little {
				bits = binary.BigEndian.Uint32([]byte(data[pos : pos+4]))
			}
			L.Push(lua.LNumber(math.Float32frombits(bits)))
		case kDouble:
			bits := binary.LittleEndian.Uint64([]byte(data[pos : pos+8]))
			if !p.little {
				bits = binary.BigEndian.Uint64([]byte(data[pos : pos+8]))
			}
			L.Push(lua.LNumber(math.Float64frombits(bits)))
		case kChar:
			L.Push(lua.LString(data[pos : pos+size]))
		case kString:
			length := uint64(unpackInt(L, data[pos:pos+size], p.little, size, false))
			if length > uint64(len(data)-pos-size) {
				argError(L, 2, fname, "data string too short")
			}
			L.Push(lua.LString(data[pos+size : pos+size+int(length)]))
			pos += int(length)
		case kZstr:
			end := strings.IndexByte(data[pos:], 0)
			if end < 0 {
				argError(L, 2, fname, "unfinished string for format 'z'")
			}
			L.Push(lua.LString(data[pos : pos+end]))
			pos += end + 1
		default:
			n--
		}
		if n >= maxLoopItems {
			raise(L, "too many results")
		}
		pos += size
	}
	L.Push(lua.LNumber(pos + 1))
	return n + 1
}

func strPackSize(L *lua.LState) int {
	p := newPackFormat(L, "packsize")
	total := 0
	for p.more() {
		kind, size, pad := p.details(total)
		if kind == kString || kind == kZstr {
			argError(L, 1, "packsize", "variable-length format")
		}
		size += pad
		if total > maxPackedSize-size {
			argError(L, 1, "packsize", "format result too large")
		}
		total += size
	}
	L.Push(lua.LNumber(total))
	return 1
}
