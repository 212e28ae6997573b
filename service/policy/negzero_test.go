package policy

import "testing"

// TestNegativeZeroLiterals: a negated float zero literal is -0.0 wherever it
// sits, a negated integer zero is 0, and neither changes the 0 beside it.
func TestNegativeZeroLiterals(t *testing.T) {
	e, err := buildEngineEvaluator()
	if err != nil {
		t.Fatal(err)
	}
	defer e.L.Close()
	for _, tc := range []struct{ expr, want string }{
		{"(function() local a = 0 local b = -0.0 return 1/a, 1/b end)()", "ok 2 inf -inf"},
		{"(function() local b = -0.0 local a = 0 return 1/a, 1/b end)()", "ok 2 inf -inf"},
		{"1/-0e0", "ok 1 -inf"},
		{"1/-0x0p0", "ok 1 -inf"},
		{"1/-(0.0)", "ok 1 -inf"},
		{"1/-0", "ok 1 inf"},
		{"1/-0x0", "ok 1 inf"},
		{"(function() local t = {-0.0, 0} return 1/t[1], 1/t[2] end)()", "ok 2 -inf inf"},
		{"tostring(-0.0)", `ok 1 "-0.0"`},
		{"-0.0 == 0", "ok 1 true"},
		{"- -0.0", "ok 1 0"},
	} {
		if got := e.eval(tc.expr); got != tc.want {
			t.Errorf("%s = %s, want %s", tc.expr, got, tc.want)
		}
	}
}
