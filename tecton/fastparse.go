package tecton

import (
	"bytes"
	"strings"
	"time"
)

// The fast path of ParseBatchResponse.
//
// A STRICT backlog makes one get-features-batch call per MaxBatchSize events, and decoding the
// answers with encoding/json (reflection, a json.RawMessage per value, then a second decode of
// every per-row list of effective times and statuses) was the largest single cost of the
// gateway's enrichment (issue 10: 13% of its CPU). parseBatchFast reads the shape Tecton's
// servers emit in one pass, without reflection and with a handful of allocations per answer.
//
// It is deliberately narrow: it succeeds only on bodies it fully understands, and returns ok
// false on anything else — a key in another spelling or case, an escape in a key, a name or a
// status, a duplicate key, a null where a list belongs, an invalid or unexpected value,
// deep nesting, a length mismatch — without saying why. ParseBatchResponse then decodes the
// body again with encoding/json, which owns every error message and every unusual spelling
// (snake_case fields, escaped names, ...). So the fast path only ever changes how fast a body
// is accepted, never what is accepted or what it yields; FuzzParseBatchFastMatches checks that
// whatever the fast path accepts, the encoding/json path accepts too, with an equal result.

// maxFastDepth bounds the nesting of a feature value the fast path reads; deeper values take
// the encoding/json path (which allows 10,000 levels).
const maxFastDepth = 32

// span is the position of one feature value in the body.
type span struct {
	start, end int
	// spaced is true when the value holds whitespace between its tokens and must be compacted.
	spaced bool
}

// fastMeta is one metadata.features entry as the fast path reads it.
type fastMeta struct {
	name     string
	dataType []byte // raw value; nil when absent
	seen     uint8  // keys read, to refuse duplicates
	times    []effectiveTime
	statuses []string
}

const (
	seenName uint8 = 1 << iota
	seenTime
	seenType
	seenStatus
)

// scanner reads JSON tokens from b at i.
type scanner struct {
	b []byte
	i int
	// cache holds the effective times parsed so far (at most maxCachedTimes): the features
	// of one feature view share each row's time, the rows of a batch view share one, and
	// time.Parse is not free.
	cache []cachedTime
}

// cachedTime is one effective time the scanner parsed, with its text in the body.
type cachedTime struct {
	text []byte
	t    time.Time
}

// maxCachedTimes bounds scanner.cache: a batch holds at most MaxBatchSize rows, and a few
// distinct times per row are the common case.
const maxCachedTimes = 16

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// next skips whitespace and returns the next byte without consuming it, 0 at the end.
func (s *scanner) next() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// consume skips whitespace and consumes c if it comes next.
func (s *scanner) consume(c byte) bool {
	if s.next() == c {
		s.i++
		return true
	}
	return false
}

// simpleString reads a string of printable ASCII without escapes, the only strings the fast
// path accepts as keys, names, statuses and times.
func (s *scanner) simpleString() ([]byte, bool) {
	if !s.consume('"') {
		return nil, false
	}
	start := s.i
	for j := start; j < len(s.b); j++ {
		c := s.b[j]
		if c == '"' {
			s.i = j + 1
			return s.b[start:j], true
		}
		if c < 0x20 || c == '\\' || c >= 0x80 {
			return nil, false
		}
	}
	return nil, false
}

// key reads an object key and its colon.
func (s *scanner) key() ([]byte, bool) {
	k, ok := s.simpleString()
	if !ok || !s.consume(':') {
		return nil, false
	}
	return k, true
}

// object reads the members of an object, calling member for each key (after its colon);
// member reads the value. It returns false when the object is malformed or member does.
func (s *scanner) object(member func(key []byte) bool) bool {
	if !s.consume('{') {
		return false
	}
	if s.consume('}') {
		return true
	}
	for {
		k, ok := s.key()
		if !ok || !member(k) {
			return false
		}
		if s.consume(',') {
			continue
		}
		return s.consume('}')
	}
}

// array reads the elements of an array, calling elem for each.
func (s *scanner) array(elem func() bool) bool {
	if !s.consume('[') {
		return false
	}
	if s.consume(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		if s.consume(',') {
			continue
		}
		return s.consume(']')
	}
}

// value validates and skips one JSON value of any kind, returning where it is.
func (s *scanner) value(depth int) (span, bool) {
	if depth > maxFastDepth {
		return span{}, false
	}
	s.ws()
	sp := span{start: s.i}
	if s.i >= len(s.b) {
		return sp, false
	}
	ok := false
	switch c := s.b[s.i]; {
	case c == '"':
		ok = s.skipString()
	case c == '-' || '0' <= c && c <= '9':
		ok = s.skipNumber()
	case c == 't':
		ok = s.literal("true")
	case c == 'f':
		ok = s.literal("false")
	case c == 'n':
		ok = s.literal("null")
	case c == '[':
		ok = s.array(func() bool {
			_, ok := s.value(depth + 1)
			return ok
		})
	case c == '{':
		ok = s.object(func([]byte) bool {
			_, ok := s.value(depth + 1)
			return ok
		})
	}
	sp.end = s.i
	// Only arrays and objects can hold whitespace between their tokens.
	if ok && (s.b[sp.start] == '[' || s.b[sp.start] == '{') {
		sp.spaced = hasSpace(s.b[sp.start:sp.end])
	}
	return sp, ok
}

// hasSpace reports whether a valid JSON text holds whitespace outside its strings.
func hasSpace(b []byte) bool {
	in := false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case in && c == '\\':
			i++
		case c == '"':
			in = !in
		case !in && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			return true
		}
	}
	return false
}

func (s *scanner) literal(lit string) bool {
	if !bytes.HasPrefix(s.b[s.i:], []byte(lit)) {
		return false
	}
	s.i += len(lit)
	return true
}

// skipString skips a string with valid escapes; bytes from 0x80 on pass unchecked, as
// encoding/json's scanner lets them.
func (s *scanner) skipString() bool {
	s.i++ // the opening quote
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if s.i+1 >= len(s.b) {
				return false
			}
			switch s.b[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				if s.i+6 > len(s.b) {
					return false
				}
				for _, h := range s.b[s.i+2 : s.i+6] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return false
					}
				}
				s.i += 6
			default:
				return false
			}
		default:
			s.i++
		}
	}
	return false
}

// skipNumber skips a number of JSON's grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) skipNumber() bool {
	b := s.b
	i := s.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		d := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		if i == d {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		if i == d {
			return false
		}
	}
	s.i = i
	return true
}

// skip skips an unknown member's value, unless its key is a spelling encoding/json would
// match to one of known (it matches keys case-insensitively): then the fast path gives up.
func (s *scanner) skip(key []byte, known ...string) bool {
	for _, k := range known {
		if strings.EqualFold(string(key), k) {
			return false
		}
	}
	_, ok := s.value(0)
	return ok
}

// parseBatchFast is the fast path of ParseBatchResponse (see above). ok false means: decode
// with encoding/json instead.
func parseBatchFast(body []byte) (vectors []*Vector, ok bool) {
	var timeCache [maxCachedTimes]cachedTime
	s := &scanner{b: body, cache: timeCache[:0]}
	var (
		rows     int
		values   = make([]span, 0, 8*MaxBatchSize) // row-major: rows × len(metas)
		rowLens  = make([]int, 0, MaxBatchSize)
		metas    = make([]fastMeta, 0, 8)
		seenRes  bool
		seenMeta bool
	)
	// The per-row lists of metadata need the number of rows, which comes first in every
	// answer Tecton sends; the fast path requires that order.
	top := s.object(func(k []byte) bool {
		switch string(k) {
		case "result":
			if seenRes || seenMeta {
				return false
			}
			seenRes = true
			return s.array(func() bool {
				rows++
				n := 0
				ok := s.featuresOf(func() bool {
					return s.array(func() bool {
						sp, ok := s.value(0)
						values = append(values, sp)
						n++
						return ok
					})
				})
				rowLens = append(rowLens, n)
				return ok
			})
		case "metadata":
			if seenMeta || !seenRes {
				return false
			}
			seenMeta = true
			return s.featuresOf(func() bool {
				return s.array(func() bool {
					metas = append(metas, fastMeta{})
					return s.meta(&metas[len(metas)-1], rows)
				})
			})
		default:
			return s.skip(k, "result", "metadata")
		}
	})
	s.ws()
	if !top || !seenRes || !seenMeta || s.i != len(body) {
		return nil, false
	}
	n := len(metas)
	for _, l := range rowLens {
		if l != n {
			return nil, false
		}
	}
	for i := range metas {
		m := &metas[i]
		if m.seen&seenName == 0 || m.name == "" {
			return nil, false
		}
		for j := range i {
			if metas[j].name == m.name {
				return nil, false
			}
		}
	}

	// Values are copied into one buffer, so that they neither alias the body nor cost an
	// allocation each; each keeps its own capacity so an append cannot run into the next.
	size := 0
	for _, sp := range values {
		size += sp.end - sp.start
	}
	arena := make([]byte, 0, size)
	features := make([]Feature, rows*n)
	vecs := make([]Vector, rows)
	vectors = make([]*Vector, rows)
	for r := range rows {
		row := features[r*n : (r+1)*n : (r+1)*n]
		for i := range n {
			m := &metas[i]
			sp := values[r*n+i]
			var value []byte
			if sp.spaced {
				var err error
				if value, err = compact(body[sp.start:sp.end]); err != nil {
					return nil, false
				}
			} else {
				at := len(arena)
				arena = append(arena, body[sp.start:sp.end]...)
				value = arena[at:len(arena):len(arena)]
			}
			f := Feature{Name: m.name, Value: value, DataType: m.dataType}
			if view, _, ok := strings.Cut(m.name, "."); ok {
				f.FeatureView = view
			}
			if et := pick(m.times, r); et.set {
				f.EffectiveTime, f.HasEffectiveTime = et.t, true
			}
			f.Status = pick(m.statuses, r)
			row[i] = f
		}
		vecs[r].Features = row
		vectors[r] = &vecs[r]
	}
	return vectors, true
}

// meta reads one metadata.features entry.
func (s *scanner) meta(m *fastMeta, rows int) bool {
	return s.object(func(k []byte) bool {
		switch string(k) {
		case "name":
			if m.seen&seenName != 0 {
				return false
			}
			m.seen |= seenName
			name, ok := s.simpleString()
			m.name = string(name)
			return ok
		case "effectiveTime":
			if m.seen&seenTime != 0 {
				return false
			}
			m.seen |= seenTime
			return s.times(m, rows)
		case "dataType":
			if m.seen&seenType != 0 {
				return false
			}
			m.seen |= seenType
			return s.dataType(m)
		case "status":
			if m.seen&seenStatus != 0 {
				return false
			}
			m.seen |= seenStatus
			return s.statuses(m, rows)
		default:
			return s.skip(k, "name", "effectiveTime", "effective_time", "dataType", "data_type", "status")
		}
	})
}

// times reads an effective time: null, a string shared by all rows, or a list of strings and
// nulls, one per row.
func (s *scanner) times(m *fastMeta, rows int) bool {
	switch s.next() {
	case 'n':
		return s.literal("null")
	case '"':
		t, ok := s.time()
		m.times = []effectiveTime{t}
		return ok && t.set
	case '[':
		m.times = make([]effectiveTime, 0, rows)
		return s.array(func() bool {
			if s.next() == 'n' {
				m.times = append(m.times, effectiveTime{})
				return s.literal("null")
			}
			t, ok := s.time()
			m.times = append(m.times, t)
			return ok && t.set
		}) && len(m.times) == rows
	}
	return false
}

// time reads one effective time string.
func (s *scanner) time() (effectiveTime, bool) {
	text, ok := s.simpleString()
	if !ok {
		return effectiveTime{}, false
	}
	for _, c := range s.cache {
		if bytes.Equal(text, c.text) {
			return effectiveTime{t: c.t, set: true}, true
		}
	}
	t, err := parseEffectiveTime(string(text))
	if err != nil {
		return effectiveTime{}, false
	}
	if len(s.cache) < maxCachedTimes {
		s.cache = append(s.cache, cachedTime{text: text, t: t})
	}
	return effectiveTime{t: t, set: true}, true
}

// dataType reads a data type. The common {"type":"<name>"} is already in normalised form and
// is kept as sent; any other value is normalised as the encoding/json path does.
func (s *scanner) dataType(m *fastMeta) bool {
	sp, ok := s.value(0)
	if !ok {
		return false
	}
	raw := s.b[sp.start:sp.end]
	if string(raw) == "null" {
		return true
	}
	if isSimpleDataType(raw) {
		m.dataType = bytes.Clone(raw)
		return true
	}
	dt, err := normalizeDataType(raw)
	if err != nil {
		return false
	}
	m.dataType = dt
	return true
}

// isSimpleDataType reports whether raw is exactly {"type":"<letters and digits>"}, which
// normalizeDataType would return unchanged.
func isSimpleDataType(raw []byte) bool {
	rest, ok := bytes.CutPrefix(raw, []byte(`{"type":"`))
	if !ok {
		return false
	}
	rest, ok = bytes.CutSuffix(rest, []byte(`"}`))
	if !ok || len(rest) == 0 {
		return false
	}
	for _, c := range rest {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// statuses reads a status: null, a string shared by all rows, or a list of strings, one per
// row.
func (s *scanner) statuses(m *fastMeta, rows int) bool {
	switch s.next() {
	case 'n':
		return s.literal("null")
	case '"':
		st, ok := s.simpleString()
		m.statuses = []string{internStatus(st)}
		return ok
	case '[':
		m.statuses = make([]string, 0, rows)
		return s.array(func() bool {
			st, ok := s.simpleString()
			m.statuses = append(m.statuses, internStatus(st))
			return ok
		}) && len(m.statuses) == rows
	}
	return false
}

// internStatus returns the known statuses without allocating.
func internStatus(b []byte) string {
	switch string(b) {
	case StatusPresent:
		return StatusPresent
	case StatusMissingData:
		return StatusMissingData
	case StatusCachedPresent:
		return StatusCachedPresent
	case StatusCachedMissingData:
		return StatusCachedMissingData
	case StatusCachedUnknown:
		return StatusCachedUnknown
	case StatusUnknown:
		return StatusUnknown
	}
	return string(b)
}

// featuresOf reads an object whose one key of interest is "features" (any other goes to skip),
// handing the key's value to read; the object fails without it, or with it twice.
func (s *scanner) featuresOf(read func() bool) bool {
	seen := false
	return s.object(func(k []byte) bool {
		if string(k) != "features" {
			return s.skip(k, "features")
		}
		if seen {
			return false
		}
		seen = true
		return read()
	}) && seen
}
