package stdlib

import (
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	lua "github.com/yuin/gopher-lua"
)

const regexTypeName = "kumo.regex"

// The compiled-regexp cache is shared by all states: *regexp.Regexp is safe for
// concurrent use, and policies often compile the same pattern inside the handler on
// every request. When full it is emptied rather than tracked per entry, which keeps
// lookups lock-free and lets the patterns still in use come straight back.
const (
	regexCacheSize       = 512
	regexCacheMaxPattern = 4096
)

var (
	regexCache      sync.Map // pattern -> *regexp.Regexp
	regexCacheCount atomic.Int64
)

func compileCached(pattern string) (*regexp.Regexp, error) {
	if v, ok := regexCache.Load(pattern); ok {
		return v.(*regexp.Regexp), nil
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, err
	}
	if len(pattern) <= regexCacheMaxPattern {
		if regexCacheCount.Add(1) > regexCacheSize {
			regexCache.Clear()
			regexCacheCount.Store(1)
		}
		regexCache.Store(pattern, re)
	}
	return re, nil
}

func (b *lib) openKumoRegex(L *lua.LState, kumo *lua.LTable) {
	mt := L.NewTypeMetatable(regexTypeName)
	methods := L.NewTable()
	setFuncs(L, methods, map[string]lua.LGFunction{
		"is_match":    reIsMatch,
		"captures":    reCaptures,
		"find":        reFind,
		"find_all":    reFindAll,
		"replace":     b.reReplace,
		"replace_all": b.reReplaceAll,
		"replacen":    b.reReplacen,
		"split":       reSplit,
	})
	mt.RawSetString("__index", methods)
	setFuncs(L, subModule(L, kumo, "regex"), map[string]lua.LGFunction{
		"compile": reCompile,
		"escape":  reEscape,
	})
}

func reCompile(L *lua.LState) int {
	const fname = "kumo.regex.compile"
	pattern := checkUTF8(L, 1, fname)
	re, err := compileCached(pattern)
	if err != nil {
		L.RaiseError("%s: invalid pattern %q: %s", fname, pattern, err.Error())
	}
	ud := L.NewUserData()
	ud.Value = re
	ud.Metatable = L.GetTypeMetatable(regexTypeName)
	L.Push(ud)
	return 1
}

// regexMetaChars are the characters Rust's regex::escape escapes; Go's QuoteMeta
// leaves out '#', '&', '-' and '~'.
const regexMetaChars = `\.+*?()|[]{}^$#&-~`

func reEscape(L *lua.LState) int {
	s := checkUTF8(L, 1, "kumo.regex.escape")
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(regexMetaChars, s[i]) >= 0 {
			sb.WriteByte('\\')
		}
		sb.WriteByte(s[i])
	}
	L.Push(lua.LString(sb.String()))
	return 1
}

// checkRegex returns the receiver of a method call and its haystack argument.
// Arguments are numbered as the caller sees them, without the receiver.
func checkRegex(L *lua.LState, method string) (*regexp.Regexp, string, string) {
	fname := "kumo.regex:" + method
	ud, ok := L.Get(1).(*lua.LUserData)
	var re *regexp.Regexp
	if ok {
		re, ok = ud.Value.(*regexp.Regexp)
	}
	if !ok {
		L.RaiseError("calling '%s' on bad self (kumo.regex expected, got %s)", method, typeName(L, 1))
	}
	return re, stringArg(L, 2, 1, fname, true), fname
}

func reIsMatch(L *lua.LState) int {
	re, s, _ := checkRegex(L, "is_match")
	L.Push(lua.LBool(re.MatchString(s)))
	return 1
}

// reCaptures returns nil without a match, else a table holding each participating
// group by number (0 is the whole match) and, for named groups, by name as well.
func reCaptures(L *lua.LState) int {
	re, s, _ := checkRegex(L, "captures")
	m := re.FindStringSubmatchIndex(s)
	if m == nil {
		L.Push(lua.LNil)
		return 1
	}
	names := re.SubexpNames()
	t := L.CreateTable(0, len(names))
	for i := range names {
		if m[2*i] < 0 {
			continue
		}
		v := lua.LString(s[m[2*i]:m[2*i+1]])
		t.RawSetInt(i, v)
		if names[i] != "" {
			t.RawSetString(names[i], v)
		}
	}
	L.Push(t)
	return 1
}

func reFind(L *lua.LState) int {
	re, s, _ := checkRegex(L, "find")
	loc := re.FindStringIndex(s)
	if loc == nil {
		L.Push(lua.LNil)
	} else {
		L.Push(lua.LString(s[loc[0]:loc[1]]))
	}
	return 1
}

func reFindAll(L *lua.LState) int {
	re, s, _ := checkRegex(L, "find_all")
	locs := re.FindAllStringIndex(s, -1)
	t := L.CreateTable(len(locs), 0)
	for i, loc := range locs {
		t.RawSetInt(i+1, lua.LString(s[loc[0]:loc[1]]))
	}
	L.Push(t)
	return 1
}

// reSplit returns the text between matches, including empty leading and trailing
// pieces, as KumoMTA's split does (Go's Regexp.Split drops some of them).
func reSplit(L *lua.LState) int {
	re, s, _ := checkRegex(L, "split")
	locs := re.FindAllStringIndex(s, -1)
	t := L.CreateTable(len(locs)+1, 0)
	last := 0
	for i, loc := range locs {
		t.RawSetInt(i+1, lua.LString(s[last:loc[0]]))
		last = loc[1]
	}
	t.RawSetInt(len(locs)+1, lua.LString(s[last:]))
	L.Push(t)
	return 1
}

func (b *lib) reReplace(L *lua.LState) int {
	re, s, fname := checkRegex(L, "replace")
	rep := stringArg(L, 3, 2, fname, true)
	L.Push(lua.LString(b.replaceRegex(L, fname, re, s, rep, 1)))
	return 1
}

func (b *lib) reReplaceAll(L *lua.LState) int {
	re, s, fname := checkRegex(L, "replace_all")
	rep := stringArg(L, 3, 2, fname, true)
	L.Push(lua.LString(b.replaceRegex(L, fname, re, s, rep, -1)))
	return 1
}

// reReplacen is re:replacen(haystack, limit, rep); a limit of 0 replaces every match,
// as in Rust's Regex::replacen.
func (b *lib) reReplacen(L *lua.LState) int {
	re, s, fname := checkRegex(L, "replacen")
	n := usizeArg(L, 3, 2, fname)
	rep := stringArg(L, 4, 3, fname, true)
	if n == 0 {
		n = -1
	}
	L.Push(lua.LString(b.replaceRegex(L, fname, re, s, rep, n)))
	return 1
}

// replaceRegex replaces up to limit matches (all when negative), expanding rep with
// Rust's rules and checking the size before every append.
func (b *lib) replaceRegex(L *lua.LState, fname string, re *regexp.Regexp, s, rep string, limit int) string {
	tmpl := parseTemplate(re, rep)
	var out strings.Builder
	add := func(piece string) {
		if out.Len()+len(piece) > b.max {
			tooLarge(L, fname, b.max)
		}
		out.WriteString(piece)
	}
	// Every replacement adds at least the template's literal text, so no more than
	// max/literal matches can fit: finding more would only waste time.
	lit := 0
	for _, p := range tmpl {
		lit += len(p.lit)
	}
	if lit > 0 && (limit < 0 || limit > b.max/lit+1) {
		limit = b.max/lit + 1
	}
	last := 0
	for i, m := range re.FindAllStringSubmatchIndex(s, limit) {
		checkCtx(L, i+1)
		add(s[last:m[0]])
		for _, p := range tmpl {
			if p.group < 0 {
				add(p.lit)
			} else if 2*p.group+1 < len(m) && m[2*p.group] >= 0 {
				add(s[m[2*p.group]:m[2*p.group+1]])
			}
		}
		last = m[1]
	}
	add(s[last:])
	return out.String()
}

// tmplPiece is a literal (group < 0) or a reference to a capture group.
type tmplPiece struct {
	lit   string
	group int
}

// parseTemplate splits a replacement with Rust regex's syntax: "$$" is a dollar,
// "$name" takes the longest run of [0-9A-Za-z_], "${name}" is braced, a numeric name
// is a group index, and a "$" that starts no valid reference stays literal. Unknown
// names and groups expand to nothing; a non-existent group is recorded as len+1.
func parseTemplate(re *regexp.Regexp, rep string) []tmplPiece {
	var pieces []tmplPiece
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			pieces = append(pieces, tmplPiece{lit: lit.String(), group: -1})
			lit.Reset()
		}
	}
	ref := func(name string) {
		flush()
		g := re.NumSubexp() + 1
		// Rust parses a numeric name with usize::from_str, which allows a leading '+'.
		if n, err := strconv.ParseUint(strings.TrimPrefix(name, "+"), 10, 32); err == nil {
			if n <= uint64(re.NumSubexp()) {
				g = int(n)
			}
		} else if idx := re.SubexpIndex(name); idx >= 0 {
			g = idx
		}
		pieces = append(pieces, tmplPiece{group: g})
	}
	for i := 0; i < len(rep); {
		j := strings.IndexByte(rep[i:], '$')
		if j < 0 {
			lit.WriteString(rep[i:])
			break
		}
		lit.WriteString(rep[i : i+j])
		i += j
		if i+1 < len(rep) && rep[i+1] == '$' {
			lit.WriteByte('$')
			i += 2
			continue
		}
		if i+1 < len(rep) && rep[i+1] == '{' {
			if k := strings.IndexByte(rep[i+2:], '}'); k >= 0 {
				ref(rep[i+2 : i+2+k])
				i += 2 + k + 1
				continue
			}
			lit.WriteByte('$')
			i++
			continue
		}
		k := i + 1
		for k < len(rep) && isCapLetter(rep[k]) {
			k++
		}
		if k == i+1 {
			lit.WriteByte('$')
			i++
			continue
		}
		ref(rep[i+1 : k])
		i = k
	}
	flush()
	return pieces
}

func isCapLetter(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
}
