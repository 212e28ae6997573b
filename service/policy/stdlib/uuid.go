package stdlib

import (
	"github.com/google/uuid"
	lua "github.com/yuin/gopher-lua"
)

const uuidTypeName = "kumo.uuid"

func openKumoUUID(L *lua.LState, mod *lua.LTable) {
	mt := L.NewTypeMetatable(uuidTypeName)
	mt.RawSetString("__index", L.NewFunction(uuidIndex))
	mt.RawSetString("__tostring", L.NewFunction(uuidString))
	mt.RawSetString("__eq", L.NewFunction(uuidEq))
	setFuncs(L, mod, map[string]lua.LGFunction{
		"new_v1": uuidNew("kumo.uuid.new_v1", uuid.NewUUID),
		"new_v4": uuidNew("kumo.uuid.new_v4", uuid.NewRandom),
		"new_v6": uuidNew("kumo.uuid.new_v6", uuid.NewV6),
		"new_v7": uuidNew("kumo.uuid.new_v7", uuid.NewV7),
		"parse":  uuidParse,
	})
}

func pushUUID(L *lua.LState, u uuid.UUID) {
	ud := L.NewUserData()
	ud.Value = u
	ud.Metatable = L.GetTypeMetatable(uuidTypeName)
	L.Push(ud)
}

func uuidNew(fname string, gen func() (uuid.UUID, error)) lua.LGFunction {
	return func(L *lua.LState) int {
		u, err := gen()
		if err != nil {
			L.RaiseError("%s: %s", fname, err.Error())
		}
		pushUUID(L, u)
		return 1
	}
}

// uuidParse is kumo.uuid.parse: hyphenated, simple, braced and URN forms.
func uuidParse(L *lua.LState) int {
	const fname = "kumo.uuid.parse"
	s := checkString(L, 1, fname)
	u, err := uuid.Parse(s)
	if err != nil {
		L.RaiseError("%s: invalid UUID %q: %s", fname, s, err.Error())
	}
	pushUUID(L, u)
	return 1
}

func checkUUID(L *lua.LState, n int) uuid.UUID {
	if ud, ok := L.Get(n).(*lua.LUserData); ok {
		if u, ok := ud.Value.(uuid.UUID); ok {
			return u
		}
	}
	typeError(L, n, "uuid", "uuid")
	return uuid.UUID{}
}

func uuidIndex(L *lua.LState) int {
	u := checkUUID(L, 1)
	var v lua.LValue = lua.LNil
	switch L.CheckString(2) {
	case "bytes":
		v = lua.LString(u[:])
	case "hyphenated":
		v = lua.LString(u.String())
	case "simple":
		h := u.String()
		v = lua.LString(h[0:8] + h[9:13] + h[14:18] + h[19:23] + h[24:])
	case "braced":
		v = lua.LString("{" + u.String() + "}")
	case "urn":
		v = lua.LString(u.URN())
	}
	L.Push(v)
	return 1
}

func uuidString(L *lua.LState) int {
	L.Push(lua.LString(checkUUID(L, 1).String()))
	return 1
}

func uuidEq(L *lua.LState) int {
	L.Push(lua.LBool(checkUUID(L, 1) == checkUUID(L, 2)))
	return 1
}
