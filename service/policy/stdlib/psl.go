package stdlib

import (
	"strings"

	lua "github.com/yuin/gopher-lua"
	"golang.org/x/net/publicsuffix"
)

func openPSL(L *lua.LState, kumo *lua.LTable) {
	setFuncs(L, subModule(L, kumo, "string"), map[string]lua.LGFunction{
		"psl_domain":          pslDomain,
		"psl_suffix":          pslSuffix,
		"psl_domain_is_known": pslDomainIsKnown,
		"psl_suffix_is_known": pslSuffixIsKnown,
	})
}

// pslName reads a domain argument in the form the list is keyed by.
func pslName(L *lua.LState, fname string) string {
	return strings.ToLower(strings.TrimSuffix(checkUTF8(L, 1, fname), "."))
}

// suffixIsListed reports whether the public suffix of name comes from the list
// rather than from the rule that an unlisted top-level label is a suffix.
func suffixIsListed(name string) (string, bool) {
	suffix, icann := publicsuffix.PublicSuffix(name)
	return suffix, icann || strings.Contains(suffix, ".")
}

// pslDomain is kumo.string.psl_domain: the registrable domain, or nil when the name
// is itself a public suffix.
func pslDomain(L *lua.LState) int {
	d, err := publicsuffix.EffectiveTLDPlusOne(pslName(L, "kumo.string.psl_domain"))
	if err != nil {
		L.Push(lua.LNil)
		return 1
	}
	L.Push(lua.LString(d))
	return 1
}

// pslSuffix is kumo.string.psl_suffix: the public suffix, or nil for an empty name.
func pslSuffix(L *lua.LState) int {
	name := pslName(L, "kumo.string.psl_suffix")
	if name == "" {
		L.Push(lua.LNil)
		return 1
	}
	suffix, _ := publicsuffix.PublicSuffix(name)
	L.Push(lua.LString(suffix))
	return 1
}

func pslDomainIsKnown(L *lua.LState) int {
	name := pslName(L, "kumo.string.psl_domain_is_known")
	_, err := publicsuffix.EffectiveTLDPlusOne(name)
	_, listed := suffixIsListed(name)
	L.Push(lua.LBool(err == nil && listed))
	return 1
}

func pslSuffixIsKnown(L *lua.LState) int {
	name := pslName(L, "kumo.string.psl_suffix_is_known")
	_, listed := suffixIsListed(name)
	L.Push(lua.LBool(name != "" && listed))
	return 1
}
