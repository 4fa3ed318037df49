package record

import (
	"errors"
	"time"
)

// The range of google.protobuf.Timestamp, which the record's timestamp is
// converted to for CEL filters and events: 0001-01-01T00:00:00Z to
// 9999-12-31T23:59:59.999999999Z.
const (
	minTimestampSeconds = -62135596800
	maxTimestampSeconds = 253402300799
)

var (
	errTimestampFormat = errors.New(`not an RFC 3339 date-time "YYYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm)" with up to 9 fractional digits`)
	errTimestampRange  = errors.New("date or time component out of range")
	errTimestampBounds = errors.New("outside the years 0001 to 9999 UTC")
)

// parseTimestamp parses an RFC 3339 date-time (RFC 3339 §5.6) with at most
// nine fractional digits and returns it in UTC.
//
// time.Parse is not used because it is laxer than the format the SPEC
// promises users: it accepts more than nine fractional digits (dropping the
// rest), a comma as the decimal separator, and offsets of 24 hours or more,
// and it accepts year 0000, which google.protobuf.Timestamp cannot hold. It
// also rejects the lowercase 't' and 'z' that RFC 3339 allows.
func parseTimestamp(b []byte) (time.Time, error) {
	// YYYY-MM-DDThh:mm:ss is 19 bytes; the shortest zone is "Z".
	if len(b) < 20 || b[4] != '-' || b[7] != '-' || (b[10] != 'T' && b[10] != 't') || b[13] != ':' || b[16] != ':' {
		return time.Time{}, errTimestampFormat
	}
	year, ok1 := digits(b[0:4])
	month, ok2 := digits(b[5:7])
	day, ok3 := digits(b[8:10])
	hour, ok4 := digits(b[11:13])
	minute, ok5 := digits(b[14:16])
	sec, ok6 := digits(b[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) {
		return time.Time{}, errTimestampFormat
	}
	rest := b[19:]
	nsec := 0
	if rest[0] == '.' {
		n := 1
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		frac := rest[1:n]
		if len(frac) == 0 || len(frac) > 9 {
			return time.Time{}, errTimestampFormat
		}
		for i := 0; i < 9; i++ {
			nsec *= 10
			if i < len(frac) {
				nsec += int(frac[i] - '0')
			}
		}
		rest = rest[n:]
	}
	offset := 0
	switch {
	case len(rest) == 1 && (rest[0] == 'Z' || rest[0] == 'z'):
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
		oh, okh := digits(rest[1:3])
		om, okm := digits(rest[4:6])
		if !okh || !okm {
			return time.Time{}, errTimestampFormat
		}
		if oh > 23 || om > 59 {
			return time.Time{}, errTimestampRange
		}
		offset = (oh*60 + om) * 60
		if rest[0] == '-' {
			offset = -offset
		}
	default:
		return time.Time{}, errTimestampFormat
	}
	if year < 1 || month < 1 || month > 12 || day < 1 || day > daysIn(month, year) ||
		hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, errTimestampRange
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC).Add(-time.Duration(offset) * time.Second)
	if s := t.Unix(); s < minTimestampSeconds || s > maxTimestampSeconds {
		return time.Time{}, errTimestampBounds
	}
	return t, nil
}

// digits parses b as an unsigned decimal number made of ASCII digits only.
func digits(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	default:
		return 31
	}
}
