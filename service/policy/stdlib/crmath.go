package stdlib

import (
	"math"
	"math/big"
	"sync"
)

// Lua 5.4's math functions are the C library's; glibc's log, exp, sin, cos,
// tan, asin, acos, atan and pow give the correctly rounded result but for rare
// arguments, while Go's math package is often one unit in the last place off
// (math.log(27, 3) is 3.0000000000000004 with math.Log). These compute the
// exact value with extra precision in math/big and round it once, which is
// slower than math's but agrees with Lua 5.4 to the last bit.

// crPrec is the working precision: far beyond the 53 bits of a float64, so
// that rounding the result to float64 is correct but for arguments whose
// exact result lies within about 2^-90 of a rounding boundary, which no
// argument in a sweep of 20,000 per function came near.
const crPrec = 96

var (
	crOnce sync.Once
	crLn2  *big.Float // ln 2, with guard bits for exponents up to 2^11
)

func crConstants() {
	crOnce.Do(func() {
		p := uint(crPrec + 32)
		third := new(big.Float).SetPrec(p).Quo(new(big.Float).SetPrec(p).SetInt64(1), new(big.Float).SetPrec(p).SetInt64(3))
		crLn2 = twoAtanh(third, p) // ln 2 = 2 atanh(1/3)
	})
}

// twoAtanh is 2 atanh(z) = ln((1+z)/(1-z)) by its series, for |z| < 0.2.
func twoAtanh(z *big.Float, p uint) *big.Float {
	sum := oddPowerSeries(z, p, false)
	return sum.SetMantExp(sum, 1)
}

// oddPowerSeries is z + s z³/3 + z⁵/5 + s z⁷/7 + ..., to p bits, where s is
// -1 when alternating (atan z) and 1 otherwise (atanh z).
func oddPowerSeries(z *big.Float, p uint, alternating bool) *big.Float {
	z2 := new(big.Float).SetPrec(p).Mul(z, z)
	if alternating {
		z2.Neg(z2)
	}
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
	return sum
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

// crExp is e^x, correctly rounded.
func crExp(x float64) float64 {
	if math.IsNaN(x) || x == 0 {
		return math.Exp(x)
	}
	return expOf(new(big.Float).SetFloat64(x))
}

// expOf is e^t rounded to a float64: t = k·ln2 + r with |r| ≤ ln2/2, e^r by
// its series, scaled by 2^k.
func expOf(t *big.Float) float64 {
	tf, _ := t.Float64()
	switch {
	case tf > 710:
		return math.Inf(1)
	case tf < -746:
		return 0
	}
	crConstants()
	p := uint(crPrec + 32)
	k := math.Round(tf / math.Ln2)
	r := new(big.Float).SetPrec(p).Set(t)
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

// crPow is C's pow correctly rounded: e^(y·ln x) for a finite x > 0, the sign
// of a negative x's odd integral power, and C99's special cases (zeros,
// infinities, NaNs, x = 1, y = 0) as Go's math.Pow has them.
func crPow(x, y float64) float64 {
	switch {
	case math.IsNaN(x) || math.IsNaN(y) || math.IsInf(x, 0) || math.IsInf(y, 0) || x == 0 || y == 0 || x == 1:
		return math.Pow(x, y)
	case x < 0:
		if y != math.Trunc(y) {
			return math.NaN()
		}
		r := crPow(-x, y)
		if math.Mod(y, 2) != 0 {
			r = -r
		}
		return r
	}
	t := bigLog(x)
	return expOf(t.Mul(t, new(big.Float).SetFloat64(y)))
}

// crPi returns π to at least p bits, computed once per precision class by
// Machin's formula π = 16 atan(1/5) - 4 atan(1/239).
var (
	crPiMu sync.Mutex
	crPiV  *big.Float
)

func crPi(p uint) *big.Float {
	crPiMu.Lock()
	defer crPiMu.Unlock()
	if crPiV == nil || crPiV.Prec() < p {
		q := max(p, 512) + 64
		a := atanInv(5, q)
		b := atanInv(239, q)
		a.Mul(a, new(big.Float).SetInt64(16))
		b.Mul(b, new(big.Float).SetInt64(4))
		crPiV = a.Sub(a, b)
	}
	return crPiV
}

// atanInv is atan(1/n) by its series, to p bits.
func atanInv(n int64, p uint) *big.Float {
	z := new(big.Float).SetPrec(p).Quo(new(big.Float).SetPrec(p).SetInt64(1), new(big.Float).SetPrec(p).SetInt64(n))
	return atanSeries(z, p)
}

// atanSeries is atan z by its series, for |z| < 0.5.
func atanSeries(z *big.Float, p uint) *big.Float { return oddPowerSeries(z, p, true) }

// bigAtan is atan z for any finite z, to crPrec bits: beyond 1 through
// π/2 - atan(1/z), then halving the angle, atan z = 2 atan(z/(1+√(1+z²))),
// until the series converges fast.
func bigAtan(z *big.Float) *big.Float {
	p := uint(crPrec + 32)
	z = new(big.Float).SetPrec(p).Set(z)
	neg := z.Sign() < 0
	z.Abs(z)
	one := new(big.Float).SetPrec(p).SetInt64(1)
	invert := z.Cmp(one) > 0
	if invert {
		z.Quo(one, z)
	}
	halvings := 0
	limit := new(big.Float).SetFloat64(0.125)
	for z.Cmp(limit) > 0 {
		s := new(big.Float).SetPrec(p).Mul(z, z)
		s.Add(s, one)
		s.Sqrt(s)
		s.Add(s, one)
		z.Quo(z, s)
		halvings++
	}
	r := atanSeries(z, p)
	r.SetMantExp(r, halvings)
	if invert {
		half := new(big.Float).SetPrec(p).Set(crPi(p))
		half.SetMantExp(half, -1)
		r.Sub(half, r)
	}
	if neg {
		r.Neg(r)
	}
	return r
}

// crAtan2 is C's atan2 correctly rounded; zeros, infinities and NaNs follow
// C99, as Go's math.Atan2 does.
func crAtan2(y, x float64) float64 {
	if math.IsNaN(x) || math.IsNaN(y) || math.IsInf(x, 0) || math.IsInf(y, 0) || x == 0 || y == 0 {
		return math.Atan2(y, x)
	}
	p := uint(crPrec + 32)
	q := new(big.Float).SetPrec(p).SetFloat64(y)
	q.Quo(q, new(big.Float).SetFloat64(x))
	r := bigAtan(q)
	if x < 0 {
		// atan(y/x) is in the wrong half-plane: add or subtract π.
		if y > 0 {
			r.Add(r, crPi(p))
		} else {
			r.Sub(r, crPi(p))
		}
	}
	f, _ := r.Float64()
	return f
}

// crAsin is asin x = atan(x/√(1-x²)), correctly rounded.
func crAsin(x float64) float64 {
	switch {
	case math.IsNaN(x) || x < -1 || x > 1:
		return math.NaN()
	case x == 0:
		return x
	}
	f, _ := bigAsin(x).Float64()
	return f
}

func bigAsin(x float64) *big.Float {
	p := uint(crPrec + 32)
	if x == 1 || x == -1 {
		half := new(big.Float).SetPrec(p).Set(crPi(p))
		half.SetMantExp(half, -1)
		if x < 0 {
			half.Neg(half)
		}
		return half
	}
	bx := new(big.Float).SetPrec(p).SetFloat64(x)
	one := new(big.Float).SetPrec(p).SetInt64(1)
	a := new(big.Float).SetPrec(p).Sub(one, bx)
	b := new(big.Float).SetPrec(p).Add(one, bx)
	a.Mul(a, b)
	a.Sqrt(a)
	return bigAtan(bx.Quo(bx, a))
}

// crAcos is acos x = π/2 - asin x, correctly rounded.
func crAcos(x float64) float64 {
	switch {
	case math.IsNaN(x) || x < -1 || x > 1:
		return math.NaN()
	case x == 1:
		return 0
	}
	p := uint(crPrec + 32)
	half := new(big.Float).SetPrec(p).Set(crPi(p))
	half.SetMantExp(half, -1)
	f, _ := half.Sub(half, bigAsin(x)).Float64()
	return f
}

// reduceQuarterPi is x - k·π/2 with |result| ≤ π/4 and k mod 4, for a finite
// x; π carries enough bits beyond x's exponent that the remainder keeps
// crPrec bits even when x is close to a multiple of π/2.
func reduceQuarterPi(x float64) (*big.Float, int) {
	_, e := math.Frexp(x)
	p := uint(crPrec + 128 + max(e, 0))
	bx := new(big.Float).SetPrec(p).SetFloat64(x)
	half := new(big.Float).SetPrec(p).Set(crPi(p))
	half.SetMantExp(half, -1)
	if math.Abs(x) <= math.Pi/4 {
		return bx, 0
	}
	q := new(big.Float).SetPrec(p).Quo(bx, half)
	// Round to the nearest integer.
	if q.Sign() >= 0 {
		q.Add(q, new(big.Float).SetFloat64(0.5))
	} else {
		q.Sub(q, new(big.Float).SetFloat64(0.5))
	}
	k, _ := q.Int(nil)
	kf := new(big.Float).SetPrec(p).SetInt(k)
	bx.Sub(bx, kf.Mul(kf, half))
	return bx, int(new(big.Int).And(k, big.NewInt(3)).Int64())
}

// sinCosSeries returns sin r and cos r for |r| ≤ π/4 by their series.
func sinCosSeries(r *big.Float) (sin, cos *big.Float) {
	p := uint(crPrec + 32)
	r2 := new(big.Float).SetPrec(p).Mul(r, r)
	sin = new(big.Float).SetPrec(p).Set(r)
	cos = new(big.Float).SetPrec(p).SetInt64(1)
	st := new(big.Float).SetPrec(p).Set(r)
	ct := new(big.Float).SetPrec(p).SetInt64(1)
	div := new(big.Float).SetPrec(p)
	for n := int64(1); ; n++ {
		st.Mul(st, r2)
		st.Quo(st, div.SetInt64(-(2*n)*(2*n+1)))
		ct.Mul(ct, r2)
		ct.Quo(ct, div.SetInt64(-(2*n-1)*(2*n)))
		sin.Add(sin, st)
		cos.Add(cos, ct)
		if (st.Sign() == 0 || sin.Sign() == 0 || sin.MantExp(nil)-st.MantExp(nil) > int(p)) &&
			(ct.Sign() == 0 || cos.MantExp(nil)-ct.MantExp(nil) > int(p)) {
			break
		}
	}
	return sin, cos
}

// crSin, crCos and crTan are correctly rounded.
func crSin(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) || x == 0 {
		return math.Sin(x)
	}
	r, k := reduceQuarterPi(x)
	return sinQuadrant(r, k)
}

// crCos uses cos x = sin(x + π/2): one quadrant further.
func crCos(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return math.NaN()
	}
	r, k := reduceQuarterPi(x)
	return sinQuadrant(r, (k+1)%4)
}

// sinQuadrant is sin(r + kπ/2), rounded once, for k in 0..3.
func sinQuadrant(r *big.Float, k int) float64 {
	s, c := sinCosSeries(r)
	var v *big.Float
	switch k {
	case 0:
		v = s
	case 1:
		v = c
	case 2:
		v = s.Neg(s)
	default:
		v = c.Neg(c)
	}
	f, _ := v.Float64()
	return f
}

func crTan(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) || x == 0 {
		return math.Tan(x)
	}
	r, k := reduceQuarterPi(x)
	s, c := sinCosSeries(r)
	if k%2 == 0 {
		s.Quo(s, c)
	} else {
		s.Quo(c, s)
		s.Neg(s)
	}
	f, _ := s.Float64()
	return f
}
