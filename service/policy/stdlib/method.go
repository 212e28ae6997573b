package stdlib

import (
	"reflect"

	lua "github.com/yuin/gopher-lua"
)

// calledAsMethod reports whether the running Go builtin was called as
// value:name(...), for Lua 5.4's argument numbering, where self is not counted.
// gopher-lua does not expose the calling instruction, so it is read through
// reflection from the caller's frame: the call's function register was last
// written by OP_SELF for a method call. Any unexpected layout answers false,
// which numbers arguments as for a plain call.
func calledAsMethod(L *lua.LState) bool {
	dbg, ok := L.GetStack(0)
	if !ok {
		return false
	}
	frame := reflect.ValueOf(dbg).Elem().FieldByName("frame")
	if frame.Kind() != reflect.Pointer || frame.IsNil() {
		return false
	}
	caller := frame.Elem().FieldByName("Parent")
	if caller.Kind() != reflect.Pointer || caller.IsNil() {
		return false
	}
	fn := caller.Elem().FieldByName("Fn")
	if fn.Kind() != reflect.Pointer || fn.IsNil() || fn.Elem().FieldByName("IsG").Bool() {
		return false
	}
	proto := fn.Elem().FieldByName("Proto")
	if proto.Kind() != reflect.Pointer || proto.IsNil() {
		return false
	}
	code := proto.Elem().FieldByName("Code")
	pc := int(caller.Elem().FieldByName("Pc").Int()) - 1
	if code.Kind() != reflect.Slice || pc < 0 || pc >= code.Len() {
		return false
	}
	call := uint32(code.Index(pc).Uint())
	if op := int(call >> 26); op != lua.OP_CALL && op != lua.OP_TAILCALL {
		return false
	}
	reg := int(call>>18) & 0xff
	for i := pc - 1; i >= 0; i-- {
		inst := uint32(code.Index(i).Uint())
		if int(inst>>18)&0xff == reg && writesA(int(inst>>26)) {
			return int(inst>>26) == lua.OP_SELF
		}
	}
	return false
}

// writesA reports whether an instruction stores into its register A.
func writesA(op int) bool {
	switch op {
	case lua.OP_SETGLOBAL, lua.OP_SETUPVAL, lua.OP_SETTABLE, lua.OP_SETTABLEKS,
		lua.OP_JMP, lua.OP_EQ, lua.OP_LT, lua.OP_LE, lua.OP_TEST, lua.OP_RETURN,
		lua.OP_SETLIST, lua.OP_CLOSE, lua.OP_TFORLOOP, lua.OP_NOP:
		return false
	}
	return true
}
