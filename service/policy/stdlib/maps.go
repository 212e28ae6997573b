package stdlib

import (
	"net/netip"
	"regexp"
	"sort"
	"strings"

	lua "github.com/yuin/gopher-lua"
)

const (
	cidrMapTypeName     = "kumo.cidr.CidrMap"
	domainMapTypeName   = "kumo.domain_map.DomainMap"
	regexSetMapTypeName = "kumo.regex_set_map.RegexSetMap"
	// maxRegexSetPatterns bounds a regex set map, which every lookup scans.
	maxRegexSetPatterns = 4096
)

// cidrMap maps network blocks to values; a lookup finds the longest block holding
// the address.
type cidrMap struct {
	blocks map[netip.Prefix]lua.LValue
	// lengths counts the blocks of each prefix length, so a lookup tries only those.
	lengths map[int]int
}

// domainMap maps domain names to values; "*.example.com" matches every name below
// example.com, and an exact entry wins over a wildcard.
type domainMap struct {
	exact    map[string]lua.LValue
	wildcard map[string]lua.LValue
}

// regexSetMap maps patterns to values; a lookup returns the value of the first
// pattern, in sorted order, that matches anywhere in the text.
type regexSetMap struct {
	patterns []*regexp.Regexp
	values   []lua.LValue
}

func openKumoCIDR(L *lua.LState, mod *lua.LTable) {
	mt := L.NewTypeMetatable(cidrMapTypeName)
	mt.RawSetString("__index", L.NewFunction(cidrIndex))
	mt.RawSetString("__newindex", L.NewFunction(cidrNewIndex))
	mod.RawSetString("make_map", L.NewFunction(cidrMakeMap))
}

func openKumoDomainMap(L *lua.LState, mod *lua.LTable) {
	mt := L.NewTypeMetatable(domainMapTypeName)
	mt.RawSetString("__index", L.NewFunction(domainIndex))
	mt.RawSetString("__newindex", L.NewFunction(domainNewIndex))
	mod.RawSetString("new", L.NewFunction(domainMapNew))
}

func openKumoRegexSetMap(L *lua.LState, mod *lua.LTable) {
	mt := L.NewTypeMetatable(regexSetMapTypeName)
	mt.RawSetString("__index", L.NewFunction(regexSetIndex))
	mt.RawSetString("__newindex", L.NewFunction(regexSetNewIndex))
	mod.RawSetString("new", L.NewFunction(regexSetMapNew))
}

// seedPairs calls set for every pair of the optional table argument 1.
func seedPairs(L *lua.LState, fname string, set func(k, v lua.LValue)) {
	switch t := L.Get(1).(type) {
	case *lua.LNilType:
	case *lua.LTable:
		i := 0
		t.ForEach(func(k, v lua.LValue) {
			checkCtx(L, i)
			i++
			set(k, v)
		})
	default:
		typeError(L, 1, fname, "table")
	}
}

func newMapObject(L *lua.LState, value any, typeName string) *lua.LUserData {
	ud := L.NewUserData()
	ud.Value = value
	ud.Metatable = L.GetTypeMetatable(typeName)
	return ud
}

// parseCIDRKey reads a map key: an address (also as "[addr]", "addr:port",
// "[addr]:port" or an "[IPv6:addr]" domain literal) or a block in CIDR notation.
func parseCIDRKey(s string) (netip.Prefix, bool) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), true
	}
	a, ok := parseAddrKey(s)
	if !ok {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, a.BitLen()), true
}

func parseAddrKey(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		inner := s[1 : len(s)-1]
		if len(inner) > 5 && strings.EqualFold(inner[:5], "IPv6:") {
			inner = inner[5:]
		}
		if a, err := netip.ParseAddr(inner); err == nil {
			return a.Unmap(), true
		}
	}
	return netip.Addr{}, false
}

func (m *cidrMap) set(L *lua.LState, fname string, k, v lua.LValue) {
	s, ok := k.(lua.LString)
	p, valid := parseCIDRKey(string(s))
	if !ok || !valid {
		L.RaiseError("%s: invalid key %s: an IP address or CIDR block is needed", fname, L.ToStringMeta(k).String())
	}
	if _, had := m.blocks[p]; had {
		if v == lua.LNil {
			delete(m.blocks, p)
			m.lengths[p.Bits()]--
			return
		}
	} else if v != lua.LNil {
		m.lengths[p.Bits()]++
	}
	if v != lua.LNil {
		m.blocks[p] = v
	}
}

func cidrMakeMap(L *lua.LState) int {
	const fname = "kumo.cidr.make_map"
	m := &cidrMap{blocks: map[netip.Prefix]lua.LValue{}, lengths: map[int]int{}}
	seedPairs(L, fname, func(k, v lua.LValue) { m.set(L, fname, k, v) })
	L.Push(newMapObject(L, m, cidrMapTypeName))
	return 1
}

// checkMap returns the map object a metamethod was called on.
func checkMap[T any](L *lua.LState, kind string) T {
	if ud, ok := L.Get(1).(*lua.LUserData); ok {
		if m, ok := ud.Value.(T); ok {
			return m
		}
	}
	typeError(L, 1, "index", kind)
	var zero T
	return zero
}

func cidrIndex(L *lua.LState) int {
	m := checkMap[*cidrMap](L, "CidrMap")
	s, ok := L.Get(2).(lua.LString)
	var a netip.Addr
	if ok {
		a, ok = parseAddrKey(string(s))
	}
	if !ok {
		L.Push(lua.LNil)
		return 1
	}
	for bits := a.BitLen(); bits >= 0; bits-- {
		if m.lengths[bits] == 0 {
			continue
		}
		p, _ := a.Prefix(bits)
		if v, ok := m.blocks[p]; ok {
			L.Push(v)
			return 1
		}
	}
	L.Push(lua.LNil)
	return 1
}

func cidrNewIndex(L *lua.LState) int {
	checkMap[*cidrMap](L, "CidrMap").set(L, "CidrMap", L.Get(2), L.Get(3))
	return 0
}

// normalizeDomain lower-cases a name and drops a trailing root dot.
func normalizeDomain(s string) string {
	return strings.ToLower(strings.TrimSuffix(s, "."))
}

func (m *domainMap) set(L *lua.LState, fname string, k, v lua.LValue) {
	s, ok := k.(lua.LString)
	if !ok || s == "" {
		L.RaiseError("%s: invalid key %s: a domain name is needed", fname, L.ToStringMeta(k).String())
	}
	name := normalizeDomain(string(s))
	target := m.exact
	if rest, ok := strings.CutPrefix(name, "*."); ok {
		name, target = rest, m.wildcard
	}
	if v == lua.LNil {
		delete(target, name)
		return
	}
	target[name] = v
}

func domainMapNew(L *lua.LState) int {
	const fname = "kumo.domain_map.new"
	m := &domainMap{exact: map[string]lua.LValue{}, wildcard: map[string]lua.LValue{}}
	seedPairs(L, fname, func(k, v lua.LValue) { m.set(L, fname, k, v) })
	L.Push(newMapObject(L, m, domainMapTypeName))
	return 1
}

// domainIndex tries the exact name, then the wildcards of each parent from the
// closest up.
func domainIndex(L *lua.LState) int {
	m := checkMap[*domainMap](L, "DomainMap")
	s, ok := L.Get(2).(lua.LString)
	if !ok {
		L.Push(lua.LNil)
		return 1
	}
	name := normalizeDomain(string(s))
	if v, ok := m.exact[name]; ok {
		L.Push(v)
		return 1
	}
	for i := strings.IndexByte(name, '.'); i >= 0; {
		parent := name[i+1:]
		if v, ok := m.wildcard[parent]; ok {
			L.Push(v)
			return 1
		}
		j := strings.IndexByte(parent, '.')
		if j < 0 {
			break
		}
		i += j + 1
	}
	L.Push(lua.LNil)
	return 1
}

func domainNewIndex(L *lua.LState) int {
	checkMap[*domainMap](L, "DomainMap").set(L, "DomainMap", L.Get(2), L.Get(3))
	return 0
}

func regexSetMapNew(L *lua.LState) int {
	const fname = "kumo.regex_set_map.new"
	type entry struct {
		pattern string
		value   lua.LValue
	}
	var entries []entry
	seedPairs(L, fname, func(k, v lua.LValue) {
		s, ok := k.(lua.LString)
		if !ok {
			L.RaiseError("%s: invalid key %s: a pattern string is needed", fname, L.ToStringMeta(k).String())
		}
		if len(entries) >= maxRegexSetPatterns {
			L.RaiseError("%s: too many patterns (more than %d)", fname, maxRegexSetPatterns)
		}
		entries = append(entries, entry{string(s), v})
	})
	sort.Slice(entries, func(i, j int) bool { return entries[i].pattern < entries[j].pattern })
	m := &regexSetMap{}
	for _, e := range entries {
		re, err := compileCached(e.pattern)
		if err != nil {
			L.RaiseError("%s: invalid pattern %q: %s", fname, e.pattern, err.Error())
		}
		m.patterns = append(m.patterns, re)
		m.values = append(m.values, e.value)
	}
	L.Push(newMapObject(L, m, regexSetMapTypeName))
	return 1
}

func regexSetIndex(L *lua.LState) int {
	m := checkMap[*regexSetMap](L, "RegexSetMap")
	s, ok := L.Get(2).(lua.LString)
	if !ok {
		L.Push(lua.LNil)
		return 1
	}
	for i, re := range m.patterns {
		checkCtx(L, i+1)
		if re.MatchString(string(s)) {
			L.Push(m.values[i])
			return 1
		}
	}
	L.Push(lua.LNil)
	return 1
}

func regexSetNewIndex(L *lua.LState) int {
	L.RaiseError("a regex set map cannot be changed after kumo.regex_set_map.new")
	return 0
}
