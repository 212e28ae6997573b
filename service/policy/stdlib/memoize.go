package stdlib

import (
	"container/list"
	"math"
	"strconv"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// Bounds of kumo.memoize: the caches live in the state, so a pool of states holds
// this much once per state at most.
const (
	maxMemoCaches   = 1024
	maxMemoCapacity = 1 << 16
	maxMemoBytes    = 16 << 20
)

// memoCache is one named kumo.memoize cache: least recently used entries are evicted
// first when it is full, and an entry older than ttl is recomputed.
type memoCache struct {
	ttl      time.Duration
	capacity int
	entries  map[string]*list.Element
	order    *list.List // of *memoEntry, most recently used first
}

type memoEntry struct {
	key     string
	values  []memoValue
	expires time.Time
	size    int
}

// memoValue is a cached result. Tables are kept as their converted form and rebuilt
// on every hit, as KumoMTA does, so a caller that changes a returned table does not
// change the cache; values that cannot be converted are kept as they are.
type memoValue struct {
	value lua.LValue
	tree  any
	table bool
}

func (b *lib) openMemoize(L *lua.LState, kumo *lua.LTable) {
	kumo.RawSetString("memoize", L.NewFunction(b.memoize))
	kumo.RawSetString("traceback", L.NewFunction(traceback))
}

// memoize is kumo.memoize(fn, {name=, ttl=, capacity=, invalidate_with_epoch=}).
// Caches with the same name share their entries; invalidate_with_epoch is accepted
// and has nothing to do, because a reloaded policy gets new states. Fields of newer
// KumoMTA releases (allow_stale_reads, ...) are ignored.
func (b *lib) memoize(L *lua.LState) int {
	const fname = "kumo.memoize"
	fn, ok := L.Get(1).(*lua.LFunction)
	if !ok {
		typeError(L, 1, fname, "function")
	}
	params, ok := L.Get(2).(*lua.LTable)
	if !ok {
		typeError(L, 2, fname, "table")
	}
	name, ok := params.RawGetString("name").(lua.LString)
	if !ok {
		argError(L, 2, fname, "field 'name' must be a string")
	}
	L.Push(params.RawGetString("ttl"))
	if L.Get(-1) == lua.LNil {
		argError(L, 2, fname, "field 'ttl' is required")
	}
	ttl := checkDuration(L, L.GetTop(), fname+" ttl")
	L.Pop(1)
	capacity, ok := params.RawGetString("capacity").(lua.LNumber)
	if !ok || capacity < 1 || capacity > math.MaxInt32 || float64(capacity) != float64(int(capacity)) {
		argError(L, 2, fname, "field 'capacity' must be a positive integer")
	}
	// A larger capacity is held to the bound rather than refused, so policies written
	// for KumoMTA's shared cache still load.
	capacity = min(capacity, maxMemoCapacity)
	switch params.RawGetString("invalidate_with_epoch").(type) {
	case *lua.LNilType, lua.LBool:
	default:
		argError(L, 2, fname, "field 'invalidate_with_epoch' must be a boolean")
	}
	if b.memo == nil {
		b.memo = map[string]*memoCache{}
	}
	c := b.memo[string(name)]
	if c == nil {
		if len(b.memo) >= maxMemoCaches {
			L.RaiseError("%s: too many caches (more than %d names)", fname, maxMemoCaches)
		}
		c = &memoCache{entries: map[string]*list.Element{}, order: list.New()}
		b.memo[string(name)] = c
	}
	c.ttl, c.capacity = ttl, int(capacity)
	for c.order.Len() > c.capacity {
		b.memoRemove(c, c.order.Back())
	}
	L.Push(L.NewFunction(b.memoized(fn, c, string(name))))
	return 1
}

func (b *lib) memoRemove(c *memoCache, e *list.Element) {
	ent := e.Value.(*memoEntry)
	delete(c.entries, ent.key)
	c.order.Remove(e)
	b.memoTotal -= ent.size
}

func (b *lib) memoized(fn *lua.LFunction, c *memoCache, name string) lua.LGFunction {
	return func(L *lua.LState) int {
		key := memoKey(L, name)
		now := b.now()
		if e, ok := c.entries[key]; ok {
			ent := e.Value.(*memoEntry)
			if now.Before(ent.expires) {
				c.order.MoveToFront(e)
				for _, v := range ent.values {
					if v.table {
						L.Push(FromGo(L, v.tree))
					} else {
						L.Push(v.value)
					}
				}
				return len(ent.values)
			}
			b.memoRemove(c, e)
		}
		top := L.GetTop()
		L.Push(fn)
		for i := 1; i <= top; i++ {
			L.Push(L.Get(i))
		}
		L.Call(top, lua.MultRet)
		n := L.GetTop() - top
		ent := &memoEntry{key: key, expires: now.Add(c.ttl), size: len(key) + 64}
		for i := top + 1; i <= top+n; i++ {
			v := L.Get(i)
			mv := memoValue{value: v}
			if t, ok := v.(*lua.LTable); ok {
				if tree, size, err := ToGoSize(t); err == nil {
					mv = memoValue{tree: tree, table: true}
					ent.size += size
				}
			} else if s, ok := v.(lua.LString); ok {
				ent.size += len(s)
			}
			ent.size += 16
			ent.values = append(ent.values, mv)
		}
		if ent.size > maxMemoBytes {
			return n
		}
		for c.order.Len() >= c.capacity || (c.order.Len() > 0 && b.memoTotal+ent.size > maxMemoBytes) {
			b.memoRemove(c, c.order.Back())
		}
		if b.memoTotal+ent.size <= maxMemoBytes {
			c.entries[key] = c.order.PushFront(ent)
			b.memoTotal += ent.size
		}
		return n
	}
}

// memoKey serialises the call's arguments into a cache key: scalars by type and
// value, tables as sorted JSON. Functions, userdata and threads cannot be keys.
func memoKey(L *lua.LState, name string) string {
	var sb strings.Builder
	for i := 1; i <= L.GetTop(); i++ {
		switch v := L.Get(i).(type) {
		case *lua.LNilType:
			sb.WriteString("n;")
		case lua.LBool:
			if v {
				sb.WriteString("t;")
			} else {
				sb.WriteString("f;")
			}
		case lua.LNumber:
			sb.WriteByte('N')
			sb.WriteString(strconv.FormatFloat(float64(v), 'g', -1, 64))
			sb.WriteByte(';')
		case lua.LString:
			sb.WriteByte('S')
			sb.WriteString(strconv.Itoa(len(v)))
			sb.WriteByte(':')
			sb.WriteString(string(v))
		case *lua.LTable:
			tree, err := ToGo(v)
			if err != nil {
				L.RaiseError("bad argument #%d to '%s' (cannot be a cache key: %s)", i, name, err.Error())
			}
			w := jsonWriter{max: MaxConvertBytes}
			if err := w.value(tree, 0); err != nil {
				L.RaiseError("bad argument #%d to '%s' (cannot be a cache key: %s)", i, name, err.Error())
			}
			sb.WriteByte('T')
			sb.WriteString(strconv.Itoa(len(w.buf)))
			sb.WriteByte(':')
			sb.Write(w.buf)
		default:
			L.RaiseError("bad argument #%d to '%s' (a %s cannot be a cache key)", i, name, v.Type().String())
		}
	}
	return sb.String()
}

// maxTraceFrames bounds kumo.traceback on a deep stack.
const maxTraceFrames = 200

// traceback is kumo.traceback(level): the call stack from level (1 is the caller) as
// a list of frames shaped like debug.getinfo's result. The list's tostring is a
// debug.traceback-style text.
func traceback(L *lua.LState) int {
	level := int(optInteger(L, 1, "kumo.traceback", 1))
	if level < 0 {
		argError(L, 1, "kumo.traceback", "level must not be negative")
	}
	frames := L.NewTable()
	for lv := level; frames.Len() < maxTraceFrames; lv++ {
		dbg, ok := L.GetStack(lv)
		if !ok {
			break
		}
		if _, err := L.GetInfo("Sln", dbg, lua.LNil); err != nil {
			break
		}
		what := dbg.What
		if what == "G" {
			what = "C"
		}
		src := dbg.Source
		if what == "C" {
			src = "[C]"
		}
		f := L.NewTable()
		f.RawSetString("source", lua.LString(src))
		f.RawSetString("short_src", lua.LString(src))
		f.RawSetString("what", lua.LString(what))
		f.RawSetString("currentline", lua.LNumber(dbg.CurrentLine))
		f.RawSetString("linedefined", lua.LNumber(dbg.LineDefined))
		f.RawSetString("lastlinedefined", lua.LNumber(dbg.LastLineDefined))
		if dbg.Name != "" {
			f.RawSetString("name", lua.LString(dbg.Name))
		}
		frames.Append(f)
	}
	mt := L.NewTable()
	mt.RawSetString("__tostring", L.NewFunction(tracebackString))
	frames.Metatable = mt
	L.Push(frames)
	return 1
}

func tracebackString(L *lua.LState) int {
	frames := L.CheckTable(1)
	var sb strings.Builder
	sb.WriteString("stack traceback:")
	for i := 1; i <= frames.Len(); i++ {
		f, ok := frames.RawGetInt(i).(*lua.LTable)
		if !ok {
			continue
		}
		sb.WriteString("\n\t")
		sb.WriteString(lua.LVAsString(f.RawGetString("short_src")))
		if line := lua.LVAsNumber(f.RawGetString("currentline")); line > 0 {
			sb.WriteString(":" + luaNumberString(float64(line)))
		}
		sb.WriteString(": in ")
		switch name := f.RawGetString("name"); {
		case lua.LVAsString(f.RawGetString("what")) == "main":
			sb.WriteString("main chunk")
		case name != lua.LNil:
			sb.WriteString("function '" + lua.LVAsString(name) + "'")
		default:
			sb.WriteString("function <" + lua.LVAsString(f.RawGetString("short_src")) + ":" + luaNumberString(float64(lua.LVAsNumber(f.RawGetString("linedefined")))) + ">")
		}
	}
	L.Push(lua.LString(sb.String()))
	return 1
}
