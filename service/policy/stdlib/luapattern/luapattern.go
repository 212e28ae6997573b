// Package luapattern implements Lua 5.4's string pattern matching with a step budget, so a match can be interrupted.
package luapattern

import (
	"fmt"
	"strings"
)

// MaxCaptures is the most captures one pattern may make (LUA_MAXCAPTURES).
const MaxCaptures = 32

// CheckEvery is how many matching steps run between calls to the check function.
const CheckEvery = 4096

// maxCalls bounds the recursion of match, as MAXCCALLS does in Lua.
const maxCalls = 200

// specials are the characters that make a pattern more than a plain substring.
const specials = "^$*+?.([%-"

// Capture length markers, as in lstrlib.c.
const (
	capUnfinished = -1
	capPosition   = -2
)

// Error is a malformed pattern or a bad capture reference, with Lua 5.4's message.
type Error struct {
	Msg string
}

func (e *Error) Error() string { return e.Msg }

// Capture is one capture of a match.
type Capture struct {
	// Start and End delimit the captured text, subject[Start:End].
	Start, End int
	// Position marks a position capture "()", whose Lua value is the integer Start+1.
	Position bool
}

type capture struct {
	init int
	len  int // length, or capUnfinished / capPosition
}

// Matcher matches one pattern against one subject. The zero value is ready for Reset;
// a Matcher allocates nothing while matching.
type Matcher struct {
	src   string
	raw   string // the pattern as given
	p     string // the pattern being matched: raw without an anchoring '^'
	check func() error

	budget int // steps left before the next check
	depth  int // calls of match left before "pattern too complex"
	level  int // captures made, finished or not
	caps   [MaxCaptures]capture

	start, end int // the last match

	// Scan state.
	pos, lastMatch int
	anchored, done bool
}

// interrupted carries the check function's error out of the recursion.
type interrupted struct{ err error }

// Reset prepares m to match pattern against src. check, when not nil, is called every
// CheckEvery steps; the first non-nil error it returns aborts the match.
func (m *Matcher) Reset(src, pattern string, check func() error) {
	*m = Matcher{src: src, raw: pattern, p: pattern, check: check, budget: CheckEvery}
}

// Plain reports whether pattern has none of the characters "^$*+?.([%-", so that
// string.find may search for it as a plain substring. string.match may not: ')' alone
// is still an error there.
func Plain(pattern string) bool {
	return !strings.ContainsAny(pattern, specials)
}

// Find looks for the first match starting at or after byte offset init, as
// string.find and string.match do: a leading '^' anchors the match at init. With plain
// set, the pattern is searched for as a plain substring. An init beyond the subject
// finds nothing.
func (m *Matcher) Find(init int, plain bool) (found bool, err error) {
	m.level = 0
	if init < 0 || init > len(m.src) {
		return false, nil
	}
	if plain {
		i := strings.Index(m.src[init:], m.raw)
		if i < 0 {
			return false, nil
		}
		m.start, m.end = init+i, init+i+len(m.raw)
		return true, nil
	}
	defer m.recover(&err)
	m.p = m.raw
	anchor := strings.HasPrefix(m.p, "^")
	if anchor {
		m.p = m.p[1:]
	}
	for s := init; ; s++ {
		if e := m.matchAt(s); e >= 0 {
			m.start, m.end = s, e
			return true, nil
		}
		if anchor || s >= len(m.src) {
			return false, nil
		}
	}
}

// Scan starts an iteration over the matches at or after byte offset init. With anchor
// set, as string.gsub does, a leading '^' anchors the first match at init and ends the
// iteration after it; without, as string.gmatch does, '^' is an ordinary character.
func (m *Matcher) Scan(init int, anchor bool) {
	m.p, m.anchored = m.raw, false
	if anchor && strings.HasPrefix(m.raw, "^") {
		m.p, m.anchored = m.raw[1:], true
	}
	m.pos, m.lastMatch = init, -1
	m.done = init < 0 || init > len(m.src)
}

// Next finds the next match of the iteration started by Scan. Like Lua 5.4, it skips
// a match that ends where the previous one ended, so an empty match never follows
// another match directly.
func (m *Matcher) Next() (found bool, err error) {
	defer m.recover(&err)
	for !m.done && m.pos <= len(m.src) {
		s := m.pos
		e := m.matchAt(s)
		m.done = m.anchored
		if e >= 0 && e != m.lastMatch {
			m.start, m.end = s, e
			m.pos, m.lastMatch = e, e
			return true, nil
		}
		m.pos++
	}
	m.done = true
	return false, nil
}

// Start is the byte offset where the last match begins.
func (m *Matcher) Start() int { return m.start }

// End is the byte offset just after the last match.
func (m *Matcher) End() int { return m.end }

// Captures is the number of captures the last match made; 0 when the pattern has none.
func (m *Matcher) Captures() int { return m.level }

// Capture returns capture i (from 0) of the last match. When the pattern has no
// captures, capture 0 is the whole match, as Lua's %1 and gsub table keys use it.
func (m *Matcher) Capture(i int) (Capture, error) {
	if i >= m.level {
		if i != 0 {
			return Capture{}, &Error{Msg: fmt.Sprintf("invalid capture index %%%d", i+1)}
		}
		return Capture{Start: m.start, End: m.end}, nil
	}
	c := m.caps[i]
	switch c.len {
	case capUnfinished:
		return Capture{}, &Error{Msg: "unfinished capture"}
	case capPosition:
		return Capture{Start: c.init, End: c.init, Position: true}, nil
	}
	return Capture{Start: c.init, End: c.init + c.len}, nil
}

// recover turns the panics raised inside the recursion into the exported call's error.
func (m *Matcher) recover(err *error) {
	switch r := recover().(type) {
	case nil:
	case *Error:
		*err = r
	case interrupted:
		*err = fmt.Errorf("pattern matching interrupted: %w", r.err)
	default:
		panic(r)
	}
}

// fail aborts the match with a pattern error.
func fail(msg string) {
	panic(&Error{Msg: msg})
}

// step charges n steps to the budget and calls the check function when it runs out.
func (m *Matcher) step(n int) {
	m.budget -= n
	if m.budget <= 0 {
		m.poll()
	}
}

func (m *Matcher) poll() {
	m.budget = CheckEvery
	if m.check == nil {
		return
	}
	if err := m.check(); err != nil {
		panic(interrupted{err})
	}
}

// matchAt runs one match attempt at s with fresh captures.
func (m *Matcher) matchAt(s int) int {
	m.level = 0
	m.depth = maxCalls
	return m.match(s, 0)
}

// pat returns the pattern byte at i, or 0 past the end, like the terminating NUL
// lstrlib.c relies on.
func (m *Matcher) pat(i int) byte {
	if i < len(m.p) {
		return m.p[i]
	}
	return 0
}

// match matches the pattern from p against the subject from s and returns the end of
// the match, or -1. Tail calls of the C original are iterations of the loop.
func (m *Matcher) match(s, p int) int {
	if m.depth == 0 {
		fail("pattern too complex")
	}
	m.depth--
loop:
	for p < len(m.p) {
		m.step(1)
		c := m.p[p]
		switch {
		case c == '(':
			if m.pat(p+1) == ')' {
				s = m.startCapture(s, p+2, capPosition)
			} else {
				s = m.startCapture(s, p+1, capUnfinished)
			}
			break loop
		case c == ')':
			s = m.endCapture(s, p+1)
			break loop
		case c == '$' && p+1 == len(m.p):
			if s != len(m.src) {
				s = -1
			}
			break loop
		case c == '%' && m.pat(p+1) == 'b':
			if s = m.matchBalance(s, p+2); s >= 0 {
				p += 4
				continue
			}
			break loop
		case c == '%' && m.pat(p+1) == 'f':
			p += 2
			if m.pat(p) != '[' {
				fail("missing '[' after '%f' in pattern")
			}
			ep := m.classEnd(p)
			var prev, cur byte // NUL before the subject's start and at its end
			if s > 0 {
				prev = m.src[s-1]
			}
			if s < len(m.src) {
				cur = m.src[s]
			}
			if !m.matchBracketClass(prev, p, ep-1) && m.matchBracketClass(cur, p, ep-1) {
				p = ep
				continue
			}
			s = -1
			break loop
		case c == '%' && isDigit(m.pat(p+1)):
			if s = m.matchCapture(s, m.p[p+1]); s >= 0 {
				p += 2
				continue
			}
			break loop
		}
		// A single character class with an optional repetition suffix.
		ep := m.classEnd(p)
		suffix := m.pat(ep)
		if !m.singleMatch(s, p, ep) {
			if suffix == '*' || suffix == '?' || suffix == '-' {
				p = ep + 1 // accept the empty repetition
				continue
			}
			s = -1
			break loop
		}
		switch suffix {
		case '?':
			if r := m.match(s+1, ep+1); r >= 0 {
				s = r
				break loop
			}
			p = ep + 1
			continue
		case '+':
			s = m.maxExpand(s+1, p, ep)
		case '*':
			s = m.maxExpand(s, p, ep)
		case '-':
			s = m.minExpand(s, p, ep)
		default:
			s++
			p = ep
			continue
		}
		break loop
	}
	m.depth++
	return s
}

// classEnd returns the index just after the single character class at p.
func (m *Matcher) classEnd(p int) int {
	c := m.p[p]
	p++
	switch c {
	case '%':
		if p >= len(m.p) {
			fail("malformed pattern (ends with '%')")
		}
		return p + 1
	case '[':
		start := p
		if m.pat(p) == '^' {
			p++
		}
		for { // the first character is part of the set even when it is ']'
			if p >= len(m.p) {
				fail("malformed pattern (missing ']')")
			}
			c := m.p[p]
			p++
			if c == '%' && p < len(m.p) {
				p++ // skip escapes such as "%]"
			}
			if m.pat(p) == ']' {
				break
			}
		}
		m.step((p - start) >> 5) // long sets cost more than one step
		return p + 1
	}
	return p
}

// singleMatch reports whether the subject byte at s matches the class p..ep.
func (m *Matcher) singleMatch(s, p, ep int) bool {
	if s >= len(m.src) {
		return false
	}
	c := m.src[s]
	switch m.p[p] {
	case '.':
		return true
	case '%':
		return matchClass(c, m.p[p+1])
	case '[':
		return m.matchBracketClass(c, p, ep-1)
	}
	return m.p[p] == c
}

// matchBracketClass reports whether c is in the set from '[' at p to ']' at ec.
func (m *Matcher) matchBracketClass(c byte, p, ec int) bool {
	m.step((ec - p) >> 5)
	in := true
	if m.p[p+1] == '^' {
		in = false
		p++
	}
	for p++; p < ec; p++ {
		switch {
		case m.p[p] == '%':
			p++
			if matchClass(c, m.p[p]) {
				return in
			}
		case m.p[p+1] == '-' && p+2 < ec:
			p += 2
			if m.p[p-2] <= c && c <= m.p[p] {
				return in
			}
		case m.p[p] == c:
			return in
		}
	}
	return !in
}

// matchBalance matches %bxy at s, with x and y at p.
func (m *Matcher) matchBalance(s, p int) int {
	if p+1 >= len(m.p) {
		fail("malformed pattern (missing arguments to '%b')")
	}
	if s >= len(m.src) || m.src[s] != m.p[p] {
		return -1
	}
	open, closing := m.p[p], m.p[p+1]
	depth := 1
	for s++; s < len(m.src); s++ {
		m.step(1)
		switch m.src[s] {
		case closing:
			if depth--; depth == 0 {
				return s + 1
			}
		case open:
			depth++
		}
	}
	return -1
}

// maxExpand matches as many repetitions of the class p..ep as possible, then backs off
// one at a time until the rest of the pattern matches.
func (m *Matcher) maxExpand(s, p, ep int) int {
	i := 0
	for m.singleMatch(s+i, p, ep) {
		m.step(1)
		i++
	}
	for ; i >= 0; i-- {
		if r := m.match(s+i, ep+1); r >= 0 {
			return r
		}
	}
	return -1
}

// minExpand matches as few repetitions of the class p..ep as the rest of the pattern
// allows.
func (m *Matcher) minExpand(s, p, ep int) int {
	for {
		if r := m.match(s, ep+1); r >= 0 {
			return r
		}
		if !m.singleMatch(s, p, ep) {
			return -1
		}
		s++
	}
}

func (m *Matcher) startCapture(s, p, what int) int {
	if m.level >= MaxCaptures {
		fail("too many captures")
	}
	m.caps[m.level] = capture{init: s, len: what}
	m.level++
	r := m.match(s, p)
	if r < 0 {
		m.level-- // undo the capture
	}
	return r
}

func (m *Matcher) endCapture(s, p int) int {
	l := m.captureToClose()
	m.caps[l].len = s - m.caps[l].init
	r := m.match(s, p)
	if r < 0 {
		m.caps[l].len = capUnfinished
	}
	return r
}

// captureToClose is the innermost capture still open.
func (m *Matcher) captureToClose() int {
	for l := m.level - 1; l >= 0; l-- {
		if m.caps[l].len == capUnfinished {
			return l
		}
	}
	fail("invalid pattern capture")
	return 0
}

// matchCapture matches a back-reference %1-%9 at s.
func (m *Matcher) matchCapture(s int, digit byte) int {
	l := int(digit) - '1'
	if l < 0 || l >= m.level || m.caps[l].len == capUnfinished {
		fail(fmt.Sprintf("invalid capture index %%%d", l+1))
	}
	c := m.caps[l]
	// A position capture has no text and never matches, as in C.
	if c.len < 0 || len(m.src)-s < c.len {
		return -1
	}
	m.step(c.len >> 5)
	if m.src[s:s+c.len] != m.src[c.init:c.init+c.len] {
		return -1
	}
	return s + c.len
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
