package record

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
)

// fuzzOptions are the options each fuzz input is decoded with: the defaults,
// and limits small enough for the fuzzer to reach.
var fuzzOptions = []DecodeOptions{
	{},
	{MaxBytes: 512, MaxDepth: 3, MaxEntityKeys: 2, MaxFeatureValues: 2},
}

// FuzzDecode checks, for any input and each of fuzzOptions, that:
//
//  1. Decode never panics, neither out of it nor into its own recover
//     (ReasonInternal);
//  2. it returns exactly one of (record, nil) or (nil, err), where err is a
//     *PoisonError (not wrapped in anything) with a Reason listed by
//     Reasons() and a message of one line of valid UTF-8, at most 300 bytes;
//  3. a decoded record re-validates: Version "1", a non-empty
//     FeatureViewName, between 1 and MaxEntityKeys entity keys with non-empty
//     names, at most MaxFeatureValues feature values, a FeatureTimestamp in
//     UTC within the google.protobuf.Timestamp range; Raw equals the input
//     and does not share its memory; decoding Raw again gives the same record;
//  4. a decoded record is what other parsers read: encoding/json accepts
//     the input and finds the same members and values, time.Parse finds the
//     same instant, protojson accepts it as a google.protobuf.Struct (how it
//     travels in an Event) and can marshal Proto();
//  5. EntityKey parses back to the entity keys and EntityHash is stable;
//  6. Decode reports ReasonInvalidJSON only for input json.Valid rejects, and
//     accepts nothing json.Valid rejects;
//  7. a record is rejected as ReasonTooLarge when, and only when, it is over
//     MaxBytes, before anything else.
func FuzzDecode(f *testing.F) {
	for _, c := range validCases() {
		if len(c.in) < 4096 {
			f.Add([]byte(c.in))
		}
	}
	for _, c := range poisonCases() {
		if len(c.in) < 4096 {
			f.Add([]byte(c.in))
		}
	}
	f.Add([]byte(realisticRecord))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, opts := range fuzzOptions {
			checkDecode(t, data, opts)
		}
	})
}

func checkDecode(t *testing.T, data []byte, opts DecodeOptions) {
	t.Helper()
	input := bytes.Clone(data)
	r, err := Decode(data, opts)
	if !bytes.Equal(data, input) {
		t.Fatalf("Decode changed its input")
	}
	limits := opts.WithDefaults()
	if len(data) > limits.MaxBytes {
		var perr *PoisonError
		if !errors.As(err, &perr) || perr.Reason != ReasonTooLarge || perr.Field != "" {
			t.Fatalf("Decode(%d bytes > MaxBytes) error = %v, want too_large", len(data), err)
		}
	}

	if (r == nil) == (err == nil) {
		t.Fatalf("Decode() = (%v, %v), want exactly one of them", r, err)
	}
	if err != nil {
		perr, ok := err.(*PoisonError)
		if !ok {
			t.Fatalf("Decode() error is %T, want *PoisonError", err)
		}
		if !slices.Contains(Reasons(), perr.Reason) {
			t.Fatalf("Decode() reason %q is not in Reasons()", perr.Reason)
		}
		if perr.Reason == ReasonInternal {
			t.Fatalf("Decode() panicked: %v", err)
		}
		if perr.Reason == ReasonTooLarge && perr.Field == "" && len(data) <= limits.MaxBytes {
			t.Fatalf("Decode(%d bytes <= MaxBytes) = too_large", len(data))
		}
		msg := err.Error()
		if len(msg) > 300 || !utf8.ValidString(msg) || strings.ContainsAny(msg, "\r\n") {
			t.Fatalf("error message is not one short line of valid UTF-8: %q", msg)
		}
		if !utf8.ValidString(perr.Field) {
			t.Fatalf("Field %q is not valid UTF-8", perr.Field)
		}
		if perr.Reason == ReasonInvalidJSON && json.Valid(data) {
			t.Fatalf("Decode() = %v for input json.Valid accepts", err)
		}
		return
	}

	// 3. The record re-validates.
	if r.Version != "1" || r.FeatureViewName == "" {
		t.Fatalf("decoded record has version %q, feature view %q", r.Version, r.FeatureViewName)
	}
	if len(r.EntityKeys) == 0 || len(r.EntityKeys) > limits.MaxEntityKeys || len(r.FeatureValues) > limits.MaxFeatureValues {
		t.Fatalf("decoded record has %d entity keys, %d feature values", len(r.EntityKeys), len(r.FeatureValues))
	}
	if _, ok := r.EntityKeys[""]; ok {
		t.Fatalf("decoded record has an empty entity key name")
	}
	if ts := r.FeatureTimestamp; ts.Location() != time.UTC || ts.Unix() < minTimestampSeconds || ts.Unix() > maxTimestampSeconds {
		t.Fatalf("FeatureTimestamp %v is not UTC within the Timestamp range", ts)
	}
	if !bytes.Equal(r.Raw, data) {
		t.Fatalf("Raw = %q, want the input", r.Raw)
	}
	if len(data) > 0 && &r.Raw[0] == &data[0] {
		t.Fatalf("Raw shares the input's memory")
	}
	again, err := Decode(r.Raw, opts)
	if err != nil || !reflect.DeepEqual(again, r) {
		t.Fatalf("decoding Raw again = %+v, %v; want %+v", again, err, r)
	}

	// 4, 6. Other parsers agree.
	if !json.Valid(data) {
		t.Fatalf("Decode accepted input json.Valid rejects")
	}
	// Top-level members by exact name: a struct would match names
	// case-insensitively, which encoding/json does and Decode does not.
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		t.Fatalf("encoding/json rejects an accepted record: %v", err)
	}
	member := func(name string, v any) {
		if raw, ok := top[name]; ok {
			if err := json.Unmarshal(raw, v); err != nil {
				t.Fatalf("encoding/json cannot read %s: %v", name, err)
			}
		}
	}
	var m struct {
		Producer, JobType, FeatureViewName, FeatureViewID, FeatureTimestamp string
		EntityKeys, FeatureValues                                           map[string]string
	}
	member("producer", &m.Producer)
	member("job_type", &m.JobType)
	member("feature_view_name", &m.FeatureViewName)
	member("feature_view_id", &m.FeatureViewID)
	member("feature_timestamp", &m.FeatureTimestamp)
	member("entity_keys", &m.EntityKeys)
	member("feature_values", &m.FeatureValues)
	if m.Producer != r.Producer || m.JobType != r.JobType || m.FeatureViewName != r.FeatureViewName ||
		m.FeatureViewID != r.FeatureViewID ||
		!maps.Equal(m.EntityKeys, r.EntityKeys) || !maps.Equal(m.FeatureValues, r.FeatureValues) ||
		(m.FeatureValues == nil) != (r.FeatureValues == nil) {
		t.Fatalf("encoding/json reads %+v, Decode %+v", m, r)
	}
	ts := strings.Map(func(r rune) rune {
		switch r {
		case 't':
			return 'T'
		case 'z':
			return 'Z'
		}
		return r
	}, m.FeatureTimestamp)
	if want, err := time.Parse(time.RFC3339Nano, ts); err != nil || !want.Equal(r.FeatureTimestamp) {
		t.Fatalf("time.Parse(%q) = %v, %v; Decode found %v", ts, want, err, r.FeatureTimestamp)
	}
	var s structpb.Struct
	if err := protojson.Unmarshal(data, &s); err != nil {
		t.Fatalf("protojson rejects an accepted record as a Struct: %v", err)
	}
	if _, err := protojson.Marshal(r.Proto()); err != nil {
		t.Fatalf("protojson cannot marshal Proto(): %v", err)
	}

	// 5. Entity helpers.
	values, err := url.ParseQuery(r.EntityKey())
	if err != nil {
		t.Fatalf("url.ParseQuery(EntityKey()) error = %v", err)
	}
	got := map[string]string{}
	for k, v := range values {
		if len(v) != 1 {
			t.Fatalf("EntityKey() %q has %d values for %q", r.EntityKey(), len(v), k)
		}
		got[k] = v[0]
	}
	if !maps.Equal(got, r.EntityKeys) {
		t.Fatalf("EntityKey() %q parses to %v, want %v", r.EntityKey(), got, r.EntityKeys)
	}
	if r.EntityHash() != again.EntityHash() {
		t.Fatalf("EntityHash() is not stable")
	}
}

// rfc3339 is the grammar parseTimestamp implements, written independently
// for FuzzParseTimestamp.
var rfc3339 = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$`)

// FuzzParseTimestamp checks parseTimestamp against time.Parse: it never
// panics; what it accepts, time.Parse with time.RFC3339Nano accepts too (after
// uppercasing the 't' and 'z' that RFC 3339 allows in lowercase) as the same
// instant, returned in UTC; and what time.Parse accepts that matches the
// rfc3339 grammar, it accepts too unless the offset has 24 hours or more or
// 60 minutes or more, the year is 0000, or the instant is outside 0001-01-01
// to 9999-12-31 UTC.
// (time.Parse is laxer than the grammar in other ways: one-digit hours, a
// comma before the fraction, more than nine fractional digits.)
func FuzzParseTimestamp(f *testing.F) {
	for _, s := range []string{
		"2022-06-07T00:36:08.832793Z", "2022-06-07T00:36:08.832793123Z", "2022-06-07T02:36:08+02:00",
		"2022-06-07t00:36:08z", "2022-06-07T00:36:08,5Z", "2022-06-07T00:36:08.8327931234Z",
		"0000-01-01T00:00:00Z", "9999-12-31T23:59:59-01:00", "2022-06-07T00:36:08+24:00", "yesterday",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseTimestamp([]byte(s))
		upper := strings.Map(func(r rune) rune {
			switch r {
			case 't':
				return 'T'
			case 'z':
				return 'Z'
			}
			return r
		}, s)
		want, werr := time.Parse(time.RFC3339Nano, upper)
		if err == nil {
			if werr != nil || !got.Equal(want) || got.Location() != time.UTC {
				t.Fatalf("parseTimestamp(%q) = %v; time.Parse = %v, %v", s, got, want, werr)
			}
			return
		}
		if werr != nil || !rfc3339.MatchString(s) {
			return
		}
		// time.Parse accepted what parseTimestamp rejected, in the RFC 3339
		// grammar: only the documented range checks may explain it.
		zone := s[len(s)-6:]
		offsetOK := s[len(s)-1] == 'Z' || s[len(s)-1] == 'z' || (zone[1:3] < "24" && zone[4:6] < "60")
		if offsetOK && s[:4] != "0000" &&
			want.Unix() >= minTimestampSeconds && want.Unix() <= maxTimestampSeconds {
			t.Fatalf("parseTimestamp(%q) error = %v, but time.Parse accepts it as %v", s, err, want)
		}
	})
}
