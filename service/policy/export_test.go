package policy

import lua "github.com/yuin/gopher-lua"

// LookupLua exposes Meta.lookupLua to the package's external tests.
func LookupLua(L *lua.LState, m Meta, name string) (lua.LValue, error) { return m.lookupLua(L, name) }

// ValueToLua exposes valueToLua to the package's external tests.
var ValueToLua = valueToLua
