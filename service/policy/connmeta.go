package policy

import (
	"errors"
	"fmt"
	"math"
	"unicode/utf8"

	lua "github.com/yuin/gopher-lua"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/rewrited/rewrited/service/policy/stdlib"
)

// connMeta backs the conn_meta userdata. It reads the request's metadata
// lazily, so a policy pays only for the keys it asks for, and records what
// the policy sets.
type connMeta struct {
	meta    Meta
	updates map[string]any
	sizes   map[string]int // encoded size of each update, to bound their sum
	size    int
}

// maxMetaUpdateBytes bounds what one evaluation may store with set_meta:
// the frontend sends its connection's metadata with every later request.
const maxMetaUpdateBytes = 64 << 10

func (c *connMeta) reset(meta Meta) {
	c.meta = meta
	c.updates, c.sizes, c.size = nil, nil, 0
}

// take hands the updates of the call over to the caller.
func (c *connMeta) take() map[string]any {
	u := c.updates
	c.meta, c.updates, c.sizes, c.size = nil, nil, nil, 0
	return u
}

const connMetaType = "conn_meta"

// connMetaMetatable builds the metatable of a state's conn_meta userdata.
func connMetaMetatable(L *lua.LState) *lua.LTable {
	mt := L.NewTable()
	L.SetField(mt, "__index", L.SetFuncs(L.NewTable(), map[string]lua.LGFunction{
		"get_meta": getMeta,
		"set_meta": setMeta,
	}))
	L.SetField(mt, "__tostring", L.NewFunction(func(L *lua.LState) int {
		L.Push(lua.LString(connMetaType))
		return 1
	}))
	L.SetField(mt, "__metatable", lua.LString(connMetaType))
	return mt
}

func checkConnMeta(L *lua.LState) *connMeta {
	ud := L.CheckUserData(1)
	c, ok := ud.Value.(*connMeta)
	if !ok {
		L.ArgError(1, "conn_meta expected (call it as conn_meta:get_meta(name))")
	}
	return c
}

// getMeta is conn_meta:get_meta(name): a value set during this call wins
// over the request's metadata; an absent key or JSON null is nil.
func getMeta(L *lua.LState) int {
	c := checkConnMeta(L)
	name := L.CheckString(2)
	if v, ok := c.updates[name]; ok {
		L.Push(stdlib.FromGo(L, v))
		return 1
	}
	v, err := c.meta.lookupLua(L, name)
	if err != nil {
		L.RaiseError("get_meta('%s'): %v", name, err)
	}
	L.Push(v)
	return 1
}

// Field numbers of google.protobuf.Value's kinds.
const (
	valueNull   = 1
	valueNumber = 2
	valueString = 3
	valueBool   = 4
	valueStruct = 5
	valueList   = 6
)

// lookupLua is Lookup converted by valueToLua. A scalar, which is what
// connection metadata almost always holds, is read straight from the wire;
// an object or a list goes through proto.Unmarshal. Either way the result
// is what proto.Unmarshal would make of the value: the last kind wins,
// strings must be UTF-8, unknown fields and fields of another wire type are
// skipped.
func (m Meta) lookupLua(L *lua.LState, name string) (lua.LValue, error) {
	raw, ok, err := m.lookupEncoded(name)
	if err != nil || !ok {
		return lua.LNil, err
	}
	v, composite, err := scalarToLua(raw)
	if err != nil {
		return lua.LNil, malformed(name, err)
	}
	if !composite {
		return v, nil
	}
	pv, err := decodeValue(name, raw)
	if err != nil {
		return lua.LNil, err
	}
	return valueToLua(L, pv), nil
}

// scalarToLua decodes an encoded google.protobuf.Value holding a null, a
// number, a string or a bool. composite reports a struct or list field,
// which it leaves to proto.Unmarshal: it would validate such a field even
// when a later kind replaces it.
func scalarToLua(b []byte) (v lua.LValue, composite bool, err error) {
	v = lua.LNil
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return lua.LNil, false, protowire.ParseError(n)
		}
		if num > protowire.MaxValidNumber {
			return lua.LNil, false, fmt.Errorf("field number %d is out of range", num)
		}
		b = b[n:]
		switch {
		case num == valueNull && typ == protowire.VarintType:
			_, n = protowire.ConsumeVarint(b)
			v = lua.LNil
		case num == valueNumber && typ == protowire.Fixed64Type:
			var bits uint64
			bits, n = protowire.ConsumeFixed64(b)
			v = lua.LNumber(math.Float64frombits(bits))
		case num == valueString && typ == protowire.BytesType:
			var s []byte
			s, n = protowire.ConsumeBytes(b)
			if n >= 0 && !utf8.Valid(s) {
				return lua.LNil, false, errors.New("string_value is not valid UTF-8")
			}
			v = lua.LString(s)
		case num == valueBool && typ == protowire.VarintType:
			var x uint64
			x, n = protowire.ConsumeVarint(b)
			v = lua.LBool(x != 0)
		case (num == valueStruct || num == valueList) && typ == protowire.BytesType:
			return lua.LNil, true, nil
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return lua.LNil, false, protowire.ParseError(n)
		}
		b = b[n:]
	}
	return v, false, nil
}

// setMeta is conn_meta:set_meta(name, value); the value must be
// JSON-serialisable, as in KumoMTA.
func setMeta(L *lua.LState) int {
	c := checkConnMeta(L)
	name := L.CheckString(2)
	v, size, err := stdlib.ToGoSize(L.Get(3))
	if err != nil {
		L.ArgError(3, "set_meta('"+name+"'): "+err.Error())
	}
	size += len(name)
	if c.size-c.sizes[name]+size > maxMetaUpdateBytes {
		L.ArgError(3, fmt.Sprintf("set_meta('%s'): the values set in one call would exceed %d bytes", name, maxMetaUpdateBytes))
	}
	if c.updates == nil {
		c.updates, c.sizes = make(map[string]any), make(map[string]int)
	}
	c.size += size - c.sizes[name]
	c.updates[name], c.sizes[name] = v, size
	return 0
}

// valueToLua converts a protobuf Struct value: objects become tables, lists
// 1-based arrays, null nil.
func valueToLua(L *lua.LState, v *structpb.Value) lua.LValue {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return lua.LString(k.StringValue)
	case *structpb.Value_NumberValue:
		return lua.LNumber(k.NumberValue)
	case *structpb.Value_BoolValue:
		return lua.LBool(k.BoolValue)
	case *structpb.Value_StructValue:
		fields := k.StructValue.GetFields()
		t := L.CreateTable(0, len(fields))
		for name, fv := range fields {
			t.RawSetString(name, valueToLua(L, fv))
		}
		return t
	case *structpb.Value_ListValue:
		items := k.ListValue.GetValues()
		t := L.CreateTable(len(items), 0)
		for i, iv := range items {
			t.RawSetInt(i+1, valueToLua(L, iv))
		}
		return t
	default:
		return lua.LNil
	}
}
