package policy

import (
	"fmt"

	lua "github.com/yuin/gopher-lua"
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
	v, err := c.meta.Lookup(name)
	if err != nil {
		L.RaiseError("get_meta('%s'): %v", name, err)
	}
	L.Push(valueToLua(L, v))
	return 1
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
