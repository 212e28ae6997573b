package stdlib

import (
	"runtime"
	"testing"
	"weak"

	lua "github.com/yuin/gopher-lua"
)

// TestDeadCoroutineErrorLifetime: the error a coroutine died in is kept for
// coroutine.close while the coroutine is reachable, and nothing else holds it,
// so a state that runs many failing coroutines keeps none of their errors.
func TestDeadCoroutineErrorLifetime(t *testing.T) {
	L := newState(t, Limits{})
	run := func(code string) {
		t.Helper()
		if err := L.DoString(code); err != nil {
			t.Fatal(err)
		}
	}
	failing := `errt = {} co = coroutine.create(function() error(errt) end) coroutine.resume(co)`

	run(failing)
	kept := weak.Make(L.GetGlobal("errt").(*lua.LTable))
	run(`errt = nil`)
	runtime.GC()
	if kept.Value() == nil {
		t.Fatal("the error of a reachable dead coroutine was collected before coroutine.close returned it")
	}
	run(`ok, e = coroutine.close(co) again = coroutine.close(co)`)
	if ok := L.GetGlobal("ok"); ok != lua.LFalse {
		t.Errorf("coroutine.close of a coroutine that died in an error returned %v, want false", ok)
	}
	if e, ok := L.GetGlobal("e").(*lua.LTable); !ok || e != kept.Value() {
		t.Errorf("coroutine.close returned %v, want the error the coroutine died in", L.GetGlobal("e"))
	}
	if again := L.GetGlobal("again"); again != lua.LTrue {
		t.Errorf("a second coroutine.close returned %v, want true", again)
	}

	run(failing)
	dropped := weak.Make(L.GetGlobal("errt").(*lua.LTable))
	run(`errt, co, e = nil, nil, nil`)
	runtime.GC()
	if dropped.Value() != nil {
		t.Error("the error of an unreachable dead coroutine is still held")
	}
}
