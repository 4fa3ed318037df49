package record

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// Reason classifies why a record is poison. Its values are short, fixed
// snake_case strings meant to be used directly as a Prometheus label value
// (for example outflow_records_poison_total{reason="missing_field"}): there
// are few of them and they never contain data from the record, so the label
// keeps a low cardinality.
type Reason string

// The reasons Decode reports. When a record has several problems, Decode
// reports one of them, chosen in this order: ReasonTooLarge for the byte size;
// ReasonInvalidUTF8 for bytes that are not UTF-8; then the first structural
// problem in document order (ReasonInvalidJSON, ReasonTooDeep,
// ReasonNotObject, or ReasonInvalidUTF8 for a lone surrogate escape); then, in
// the field order of SPEC §2 (version, producer, job_type, feature_view_name,
// feature_view_id, feature_timestamp, entity_keys, feature_values, then
// unknown members in document order), the first field problem.
const (
	// ReasonTooLarge means the record is longer than DecodeOptions.MaxBytes
	// (Field empty), or entity_keys or feature_values has more members than
	// DecodeOptions.MaxEntityKeys or MaxFeatureValues allow (Field names the
	// member).
	ReasonTooLarge Reason = "too_large"
	// ReasonInvalidUTF8 means the bytes are not valid UTF-8 (Field empty), or
	// a string holds a \u escape of a lone UTF-16 surrogate, which has no
	// UTF-8 encoding (Field names the top-level member it is in, if any).
	ReasonInvalidUTF8 Reason = "invalid_utf8"
	// ReasonInvalidJSON means the bytes are not one JSON text: a syntax error,
	// truncated input, a byte order mark, or data after the top-level value.
	// Field is empty: a syntax error cannot be trusted to say which member it
	// is in; the message gives the byte offset.
	ReasonInvalidJSON Reason = "invalid_json"
	// ReasonTooDeep means arrays and objects nest deeper than
	// DecodeOptions.MaxDepth. Field names the top-level member it happens in
	// (empty when the record is itself an array).
	ReasonTooDeep Reason = "too_deep"
	// ReasonNotObject means the JSON text is valid but is not an object (an
	// array, a string, a number, true, false or null).
	ReasonNotObject Reason = "not_object"
	// ReasonUnsupportedVersion means the version member is present but is not
	// the string "1": another string, or a number, boolean, object or array.
	ReasonUnsupportedVersion Reason = "unsupported_version"
	// ReasonMissingField means a required member (version, feature_view_name,
	// feature_timestamp, entity_keys) is absent or null.
	ReasonMissingField Reason = "missing_field"
	// ReasonInvalidField means a member is present but wrong: the wrong JSON
	// type, empty where a value is required, a timestamp that is not RFC 3339,
	// an empty entity key name, a member name given twice in one object, or a
	// number outside the float64 range.
	ReasonInvalidField Reason = "invalid_field"
	// ReasonInternal means Decode itself failed: it panicked, which is a bug
	// in this package (FuzzDecode checks that it does not happen). The record
	// is reported as poison so that the consumer skips it instead of crashing
	// on it again and again.
	ReasonInternal Reason = "internal"
)

// Reasons returns every Reason Decode can report, so that metrics can be
// initialised at zero for each label value before the first poison record.
func Reasons() []Reason {
	return []Reason{
		ReasonTooLarge,
		ReasonInvalidUTF8,
		ReasonInvalidJSON,
		ReasonTooDeep,
		ReasonNotObject,
		ReasonUnsupportedVersion,
		ReasonMissingField,
		ReasonInvalidField,
		ReasonInternal,
	}
}

// PoisonError is the error Decode returns for a record that cannot be
// processed. Every error Decode returns is a *PoisonError, so callers can
// count it by Reason and store it for inspection without string matching.
//
// The message never contains the record itself, which may be a mebibyte
// long: at most short excerpts (see maxExcerpt) of the offending value.
type PoisonError struct {
	// Reason classifies the problem; use it as a metric label.
	Reason Reason
	// Field is the member the problem was found in: a top-level member name
	// such as "feature_timestamp", or "entity_keys.<key>" and
	// "feature_values.<name>" for a single entry. It is empty for problems of
	// the whole record (size, encoding, syntax, not an object). It is valid
	// UTF-8 and at most a few dozen bytes: long or malformed names from the
	// record are shortened.
	Field string
	// Err describes what is wrong.
	Err error
}

// Error returns "poison record (reason): field: detail", without the field
// part when Field is empty.
func (e *PoisonError) Error() string {
	var b strings.Builder
	b.WriteString("poison record (")
	b.WriteString(string(e.Reason))
	b.WriteString(")")
	if e.Field != "" {
		b.WriteString(": ")
		b.WriteString(e.Field)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying detail error.
func (e *PoisonError) Unwrap() error { return e.Err }

// maxExcerpt is the longest piece of a record, in bytes, that an error
// message or Field quotes; longer pieces are cut and end in "…".
const maxExcerpt = 40

// excerpt returns b quoted as a Go string, cut to maxExcerpt bytes at a rune
// boundary. Bytes that are not UTF-8 are shown as escapes by the quoting.
func excerpt(b []byte) string {
	cut := len(b) > maxExcerpt
	if cut {
		n := maxExcerpt
		for n > 0 && !utf8.RuneStart(b[n]) {
			n--
		}
		b = b[:n]
	}
	s := strconv.Quote(string(b))
	if cut {
		s += "…"
	}
	return s
}

// rawExcerpt returns a piece of raw JSON text (not a string's content) cut
// to maxExcerpt bytes at a rune boundary, with line breaks and tabs shown as
// spaces so that the message stays on one line.
func rawExcerpt(b []byte) string {
	cut := len(b) > maxExcerpt
	if cut {
		n := maxExcerpt
		for n > 0 && !utf8.RuneStart(b[n]) {
			n--
		}
		b = b[:n]
	}
	s := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, string(b))
	if cut {
		s += "…"
	}
	return s
}

// fieldName turns a member name taken from the record into a safe Field
// value: valid UTF-8, without control characters, at most maxExcerpt bytes.
func fieldName(name []byte) string {
	var b strings.Builder
	for len(name) > 0 {
		r, n := utf8.DecodeRune(name)
		if r < 0x20 || r == 0x7f || (r == utf8.RuneError && n == 1) {
			r = utf8.RuneError
		}
		if b.Len()+utf8.RuneLen(r) > maxExcerpt {
			b.WriteString("…")
			break
		}
		b.WriteRune(r)
		name = name[n:]
	}
	return b.String()
}
