package record

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// The top-level members Decode knows, in the order of SPEC §2, which is also
// the order in which their problems are reported.
const (
	slotVersion = iota
	slotProducer
	slotJobType
	slotFeatureViewName
	slotFeatureViewID
	slotFeatureTimestamp
	slotEntityKeys
	slotFeatureValues
	numSlots

	// slotExtra marks an unknown top-level member.
	slotExtra = -1
	// slotNone marks a position outside any top-level member value.
	slotNone = -2
)

var slotNames = [numSlots]string{
	slotVersion:          "version",
	slotProducer:         "producer",
	slotJobType:          "job_type",
	slotFeatureViewName:  "feature_view_name",
	slotFeatureViewID:    "feature_view_id",
	slotFeatureTimestamp: "feature_timestamp",
	slotEntityKeys:       "entity_keys",
	slotFeatureValues:    "feature_values",
}

const requiredSlots = 1<<slotVersion | 1<<slotFeatureViewName | 1<<slotFeatureTimestamp | 1<<slotEntityKeys

func slotOf(name []byte) int {
	switch string(name) {
	case "version":
		return slotVersion
	case "producer":
		return slotProducer
	case "job_type":
		return slotJobType
	case "feature_view_name":
		return slotFeatureViewName
	case "feature_view_id":
		return slotFeatureViewID
	case "feature_timestamp":
		return slotFeatureTimestamp
	case "entity_keys":
		return slotEntityKeys
	case "feature_values":
		return slotFeatureValues
	}
	return slotExtra
}

var (
	errDuplicate    = errors.New("appears more than once")
	errEmpty        = errors.New("must not be empty")
	errEmptyKey     = errors.New("has an empty key name")
	errNoEntityKeys = errors.New("must have at least one key")
	errMissing      = errors.New("required member is missing")
	errNull         = errors.New("required member is null")
)

const errNotStringJSON = "must be a string, not a JSON %s"

// span is a range of decoder.buf.
type span struct{ start, end int }

// pair is one member of entity_keys or feature_values.
type pair struct{ key, val span }

// frame is one open array or object while skipping a value.
type frame struct {
	object bool
	// names holds the member names of an object seen so far, to find
	// duplicates; nil until the object has a member.
	names map[string]struct{}
}

// decoder parses one record in a single pass over data (after
// utf8.Valid). It checks JSON syntax itself rather than calling json.Valid
// and then json.Unmarshal, which would scan every byte twice and decode by
// reflection; and it collects the strings it keeps in buf so that they all
// share one allocation.
type decoder struct {
	data []byte
	pos  int
	opts DecodeOptions

	// buf holds the unescaped bytes of every string kept for the Record;
	// they become one string in build, and spans index into it.
	buf []byte

	seen     uint16 // top-level members met, null or not, by slot bit
	present  uint16 // top-level members met with a non-null value
	str      [numSlots]span
	ts       time.Time
	entity   []pair
	features []pair

	errs     [numSlots]*PoisonError // the first problem of each member
	extraErr *PoisonError           // the first problem of an unknown member
	// Unknown member names, for duplicates: in extraNames (raw, inside
	// data, or a copy when escaped) while they are few, in extras once
	// there are more than maxExtraScan.
	extraNames [][]byte
	extras     map[string]struct{}

	// ctxSlot is the top-level member being read, for attributing problems
	// found deep inside it; memberRaw is its raw name when it is unknown.
	ctxSlot   int
	memberRaw []byte
}

// decoders recycles decoders and their buffers between records, so that
// the hot path allocates only what the returned Record keeps.
var decoders = sync.Pool{New: func() any { return new(decoder) }}

// maxPooledBuf is the largest buf capacity returned to the pool: a rare
// mebibyte record must not pin a mebibyte per pooled decoder.
const maxPooledBuf = 64 << 10

// getDecoder takes a decoder from the pool; release left it zeroed but for
// its buffers.
func getDecoder(data []byte, opts DecodeOptions) *decoder {
	d := decoders.Get().(*decoder)
	d.data, d.opts, d.ctxSlot = data, opts, slotNone
	return d
}

// release zeroes d but for its emptied buffers, so that the pool holds no
// reference to a record, and returns it to the pool unless its buffers grew
// large.
func (d *decoder) release() {
	if cap(d.buf) > maxPooledBuf || cap(d.entity)+cap(d.features) > 1024 {
		return
	}
	clear(d.extraNames) // no reference to the record's bytes stays in the pool
	*d = decoder{buf: d.buf[:0], entity: d.entity[:0], features: d.features[:0], extraNames: d.extraNames[:0]}
	decoders.Put(d)
}

// maxExtraScan is how many unknown member names seenExtra compares one by
// one before it indexes them: a record has a few (a producer's own
// fields), and a hostile one with thousands costs a map, not a quadratic
// scan.
const maxExtraScan = 16

// seenExtra reports whether an unknown member of this name came before,
// and remembers it. escaped says name is a temporary buffer, to be copied.
func (d *decoder) seenExtra(name []byte, escaped bool) bool {
	if d.extras != nil {
		if _, dup := d.extras[string(name)]; dup {
			return true
		}
		d.extras[string(name)] = struct{}{}
		return false
	}
	for _, n := range d.extraNames {
		if bytes.Equal(n, name) {
			return true
		}
	}
	if escaped {
		name = bytes.Clone(name)
	}
	if len(d.extraNames) == maxExtraScan {
		d.extras = make(map[string]struct{}, 2*maxExtraScan)
		for _, n := range d.extraNames {
			d.extras[string(n)] = struct{}{}
		}
		d.extras[string(name)] = struct{}{}
		return false
	}
	d.extraNames = append(d.extraNames, name)
	return false
}

func (d *decoder) decode() (*Record, *PoisonError) {
	if len(d.data) > d.opts.MaxBytes {
		return nil, &PoisonError{
			Reason: ReasonTooLarge,
			Err:    fmt.Errorf("record is %d bytes; the limit is %d", len(d.data), d.opts.MaxBytes),
		}
	}
	if !utf8.Valid(d.data) {
		return nil, &PoisonError{
			Reason: ReasonInvalidUTF8,
			Err:    fmt.Errorf("invalid UTF-8 at byte offset %d", invalidUTF8Offset(d.data)),
		}
	}
	if perr := d.parse(); perr != nil {
		return nil, perr
	}
	return d.build()
}

func invalidUTF8Offset(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return -1
}

// parse checks the syntax of the whole input and reads the top-level object.
// It returns only structural problems; member problems are kept in errs and
// extraErr for build, so that a syntax error later in the record wins over
// them.
func (d *decoder) parse() *PoisonError {
	d.skipWS()
	if d.pos == len(d.data) {
		return &PoisonError{Reason: ReasonInvalidJSON, Err: errors.New("no JSON value: the record is empty or only whitespace")}
	}
	if c := d.data[d.pos]; c != '{' {
		if perr := d.skipValue(0); perr != nil {
			return perr
		}
		if perr := d.end(); perr != nil {
			return perr
		}
		return &PoisonError{Reason: ReasonNotObject, Err: fmt.Errorf("the record is a JSON %s, not an object", kindOf(c))}
	}
	if perr := d.parseObject(); perr != nil {
		return perr
	}
	return d.end()
}

// end checks that only whitespace follows the top-level value.
func (d *decoder) end() *PoisonError {
	d.skipWS()
	if d.pos != len(d.data) {
		return d.syntaxErr(d.pos, "unexpected data after the top-level value")
	}
	return nil
}

func (d *decoder) parseObject() *PoisonError {
	d.pos++ // '{'
	d.skipWS()
	if d.pos < len(d.data) && d.data[d.pos] == '}' {
		d.pos++
		return nil
	}
	for {
		d.ctxSlot = slotNone
		raw, esc, perr := d.memberName()
		if perr != nil {
			return perr
		}
		name := raw
		if esc {
			var tmp [64]byte
			name = appendUnescaped(tmp[:0], raw)
		}
		slot := slotOf(name)
		if slot == slotExtra {
			d.ctxSlot, d.memberRaw = slotExtra, raw
			if d.seenExtra(name, esc) {
				d.noteExtra(ReasonInvalidField, errDuplicate)
			}
			perr = d.skipValue(1)
		} else {
			perr = d.parseMember(slot)
		}
		if perr != nil {
			return perr
		}
		d.skipWS()
		if d.pos >= len(d.data) {
			return d.eofErr()
		}
		switch d.data[d.pos] {
		case ',':
			d.pos++
			d.skipWS()
		case '}':
			d.pos++
			d.ctxSlot = slotNone
			return nil
		default:
			return d.syntaxErr(d.pos, "expected ',' or '}' after an object member")
		}
	}
}

// memberName reads `"name":` and the whitespace after it, leaving pos at the
// member's value.
func (d *decoder) memberName() (raw []byte, escaped bool, perr *PoisonError) {
	if d.pos >= len(d.data) {
		return nil, false, d.eofErr()
	}
	if d.data[d.pos] != '"' {
		return nil, false, d.syntaxErr(d.pos, "expected a member name string")
	}
	raw, escaped, perr = d.scanString()
	if perr != nil {
		return nil, false, perr
	}
	d.skipWS()
	if d.pos >= len(d.data) {
		return nil, false, d.eofErr()
	}
	if d.data[d.pos] != ':' {
		return nil, false, d.syntaxErr(d.pos, "expected ':' after a member name")
	}
	d.pos++
	d.skipWS()
	if d.pos >= len(d.data) {
		return nil, false, d.eofErr()
	}
	return raw, escaped, nil
}

func (d *decoder) parseMember(slot int) *PoisonError {
	d.ctxSlot = slot
	bit := uint16(1) << slot
	if d.seen&bit != 0 {
		d.note(slot, ReasonInvalidField, errDuplicate)
	}
	d.seen |= bit
	if slot == slotEntityKeys || slot == slotFeatureValues {
		return d.parseMapMember(slot)
	}
	return d.parseStringMember(slot)
}

func (d *decoder) parseStringMember(slot int) *PoisonError {
	bit := uint16(1) << slot
	switch c := d.data[d.pos]; c {
	case 'n':
		return d.literal("null")
	case '"':
		raw, esc, perr := d.scanString()
		if perr != nil {
			return perr
		}
		d.present |= bit
		start := len(d.buf)
		d.keep(raw, esc)
		val := d.buf[start:]
		switch slot {
		case slotVersion:
			if string(val) != Version {
				d.note(slot, ReasonUnsupportedVersion, fmt.Errorf("unsupported version %s; want %q", excerpt(val), Version))
			}
			d.buf = d.buf[:start]
		case slotFeatureTimestamp:
			if len(val) == 0 {
				d.note(slot, ReasonInvalidField, errEmpty)
			} else if t, err := parseTimestamp(val); err != nil {
				d.note(slot, ReasonInvalidField, fmt.Errorf("%s: %w", excerpt(val), err))
			} else {
				d.ts = t
			}
			d.buf = d.buf[:start]
		case slotFeatureViewName:
			if len(val) == 0 {
				d.note(slot, ReasonInvalidField, errEmpty)
			}
			d.str[slot] = span{start, len(d.buf)}
		default:
			d.str[slot] = span{start, len(d.buf)}
		}
		return nil
	default:
		start := d.pos
		if perr := d.skipValue(1); perr != nil {
			return perr
		}
		d.present |= bit
		if slot == slotVersion {
			d.note(slot, ReasonUnsupportedVersion, fmt.Errorf("unsupported version %s (a JSON %s); want the string %q", rawExcerpt(d.data[start:d.pos]), kindOf(c), Version))
		} else {
			d.note(slot, ReasonInvalidField, fmt.Errorf(errNotStringJSON, kindOf(c)))
		}
		return nil
	}
}

// parseMapMember reads entity_keys or feature_values: an object whose member
// values are strings.
func (d *decoder) parseMapMember(slot int) *PoisonError {
	bit := uint16(1) << slot
	switch c := d.data[d.pos]; c {
	case 'n':
		return d.literal("null")
	case '{':
	default:
		if perr := d.skipValue(1); perr != nil {
			return perr
		}
		d.present |= bit
		d.note(slot, ReasonInvalidField, fmt.Errorf("must be an object of strings, not a JSON %s", kindOf(c)))
		return nil
	}
	d.present |= bit
	count, limit := len(d.entity), d.opts.MaxEntityKeys
	if slot == slotFeatureValues {
		count, limit = len(d.features), d.opts.MaxFeatureValues
	}
	d.pos++ // '{'
	d.skipWS()
	if d.pos < len(d.data) && d.data[d.pos] == '}' {
		d.pos++
		if slot == slotEntityKeys {
			d.note(slot, ReasonInvalidField, errNoEntityKeys)
		}
		return nil
	}
	for {
		raw, esc, perr := d.memberName()
		if perr != nil {
			return perr
		}
		keyStart := len(d.buf)
		d.keep(raw, esc)
		key := span{keyStart, len(d.buf)}
		if slot == slotEntityKeys && key.end == key.start {
			d.note(slot, ReasonInvalidField, errEmptyKey)
		}
		if c := d.data[d.pos]; c == '"' {
			raw, esc, perr := d.scanString()
			if perr != nil {
				return perr
			}
			if count >= limit {
				d.note(slot, ReasonTooLarge, fmt.Errorf("has more than %d members", limit))
				d.buf = d.buf[:keyStart]
			} else {
				valStart := len(d.buf)
				d.keep(raw, esc)
				p := pair{key, span{valStart, len(d.buf)}}
				if slot == slotEntityKeys {
					d.entity = append(d.entity, p)
				} else {
					d.features = append(d.features, p)
				}
				count++
			}
		} else {
			if d.errs[slot] == nil {
				d.errs[slot] = &PoisonError{
					Reason: ReasonInvalidField,
					Field:  slotNames[slot] + "." + fieldName(d.buf[key.start:key.end]),
					Err:    fmt.Errorf(errNotStringJSON, kindOf(c)),
				}
			}
			d.buf = d.buf[:keyStart]
			if perr := d.skipValue(2); perr != nil {
				return perr
			}
		}
		d.skipWS()
		if d.pos >= len(d.data) {
			return d.eofErr()
		}
		switch d.data[d.pos] {
		case ',':
			d.pos++
			d.skipWS()
		case '}':
			d.pos++
			return nil
		default:
			return d.syntaxErr(d.pos, "expected ',' or '}' after an object member")
		}
	}
}

// skipValue checks the syntax of the value at pos and moves past it, without
// recursion, so that nesting costs heap (bounded by MaxDepth), not stack.
// depth is the nesting depth of the container holding the value. Objects in
// it are checked for duplicate member names and numbers for the float64 range;
// those problems are noted against the current member.
func (d *decoder) skipValue(depth int) *PoisonError {
	var stackArr [8]frame
	stack := stackArr[:0]
value:
	for {
		if d.pos >= len(d.data) {
			return d.eofErr()
		}
		switch c := d.data[d.pos]; {
		case c == '{' || c == '[':
			if depth+len(stack)+1 > d.opts.MaxDepth {
				return &PoisonError{
					Reason: ReasonTooDeep,
					Field:  d.ctxField(),
					Err:    fmt.Errorf("nesting deeper than %d levels at offset %d", d.opts.MaxDepth, d.pos),
				}
			}
			d.pos++
			d.skipWS()
			if c == '{' {
				if d.pos < len(d.data) && d.data[d.pos] == '}' {
					d.pos++
					break
				}
				stack = append(stack, frame{object: true})
				if perr := d.skipName(&stack[len(stack)-1]); perr != nil {
					return perr
				}
				continue value
			}
			if d.pos < len(d.data) && d.data[d.pos] == ']' {
				d.pos++
				break
			}
			stack = append(stack, frame{})
			continue value
		case c == '"':
			if _, _, perr := d.scanString(); perr != nil {
				return perr
			}
		case c == '-' || (c >= '0' && c <= '9'):
			if perr := d.scanNumber(); perr != nil {
				return perr
			}
		case c == 't':
			if perr := d.literal("true"); perr != nil {
				return perr
			}
		case c == 'f':
			if perr := d.literal("false"); perr != nil {
				return perr
			}
		case c == 'n':
			if perr := d.literal("null"); perr != nil {
				return perr
			}
		default:
			return d.syntaxErr(d.pos, "expected a JSON value")
		}
		// A value is complete: close containers or go on to the next element.
		for len(stack) > 0 {
			d.skipWS()
			if d.pos >= len(d.data) {
				return d.eofErr()
			}
			top := &stack[len(stack)-1]
			switch c := d.data[d.pos]; {
			case c == ',':
				d.pos++
				d.skipWS()
				if top.object {
					if perr := d.skipName(top); perr != nil {
						return perr
					}
				}
				continue value
			case top.object && c == '}', !top.object && c == ']':
				d.pos++
				stack = stack[:len(stack)-1]
			case top.object:
				return d.syntaxErr(d.pos, "expected ',' or '}' after an object member")
			default:
				return d.syntaxErr(d.pos, "expected ',' or ']' after an array element")
			}
		}
		return nil
	}
}

// skipName reads a member name inside a skipped object and notes it if the
// object already has a member of that name.
func (d *decoder) skipName(f *frame) *PoisonError {
	raw, esc, perr := d.memberName()
	if perr != nil {
		return perr
	}
	name := raw
	if esc {
		var tmp [64]byte
		name = appendUnescaped(tmp[:0], raw)
	}
	if _, dup := f.names[string(name)]; dup {
		d.note(d.ctxSlot, ReasonInvalidField, fmt.Errorf("nested member name %s appears more than once", excerpt(name)))
		return nil
	}
	if f.names == nil {
		f.names = make(map[string]struct{})
	}
	f.names[string(name)] = struct{}{}
	return nil
}

// stringSafe reports the bytes that may appear unescaped inside a JSON
// string. Bytes of multi-byte UTF-8 sequences are safe: the whole input was
// checked to be UTF-8 before parsing.
var stringSafe = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// scanString checks the string starting at pos (at its opening quote) and
// moves past it. It returns the raw bytes between the quotes and whether they
// contain escapes.
func (d *decoder) scanString() (raw []byte, escaped bool, perr *PoisonError) {
	data := d.data
	start := d.pos + 1
	i := start
	for {
		for i < len(data) && stringSafe[data[i]] {
			i++
		}
		if i >= len(data) {
			return nil, false, d.eofErr()
		}
		switch data[i] {
		case '"':
			d.pos = i + 1
			return data[start:i], escaped, nil
		case '\\':
			escaped = true
			if i+1 >= len(data) {
				return nil, false, d.eofErr()
			}
			switch data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				r, perr := d.hex4(i)
				if perr != nil {
					return nil, false, perr
				}
				switch {
				case r >= 0xD800 && r < 0xDC00:
					// A high surrogate must be followed by a \u escape of a
					// low one.
					switch {
					case i+6 < len(data) && data[i+6] != '\\',
						i+7 < len(data) && data[i+7] != 'u':
						return nil, false, d.loneSurrogate(i)
					}
					r2, perr := d.hex4(i + 6)
					if perr != nil {
						return nil, false, perr
					}
					if r2 < 0xDC00 || r2 >= 0xE000 {
						return nil, false, d.loneSurrogate(i)
					}
					i += 12
					continue
				case r >= 0xDC00 && r < 0xE000:
					return nil, false, d.loneSurrogate(i)
				}
				i += 6
			default:
				return nil, false, d.syntaxErr(i, "invalid escape in string")
			}
		default:
			return nil, false, d.syntaxErr(i, "control character in string")
		}
	}
}

// hex4 reads the four hex digits of the \u escape at i.
func (d *decoder) hex4(i int) (rune, *PoisonError) {
	if i+6 > len(d.data) {
		return 0, d.eofErr()
	}
	var r rune
	for _, c := range d.data[i+2 : i+6] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, d.syntaxErr(i, "invalid \\u escape in string")
		}
		r = r<<4 | rune(c)
	}
	return r, nil
}

func (d *decoder) loneSurrogate(i int) *PoisonError {
	return &PoisonError{
		Reason: ReasonInvalidUTF8,
		Field:  d.ctxField(),
		Err:    fmt.Errorf("escape %s at offset %d is a lone UTF-16 surrogate", string(d.data[i:i+6]), i),
	}
}

// scanNumber checks the number at pos and moves past it. Numbers that may
// not fit a float64 (with an exponent, or more than 308 integer digits) are
// parsed to check their range; the others cannot overflow.
func (d *decoder) scanNumber() *PoisonError {
	data := d.data
	start := d.pos
	i := start
	if data[i] == '-' {
		i++
	}
	digitsFrom := func(i int) int {
		for i < len(data) && data[i] >= '0' && data[i] <= '9' {
			i++
		}
		return i
	}
	intStart := i
	switch {
	case i >= len(data):
		return d.eofErr()
	case data[i] == '0':
		i++
	case data[i] >= '1' && data[i] <= '9':
		i = digitsFrom(i)
	default:
		return d.syntaxErr(i, "expected a digit in a number")
	}
	intDigits := i - intStart
	if i < len(data) && data[i] == '.' {
		i++
		j := digitsFrom(i)
		if j == i {
			return d.digitErr(j)
		}
		i = j
	}
	exp := false
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		exp = true
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		j := digitsFrom(i)
		if j == i {
			return d.digitErr(j)
		}
		i = j
	}
	d.pos = i
	if exp || intDigits > 308 {
		if f, err := strconv.ParseFloat(string(data[start:i]), 64); err != nil || math.IsInf(f, 0) {
			d.note(d.ctxSlot, ReasonInvalidField, fmt.Errorf("number %s is outside the float64 range", rawExcerpt(data[start:i])))
		}
	}
	return nil
}

func (d *decoder) digitErr(i int) *PoisonError {
	if i >= len(d.data) {
		return d.eofErr()
	}
	return d.syntaxErr(i, "expected a digit in a number")
}

// literal checks that the literal lit (true, false or null) is at pos and
// moves past it.
func (d *decoder) literal(lit string) *PoisonError {
	rest := d.data[d.pos:]
	for i := 0; i < len(lit); i++ {
		if i >= len(rest) {
			return d.eofErr()
		}
		if rest[i] != lit[i] {
			return d.syntaxErr(d.pos+i, "expected the literal "+lit)
		}
	}
	d.pos += len(lit)
	return nil
}

func (d *decoder) skipWS() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// note records a member problem unless the member already has one; the
// first problem of each member is the one reported.
func (d *decoder) note(slot int, reason Reason, err error) {
	switch {
	case slot >= 0:
		if d.errs[slot] == nil {
			d.errs[slot] = &PoisonError{Reason: reason, Field: slotNames[slot], Err: err}
		}
	case slot == slotExtra:
		d.noteExtra(reason, err)
	default:
		// Outside any member (a top-level value that is not an object):
		// Decode reports ReasonNotObject regardless.
	}
}

func (d *decoder) noteExtra(reason Reason, err error) {
	if d.extraErr == nil {
		d.extraErr = &PoisonError{Reason: reason, Field: d.ctxField(), Err: err}
	}
}

// ctxField names the top-level member being read, for errors.
func (d *decoder) ctxField() string {
	switch {
	case d.ctxSlot >= 0:
		return slotNames[d.ctxSlot]
	case d.ctxSlot == slotExtra:
		return fieldName(appendUnescaped(nil, d.memberRaw))
	default:
		return ""
	}
}

func (d *decoder) syntaxErr(i int, msg string) *PoisonError {
	var what string
	switch c := d.data[i]; {
	case i == 0 && len(d.data) >= 3 && string(d.data[:3]) == "\uFEFF":
		what = "byte order mark U+FEFF"
	case c < utf8.RuneSelf:
		what = strconv.QuoteRune(rune(c))
	default:
		r, _ := utf8.DecodeRune(d.data[i:])
		what = fmt.Sprintf("%q (%U)", r, r)
	}
	return &PoisonError{Reason: ReasonInvalidJSON, Err: fmt.Errorf("%s: found %s at offset %d", msg, what, i)}
}

func (d *decoder) eofErr() *PoisonError {
	return &PoisonError{Reason: ReasonInvalidJSON, Err: fmt.Errorf("unexpected end of input at offset %d: the record is truncated", len(d.data))}
}

// build checks the members once the whole record parsed and assembles the
// Record. All kept strings are substrings of one string made from buf.
func (d *decoder) build() (*Record, *PoisonError) {
	all := string(d.buf)
	str := func(s span) string { return all[s.start:s.end] }
	entity := d.buildMap(slotEntityKeys, d.entity, str)
	var features map[string]string
	if d.present&(1<<slotFeatureValues) != 0 {
		features = d.buildMap(slotFeatureValues, d.features, str)
	}
	for slot := range numSlots {
		if perr := d.errs[slot]; perr != nil {
			return nil, perr
		}
		bit := uint16(1) << slot
		if requiredSlots&bit != 0 && d.present&bit == 0 {
			err := errMissing
			if d.seen&bit != 0 {
				err = errNull
			}
			return nil, &PoisonError{Reason: ReasonMissingField, Field: slotNames[slot], Err: err}
		}
	}
	if d.extraErr != nil {
		return nil, d.extraErr
	}
	return &Record{
		Version:          Version,
		Producer:         str(d.str[slotProducer]),
		JobType:          str(d.str[slotJobType]),
		FeatureViewName:  str(d.str[slotFeatureViewName]),
		FeatureViewID:    str(d.str[slotFeatureViewID]),
		FeatureTimestamp: d.ts,
		EntityKeys:       entity,
		FeatureValues:    features,
		Raw:              append(make([]byte, 0, len(d.data)), d.data...),
	}, nil
}

// buildMap turns pairs into a map, noting a name given twice. It returns an
// empty non-nil map for no pairs.
func (d *decoder) buildMap(slot int, pairs []pair, str func(span) string) map[string]string {
	if d.errs[slot] != nil {
		return nil
	}
	m := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k := str(p.key)
		if _, dup := m[k]; dup {
			d.errs[slot] = &PoisonError{Reason: ReasonInvalidField, Field: slotNames[slot] + "." + fieldName([]byte(k)), Err: errDuplicate}
			return nil
		}
		m[k] = str(p.val)
	}
	return m
}

// kindOf names the JSON type of the value starting with c, for messages.
func kindOf(c byte) string {
	switch c {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	default:
		return "number"
	}
}

// keep appends the content of a scanned string, unescaped, to buf.
func (d *decoder) keep(raw []byte, escaped bool) {
	if !escaped {
		d.buf = append(d.buf, raw...)
		return
	}
	d.buf = appendUnescaped(d.buf, raw)
}

// appendUnescaped appends raw, the content of a JSON string that scanString
// accepted, with its escapes decoded. It relies on that check: every escape
// is complete and every \u surrogate is paired.
func appendUnescaped(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			j := i + 1
			for j < len(raw) && raw[j] != '\\' {
				j++
			}
			dst = append(dst, raw[i:j]...)
			i = j
			continue
		}
		switch raw[i+1] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hexValue(raw[i+2 : i+6])
			if r >= 0xD800 && r < 0xDC00 {
				r = 0x10000 + (r-0xD800)<<10 + (hexValue(raw[i+8:i+12]) - 0xDC00)
				i += 6
			}
			dst = utf8.AppendRune(dst, r)
			i += 6
			continue
		default: // '"', '\\', '/'
			dst = append(dst, raw[i+1])
		}
		i += 2
	}
	return dst
}

func hexValue(b []byte) rune {
	var r rune
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}
