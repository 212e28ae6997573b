package policy

import (
	"math"
	"os"
	"strings"
	"time"

	"github.com/ncruces/go-strftime"
	lua "github.com/yuin/gopher-lua"
)

// processStart is the origin of os.clock.
var processStart = time.Now()

// openOS installs the part of Lua 5.4's os library that touches no file and
// no process: getenv, time, date, clock and difftime.
func openOS(L *lua.LState) {
	os := L.NewTable()
	L.SetFuncs(os, map[string]lua.LGFunction{
		"getenv":   osGetenv,
		"time":     osTime,
		"date":     osDate,
		"clock":    osClock,
		"difftime": osDifftime,
	})
	L.SetGlobal("os", os)
}

func osGetenv(L *lua.LState) int {
	v, ok := os.LookupEnv(L.CheckString(1))
	if !ok {
		L.Push(lua.LNil)
		return 1
	}
	L.Push(lua.LString(v))
	return 1
}

// osClock is the time since rewrited started: Lua's CPU time is a process
// figure shared by every policy, so differences are all it is good for.
func osClock(L *lua.LState) int {
	L.Push(lua.LNumber(time.Since(processStart).Seconds()))
	return 1
}

func osDifftime(L *lua.LState) int {
	L.Push(lua.LNumber(checkTime(L, 1) - checkTime(L, 2)))
	return 1
}

// checkTime is an integral time argument, as l_checktime wants.
func checkTime(L *lua.LState, n int) int64 {
	f := float64(L.CheckNumber(n))
	if f != math.Trunc(f) || math.IsInf(f, 0) {
		L.ArgError(n, "number has no integer representation")
	}
	return int64(f)
}

// osTime is os.time([table]): the current time, or the local time a date
// table describes, normalised back into the table as Lua 5.4 does.
func osTime(L *lua.LState) int {
	if L.Get(1) == lua.LNil {
		L.Push(lua.LNumber(time.Now().Unix()))
		return 1
	}
	t := L.CheckTable(1)
	field := func(key string, def int, required bool) int {
		switch v := t.RawGetString(key).(type) {
		case lua.LNumber:
			if float64(v) != math.Trunc(float64(v)) {
				L.RaiseError("field '%s' is not an integer", key)
			}
			if math.Abs(float64(v)) > math.MaxInt32 {
				L.RaiseError("field '%s' is out-of-bound", key)
			}
			return int(v)
		case *lua.LNilType:
			if required {
				L.RaiseError("field '%s' missing in date table", key)
			}
			return def
		default:
			L.RaiseError("field '%s' is not an integer", key)
			return 0
		}
	}
	year, month, day := field("year", 0, true), field("month", 0, true), field("day", 0, true)
	hour, minute, sec := field("hour", 12, false), field("min", 0, false), field("sec", 0, false)
	when := time.Date(year, time.Month(month), day, hour, minute, sec, 0, time.Local)
	setDateFields(t, when)
	L.Push(lua.LNumber(when.Unix()))
	return 1
}

func setDateFields(t *lua.LTable, when time.Time) {
	t.RawSetString("year", lua.LNumber(when.Year()))
	t.RawSetString("month", lua.LNumber(when.Month()))
	t.RawSetString("day", lua.LNumber(when.Day()))
	t.RawSetString("hour", lua.LNumber(when.Hour()))
	t.RawSetString("min", lua.LNumber(when.Minute()))
	t.RawSetString("sec", lua.LNumber(when.Second()))
	t.RawSetString("yday", lua.LNumber(when.YearDay()))
	t.RawSetString("wday", lua.LNumber(int(when.Weekday())+1))
	t.RawSetString("isdst", lua.LBool(when.IsDST()))
}

// C99 conversions Lua 5.4 accepts, one-letter and with the E and O
// modifiers.
const (
	dateConversions = "aAbBcCdDeFgGhHIjmMnprRStTuUVwWxXyYzZ%"
	dateModifiedE   = "cCxXyY"
	dateModifiedO   = "deHImMSuUVwWy"
)

// osDate is os.date([format [, time]]) with Lua 5.4's rules: '!' selects
// UTC, "*t" returns a table, and an unknown conversion is an error.
func osDate(L *lua.LState) int {
	format := L.OptString(1, "%c")
	when := time.Now()
	if L.Get(2) != lua.LNil {
		when = time.Unix(checkTime(L, 2), 0)
	}
	utc := false
	if f, ok := strings.CutPrefix(format, "!"); ok {
		format, when, utc = f, when.UTC(), true
	} else {
		when = when.Local()
	}
	if strings.HasPrefix(format, "*t") {
		t := L.NewTable()
		setDateFields(t, when)
		L.Push(t)
		return 1
	}
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			b.WriteByte(format[i])
			continue
		}
		spec, n := dateConversion(format[i+1:])
		if n == 0 {
			L.RaiseError("bad argument #1 to 'os.date' (invalid conversion specifier '%%%s')", format[i+1:])
		}
		i += n
		if spec == "Z" && utc {
			b.WriteString("GMT") // what C's strftime names gmtime's zone
			continue
		}
		b.WriteString(strftime.Format("%"+spec, when))
	}
	L.Push(lua.LString(b.String()))
	return 1
}

// dateConversion reads the conversion after a '%' and returns it without its
// E or O modifier (the C locale ignores them) and its length, 0 when Lua
// 5.4 would refuse it.
func dateConversion(rest string) (string, int) {
	switch {
	case rest == "":
		return "", 0
	case (rest[0] == 'E' || rest[0] == 'O') && len(rest) > 1:
		allowed := dateModifiedE
		if rest[0] == 'O' {
			allowed = dateModifiedO
		}
		if strings.IndexByte(allowed, rest[1]) >= 0 {
			return rest[1:2], 2
		}
		return "", 0
	case strings.IndexByte(dateConversions, rest[0]) >= 0:
		return rest[:1], 1
	}
	return "", 0
}
