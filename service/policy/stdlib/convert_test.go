package stdlib

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"

	lua "github.com/yuin/gopher-lua"
)

// luaValue evaluates an expression in a fresh state.
func luaValue(t *testing.T, L *lua.LState, expr string) lua.LValue {
	t.Helper()
	if err := L.DoString("return " + expr); err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	v := L.Get(-1)
	L.Pop(1)
	return v
}

func TestToGo(t *testing.T) {
	cases := []struct {
		expr    string
		want    any
		wantErr string
	}{
		{expr: "nil", want: nil},
		{expr: "true", want: true},
		{expr: "1.5", want: 1.5},
		{expr: "'s'", want: "s"},
		{expr: "{}", want: map[string]any{}},
		{expr: "{1, 'two', false}", want: []any{1.0, "two", false}},
		{expr: "{a = {b = {1}}, c = 'x'}", want: map[string]any{"a": map[string]any{"b": []any{1.0}}, "c": "x"}},
		{expr: "{[1] = 'a', [3] = 'c'}", want: map[string]any{"1": "a", "3": "c"}},
		{expr: "{[2] = 'b'}", want: map[string]any{"2": "b"}},
		{expr: "{1, x = 2}", want: map[string]any{"1": 1.0, "x": 2.0}},
		{expr: "{[0.5] = 1, [-1] = 2}", want: map[string]any{"0.5": 1.0, "-1": 2.0}},
		{expr: "kumo.serde.json_parse('[]')", want: []any{}},
		{expr: "setmetatable({}, {__jsonarray = true})", want: []any{}},
		{expr: "print", wantErr: "cannot serialise a function"},
		{expr: "{x = {list = {1, print}}}", wantErr: "x.list[2]: cannot serialise a function"},
		{expr: "{[1.5] = {f = print}}", wantErr: `["1.5"].f: cannot serialise a function`},
		{expr: "{kumo.regex.compile('x')}", wantErr: "[1]: cannot serialise a userdata"},
		{expr: "coroutine.create(print)", wantErr: "cannot serialise a thread"},
		{expr: "0/0", wantErr: "cannot serialise NaN"},
		{expr: "{v = -1/0}", wantErr: "v: cannot serialise -inf"},
		{expr: "{[{}] = 1}", wantErr: "cannot serialise a table key of type table"},
		{expr: "{[1] = 1, ['1'] = 2}", wantErr: `duplicate key "1"`},
		{expr: "(function() local t = {} t[1] = {t} return t end)()", wantErr: "[1][1]: cannot serialise a table that contains itself"},
		{expr: "(function() local t = {} local c = t for i = 1, 64 do c[1] = {} c = c[1] end return t end)()", wantErr: "nested deeper than 64 levels"},
	}
	L := newState(t, Limits{})
	for _, c := range cases {
		got, err := ToGo(luaValue(t, L, c.expr))
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%s: got %v, %v; want error containing %q", c.expr, got, err, c.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %#v, %v; want %#v", c.expr, got, err, c.want)
		}
	}

	// A channel is a gopher-lua value too.
	if _, err := ToGo(lua.LChannel(make(chan lua.LValue))); err == nil || err.Error() != "cannot serialise a channel" {
		t.Errorf("channel: %v", err)
	}
}

type point struct {
	X int    `json:"x"`
	Y string `json:"y"`
}

func TestFromGo(t *testing.T) {
	cases := []struct {
		name string
		in   any
		want any // ToGo of the result
	}{
		{"nil", nil, nil},
		{"bool", true, true},
		{"float64", 2.5, 2.5},
		{"int", 7, 7.0},
		{"int8", int8(-3), -3.0},
		{"uint64", uint64(1 << 40), float64(1 << 40)},
		{"float32", float32(0.5), 0.5},
		{"json.Number", json.Number("12"), 12.0},
		{"string", "s", "s"},
		{"bytes", []byte("b"), "b"},
		{"array with nils", []any{1.0, nil, "x", nil}, []any{1.0, "x"}},
		{"empty array", []any{}, []any{}},
		{"strings", []string{"a", "b"}, []any{"a", "b"}},
		{"object", map[string]any{"a": []any{true}, "gone": nil, "o": map[string]any{}}, map[string]any{"a": []any{true}, "o": map[string]any{}}},
		{"string map", map[string]string{"k": "v"}, map[string]any{"k": "v"}},
		{"struct through JSON", point{X: 1, Y: "y"}, map[string]any{"x": 1.0, "y": "y"}},
		{"lua value", lua.LString("as is"), "as is"},
		{"unsupported", make(chan int), nil},
	}
	L := newState(t, Limits{})
	for _, c := range cases {
		got, err := ToGo(FromGo(L, c.in))
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %#v, %v; want %#v", c.name, got, err, c.want)
		}
	}

	// Arrays are 1-based and visible to Lua code.
	L.SetGlobal("v", FromGo(L, map[string]any{"list": []any{"a", nil, "b"}}))
	if got, err := eval(L, "return #v.list, v.list[1], v.list[2], v.list[0]"); err != nil || got != "2\ta\tb\tnil" {
		t.Errorf("got %q, %v", got, err)
	}
}

func TestRoundTrip(t *testing.T) {
	docs := []string{
		`{"a":[1,2.5,"x",true,false],"b":{"c":{},"d":[]},"e":-0.001,"f":"\u00e9\n"}`,
		`[[],[[]],{"":{}}]`,
		`"plain"`,
	}
	L := newState(t, Limits{})
	for _, doc := range docs {
		var v any
		if err := json.Unmarshal([]byte(doc), &v); err != nil {
			t.Fatal(err)
		}
		got, err := ToGo(FromGo(L, v))
		if err != nil || !reflect.DeepEqual(got, v) {
			t.Errorf("%s: got %#v, %v", doc, got, err)
		}
	}
}

func TestJSONNumber(t *testing.T) {
	for f, want := range map[float64]string{
		0: "0", -3: "-3", 1.5: "1.5", 1e-5: "0.00001", 1e-6: "1e-6", 1e-7: "1e-7",
		123456.789: "123456.789", 1e21: "1e21", -2.5e-300: "-2.5e-300", 9.5e18: "9.5e18",
		math.Pi: "3.141592653589793",
	} {
		if got := jsonNumber(f); got != want {
			t.Errorf("jsonNumber(%v) = %q, want %q", f, got, want)
		}
	}
}
