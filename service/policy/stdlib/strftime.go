package stdlib

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// strftime formats t with the strftime specifiers of Rust's chrono crate, which
// KumoMTA's Time:format uses: padding modifiers (%-d, %_d, %0e), fractional seconds
// (%f, %.f, %.3f, %3f ...), offsets (%z, %:z, %::z, %#z), and the usual date and time
// fields. An unknown specifier is an error, as it is in chrono.
func strftime(t time.Time, format string, max int) (string, error) {
	var sb strings.Builder
	for i := 0; i < len(format); i++ {
		if sb.Len() > max {
			return "", errFormatTooLarge
		}
		c := format[i]
		if c != '%' {
			sb.WriteByte(c)
			continue
		}
		start := i
		i++
		pad := byte(0) // 0: the field's default padding
		if i < len(format) && (format[i] == '-' || format[i] == '_' || format[i] == '0') {
			pad = format[i]
			i++
		}
		if i >= len(format) {
			// chrono is lenient here: a lone '%' at the end is written as it is.
			sb.WriteString(format[start:])
			break
		}
		spec := format[i]
		num := func(v, width int, defPad byte) {
			p := defPad
			if pad != 0 {
				p = pad
			}
			s := strconv.Itoa(v)
			if p == '-' {
				sb.WriteString(s)
				return
			}
			fill := "0"
			if p == '_' || p == ' ' {
				fill = " "
			}
			neg := v < 0
			if neg {
				s = s[1:]
				sb.WriteByte('-')
				width--
			}
			if len(s) < width {
				sb.WriteString(strings.Repeat(fill, width-len(s)))
			}
			sb.WriteString(s)
		}
		isoYear, isoWeek := t.ISOWeek()
		switch spec {
		case 'Y':
			if y := t.Year(); y >= 0 && y <= 9999 {
				num(y, 4, '0')
			} else {
				sb.WriteString(fmt.Sprintf("%+d", y))
			}
		case 'C':
			num(floorDiv(t.Year(), 100), 2, '0')
		case 'y':
			num(floorMod(t.Year(), 100), 2, '0')
		case 'G':
			num(isoYear, 4, '0')
		case 'g':
			num(floorMod(isoYear, 100), 2, '0')
		case 'm':
			num(int(t.Month()), 2, '0')
		case 'b', 'h':
			sb.WriteString(t.Month().String()[:3])
		case 'B':
			sb.WriteString(t.Month().String())
		case 'd':
			num(t.Day(), 2, '0')
		case 'e':
			num(t.Day(), 2, ' ')
		case 'a':
			sb.WriteString(t.Weekday().String()[:3])
		case 'A':
			sb.WriteString(t.Weekday().String())
		case 'w':
			num(int(t.Weekday()), 1, '0')
		case 'u':
			wd := int(t.Weekday())
			if wd == 0 {
				wd = 7
			}
			num(wd, 1, '0')
		case 'U':
			num((t.YearDay()+6-int(t.Weekday()))/7, 2, '0')
		case 'W':
			num((t.YearDay()+6-(int(t.Weekday())+6)%7)/7, 2, '0')
		case 'V':
			num(isoWeek, 2, '0')
		case 'j':
			num(t.YearDay(), 3, '0')
		case 'D', 'x':
			sb.WriteString(t.Format("01/02/06"))
		case 'F':
			sb.WriteString(fmt.Sprintf("%04d-%02d-%02d", t.Year(), int(t.Month()), t.Day()))
		case 'v':
			sb.WriteString(fmt.Sprintf("%2d-%s-%04d", t.Day(), t.Month().String()[:3], t.Year()))
		case 'H':
			num(t.Hour(), 2, '0')
		case 'k':
			num(t.Hour(), 2, ' ')
		case 'I':
			num(hour12(t), 2, '0')
		case 'l':
			num(hour12(t), 2, ' ')
		case 'P':
			sb.WriteString(strings.ToLower(t.Format("PM")))
		case 'p':
			sb.WriteString(t.Format("PM"))
		case 'M':
			num(t.Minute(), 2, '0')
		case 'S':
			num(t.Second(), 2, '0')
		case 'f':
			num(t.Nanosecond(), 9, '0')
		case '.', '3', '6', '9':
			n, err := fraction(format[i:], t.Nanosecond(), &sb)
			if err != nil {
				return "", fmt.Errorf("invalid format specifier %q", format[start:min(len(format), i+3)])
			}
			i += n - 1
		case 'R':
			sb.WriteString(t.Format("15:04"))
		case 'T', 'X':
			sb.WriteString(t.Format("15:04:05"))
		case 'r':
			sb.WriteString(t.Format("03:04:05 PM"))
		case 'Z':
			sb.WriteString("UTC")
		case 'z':
			sb.WriteString(t.Format("-0700"))
		case ':':
			switch {
			case strings.HasPrefix(format[i:], ":::z"):
				sb.WriteString(t.Format("-07"))
				i += 3
			case strings.HasPrefix(format[i:], "::z"):
				sb.WriteString(t.Format("-07:00:00"))
				i += 2
			case strings.HasPrefix(format[i:], ":z"):
				sb.WriteString(t.Format("-07:00"))
				i++
			default:
				return "", fmt.Errorf("invalid format specifier %q", format[start:i+1])
			}
		case '#':
			if !strings.HasPrefix(format[i:], "#z") {
				return "", fmt.Errorf("invalid format specifier %q", format[start:i+1])
			}
			sb.WriteString(t.Format("-07"))
			i++
		case 'c':
			sb.WriteString(t.Format("Mon Jan  2 15:04:05 2006"))
		case '+':
			sb.WriteString(rfc3339(t))
		case 's':
			sb.WriteString(strconv.FormatInt(t.Unix(), 10))
		case 't':
			sb.WriteByte('\t')
		case 'n':
			sb.WriteByte('\n')
		case '%':
			sb.WriteByte('%')
		default:
			return "", fmt.Errorf("invalid format specifier %q", format[start:i+1])
		}
	}
	if sb.Len() > max {
		return "", errFormatTooLarge
	}
	return sb.String(), nil
}

// fraction writes chrono's fractional-second forms (%.f, %.3f, %.6f, %.9f, %3f, %6f,
// %9f) from the text after '%' and reports how many bytes of it were used.
func fraction(s string, nanos int, sb *strings.Builder) (int, error) {
	dot := strings.HasPrefix(s, ".")
	rest := s
	if dot {
		rest = s[1:]
	}
	switch {
	case strings.HasPrefix(rest, "f") && dot:
		sb.WriteString(autoFraction(nanos))
		return 2, nil
	case len(rest) >= 2 && rest[1] == 'f' && (rest[0] == '3' || rest[0] == '6' || rest[0] == '9'):
		digits := int(rest[0] - '0')
		if dot {
			sb.WriteByte('.')
		}
		frac := fmt.Sprintf("%09d", nanos)[:digits]
		sb.WriteString(frac)
		if dot {
			return 3, nil
		}
		return 2, nil
	}
	return 0, errInvalidFraction
}

// autoFraction is chrono's automatic fraction: nothing for whole seconds, else 3, 6 or 9 digits.
func autoFraction(nanos int) string {
	switch {
	case nanos == 0:
		return ""
	case nanos%1e6 == 0:
		return fmt.Sprintf(".%03d", nanos/1e6)
	case nanos%1e3 == 0:
		return fmt.Sprintf(".%06d", nanos/1e3)
	}
	return fmt.Sprintf(".%09d", nanos)
}

func hour12(t time.Time) int {
	h := t.Hour() % 12
	if h == 0 {
		h = 12
	}
	return h
}

func floorDiv(a, b int) int {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func floorMod(a, b int) int {
	return a - floorDiv(a, b)*b
}
