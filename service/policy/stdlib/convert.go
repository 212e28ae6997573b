package stdlib

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	lua "github.com/yuin/gopher-lua"
)

// arrayMarkerField is set to true in the metatable FromGo gives the arrays it builds,
// so that an empty one converts back to an array rather than an object. mlua marks
// deserialised arrays the same way with its array metatable.
const arrayMarkerField = "__jsonarray"

// arrayMetaKey is the registry key of the per-state array metatable.
const arrayMetaKey = "rewrited.stdlib.jsonarray"

// maxConvertDepth is how deeply tables may nest in ToGo.
const maxConvertDepth = 64

// pathSeg is one step from the root to the value being converted; the path is only
// rendered when an error needs it.
type pathSeg struct {
	parent *pathSeg
	key    string
	index  int64 // used when isIndex
	isIdx  bool
}

func (p *pathSeg) String() string {
	if p == nil {
		return ""
	}
	var segs []*pathSeg
	for s := p; s != nil; s = s.parent {
		segs = append(segs, s)
	}
	var sb strings.Builder
	for i := len(segs) - 1; i >= 0; i-- {
		s := segs[i]
		switch {
		case s.isIdx:
			fmt.Fprintf(&sb, "[%d]", s.index)
		case isIdentifier(s.key):
			if sb.Len() > 0 {
				sb.WriteByte('.')
			}
			sb.WriteString(s.key)
		default:
			fmt.Fprintf(&sb, "[%s]", strconv.Quote(s.key))
		}
	}
	return sb.String()
}

func isIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// convertError reports a value ToGo cannot represent, with the path to it.
type convertError struct {
	path string // e.g. "x.list[2]"; empty for the value itself
	msg  string
}

func (e *convertError) Error() string {
	if e.path == "" {
		return e.msg
	}
	return e.path + ": " + e.msg
}

// ToGo converts a Lua value into a JSON-serialisable Go value: nil, bool, float64, string, []any, map[string]any.
// A table whose keys are exactly 1..n (n>0) is an array; any other table is an object whose keys must be strings
// (number keys of a non-array table are converted with the Lua number format, e.g. 3 -> "3"); an empty table is an empty object.
// Functions, userdata, threads, channels, NaN/Inf, cycles and nesting deeper than 64 are errors naming the path (e.g. `x.list[2]: cannot serialise a function`).
//
// An empty table whose metatable has __jsonarray = true (as the arrays made by FromGo
// do) is an empty array.
func ToGo(v lua.LValue) (any, error) {
	out, _, err := ToGoSize(v)
	return out, err
}

// MaxConvertBytes and MaxConvertValues bound what ToGo converts, measured
// roughly as JSON would encode it: a table shared many times over is
// converted once per use, so a few nested references could otherwise expand
// into gigabytes, in a Go loop the evaluation budget cannot interrupt. 32768
// values convert in a few milliseconds.
const (
	MaxConvertBytes  = 1 << 20
	MaxConvertValues = 1 << 15
)

// ToGoSize is ToGo that also returns the approximate encoded size of the
// value, for callers that bound a sum of values.
func ToGoSize(v lua.LValue) (any, int, error) {
	c := converter{visiting: map[*lua.LTable]bool{}}
	out, err := c.value(v, nil, 0)
	return out, c.size, err
}

type converter struct {
	visiting map[*lua.LTable]bool
	size     int
	values   int
}

// charge counts one value of n bytes against the bounds.
func (c *converter) charge(path *pathSeg, n int) error {
	c.size += n
	c.values++
	if c.size > MaxConvertBytes {
		return c.fail(path, "value too large to serialise (more than %d bytes)", MaxConvertBytes)
	}
	if c.values > MaxConvertValues {
		return c.fail(path, "value too large to serialise (more than %d values)", MaxConvertValues)
	}
	return nil
}

func (c *converter) fail(path *pathSeg, format string, args ...any) error {
	return &convertError{path: path.String(), msg: fmt.Sprintf(format, args...)}
}

func (c *converter) value(v lua.LValue, path *pathSeg, depth int) (any, error) {
	n := 8
	if str, ok := v.(lua.LString); ok {
		n += len(str)
	}
	if err := c.charge(path, n); err != nil {
		return nil, err
	}
	switch x := v.(type) {
	case *lua.LNilType:
		return nil, nil
	case lua.LBool:
		return bool(x), nil
	case lua.LNumber:
		f := float64(x)
		if math.IsNaN(f) {
			return nil, c.fail(path, "cannot serialise NaN")
		}
		if math.IsInf(f, 0) {
			return nil, c.fail(path, "cannot serialise %s", luaNumberString(f))
		}
		return f, nil
	case lua.LString:
		return string(x), nil
	case *lua.LTable:
		return c.table(x, path, depth+1)
	case *lua.LFunction:
		return nil, c.fail(path, "cannot serialise a function")
	case *lua.LUserData:
		return nil, c.fail(path, "cannot serialise a userdata")
	case *lua.LState:
		return nil, c.fail(path, "cannot serialise a thread")
	case lua.LChannel:
		return nil, c.fail(path, "cannot serialise a channel")
	}
	return nil, c.fail(path, "cannot serialise a %s", v.Type().String())
}

func isArrayMarked(t *lua.LTable) bool {
	mt, ok := t.Metatable.(*lua.LTable)
	return ok && mt.RawGetString(arrayMarkerField) == lua.LTrue
}

func (c *converter) table(t *lua.LTable, path *pathSeg, depth int) (any, error) {
	if depth > maxConvertDepth {
		return nil, c.fail(path, "cannot serialise tables nested deeper than %d levels", maxConvertDepth)
	}
	if c.visiting[t] {
		return nil, c.fail(path, "cannot serialise a table that contains itself")
	}
	c.visiting[t] = true
	defer delete(c.visiting, t)

	n, maxIdx, allIdx := 0, int64(0), true
	t.ForEach(func(k, _ lua.LValue) {
		n++
		if num, ok := k.(lua.LNumber); ok {
			if i, ok := toInteger(float64(num)); ok && i >= 1 {
				maxIdx = max(maxIdx, i)
				return
			}
		}
		allIdx = false
	})
	if n == 0 {
		if isArrayMarked(t) {
			return []any{}, nil
		}
		return map[string]any{}, nil
	}
	if allIdx && maxIdx == int64(n) {
		arr := make([]any, n)
		for i := 1; i <= n; i++ {
			v, err := c.value(t.RawGetInt(i), &pathSeg{parent: path, index: int64(i), isIdx: true}, depth)
			if err != nil {
				return nil, err
			}
			arr[i-1] = v
		}
		return arr, nil
	}

	type entry struct {
		key string
		seg *pathSeg
		val lua.LValue
	}
	entries := make([]entry, 0, n)
	var keyErr error
	t.ForEach(func(k, v lua.LValue) {
		switch key := k.(type) {
		case lua.LString:
			entries = append(entries, entry{string(key), &pathSeg{parent: path, key: string(key)}, v})
		case lua.LNumber:
			ks := luaNumberString(float64(key))
			seg := &pathSeg{parent: path, key: ks}
			if i, ok := toInteger(float64(key)); ok {
				seg = &pathSeg{parent: path, index: i, isIdx: true}
			}
			entries = append(entries, entry{ks, seg, v})
		default:
			if keyErr == nil {
				keyErr = c.fail(path, "cannot serialise a table key of type %s", k.Type().String())
			}
		}
	})
	if keyErr != nil {
		return nil, keyErr
	}
	// Sorted so the same table always reports the same first error.
	sort.Slice(entries, func(i, j int) bool { return entries[i].key < entries[j].key })
	obj := make(map[string]any, len(entries))
	for i, e := range entries {
		if i > 0 && entries[i-1].key == e.key {
			return nil, c.fail(path, "duplicate key %q (a number and a string key convert to the same text)", e.key)
		}
		v, err := c.value(e.val, e.seg, depth)
		if err != nil {
			return nil, err
		}
		obj[e.key] = v
	}
	return obj, nil
}

// FromGo converts nil, bool, float64 (and other Go numeric types), string, []any, map[string]any into Lua values
// (arrays 1-based).
//
// Nil elements of a slice are skipped and later elements move down, as mlua does when
// it appends a JSON null to a Lua array; nil map values leave the key absent. Arrays
// get a metatable with __jsonarray = true so that an empty one converts back to an
// array. []string, map[string]string, []byte and lua.LValue are accepted too; any
// other type goes through encoding/json first and becomes nil if that fails.
func FromGo(L *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case nil:
		return lua.LNil
	case lua.LValue:
		return x
	case bool:
		return lua.LBool(x)
	case float64:
		return lua.LNumber(x)
	case float32:
		return lua.LNumber(x)
	case int:
		return lua.LNumber(x)
	case int8:
		return lua.LNumber(x)
	case int16:
		return lua.LNumber(x)
	case int32:
		return lua.LNumber(x)
	case int64:
		return lua.LNumber(x)
	case uint:
		return lua.LNumber(x)
	case uint8:
		return lua.LNumber(x)
	case uint16:
		return lua.LNumber(x)
	case uint32:
		return lua.LNumber(x)
	case uint64:
		return lua.LNumber(x)
	case json.Number:
		if f, err := x.Float64(); err == nil {
			return lua.LNumber(f)
		}
		return lua.LString(x)
	case string:
		return lua.LString(x)
	case []byte:
		return lua.LString(x)
	case []any:
		t := L.CreateTable(len(x), 0)
		for _, e := range x {
			if e != nil {
				t.Append(FromGo(L, e))
			}
		}
		t.Metatable = arrayMeta(L)
		return t
	case []string:
		t := L.CreateTable(len(x), 0)
		for i, e := range x {
			t.RawSetInt(i+1, lua.LString(e))
		}
		t.Metatable = arrayMeta(L)
		return t
	case map[string]any:
		t := L.CreateTable(0, len(x))
		for k, e := range x {
			if e != nil {
				t.RawSetString(k, FromGo(L, e))
			}
		}
		return t
	case map[string]string:
		t := L.CreateTable(0, len(x))
		for k, e := range x {
			t.RawSetString(k, lua.LString(e))
		}
		return t
	}
	data, err := json.Marshal(v)
	if err != nil {
		return lua.LNil
	}
	var generic any
	if json.Unmarshal(data, &generic) != nil {
		return lua.LNil
	}
	return FromGo(L, generic)
}

// arrayMeta returns the state's shared array metatable, creating it on first use.
func arrayMeta(L *lua.LState) *lua.LTable {
	reg, ok := L.Get(lua.RegistryIndex).(*lua.LTable)
	if !ok {
		return nil
	}
	if mt, ok := reg.RawGetString(arrayMetaKey).(*lua.LTable); ok {
		return mt
	}
	mt := L.NewTable()
	mt.RawSetString(arrayMarkerField, lua.LTrue)
	reg.RawSetString(arrayMetaKey, mt)
	return mt
}
