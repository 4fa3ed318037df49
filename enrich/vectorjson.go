package enrich

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/outflow-dev/outflow/internal/jsonenc"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/tecton"
)

// JSONLen is how many bytes AppendJSON writes for r at most, when its names and values need no
// escaping or rewriting (what a feature store sends), so that a caller can size the buffer
// AppendJSON writes into once. A longer output only costs a reallocation.
func (r *Result) JSONLen(workspace, service string) int {
	const (
		fixed      = len(`{"workspace_name":"","feature_service_name":"","features":{},"metadata":{},"consistent":false,"attempts":2147483647}`)
		perFeature = len(`"":,"":{"effective_time":"2006-01-02T15:04:05.000000000Z","status":""},`)
	)
	if r == nil {
		return 0
	}
	n := fixed + len(workspace) + len(service)
	if r.Vector != nil {
		for i := range r.Vector.Features {
			f := &r.Vector.Features[i]
			n += perFeature + 2*len(f.Name) + max(len(f.Value), len("null")) + len(f.Status)
		}
	}
	return n
}

// AppendJSON appends the event envelope's feature_vector object (SPEC §5) for this result, read
// from the given workspace and feature service, to dst and returns the extended slice; a nil
// Result appends nothing. It is the hot-path twin of Proto: the same JSON a protojson encoding of
// Proto's message decodes to, written straight from the feature store's bytes without building
// the message (issue 10: protojson was a fifth of the CPU of a backlog).
//
// The object always holds workspace_name, feature_service_name, features, metadata and
// attempts, as the SPEC's example shows them, even when empty or zero; consistent only when it
// was checked (absent with NONE). features and metadata are in name order. A feature value is
// the JSON the feature store sent (int64 as strings, doubles as numbers, null, arrays), except
// that a number beyond a double's range is written as its decimal string and a value that is
// not JSON as its text, as Proto does, so that every decoder reads the result.
func (r *Result) AppendJSON(dst []byte, workspace, service string) []byte {
	if r == nil {
		return dst
	}
	var features []tecton.Feature
	if r.Vector != nil {
		features = r.Vector.Features
	}
	// Feature names are unique in a parsed Vector; sort indices, not the shared slice.
	var small [32]int
	order := small[:0]
	for i := range features {
		order = append(order, i)
	}
	if !slices.IsSortedFunc(order, func(a, b int) int { return strings.Compare(features[a].Name, features[b].Name) }) {
		slices.SortStableFunc(order, func(a, b int) int { return strings.Compare(features[a].Name, features[b].Name) })
	}
	dst = append(dst, `{"workspace_name":`...)
	dst = jsonenc.AppendString(dst, workspace, false)
	dst = append(dst, `,"feature_service_name":`...)
	dst = jsonenc.AppendString(dst, service, false)
	dst = append(dst, `,"features":{`...)
	for n, i := range order {
		if n > 0 {
			dst = append(dst, ',')
		}
		dst = jsonenc.AppendString(dst, features[i].Name, false)
		dst = append(dst, ':')
		dst = appendValue(dst, features[i].Value)
	}
	dst = append(dst, `},"metadata":{`...)
	for n, i := range order {
		f := &features[i]
		if n > 0 {
			dst = append(dst, ',')
		}
		dst = jsonenc.AppendString(dst, f.Name, false)
		dst = append(dst, ":{"...)
		if f.HasEffectiveTime {
			dst = append(dst, `"effective_time":"`...)
			dst = appendTimestamp(dst, f.EffectiveTime)
			dst = append(dst, `",`...)
		}
		dst = append(dst, `"status":`...)
		dst = jsonenc.AppendString(dst, f.Status, false)
		dst = append(dst, '}')
	}
	dst = append(dst, '}')
	if r.Consistent != nil {
		dst = append(dst, `,"consistent":`...)
		dst = strconv.AppendBool(dst, *r.Consistent)
	}
	dst = append(dst, `,"attempts":`...)
	dst = strconv.AppendInt(dst, int64(min(r.Attempts, 1<<31-1)), 10)
	return append(dst, '}')
}

// appendTimestamp writes t as protojson writes a google.protobuf.Timestamp: RFC 3339 in UTC
// with 0, 3, 6 or 9 fractional digits.
func appendTimestamp(dst []byte, t time.Time) []byte {
	t = t.UTC()
	dst = t.AppendFormat(dst, "2006-01-02T15:04:05")
	switch ns := t.Nanosecond(); {
	case ns == 0:
	case ns%1e6 == 0:
		dst = append(dst, '.')
		dst = appendPadded(dst, ns/1e6, 3)
	case ns%1e3 == 0:
		dst = append(dst, '.')
		dst = appendPadded(dst, ns/1e3, 6)
	default:
		dst = append(dst, '.')
		dst = appendPadded(dst, ns, 9)
	}
	return append(dst, 'Z')
}

func appendPadded(dst []byte, v, width int) []byte {
	var buf [9]byte
	for i := width - 1; i >= 0; i-- {
		buf[i] = byte('0' + v%10)
		v /= 10
	}
	return append(dst, buf[:width]...)
}

// appendValue writes one feature value. The feature store's compacted JSON passes through
// unchanged when every decoder reads it as jsonValue does; anything else (invalid UTF-8, a
// number beyond a double, text that is not JSON) takes the slow path through encoding/json.
func appendValue(dst []byte, raw json.RawMessage) []byte {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return append(dst, "null"...)
	}
	if isPlainScalar(raw) {
		return append(dst, raw...)
	}
	return appendValueChecked(dst, raw)
}

// appendValueChecked is appendValue without the plain-scalar shortcut: a trimmed, non-empty
// value checked in full.
func appendValueChecked(dst []byte, raw []byte) []byte {
	if json.Valid(raw) && utf8.Valid(raw) && numbersFit(raw) {
		return append(dst, raw...)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.InputOffset() != int64(len(raw)) {
		return jsonenc.AppendString(dst, strings.ToValidUTF8(string(raw), "\uFFFD"), false)
	}
	return appendAny(dst, v)
}

// isPlainScalar reports, without a full JSON scan, whether raw is one of the values a feature
// store sends most (null, true, false, a string of printable ASCII without escapes, a number
// that is a finite double), which pass through appendValue unchanged. json.Valid and
// numbersFit on every value were most of AppendJSON's cost in a STRICT backlog (issue 10).
func isPlainScalar(raw []byte) bool {
	switch raw[0] {
	case 'n':
		return string(raw) == "null"
	case 't':
		return string(raw) == "true"
	case 'f':
		return string(raw) == "false"
	case '"':
		if len(raw) < 2 || raw[len(raw)-1] != '"' {
			return false
		}
		for _, c := range raw[1 : len(raw)-1] {
			if c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
				return false
			}
		}
		return true
	}
	if !isJSONNumber(raw) {
		return false
	}
	_, err := strconv.ParseFloat(string(raw), 64)
	return err == nil
}

// isJSONNumber reports whether b is exactly a number of JSON's grammar:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func isJSONNumber(b []byte) bool {
	i := 0
	digits := func() int {
		start := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		return i - start
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		digits()
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(b)
}

// numbersFit reports whether every number of the valid JSON text raw parses as a finite
// double, as a google.protobuf.Struct (and a JavaScript receiver) needs.
func numbersFit(raw []byte) bool {
	for i := 0; i < len(raw); {
		switch c := raw[i]; {
		case c == '"':
			i++
			for i < len(raw) && raw[i] != '"' {
				if raw[i] == '\\' {
					i++
				}
				i++
			}
			i++
		case c == '-' || '0' <= c && c <= '9':
			j := i
			for j < len(raw) && (raw[j] == '-' || raw[j] == '+' || raw[j] == '.' || raw[j] == 'e' || raw[j] == 'E' || '0' <= raw[j] && raw[j] <= '9') {
				j++
			}
			if _, err := strconv.ParseFloat(string(raw[i:j]), 64); err != nil {
				return false
			}
			i = j
		default:
			i++
		}
	}
	return true
}

// appendAny writes a value decoded by encoding/json with UseNumber, with object keys sorted.
func appendAny(dst []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(dst, "null"...)
	case bool:
		return strconv.AppendBool(dst, v)
	case string:
		return jsonenc.AppendString(dst, v, false)
	case json.Number:
		if _, err := strconv.ParseFloat(v.String(), 64); err != nil {
			return jsonenc.AppendString(dst, v.String(), false)
		}
		return append(dst, v...)
	case []any:
		dst = append(dst, '[')
		for i, e := range v {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendAny(dst, e)
		}
		return append(dst, ']')
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		dst = append(dst, '{')
		for i, k := range keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = jsonenc.AppendString(dst, k, false)
			dst = append(dst, ':')
			dst = appendAny(dst, v[k])
		}
		return append(dst, '}')
	default:
		// encoding/json decodes into nothing else.
		return append(dst, "null"...)
	}
}

// AppendVectorJSON appends the feature_vector object of fv (as Result.Proto builds it) to dst:
// the JSON AppendJSON writes for the Result it came from, up to number formatting. It serves
// those that hold the vector as a message (the stream package) without protojson. Numbers are
// written in the shortest form that reads back as the same double; a NaN or infinite number,
// which JSON cannot hold (and protojson refuses too), is an error. A nil fv appends nothing.
func AppendVectorJSON(dst []byte, fv *outflowv1.FeatureVector) ([]byte, error) {
	if fv == nil {
		return dst, nil
	}
	dst = append(dst, `{"workspace_name":`...)
	dst = jsonenc.AppendString(dst, fv.GetWorkspaceName(), false)
	dst = append(dst, `,"feature_service_name":`...)
	dst = jsonenc.AppendString(dst, fv.GetFeatureServiceName(), false)
	dst = append(dst, `,"features":`...)
	var err error
	if dst, err = appendStruct(dst, fv.GetFeatures()); err != nil {
		return nil, err
	}
	dst = append(dst, `,"metadata":{`...)
	md := fv.GetMetadata()
	for i, name := range slices.Sorted(maps.Keys(md)) {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = jsonenc.AppendString(dst, name, false)
		dst = append(dst, ":{"...)
		if et := md[name].GetEffectiveTime(); et != nil {
			dst = append(dst, `"effective_time":"`...)
			dst = appendTimestamp(dst, et.AsTime())
			dst = append(dst, `",`...)
		}
		dst = append(dst, `"status":`...)
		dst = jsonenc.AppendString(dst, md[name].GetStatus(), false)
		dst = append(dst, '}')
	}
	dst = append(dst, '}')
	if fv.Consistent != nil {
		dst = append(dst, `,"consistent":`...)
		dst = strconv.AppendBool(dst, fv.GetConsistent())
	}
	dst = append(dst, `,"attempts":`...)
	dst = strconv.AppendInt(dst, int64(fv.GetAttempts()), 10)
	return append(dst, '}'), nil
}

// appendStruct writes a google.protobuf.Struct as a JSON object, keys in order.
func appendStruct(dst []byte, s *structpb.Struct) ([]byte, error) {
	fields := s.GetFields()
	dst = append(dst, '{')
	var err error
	for i, k := range slices.Sorted(maps.Keys(fields)) {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = jsonenc.AppendString(dst, k, false)
		dst = append(dst, ':')
		if dst, err = appendStructValue(dst, fields[k]); err != nil {
			return nil, err
		}
	}
	return append(dst, '}'), nil
}

// appendStructValue writes a google.protobuf.Value as JSON; an unset value is null.
func appendStructValue(dst []byte, v *structpb.Value) ([]byte, error) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_NumberValue:
		f := k.NumberValue
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("enrich: feature value %v cannot be written as JSON", f)
		}
		return strconv.AppendFloat(dst, f, 'g', -1, 64), nil
	case *structpb.Value_StringValue:
		return jsonenc.AppendString(dst, k.StringValue, false), nil
	case *structpb.Value_BoolValue:
		return strconv.AppendBool(dst, k.BoolValue), nil
	case *structpb.Value_StructValue:
		return appendStruct(dst, k.StructValue)
	case *structpb.Value_ListValue:
		dst = append(dst, '[')
		var err error
		for i, e := range k.ListValue.GetValues() {
			if i > 0 {
				dst = append(dst, ',')
			}
			if dst, err = appendStructValue(dst, e); err != nil {
				return nil, err
			}
		}
		return append(dst, ']'), nil
	default: // NullValue, or unset
		return append(dst, "null"...), nil
	}
}
