package feast

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/outflow-dev/outflow/tecton"
)

// Feature statuses of Feast's get-online-features answer (FieldStatus in Feast's serving
// proto). A status this package does not know is kept as the server spelled it.
const (
	// StatusPresent means a value was read from the online store.
	StatusPresent = "PRESENT"
	// StatusNotFound means the online store holds nothing for these join keys; the value is
	// null and the event timestamp the Unix epoch.
	StatusNotFound = "NOT_FOUND"
	// StatusNullValue means the stored value is null.
	StatusNullValue = "NULL_VALUE"
	// StatusOutsideMaxAge means the stored value is older than the feature view's ttl.
	StatusOutsideMaxAge = "OUTSIDE_MAX_AGE"
)

// Precision is the granularity at which Feast's online stores keep event timestamps: whole
// seconds. Every Vector this package returns carries it, so the consistency rule compares a
// record's feature timestamp truncated to the second.
const Precision = time.Second

// fullNameSep separates the feature view from the feature in Feast's full feature names.
const fullNameSep = "__"

// wireResponse is the body of a get-online-features answer.
type wireResponse struct {
	Metadata *struct {
		FeatureNames []string `json:"feature_names"`
	} `json:"metadata"`
	Results []wireResult `json:"results"`
}

type wireResult struct {
	Values          []json.RawMessage `json:"values"`
	Statuses        []string          `json:"statuses"`
	EventTimestamps []string          `json:"event_timestamps"`
}

// ParseResponse turns a get-online-features answer for rows entity rows into one Vector per
// row, in row order. joinKeys names the entity columns the request sent; Feast echoes them
// back as results and they are dropped. See the package documentation for how names, statuses
// and event timestamps are translated.
//
// It fails with a *ParseError when the body is not JSON of that shape: no metadata or
// feature_names, results and names of different lengths, a column with other than rows values
// (or statuses or timestamps, when present), an empty or duplicate name, or an event timestamp
// that is not RFC 3339. Only a truncated body is retriable.
func ParseResponse(body []byte, rows int, joinKeys []string) ([]*tecton.Vector, error) {
	if rows < 1 {
		return nil, &ParseError{Err: fmt.Errorf("asked to parse %d rows", rows)}
	}
	var wire wireResponse
	if err := decodeStrict(body, &wire); err != nil {
		return nil, err
	}
	if wire.Metadata == nil {
		return nil, &ParseError{Err: errors.New("no metadata")}
	}
	names := wire.Metadata.FeatureNames
	if len(names) != len(wire.Results) {
		return nil, &ParseError{Err: fmt.Errorf("%d feature names for %d results", len(names), len(wire.Results))}
	}
	isKey := make(map[string]bool, len(joinKeys))
	for _, k := range joinKeys {
		isKey[k] = true
	}
	vectors := make([]*tecton.Vector, rows)
	for i := range vectors {
		vectors[i] = &tecton.Vector{Features: make([]tecton.Feature, 0, len(names)), Precision: Precision}
	}
	seen := make(map[string]bool, len(names))
	for col, name := range names {
		if name == "" {
			return nil, &ParseError{Err: fmt.Errorf("result %d has an empty name", col)}
		}
		res := &wire.Results[col]
		if len(res.Values) != rows {
			return nil, &ParseError{Err: fmt.Errorf("feature %q has %d values for %d rows", name, len(res.Values), rows)}
		}
		if res.Statuses != nil && len(res.Statuses) != rows {
			return nil, &ParseError{Err: fmt.Errorf("feature %q has %d statuses for %d rows", name, len(res.Statuses), rows)}
		}
		if res.EventTimestamps != nil && len(res.EventTimestamps) != rows {
			return nil, &ParseError{Err: fmt.Errorf("feature %q has %d event timestamps for %d rows", name, len(res.EventTimestamps), rows)}
		}
		if isKey[name] {
			continue // an entity column echoed back, not a feature
		}
		outName, view := translateName(name)
		if seen[outName] {
			return nil, &ParseError{Err: fmt.Errorf("feature %q appears twice", outName)}
		}
		seen[outName] = true
		for row := range rows {
			f := tecton.Feature{Name: outName, FeatureView: view, Value: compact(res.Values[row])}
			if res.Statuses != nil {
				f.Status = res.Statuses[row]
			}
			if res.EventTimestamps != nil {
				t, err := parseTimestamp(res.EventTimestamps[row])
				if err != nil {
					return nil, &ParseError{Err: fmt.Errorf("feature %q row %d: %w", outName, row, err)}
				}
				// Only a PRESENT value with a real timestamp says when the store caught up;
				// the epoch is Feast's "no value".
				if f.Status == StatusPresent && !t.Equal(time.Unix(0, 0)) {
					f.EffectiveTime, f.HasEffectiveTime = t, true
				}
			}
			vectors[row].Features = append(vectors[row].Features, f)
		}
	}
	return vectors, nil
}

// translateName maps Feast's full feature name "<view>__<feature>" to Tecton's spelling
// "<view>.<feature>" and returns the view; a name without "__" is kept, with no view.
func translateName(name string) (outName, view string) {
	view, feature, ok := strings.Cut(name, fullNameSep)
	if !ok || view == "" || feature == "" {
		return name, ""
	}
	return view + "." + feature, view
}

// parseTimestamp reads an event timestamp: RFC 3339 as Feast writes it ("…Z"), with or without
// fractional seconds. A timestamp without a zone is read as UTC, as Feast stores them.
func parseTimestamp(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse("2006-01-02T15:04:05.999999999", s); err == nil {
		return t, nil
	}
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return time.Time{}, fmt.Errorf("event timestamp %q is not RFC 3339", sanitize(s, 80))
}

// compact returns v without insignificant white space (nil stays JSON null).
func compact(v json.RawMessage) json.RawMessage {
	if len(v) == 0 {
		return json.RawMessage("null")
	}
	var b bytes.Buffer
	if err := json.Compact(&b, v); err != nil {
		return v
	}
	return b.Bytes()
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
		return &ParseError{Err: fmt.Errorf("decoding JSON: %w", err)}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &ParseError{Err: errors.New("unexpected data after the JSON value")}
	}
	return nil
}
