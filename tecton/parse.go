package tecton

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// The wire shapes below read both spellings protobuf JSON allows: lowerCamelCase
// (effectiveTime, dataType — what Tecton's servers emit today) and the proto field names
// (effective_time, data_type). Fields this package does not use (sloInfo / slo_info,
// batchSloInfo, description, tags) are ignored, so new server fields never break parsing.

type wireResponse struct {
	Result   *wireRow      `json:"result"`
	Metadata *wireMetadata `json:"metadata"`
}

type wireBatchResponse struct {
	Result   []wireRow     `json:"result"`
	Metadata *wireMetadata `json:"metadata"`
}

type wireRow struct {
	Features []json.RawMessage `json:"features"`
}

type wireMetadata struct {
	Features []wireFeatureMeta `json:"features"`
}

// wireFeatureMeta is one entry of metadata.features. EffectiveTime and Status are raw because
// their shape differs: a string (or absent) in get-features, and in get-features-batch either
// a string shared by all rows or a list with one entry per row.
type wireFeatureMeta struct {
	Name               string          `json:"name"`
	EffectiveTime      json.RawMessage `json:"effectiveTime"`
	EffectiveTimeSnake json.RawMessage `json:"effective_time"`
	DataType           json.RawMessage `json:"dataType"`
	DataTypeSnake      json.RawMessage `json:"data_type"`
	Status             json.RawMessage `json:"status"`
}

// ParseResponse parses the body of a successful get-features response into a Vector.
//
// result.features is matched positionally with metadata.features: element i gets the name,
// effective time, data type and status of metadata entry i. It fails with a *ParseError when
// the body is not JSON, has no result.features, when the two lists differ in length (metadata
// names were not returned), when a metadata entry has no name or repeats one, or when an
// effective time has no known spelling. It never returns a nil Vector with a nil error.
func ParseResponse(body []byte) (*Vector, error) {
	var wire wireResponse
	if err := decodeStrict(body, &wire); err != nil {
		return nil, err
	}
	if wire.Result == nil {
		return nil, parseErrorf("response has no result object")
	}
	if wire.Result.Features == nil {
		return nil, parseErrorf("response has no result.features list")
	}
	metas, err := prepareMetadata(wire.Metadata, false, 1)
	if err != nil {
		return nil, &ParseError{Err: err}
	}
	features, err := buildRow(wire.Result.Features, metas, 0)
	if err != nil {
		return nil, &ParseError{Err: err}
	}
	return &Vector{Features: features}, nil
}

// ParseBatchResponse parses the body of a successful get-features-batch response into one
// Vector per requested row, in request order.
//
// The batch answer has one result entry per row, {"features": [...]}, and one shared
// metadata.features list. Names and data types apply to every row. An effective time or a
// status may be a single value shared by every row or a list with one entry per row; both are
// read. It fails with a *ParseError under the same conditions as ParseResponse, applied to
// every row. On success the slice is never nil (empty only for an empty result list).
//
// Bodies in the shape Tecton's servers emit are read by a one-pass decoder without reflection
// (fastparse.go); anything else, every error included, by encoding/json. Both yield the same
// vectors.
func ParseBatchResponse(body []byte) ([]*Vector, error) {
	if vecs, ok := parseBatchFast(body); ok {
		return vecs, nil
	}
	return parseBatchJSON(body)
}

// parseBatchJSON is ParseBatchResponse with encoding/json: the reference the fast path is
// checked against, and the path of every body the fast path does not take.
func parseBatchJSON(body []byte) ([]*Vector, error) {
	var wire wireBatchResponse
	if err := decodeStrict(body, &wire); err != nil {
		return nil, err
	}
	if wire.Result == nil {
		return nil, parseErrorf("batch response has no result list")
	}
	metas, err := prepareMetadata(wire.Metadata, true, len(wire.Result))
	if err != nil {
		return nil, &ParseError{Err: err}
	}
	vectors := make([]*Vector, 0, len(wire.Result))
	for row, r := range wire.Result {
		if r.Features == nil {
			return nil, parseErrorf("result[%d] has no features list", row)
		}
		features, err := buildRow(r.Features, metas, row)
		if err != nil {
			return nil, parseErrorf("result[%d]: %w", row, err)
		}
		vectors = append(vectors, &Vector{Features: features})
	}
	return vectors, nil
}

// decodeStrict decodes exactly one JSON value from body into v. A body that ends before the
// value does (empty, or cut short) yields a retriable *ParseError; any other failure a
// non-retriable one.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return &ParseError{Err: fmt.Errorf("body ends before the JSON value does (%d bytes): %w", len(body), io.ErrUnexpectedEOF), Retriable: true}
		}
		return &ParseError{Err: err}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return parseErrorf("unexpected data after the JSON value")
	}
	return nil
}

func parseErrorf(format string, args ...any) *ParseError {
	return &ParseError{Err: fmt.Errorf(format, args...)}
}

// featureMeta is the row-independent part of a metadata entry, parsed once per response.
type featureMeta struct {
	name        string
	featureView string
	dataType    json.RawMessage
	// times and statuses hold one entry shared by all rows (len 1) or one per row.
	times    []effectiveTime
	statuses []string
}

type effectiveTime struct {
	t   time.Time
	set bool
}

// prepareMetadata validates metadata.features and parses what every row shares. Per-row lists
// (of rows entries) are allowed only in a batch response.
func prepareMetadata(md *wireMetadata, batch bool, rows int) ([]featureMeta, error) {
	if md == nil {
		return nil, nil
	}
	metas := make([]featureMeta, len(md.Features))
	seen := make(map[string]int, len(md.Features))
	for i, w := range md.Features {
		if w.Name == "" {
			return nil, fmt.Errorf("metadata.features[%d] has no name (metadata option include_names)", i)
		}
		if j, dup := seen[w.Name]; dup {
			return nil, fmt.Errorf("metadata.features[%d] repeats the name %q of metadata.features[%d]",
				i, truncateForError(w.Name), j)
		}
		seen[w.Name] = i
		m := &metas[i]
		m.name = w.Name
		if view, _, ok := strings.Cut(w.Name, "."); ok {
			m.featureView = view
		}
		where := fmt.Sprintf("metadata.features[%d] (%s)", i, truncateForError(w.Name))

		dataType, err := oneOf(w.DataType, w.DataTypeSnake, "dataType", "data_type")
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if !isNull(dataType) {
			if m.dataType, err = normalizeDataType(dataType); err != nil {
				return nil, fmt.Errorf("%s: dataType: %w", where, err)
			}
		}

		rawTime, err := oneOf(w.EffectiveTime, w.EffectiveTimeSnake, "effectiveTime", "effective_time")
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if m.times, err = parseTimes(rawTime, batch, rows); err != nil {
			return nil, fmt.Errorf("%s: effective time: %w", where, err)
		}
		if m.statuses, err = parseStatuses(w.Status, batch, rows); err != nil {
			return nil, fmt.Errorf("%s: status: %w", where, err)
		}
	}
	return metas, nil
}

// buildRow pairs the values of one row with the metadata, position by position.
func buildRow(values []json.RawMessage, metas []featureMeta, row int) ([]Feature, error) {
	if len(values) != len(metas) {
		return nil, fmt.Errorf("result has %d feature values but metadata has %d named features "+
			"(values are positional; metadata option include_names must be on)", len(values), len(metas))
	}
	features := make([]Feature, len(values))
	for i, raw := range values {
		m := &metas[i]
		value, err := compact(raw)
		if err != nil {
			return nil, fmt.Errorf("value of %s: %w", truncateForError(m.name), err)
		}
		f := Feature{
			Name:        m.name,
			FeatureView: m.featureView,
			Value:       value,
			DataType:    m.dataType,
		}
		if et := pick(m.times, row); et.set {
			f.EffectiveTime, f.HasEffectiveTime = et.t, true
		}
		f.Status = pick(m.statuses, row)
		features[i] = f
	}
	return features, nil
}

// pick returns the entry for row from a list that is empty (nothing), shared (len 1) or
// per row.
func pick[T any](list []T, row int) T {
	var zero T
	switch {
	case len(list) == 0:
		return zero
	case len(list) == 1:
		return list[0]
	default:
		return list[row]
	}
}

// oneOf returns whichever spelling of a field is present; both at once is an error, as in
// protobuf JSON.
func oneOf(camel, snake json.RawMessage, camelName, snakeName string) (json.RawMessage, error) {
	if camel != nil && snake != nil {
		return nil, fmt.Errorf("both %s and %s are set", camelName, snakeName)
	}
	if camel != nil {
		return camel, nil
	}
	return snake, nil
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// compact returns a compacted copy of a JSON value, so that a Value does not depend on the
// server's indentation and does not alias the response body.
func compact(raw json.RawMessage) (json.RawMessage, error) {
	var buf bytes.Buffer
	buf.Grow(len(raw))
	if err := json.Compact(&buf, raw); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// normalizeDataType rewrites a data type description with lowerCamelCase keys
// (element_type → elementType, data_type → dataType, key_type → keyType, ...) and sorted keys,
// so that consumers of Feature.DataType see one spelling whichever one the server used.
func normalizeDataType(raw json.RawMessage) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return json.Marshal(camelKeys(v))
}

// camelKeys returns v with every object key converted from snake_case to lowerCamelCase. A
// key that exists in both spellings keeps the value of the camelCase one.
func camelKeys(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, val := range v {
			ck := snakeToCamel(k)
			if _, taken := out[ck]; taken && ck != k {
				continue
			}
			out[ck] = camelKeys(val)
		}
		return out
	case []any:
		for i := range v {
			v[i] = camelKeys(v[i])
		}
		return v
	default:
		return v
	}
}

// snakeToCamel converts a protobuf field name to its JSON name, as protojson does:
// "element_type" → "elementType". Names without '_' are returned unchanged.
func snakeToCamel(s string) string {
	if !strings.Contains(s, "_") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	upper := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' {
			upper = true
			continue
		}
		if upper && 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		upper = false
		b.WriteByte(c)
	}
	return b.String()
}

// parseTimes reads an effective time: absent or null (none, e.g. on-demand), a string shared
// by every row, or — in a batch — a list of strings or nulls, one per row.
func parseTimes(raw json.RawMessage, batch bool, rows int) ([]effectiveTime, error) {
	if isNull(raw) {
		return nil, nil
	}
	if raw[0] == '[' {
		if !batch {
			return nil, errors.New("a list is only valid in a batch response")
		}
		var list []*string
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, err
		}
		if len(list) != rows {
			return nil, fmt.Errorf("list has %d entries for %d rows", len(list), rows)
		}
		times := make([]effectiveTime, len(list))
		for i, s := range list {
			if s == nil {
				continue
			}
			t, err := parseEffectiveTime(*s)
			if err != nil {
				return nil, fmt.Errorf("row %d: %w", i, err)
			}
			times[i] = effectiveTime{t: t, set: true}
		}
		return times, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, err
	}
	t, err := parseEffectiveTime(s)
	if err != nil {
		return nil, err
	}
	return []effectiveTime{{t: t, set: true}}, nil
}

// parseStatuses reads a status: absent or null (none), a string shared by every row, or — in
// a batch — a list of strings, one per row.
func parseStatuses(raw json.RawMessage, batch bool, rows int) ([]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	if raw[0] == '[' {
		if !batch {
			return nil, errors.New("a list is only valid in a batch response")
		}
		var list []string
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, err
		}
		if len(list) != rows {
			return nil, fmt.Errorf("list has %d entries for %d rows", len(list), rows)
		}
		return list, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, err
	}
	return []string{s}, nil
}

// effectiveTimeLayouts are the spellings Tecton's feature server uses for effective times,
// tried in order. RFC 3339 parsing accepts an optional fraction of any length, and numeric
// offsets as well as Z; the second layout is the minute-precision form ("2023-06-22T08:30Z")
// that some feature views report.
var effectiveTimeLayouts = [...]string{
	time.RFC3339Nano,
	"2006-01-02T15:04Z07:00",
}

// parseEffectiveTime parses an effective time in any spelling Tecton emits and returns it in
// UTC. A time without a zone is rejected rather than guessed: comparing it with a record's
// feature_timestamp would be meaningless.
func parseEffectiveTime(s string) (time.Time, error) {
	for _, layout := range effectiveTimeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	// time.Parse errors quote the whole input; quote a bounded excerpt instead.
	return time.Time{}, fmt.Errorf("unrecognised time %q (want RFC 3339)", truncateForError(s))
}

// truncateForError bounds a server-provided string quoted in an error.
func truncateForError(s string) string {
	const maxLen = 64
	if len(s) <= maxLen {
		return s
	}
	return sanitize(s, maxLen)
}
