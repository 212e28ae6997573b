package stdlib

import (
	"math"
	"math/rand/v2"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// openMath54 replaces the math library with Lua 5.4's §6.7: math.huge is the
// infinity, log takes a base, atan takes x, fmod and modf follow C, ult exists,
// floor and ceil return integers, and errors name the function and argument.
// The 5.3-compatibility functions (pow, ldexp, frexp, cosh, ...) are kept as Lua
// 5.4 keeps them when built with them.
func (b *lib) openMath54(L *lua.LState) {
	m := globalTable(L, "math")
	b.rng = rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	setFuncs(L, m, map[string]lua.LGFunction{
		"abs":        mathAbs,
		"ceil":       mathCeil,
		"floor":      mathFloor,
		"fmod":       mathFmod,
		"modf":       mathModf,
		"log":        mathLog,
		"atan":       mathAtan,
		"ult":        mathUlt,
		"max":        mathMax,
		"min":        mathMin,
		"sqrt":       math1("sqrt", math.Sqrt),
		"exp":        math1("exp", crExp),
		"sin":        math1("sin", crSin),
		"cos":        math1("cos", crCos),
		"tan":        math1("tan", crTan),
		"asin":       math1("asin", crAsin),
		"acos":       math1("acos", crAcos),
		"deg":        math1("deg", func(x float64) float64 { return x * (180 / math.Pi) }),
		"rad":        math1("rad", func(x float64) float64 { return x * (math.Pi / 180) }),
		"random":     b.mathRandom,
		"randomseed": b.mathRandomSeed,
		// Lua 5.4 built with 5.3 compatibility, as Debian's is, keeps these.
		"atan2": mathAtan,
		"cosh":  math1("cosh", math.Cosh),
		"sinh":  math1("sinh", math.Sinh),
		"tanh":  math1("tanh", math.Tanh),
		"log10": math1("log10", log10),
		"pow":   mathPow,
		"ldexp": mathLdexp,
		"frexp": mathFrexp,
	})
	m.RawSetString("huge", lua.LNumber(math.Inf(1)))
	m.RawSetString("pi", lua.LNumber(math.Pi))
	// Lua 5.0's math.mod is in no Lua 5.4.
	m.RawSetString("mod", lua.LNil)
}

func mathPow(L *lua.LState) int {
	x := checkNumber(L, 1, "pow")
	L.Push(lua.LNumber(crPow(x, checkNumber(L, 2, "pow"))))
	return 1
}

func mathLdexp(L *lua.LState) int {
	m := checkNumber(L, 1, "ldexp")
	e := checkInteger(L, 2, "ldexp")
	L.Push(lua.LNumber(math.Ldexp(m, int(max(min(e, 1<<16), -(1<<16))))))
	return 1
}

func mathFrexp(L *lua.LState) int {
	frac, exp := math.Frexp(checkNumber(L, 1, "frexp"))
	L.Push(lua.LNumber(frac))
	L.Push(lua.LNumber(exp))
	return 2
}

// math1 is a function of one number.
func math1(fname string, f func(float64) float64) lua.LGFunction {
	return func(L *lua.LState) int {
		L.Push(lua.LNumber(f(checkNumber(L, 1, fname))))
		return 1
	}
}

// intOrFloat is a float result Lua 5.4 converts to an integer when it fits
// (math.floor, math.ceil): -0.0 becomes 0.
func intOrFloat(f float64) lua.LNumber {
	if i, ok := toInteger(f); ok {
		return lua.LNumber(i)
	}
	return lua.LNumber(f)
}

func mathAbs(L *lua.LState) int {
	L.Push(lua.LNumber(math.Abs(checkNumber(L, 1, "abs"))))
	return 1
}

func mathFloor(L *lua.LState) int {
	L.Push(intOrFloat(math.Floor(checkNumber(L, 1, "floor"))))
	return 1
}

func mathCeil(L *lua.LState) int {
	L.Push(intOrFloat(math.Ceil(checkNumber(L, 1, "ceil"))))
	return 1
}

// mathFmod computes on integers when both arguments are integral, where a zero
// divisor is an error, and like C's fmod otherwise.
func mathFmod(L *lua.LState) int {
	const fname = "fmod"
	// Lua 5.4 built by GCC checks the second argument first.
	d := checkNumber(L, 2, fname)
	a := checkNumber(L, 1, fname)
	ai, aInt := toInteger(a)
	di, dInt := toInteger(d)
	if aInt && dInt {
		switch di {
		case 0:
			argError(L, 2, fname, "zero")
		case -1:
			L.Push(lua.LNumber(0))
		default:
			L.Push(lua.LNumber(ai % di))
		}
		return 1
	}
	L.Push(lua.LNumber(math.Mod(a, d)))
	return 1
}

func mathModf(L *lua.LState) int {
	x := checkNumber(L, 1, "modf")
	ip := math.Trunc(x)
	frac := 0.0
	if !math.IsInf(x, 0) {
		frac = x - ip
	}
	L.Push(intOrFloat(ip))
	L.Push(lua.LNumber(frac))
	return 2
}

func mathLog(L *lua.LState) int {
	const fname = "log"
	x := checkNumber(L, 1, fname)
	var r float64
	switch {
	case L.Get(2) == lua.LNil:
		r = crLog(x)
	default:
		// As Lua 5.4: C's log2 and log10 for those bases, else a quotient.
		switch base := checkNumber(L, 2, fname); base {
		case 2:
			r = crLog2(x)
		case 10:
			r = log10(x)
		default:
			r = crLog(x) / crLog(base)
		}
	}
	L.Push(lua.LNumber(r))
	return 1
}

func mathAtan(L *lua.LState) int {
	y := checkNumber(L, 1, "atan")
	x := 1.0
	if L.Get(2) != lua.LNil {
		x = checkNumber(L, 2, "atan")
	}
	L.Push(lua.LNumber(crAtan2(y, x)))
	return 1
}

func mathUlt(L *lua.LState) int {
	a := checkInteger(L, 1, "ult")
	b := checkInteger(L, 2, "ult")
	L.Push(lua.LBool(uint64(a) < uint64(b)))
	return 1
}

// mathMax and mathMin compare their arguments with '<' as Lua 5.4 does, whatever
// their types: mixing numbers and strings is a comparison error.
func mathMax(L *lua.LState) int { return mathExtreme(L, "max", false) }
func mathMin(L *lua.LState) int { return mathExtreme(L, "min", true) }

func mathExtreme(L *lua.LState, fname string, min bool) int {
	top := L.GetTop()
	if top < 1 {
		argError(L, 1, fname, "value expected")
	}
	best := L.Get(1)
	for i := 2; i <= top; i++ {
		v := L.Get(i)
		if min && lessThan(L, v, best) || !min && lessThan(L, best, v) {
			best = v
		}
	}
	L.Push(best)
	return 1
}

// mathRandom is Lua 5.4's math.random: a float in [0,1), an integer in [1,m] or
// [m,n], or with 0 a random integer of all bits.
func (b *lib) mathRandom(L *lua.LState) int {
	const fname = "random"
	var lo, hi int64
	switch L.GetTop() {
	case 0:
		L.Push(lua.LNumber(b.rng.Float64()))
		return 1
	case 1:
		lo, hi = 1, checkInteger(L, 1, fname)
		if hi == 0 {
			L.Push(lua.LNumber(int64(b.rng.Uint64())))
			return 1
		}
	case 2:
		lo, hi = checkInteger(L, 1, fname), checkInteger(L, 2, fname)
	default:
		raise(L, "wrong number of arguments")
	}
	if lo > hi {
		argError(L, 1, fname, "interval is empty")
	}
	L.Push(lua.LNumber(lo + int64(b.rng.Uint64N(uint64(hi-lo)+1))))
	return 1
}

func (b *lib) mathRandomSeed(L *lua.LState) int {
	seed := uint64(time.Now().UnixNano())
	if L.GetTop() > 0 {
		seed = uint64(checkInteger(L, 1, "randomseed"))
	}
	b.rng = rand.New(rand.NewPCG(seed, 0))
	return 0
}
