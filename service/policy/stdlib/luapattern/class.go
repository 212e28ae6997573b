package luapattern

// Character class bits, with the C locale's <ctype.h> meaning: bytes above 0x7F
// belong to no class.
const (
	clAlpha uint16 = 1 << iota
	clCntrl
	clDigit
	clGraph
	clLower
	clPunct
	clSpace
	clUpper
	clAlnum
	clXdigit
)

// classes holds the class bits of every byte.
var classes = func() (t [256]uint16) {
	for c := 0; c < 0x80; c++ {
		var bits uint16
		lower := c >= 'a' && c <= 'z'
		upper := c >= 'A' && c <= 'Z'
		digit := c >= '0' && c <= '9'
		if lower {
			bits |= clLower | clAlpha | clAlnum
		}
		if upper {
			bits |= clUpper | clAlpha | clAlnum
		}
		if digit {
			bits |= clDigit | clAlnum | clXdigit
		}
		if c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' {
			bits |= clXdigit
		}
		if c < 0x20 || c == 0x7F {
			bits |= clCntrl
		}
		if c > 0x20 && c < 0x7F {
			bits |= clGraph
			if !lower && !upper && !digit {
				bits |= clPunct
			}
		}
		if c == ' ' || c >= '\t' && c <= '\r' {
			bits |= clSpace
		}
		t[c] = bits
	}
	return t
}()

// classBits maps a lower-case class letter to its bits; 'z' (NUL) is handled apart.
var classBits = [...]uint16{
	'a': clAlpha, 'c': clCntrl, 'd': clDigit, 'g': clGraph, 'l': clLower,
	'p': clPunct, 's': clSpace, 'u': clUpper, 'w': clAlnum, 'x': clXdigit,
}

// matchClass reports whether c matches the class letter cl of "%cl": a lower-case
// letter selects a class, its upper-case form the complement, and any other character
// stands for itself.
func matchClass(c, cl byte) bool {
	lower := cl | 0x20 // ASCII tolower for letters; only letters are looked up below
	isLetter := lower >= 'a' && lower <= 'z'
	var res bool
	switch {
	case isLetter && lower == 'z':
		res = c == 0 // deprecated %z
	case isLetter && int(lower) < len(classBits) && classBits[lower] != 0:
		res = classes[c]&classBits[lower] != 0
	default:
		return cl == c
	}
	if cl >= 'a' && cl <= 'z' {
		return res
	}
	return !res
}
