package stdlib

import (
	"math"
	"math/big"
	"sync"
)

// Lua 5.4 takes log, log2, log10 and exp from the C library; glibc's are
// correctly rounded but for rare arguments, while Go's math.Log, Log2, Log10
// and Exp are often one unit in the last place off, which shows as a different
// result (math.log(27, 3) is 3.0000000000000004 in Go). These compute the
// exact value with extra precision in math/big and round it once.

// crPrec is the working precision: far beyond the 53 bits of a float64, so
// that rounding the result to float64 is correct but for arguments whose
// exact result lies within 2^-100 of a rounding boundary.
const crPrec = 160

var (
	crOnce sync.Once
	crLn2  *big.Float // ln 2, with guard bits for exponents up to 2^11
)

func crConstants() {
	crOnce.Do(func() {
		p := uint(crPrec + 64)
		third := new(big.Float).SetPrec(p).Quo(new(big.Float).SetPrec(p).SetInt64(1), new(big.Float).SetPrec(p).SetInt64(3))
		crLn2 = twoAtanh(third, p) // ln 2 = 2 atanh(1/3)
	})
}

// twoAtanh is 2 atanh(z) = ln((1+z)/(1-z)) by its series, for |z| < 0.2.
func twoAtanh(z *big.Float, p uint) *big.Float {
	z2 := new(big.Float).SetPrec(p).Mul(z, z)
	power := new(big.Float).SetPrec(p).Set(z)
	sum := new(big.Float).SetPrec(p).Set(z)
	term := new(big.Float).SetPrec(p)
	div := new(big.Float).SetPrec(p)
	for k := int64(3); ; k += 2 {
		power.Mul(power, z2)
		term.Quo(power, div.SetInt64(k))
		sum.Add(sum, term)
		if term.Sign() == 0 || sum.MantExp(nil)-term.MantExp(nil) > int(p) {
			break
		}
	}
	return sum.SetMantExp(sum, 1)
}

// bigLog is ln x for a finite x > 0: x = m·2^e with m in [√½, √2), and
// ln m = 2 atanh((m-1)/(m+1)).
func bigLog(x float64) *big.Float {
	crConstants()
	frac, exp := math.Frexp(x)
	if frac < math.Sqrt2/2 {
		frac, exp = frac*2, exp-1
	}
	m := new(big.Float).SetPrec(crPrec).SetFloat64(frac)
	one := new(big.Float).SetInt64(1)
	num := new(big.Float).SetPrec(crPrec).Sub(m, one)
	den := new(big.Float).SetPrec(crPrec).Add(m, one)
	r := twoAtanh(num.Quo(num, den), crPrec)
	e := new(big.Float).SetPrec(crPrec).SetInt64(int64(exp))
	return r.Add(r, e.Mul(e, crLn2))
}

// logSpecial is the result of a logarithm where it is not a finite, positive,
// non-one argument's.
func logSpecial(x float64) (float64, bool) {
	switch {
	case math.IsNaN(x) || x < 0:
		return math.NaN(), true
	case x == 0:
		return math.Inf(-1), true
	case math.IsInf(x, 1):
		return x, true
	case x == 1:
		return 0, true
	}
	return 0, false
}

// crLog is ln x, correctly rounded.
func crLog(x float64) float64 {
	if r, ok := logSpecial(x); ok {
		return r
	}
	f, _ := bigLog(x).Float64()
	return f
}

// crLog2 is log2 x, correctly rounded; exact for powers of two.
func crLog2(x float64) float64 {
	if r, ok := logSpecial(x); ok {
		return r
	}
	if frac, exp := math.Frexp(x); frac == 0.5 {
		return float64(exp - 1)
	}
	l := bigLog(x)
	f, _ := l.Quo(l, crLn2).Float64()
	return f
}

// log10 is C's log10 as glibc computes it, which is not correctly rounded:
// x = m·2^n, log10 x = n·log10(2) + ln(m)/ln(10), with log10(2) split in two
// parts so that n times its first part is exact.
func log10(x float64) float64 {
	if r, ok := logSpecial(x); ok {
		return r
	}
	frac, exp := math.Frexp(x)
	m, n := frac*2, exp-1
	if n < 0 {
		m, n = frac, exp
	}
	const (
		invLn10   = 0x1.bcb7b1526e50ep-2  // 1/ln(10)
		log10of2H = 0x1.34413509f6p-2     // log10(2), its first 33 bits
		log10of2L = 0x1.9fef311f12b36p-42 // log10(2) - log10of2H
	)
	y := float64(n)
	// Each product rounded on its own, as C computes it (Go may otherwise fuse).
	z := float64(y*log10of2L) + float64(invLn10*crLog(m))
	return z + float64(y*log10of2H)
}

// crExp is e^x, correctly rounded: x = k·ln2 + r with |r| ≤ ln2/2, e^r by its
// series, scaled by 2^k.
func crExp(x float64) float64 {
	switch {
	case math.IsNaN(x):
		return x
	case x > 710:
		return math.Inf(1)
	case x < -746:
		return 0
	case x == 0:
		return 1
	}
	crConstants()
	p := uint(crPrec + 64)
	k := math.Round(x / math.Ln2)
	r := new(big.Float).SetPrec(p).SetFloat64(x)
	kLn2 := new(big.Float).SetPrec(p).SetFloat64(k)
	r.Sub(r, kLn2.Mul(kLn2, crLn2))
	sum := new(big.Float).SetPrec(p).SetInt64(1)
	term := new(big.Float).SetPrec(p).SetInt64(1)
	div := new(big.Float).SetPrec(p)
	for n := int64(1); ; n++ {
		term.Mul(term, r)
		term.Quo(term, div.SetInt64(n))
		sum.Add(sum, term)
		if term.Sign() == 0 || sum.MantExp(nil)-term.MantExp(nil) > int(p) {
			break
		}
	}
	f, _ := sum.SetMantExp(sum, int(k)).Float64()
	return f
}
