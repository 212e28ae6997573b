package stdlib

import lua "github.com/yuin/gopher-lua"

// openLazy makes kumo[name] a module whose functions are installed the first time
// one of its fields is read. Most policies use few of the helper modules, and a
// pool creates many states, so states do not pay for the modules they never touch.
// Until then the table is empty to next and pairs.
func openLazy(L *lua.LState, kumo *lua.LTable, name string, open func(L *lua.LState, mod *lua.LTable)) {
	// Tables sized for what they will hold: NewTable reserves room for 32 entries.
	mod, ok := kumo.RawGetString(name).(*lua.LTable)
	if !ok {
		mod = L.CreateTable(0, 0)
		kumo.RawSetString(name, mod)
	}
	mt := L.CreateTable(0, 1)
	mt.RawSetString("__index", L.NewFunction(func(L *lua.LState) int {
		mod.Metatable = lua.LNil
		open(L, mod)
		L.Push(mod.RawGet(L.Get(2)))
		return 1
	}))
	mod.Metatable = mt
}

// openKumoHelpers installs the KumoMTA helper modules.
func (b *lib) openKumoHelpers(L *lua.LState, kumo *lua.LTable) {
	b.openMemoize(L, kumo)
	b.openKumoLoad(L, kumo)
	kumo.RawSetString("sleep", L.NewFunction(timeSleep))
	openLazy(L, kumo, "time", b.openKumoTime)
	openLazy(L, kumo, "encode", b.openKumoEncode)
	openLazy(L, kumo, "digest", b.openKumoDigest)
	openLazy(L, kumo, "uuid", openKumoUUID)
	openLazy(L, kumo, "cidr", openKumoCIDR)
	openLazy(L, kumo, "domain_map", openKumoDomainMap)
	openLazy(L, kumo, "regex_set_map", openKumoRegexSetMap)
	openPSL(L, kumo)
	openNormalize(L, kumo)
	b.openTemplate(L, kumo)
}
