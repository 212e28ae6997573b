package stdlib

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/BurntSushi/toml"
	lua "github.com/yuin/gopher-lua"
)

// maxLoadBytes bounds a file read by kumo.json_load, kumo.toml_load or a key source.
const maxLoadBytes = 16 << 20

func (b *lib) openKumoLoad(L *lua.LState, kumo *lua.LTable) {
	serde := subModule(L, kumo, "serde")
	encode := L.NewFunction(b.tomlEncode)
	for name, fn := range map[string]lua.LValue{
		"json_load":   L.NewFunction(b.loader("json_load", b.parseJSON)),
		"toml_load":   L.NewFunction(b.loader("toml_load", b.parseTOML)),
		"toml_parse":  L.NewFunction(b.tomlParse),
		"toml_encode": encode,
		// BurntSushi/toml always writes the expanded form, so the pretty variant shares it.
		"toml_encode_pretty": encode,
	} {
		serde.RawSetString(name, fn)
		// KumoMTA keeps the older kumo.* names as aliases of kumo.serde.*.
		kumo.RawSetString(name, fn)
	}
}

// loadFile reads name through Limits.ReadFile.
func (b *lib) loadFile(L *lua.LState, fname, name string) []byte {
	if b.readFile == nil {
		L.RaiseError("%s: reading files is not available here", fname)
	}
	data, err := b.readFile(name)
	if err != nil {
		L.RaiseError("%s: %s", fname, err.Error())
	}
	if len(data) > maxLoadBytes || len(data) > 4*b.max {
		L.RaiseError("%s: %s is too large", fname, name)
	}
	return data
}

func (b *lib) loader(name string, parse func(text string) (any, error)) lua.LGFunction {
	fname := "kumo.serde." + name
	return func(L *lua.LState) int {
		path := checkString(L, 1, fname)
		v, err := parse(string(b.loadFile(L, fname, path)))
		if err != nil {
			L.RaiseError("%s: %s: %s", fname, path, err.Error())
		}
		L.Push(FromGo(L, v))
		return 1
	}
}

// parseJSON parses a loaded file as kumo.serde.json_parse parses its argument.
func (b *lib) parseJSON(text string) (any, error) {
	clean, err := stripJSONComments(text)
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal([]byte(clean), &v); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	return v, nil
}

func (b *lib) parseTOML(text string) (any, error) {
	var v map[string]any
	if _, err := toml.Decode(text, &v); err != nil {
		return nil, err
	}
	return v, nil
}

func (b *lib) tomlParse(L *lua.LState) int {
	const fname = "kumo.serde.toml_parse"
	v, err := b.parseTOML(checkUTF8(L, 1, fname))
	if err != nil {
		L.RaiseError("%s: %s", fname, err.Error())
	}
	L.Push(FromGo(L, v))
	return 1
}

var errTOMLTooLarge = errors.New("too large")

// limitedBuilder fails a write that would grow it past max.
type limitedBuilder struct {
	strings.Builder
	max int
}

func (w *limitedBuilder) Write(p []byte) (int, error) {
	if w.Len()+len(p) > w.max {
		return 0, errTOMLTooLarge
	}
	return w.Builder.Write(p)
}

func (b *lib) tomlEncode(L *lua.LState) int {
	const fname = "kumo.serde.toml_encode"
	v, err := ToGo(L.Get(1))
	if err != nil {
		L.RaiseError("%s: %s", fname, err.Error())
	}
	if _, ok := v.(map[string]any); !ok {
		argError(L, 1, fname, "a table with string keys expected")
	}
	w := &limitedBuilder{max: b.max}
	enc := toml.NewEncoder(w)
	enc.Indent = ""
	if err := enc.Encode(integralNumbers(v)); err != nil {
		if errors.Is(err, errTOMLTooLarge) {
			tooLarge(L, fname, b.max)
		}
		L.RaiseError("%s: %s", fname, fmt.Sprint(err))
	}
	L.Push(lua.LString(w.String()))
	return 1
}

// integralNumbers turns integral numbers back into integers, which Lua 5.4, TOML and
// Jinja all tell apart from floats, so that 1 is written as 1 and not 1.0.
func integralNumbers(v any) any {
	switch x := v.(type) {
	case float64:
		if i, ok := toInteger(x); ok {
			return i
		}
	case []any:
		for i := range x {
			x[i] = integralNumbers(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = integralNumbers(x[k])
		}
	}
	return v
}
