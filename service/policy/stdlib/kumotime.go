package stdlib

import (
	"errors"
	"math"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
)

const (
	timeTypeName      = "kumo.time.Time"
	timeDeltaTypeName = "kumo.time.TimeDelta"
	timerTypeName     = "kumo.time.Timer"
)

var (
	errFormatTooLarge  = errors.New("formatted time too large")
	errInvalidFraction = errors.New("invalid fractional seconds specifier")
)

// timeDelta is the value of a TimeDelta object.
type timeDelta time.Duration

// timer is the value of a start_timer object: its start, until done is called.
type timer struct {
	start time.Time
	done  bool
}

func (b *lib) openKumoTime(L *lua.LState, mod *lua.LTable) {
	mt := L.NewTypeMetatable(timeTypeName)
	setFuncs(L, mt, map[string]lua.LGFunction{
		"__index":    b.timeIndex,
		"__tostring": timeToString,
		"__eq":       timeCompare(func(a, b time.Time) bool { return a.Equal(b) }),
		"__lt":       timeCompare(func(a, b time.Time) bool { return a.Before(b) }),
		"__le":       timeCompare(func(a, b time.Time) bool { return !a.After(b) }),
		"__add":      timeAdd,
		"__sub":      timeSub,
	})
	dmt := L.NewTypeMetatable(timeDeltaTypeName)
	setFuncs(L, dmt, map[string]lua.LGFunction{
		"__index":    deltaIndex,
		"__tostring": deltaToString,
		"__eq":       deltaCompare(func(a, b timeDelta) bool { return a == b }),
		"__lt":       deltaCompare(func(a, b timeDelta) bool { return a < b }),
		"__le":       deltaCompare(func(a, b timeDelta) bool { return a <= b }),
		"__add":      deltaArith("+", func(a, b timeDelta) (timeDelta, bool) { return a + b, (b > 0) == (a+b > a) || b == 0 }),
		"__sub":      deltaArith("-", func(a, b timeDelta) (timeDelta, bool) { return a - b, (b > 0) == (a-b < a) || b == 0 }),
		"__unm":      deltaNeg,
		"__call":     deltaCall,
	})
	tmt := L.NewTypeMetatable(timerTypeName)
	methods := L.NewTable()
	methods.RawSetString("done", L.NewFunction(b.timerDone))
	tmt.RawSetString("__index", methods)
	tmt.RawSetString("__close", L.NewFunction(b.timerDone))

	setFuncs(L, mod, map[string]lua.LGFunction{
		"now":                 b.timeNow,
		"from_unix_timestamp": timeFromUnix,
		"parse_rfc3339":       timeParser("kumo.time.parse_rfc3339", parseRFC3339),
		"parse_rfc2822":       timeParser("kumo.time.parse_rfc2822", parseRFC2822),
		"with_ymd_hms":        timeWithYMDHMS,
		"parse_duration":      parseDuration,
		"sleep":               timeSleep,
		"start_timer":         b.startTimer,
		"epoch_millis":        b.epochMillis,
		"since_millis":        b.sinceMillis,
	})
}

func pushTime(L *lua.LState, t time.Time) {
	ud := L.NewUserData()
	ud.Value = t.UTC()
	ud.Metatable = L.GetTypeMetatable(timeTypeName)
	L.Push(ud)
}

func pushDelta(L *lua.LState, d timeDelta) {
	ud := L.NewUserData()
	ud.Value = d
	ud.Metatable = L.GetTypeMetatable(timeDeltaTypeName)
	L.Push(ud)
}

func toTime(v lua.LValue) (time.Time, bool) {
	if ud, ok := v.(*lua.LUserData); ok {
		t, ok := ud.Value.(time.Time)
		return t, ok
	}
	return time.Time{}, false
}

func toDelta(v lua.LValue) (timeDelta, bool) {
	if ud, ok := v.(*lua.LUserData); ok {
		d, ok := ud.Value.(timeDelta)
		return d, ok
	}
	return 0, false
}

func checkTime(L *lua.LState, n int, fname string) time.Time {
	t, ok := toTime(L.Get(n))
	if !ok {
		typeError(L, n, fname, "Time")
	}
	return t
}

func checkDelta(L *lua.LState, n int, fname string) timeDelta {
	d, ok := toDelta(L.Get(n))
	if !ok {
		typeError(L, n, fname, "TimeDelta")
	}
	return d
}

func (b *lib) timeNow(L *lua.LState) int {
	pushTime(L, b.now())
	return 1
}

// timeFromUnix accepts whole or fractional seconds since the epoch.
func timeFromUnix(L *lua.LState) int {
	const fname = "kumo.time.from_unix_timestamp"
	f := checkNumber(L, 1, fname)
	if math.IsNaN(f) || math.Abs(f) > 1e11 {
		argError(L, 1, fname, "timestamp out of range")
	}
	sec, frac := math.Modf(f)
	pushTime(L, time.Unix(int64(sec), int64(math.Round(frac*1e9))))
	return 1
}

func timeParser(fname string, parse func(string) (time.Time, error)) lua.LGFunction {
	return func(L *lua.LState) int {
		s := checkString(L, 1, fname)
		t, err := parse(s)
		if err != nil {
			L.RaiseError("%s: invalid timestamp %q: %s", fname, s, err.Error())
		}
		pushTime(L, t)
		return 1
	}
}

func parseRFC3339(s string) (time.Time, error) {
	// RFC 3339 allows a space or a lower-case t between date and time.
	if len(s) > 10 && (s[10] == ' ' || s[10] == 't') {
		s = s[:10] + "T" + s[11:]
	}
	return time.Parse(time.RFC3339Nano, strings.Replace(s, "z", "Z", 1))
}

// rfc2822Layouts are the RFC 2822 date forms: with or without the day of the week and
// the seconds, one- or two-digit days.
var rfc2822Layouts = []string{
	"Mon, 2 Jan 2006 15:04:05 -0700",
	"2 Jan 2006 15:04:05 -0700",
	"Mon, 2 Jan 2006 15:04 -0700",
	"2 Jan 2006 15:04 -0700",
	"Mon, 2 Jan 2006 15:04:05 MST",
	"2 Jan 2006 15:04:05 MST",
}

func parseRFC2822(s string) (time.Time, error) {
	s = strings.Join(strings.Fields(s), " ")
	var firstErr error
	for _, layout := range rfc2822Layouts {
		t, err := time.Parse(layout, s)
		if err == nil {
			return t, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return time.Time{}, firstErr
}

func timeWithYMDHMS(L *lua.LState) int {
	const fname = "kumo.time.with_ymd_hms"
	limits := [6][2]int64{{-262143, 262142}, {1, 12}, {1, 31}, {0, 23}, {0, 59}, {0, 59}}
	var v [6]int
	for i := range v {
		n := checkInteger(L, i+1, fname)
		if n < limits[i][0] || n > limits[i][1] {
			argError(L, i+1, fname, "out of range")
		}
		v[i] = int(n)
	}
	t := time.Date(v[0], time.Month(v[1]), v[2], v[3], v[4], v[5], 0, time.UTC)
	if t.Day() != v[2] {
		L.RaiseError("%s: invalid date %04d-%02d-%02d", fname, v[0], v[1], v[2])
	}
	pushTime(L, t)
	return 1
}

// parseDuration is kumo.time.parse_duration: seconds (whole or fractional) or a
// duration string.
func parseDuration(L *lua.LState) int {
	pushDelta(L, timeDelta(checkDuration(L, 1, "kumo.time.parse_duration")))
	return 1
}

// timeSleep refuses: an evaluation has a small time budget and must not wait.
func timeSleep(L *lua.LState) int {
	L.RaiseError("kumo.time.sleep is not available in rewrited: a reply decision must not wait")
	return 0
}

func (b *lib) startTimer(L *lua.LState) int {
	checkString(L, 1, "kumo.time.start_timer")
	ud := L.NewUserData()
	ud.Value = &timer{start: b.now()}
	ud.Metatable = L.GetTypeMetatable(timerTypeName)
	L.Push(ud)
	return 1
}

// timerDone returns the seconds since the timer started, the first time only.
func (b *lib) timerDone(L *lua.LState) int {
	ud, ok := L.Get(1).(*lua.LUserData)
	var t *timer
	if ok {
		t, ok = ud.Value.(*timer)
	}
	if !ok {
		L.RaiseError("calling 'done' on bad self (Timer expected, got %s)", typeName(L, 1))
	}
	if t.done {
		L.Push(lua.LNil)
		return 1
	}
	t.done = true
	L.Push(lua.LNumber(b.now().Sub(t.start).Seconds()))
	return 1
}

func (b *lib) epochMillis(L *lua.LState) int {
	L.Push(lua.LNumber(b.now().UnixMilli()))
	return 1
}

func (b *lib) sinceMillis(L *lua.LState) int {
	ms := checkInteger(L, 1, "kumo.time.since_millis")
	L.Push(lua.LNumber(b.now().UnixMilli() - ms))
	return 1
}

func (b *lib) timeIndex(L *lua.LState) int {
	t := checkTime(L, 1, "index")
	var v lua.LValue = lua.LNil
	switch L.CheckString(2) {
	case "year":
		v = lua.LNumber(t.Year())
	case "month":
		v = lua.LNumber(t.Month())
	case "day":
		v = lua.LNumber(t.Day())
	case "hour":
		v = lua.LNumber(t.Hour())
	case "minute":
		v = lua.LNumber(t.Minute())
	case "second":
		v = lua.LNumber(t.Second())
	case "unix_timestamp":
		v = lua.LNumber(t.Unix())
	case "unix_timestamp_millis":
		v = lua.LNumber(t.UnixMilli())
	case "rfc2822":
		v = lua.LString(t.Format("Mon, 2 Jan 2006 15:04:05 -0700"))
	case "rfc3339":
		v = lua.LString(rfc3339(t))
	case "elapsed":
		pushDelta(L, timeDelta(b.now().Sub(t)))
		return 1
	case "format":
		v = L.NewFunction(b.timeFormat)
	}
	L.Push(v)
	return 1
}

// rfc3339 is chrono's to_rfc3339: "+00:00" rather than "Z", fraction only when needed.
func rfc3339(t time.Time) string {
	return t.Format("2006-01-02T15:04:05") + autoFraction(t.Nanosecond()) + "+00:00"
}

func timeToString(L *lua.LState) int {
	t := checkTime(L, 1, "tostring")
	L.Push(lua.LString(t.Format("2006-01-02 15:04:05") + autoFraction(t.Nanosecond()) + " UTC"))
	return 1
}

func (b *lib) timeFormat(L *lua.LState) int {
	t, ok := toTime(L.Get(1))
	if !ok {
		L.RaiseError("calling 'format' on bad self (Time expected, got %s)", typeName(L, 1))
	}
	s, err := strftime(t, stringArg(L, 2, 1, "format", true), b.max)
	if err != nil {
		if errors.Is(err, errFormatTooLarge) {
			tooLarge(L, "Time:format", b.max)
		}
		L.RaiseError("Time:format: %s", err.Error())
	}
	L.Push(lua.LString(s))
	return 1
}

func timeCompare(cmp func(a, b time.Time) bool) lua.LGFunction {
	return func(L *lua.LState) int {
		a, ok1 := toTime(L.Get(1))
		b, ok2 := toTime(L.Get(2))
		L.Push(lua.LBool(ok1 && ok2 && cmp(a, b)))
		return 1
	}
}

// timeAdd is Time + TimeDelta (either order).
func timeAdd(L *lua.LState) int {
	t, ok := toTime(L.Get(1))
	d, ok2 := toDelta(L.Get(2))
	if !ok || !ok2 {
		t, ok = toTime(L.Get(2))
		d, ok2 = toDelta(L.Get(1))
	}
	if !ok || !ok2 {
		L.RaiseError("attempt to add a %s to a Time (a TimeDelta is needed)", operandName(L))
	}
	pushTime(L, t.Add(time.Duration(d)))
	return 1
}

// timeSub is Time - TimeDelta (a Time) or Time - Time (a TimeDelta).
func timeSub(L *lua.LState) int {
	t, ok := toTime(L.Get(1))
	if !ok {
		L.RaiseError("attempt to subtract a Time from a %s", typeName(L, 1))
	}
	if d, ok := toDelta(L.Get(2)); ok {
		pushTime(L, t.Add(-time.Duration(d)))
		return 1
	}
	if u, ok := toTime(L.Get(2)); ok {
		pushDelta(L, timeDelta(t.Sub(u)))
		return 1
	}
	L.RaiseError("attempt to subtract a %s from a Time (a Time or TimeDelta is needed)", typeName(L, 2))
	return 0
}

// operandName names the operand of a binary metamethod that is not a Time.
func operandName(L *lua.LState) string {
	if _, ok := toTime(L.Get(1)); ok {
		return typeName(L, 2)
	}
	return typeName(L, 1)
}

func deltaIndex(L *lua.LState) int {
	d := checkDelta(L, 1, "index")
	var v lua.LValue = lua.LNil
	switch L.CheckString(2) {
	case "seconds":
		v = lua.LNumber(time.Duration(d).Seconds())
	case "milliseconds":
		v = lua.LNumber(time.Duration(d).Milliseconds())
	case "microseconds":
		v = lua.LNumber(time.Duration(d).Microseconds())
	case "nanoseconds":
		v = lua.LNumber(d)
	case "human":
		v = lua.LString(humanDuration(time.Duration(d)))
	}
	L.Push(v)
	return 1
}

func deltaToString(L *lua.LState) int {
	L.Push(lua.LString(humanDuration(time.Duration(checkDelta(L, 1, "tostring")))))
	return 1
}

func deltaCompare(cmp func(a, b timeDelta) bool) lua.LGFunction {
	return func(L *lua.LState) int {
		a, ok1 := toDelta(L.Get(1))
		b, ok2 := toDelta(L.Get(2))
		L.Push(lua.LBool(ok1 && ok2 && cmp(a, b)))
		return 1
	}
}

func deltaArith(op string, f func(a, b timeDelta) (timeDelta, bool)) lua.LGFunction {
	return func(L *lua.LState) int {
		if _, ok := toTime(L.Get(2)); ok && op == "+" {
			return timeAdd(L)
		}
		a, ok1 := toDelta(L.Get(1))
		b, ok2 := toDelta(L.Get(2))
		if !ok1 || !ok2 {
			L.RaiseError("attempt to perform arithmetic (%s) on a TimeDelta and a %s", op, operandType(L, ok1))
		}
		r, ok := f(a, b)
		if !ok {
			L.RaiseError("TimeDelta %s TimeDelta: %s", op, errDurationRange.Error())
		}
		pushDelta(L, r)
		return 1
	}
}

func operandType(L *lua.LState, firstIsDelta bool) string {
	if firstIsDelta {
		return typeName(L, 2)
	}
	return typeName(L, 1)
}

func deltaNeg(L *lua.LState) int {
	d := checkDelta(L, 1, "unm")
	if d == math.MinInt64 {
		L.RaiseError("-TimeDelta: %s", errDurationRange.Error())
	}
	pushDelta(L, -d)
	return 1
}

// deltaCall makes `t:elapsed()` work as KumoMTA's older Time objects had it: the
// elapsed field is a TimeDelta, and calling it returns its nanoseconds.
func deltaCall(L *lua.LState) int {
	d := checkDelta(L, 1, "call")
	L.Push(lua.LNumber(d))
	return 1
}
