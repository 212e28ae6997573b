package stdlib

import (
	"math"
	"testing"
)

// The correctly rounded functions keep C99's results for zeros, infinities,
// NaNs and exact cases, where rounding has nothing to do.
func TestCorrectlyRoundedSpecialCases(t *testing.T) {
	inf, nan := math.Inf(1), math.NaN()
	for _, tc := range []struct {
		name string
		got  float64
		want float64
	}{
		{"log(0)", crLog(0), -inf},
		{"log(-0)", crLog(math.Copysign(0, -1)), -inf},
		{"log(-1)", crLog(-1), nan},
		{"log(inf)", crLog(inf), inf},
		{"log(1)", crLog(1), 0},
		{"log2(1024)", crLog2(1024), 10},
		{"log2(0.125)", crLog2(0.125), -3},
		{"log10(1000)", log10(1000), 3},
		{"log10(1e-300)", log10(1e-300), -300},
		{"exp(0)", crExp(0), 1},
		{"exp(-inf)", crExp(-inf), 0},
		{"exp(inf)", crExp(inf), inf},
		{"exp(710)", crExp(710), inf},
		{"exp(-1000)", crExp(-1000), 0},
		{"exp(nan)", crExp(nan), nan},
		{"sin(-0)", crSin(math.Copysign(0, -1)), math.Copysign(0, -1)},
		{"sin(inf)", crSin(inf), nan},
		{"cos(0)", crCos(0), 1},
		{"cos(-inf)", crCos(-inf), nan},
		{"tan(-0)", crTan(math.Copysign(0, -1)), math.Copysign(0, -1)},
		{"asin(1)", crAsin(1), math.Pi / 2},
		{"asin(-1)", crAsin(-1), -math.Pi / 2},
		{"asin(2)", crAsin(2), nan},
		{"acos(1)", crAcos(1), 0},
		{"acos(-1)", crAcos(-1), math.Pi},
		{"acos(0)", crAcos(0), math.Pi / 2},
		{"atan2(0, -1)", crAtan2(0, -1), math.Pi},
		{"atan2(-0, -1)", crAtan2(math.Copysign(0, -1), -1), -math.Pi},
		{"atan2(1, 0)", crAtan2(1, 0), math.Pi / 2},
		{"atan2(inf, inf)", crAtan2(inf, inf), math.Pi / 4},
		{"atan2(1, 1)", crAtan2(1, 1), math.Pi / 4},
		{"atan2(-1, -1)", crAtan2(-1, -1), -3 * math.Pi / 4},
		{"pow(-2, 3)", crPow(-2, 3), -8},
		{"pow(-2, 2)", crPow(-2, 2), 4},
		{"pow(-8, 1/3)", crPow(-8, 1.0/3), nan},
		{"pow(0, -1)", crPow(0, -1), inf},
		{"pow(4, 0.5)", crPow(4, 0.5), 2},
		{"pow(10, -2)", crPow(10, -2), 0.01},
		{"pow(2, 1e308)", crPow(2, 1e308), inf},
		{"pow(0.5, 1e308)", crPow(0.5, 1e308), 0},
		{"pow(nan, 0)", crPow(nan, 0), 1},
	} {
		same := tc.got == tc.want && math.Signbit(tc.got) == math.Signbit(tc.want) ||
			math.IsNaN(tc.got) && math.IsNaN(tc.want)
		if !same {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}
