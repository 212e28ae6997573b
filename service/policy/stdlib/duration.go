package stdlib

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// durationUnits are the unit names KumoMTA's duration strings accept (the humantime
// crate's): case matters, so "M" is a month and "m" a minute.
var durationUnits = map[string]time.Duration{
	"nanos": time.Nanosecond, "nsec": time.Nanosecond, "ns": time.Nanosecond,
	"usec": time.Microsecond, "us": time.Microsecond, "µs": time.Microsecond,
	"millis": time.Millisecond, "msec": time.Millisecond, "ms": time.Millisecond,
	"seconds": time.Second, "second": time.Second, "secs": time.Second, "sec": time.Second, "s": time.Second,
	"minutes": time.Minute, "minute": time.Minute, "mins": time.Minute, "min": time.Minute, "m": time.Minute,
	"hours": time.Hour, "hour": time.Hour, "hrs": time.Hour, "hr": time.Hour, "h": time.Hour,
	"days": day, "day": day, "d": day,
	"weeks": 7 * day, "week": 7 * day, "w": 7 * day,
	"months": month, "month": month, "M": month,
	"years": year, "year": year, "y": year,
}

// A day is 24 hours, a month 30.44 days and a year 365.25 days, as in humantime.
const (
	day   = 24 * time.Hour
	month = 2630016 * time.Second
	year  = 31557600 * time.Second
)

var errDurationRange = errors.New("duration out of range")

// parseDurationString parses a duration such as "5m", "10 seconds" or "1h 30m":
// whole numbers each followed by a unit, optionally separated by spaces.
func parseDurationString(s string) (time.Duration, error) {
	rest := strings.TrimSpace(s)
	if rest == "" {
		return 0, errors.New("empty duration")
	}
	var total time.Duration
	for rest != "" {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 {
			return 0, fmt.Errorf("invalid duration %q: expected a number at %q", s, rest)
		}
		n, err := strconv.ParseInt(rest[:i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q: %w", s, errDurationRange)
		}
		rest = strings.TrimLeft(rest[i:], " \t")
		j := 0
		for j < len(rest) && !(rest[j] >= '0' && rest[j] <= '9') && rest[j] != ' ' && rest[j] != '\t' {
			j++
		}
		if j == 0 {
			return 0, fmt.Errorf("invalid duration %q: a unit must follow %d", s, n)
		}
		unit, ok := durationUnits[rest[:j]]
		if !ok {
			return 0, fmt.Errorf("invalid duration %q: unknown unit %q", s, rest[:j])
		}
		if n > math.MaxInt64/int64(unit) || total > math.MaxInt64-time.Duration(n)*unit {
			return 0, fmt.Errorf("invalid duration %q: %w", s, errDurationRange)
		}
		total += time.Duration(n) * unit
		rest = strings.TrimLeft(rest[j:], " \t")
	}
	return total, nil
}

// secondsDuration converts a number of seconds, refusing NaN and values beyond the
// range of a time.Duration.
func secondsDuration(f float64) (time.Duration, error) {
	ns := f * 1e9
	if math.IsNaN(ns) || ns >= math.MaxInt64 || ns <= math.MinInt64 {
		return 0, errDurationRange
	}
	return time.Duration(math.Round(ns)), nil
}

// checkDuration reads argument n as KumoMTA reads a duration: a number of seconds
// or a duration string.
func checkDuration(L *lua.LState, n int, fname string) time.Duration {
	var d time.Duration
	var err error
	switch v := L.Get(n).(type) {
	case lua.LNumber:
		d, err = secondsDuration(float64(v))
	case lua.LString:
		d, err = parseDurationString(string(v))
	default:
		typeError(L, n, fname, "duration string or number")
	}
	if err != nil {
		argError(L, n, fname, err.Error())
	}
	return d
}

// humanDuration formats d like humantime: "0s", "5m", "1h 2m 3s", "1day 2h",
// "1s 500ms". A negative duration gets a leading "-".
func humanDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	var sb strings.Builder
	u := uint64(d)
	if d < 0 {
		sb.WriteByte('-')
		u = uint64(-(d + 1)) + 1
	}
	secs, nanos := u/1e9, u%1e9
	yearRest := secs % 31557600
	monthRest := yearRest % 2630016
	daySecs := monthRest % 86400
	parts := []struct {
		n      uint64
		unit   string
		plural bool
	}{
		{secs / 31557600, "year", true},
		{yearRest / 2630016, "month", true},
		{monthRest / 86400, "day", true},
		{daySecs / 3600, "h", false},
		{daySecs % 3600 / 60, "m", false},
		{daySecs % 60, "s", false},
		{nanos / 1e6, "ms", false},
		{nanos / 1e3 % 1e3, "us", false},
		{nanos % 1e3, "ns", false},
	}
	first := true
	for _, p := range parts {
		if p.n == 0 {
			continue
		}
		if !first {
			sb.WriteByte(' ')
		}
		first = false
		sb.WriteString(strconv.FormatUint(p.n, 10))
		sb.WriteString(p.unit)
		if p.plural && p.n > 1 {
			sb.WriteByte('s')
		}
	}
	return sb.String()
}
