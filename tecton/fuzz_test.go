package tecton

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// fuzzSeeds are the fixtures plus small bodies that reach each branch of the parser.
var fuzzSeeds = []string{
	``,
	`null`,
	`{}`,
	`{"result":{"features":[]}}`,
	`{"result":{"features":[1]},"metadata":{"features":[{"name":"a.b","effectiveTime":"2023-06-22T08:30Z","status":"PRESENT"}]}}`,
	`{"result":{"features":[null]},"metadata":{"features":[{"name":"a.b","effective_time":"2023-06-22T08:30:45.123+00:00","data_type":{"type":"array","element_type":{"type":"int64"}}}]}}`,
	`{"result":[{"features":[1]},{"features":[2]}],"metadata":{"features":[{"name":"a.b","status":["PRESENT","MISSING_DATA"],"effectiveTime":[null,"2024-01-01T00:00:00Z"]}]}}`,
	`{"result":{"features":[1,2]},"metadata":{"features":[{"name":"a.b"},{"name":"a.b"}]}}`,
}

func addSeeds(f *testing.F) {
	for _, name := range []string{
		"get-features-metadata.json",
		"get-features-metadata-snake.json",
		"get-features-mixed.json",
		"get-features-batch.json",
		"get-features-batch-statuses.json",
	} {
		f.Add(readTestdata(f, name))
	}
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
}

// FuzzParseResponse checks that ParseResponse, fed any bytes:
//   - never panics;
//   - returns exactly one of a Vector and an error, never (nil, nil) and never both;
//   - fails only with a *ParseError;
//   - on success returns one Feature per metadata.features entry, which is also the number of
//     result.features values (counted independently of the parser);
//   - on success gives every Feature a non-empty, unique Name, a FeatureView that is the
//     prefix of Name before its first '.', a Value and DataType (when set) that are valid
//     compact JSON, and an EffectiveTime that is zero unless HasEffectiveTime, and UTC;
//   - and that Vector.Consistent on the result never panics and never compares more features
//     than the vector holds (FuzzCheckParsed checks the rule itself).
func FuzzParseResponse(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		v, err := ParseResponse(body)
		if err != nil {
			if v != nil {
				t.Fatalf("returned both a Vector and an error: %v", err)
			}
			if _, ok := errors.AsType[*ParseError](err); !ok {
				t.Fatalf("error %v (%T) is not a *ParseError", err, err)
			}
			return
		}
		if v == nil {
			t.Fatal("returned (nil, nil)")
		}
		var counts struct {
			Result   struct{ Features []json.RawMessage } `json:"result"`
			Metadata struct{ Features []json.RawMessage } `json:"metadata"`
		}
		if err := json.Unmarshal(body, &counts); err != nil {
			t.Fatalf("ParseResponse accepted a body encoding/json rejects: %v", err)
		}
		if len(v.Features) != len(counts.Metadata.Features) || len(v.Features) != len(counts.Result.Features) {
			t.Fatalf("%d features for %d metadata entries and %d values",
				len(v.Features), len(counts.Metadata.Features), len(counts.Result.Features))
		}
		checkFeatures(t, v)
	})
}

// FuzzParseBatchResponse checks that ParseBatchResponse, fed any bytes:
//   - never panics;
//   - returns exactly one of a slice and an error, never (nil, nil);
//   - fails only with a *ParseError;
//   - on success returns one Vector per result entry, each non-nil with one Feature per
//     metadata.features entry, under the same per-Feature invariants as FuzzParseResponse.
func FuzzParseBatchResponse(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		vs, err := ParseBatchResponse(body)
		if err != nil {
			if vs != nil {
				t.Fatalf("returned both vectors and an error: %v", err)
			}
			if _, ok := errors.AsType[*ParseError](err); !ok {
				t.Fatalf("error %v (%T) is not a *ParseError", err, err)
			}
			return
		}
		if vs == nil {
			t.Fatal("returned (nil, nil)")
		}
		var counts struct {
			Result   []json.RawMessage                    `json:"result"`
			Metadata struct{ Features []json.RawMessage } `json:"metadata"`
		}
		if err := json.Unmarshal(body, &counts); err != nil {
			t.Fatalf("ParseBatchResponse accepted a body encoding/json rejects: %v", err)
		}
		if len(vs) != len(counts.Result) {
			t.Fatalf("%d vectors for %d result rows", len(vs), len(counts.Result))
		}
		for _, v := range vs {
			if v == nil {
				t.Fatal("nil Vector in the result")
			}
			if len(v.Features) != len(counts.Metadata.Features) {
				t.Fatalf("%d features for %d metadata entries", len(v.Features), len(counts.Metadata.Features))
			}
			checkFeatures(t, v)
		}
	})
}

func checkFeatures(t *testing.T, v *Vector) {
	t.Helper()
	seen := make(map[string]bool, len(v.Features))
	for i, f := range v.Features {
		if f.Name == "" {
			t.Fatalf("feature %d has no name", i)
		}
		if seen[f.Name] {
			t.Fatalf("feature name %q repeated", f.Name)
		}
		seen[f.Name] = true
		if want, _, ok := strings.Cut(f.Name, "."); (ok && f.FeatureView != want) || (!ok && f.FeatureView != "") {
			t.Fatalf("feature %q has feature view %q", f.Name, f.FeatureView)
		}
		if !json.Valid(f.Value) {
			t.Fatalf("feature %q value %q is not valid JSON", f.Name, f.Value)
		}
		if f.DataType != nil && !json.Valid(f.DataType) {
			t.Fatalf("feature %q data type %q is not valid JSON", f.Name, f.DataType)
		}
		if !f.HasEffectiveTime && !f.EffectiveTime.IsZero() {
			t.Fatalf("feature %q has an effective time without HasEffectiveTime", f.Name)
		}
		if f.HasEffectiveTime && f.EffectiveTime.Location() != time.UTC {
			t.Fatalf("feature %q effective time %v is not UTC", f.Name, f.EffectiveTime)
		}
		_, _ = v.Consistent(f.FeatureView, f.EffectiveTime)
	}
	for view := range seen {
		view, _, _ = strings.Cut(view, ".")
		if _, compared := v.Consistent(view, time.Now()); compared > len(v.Features) {
			t.Fatalf("compared %d of %d features", compared, len(v.Features))
		}
	}
}

// FuzzCheckParsed runs the consistency rule over parsed responses, single and batch, for any
// record (feature view, feature timestamp in Unix nanoseconds, precision in nanoseconds). For
// every vector the parser accepts it checks that:
//   - Check never panics and agrees with naiveCheck, the reference implementation;
//   - Consistent holds exactly when no feature of the record's view is missing an effective
//     time or behind the record;
//   - a feature of the record's view without an effective time (MISSING_DATA, a cached miss,
//     UNKNOWN, no status) always makes the vector inconsistent, whatever else it holds;
//   - Compared is the number of features of the record's view, never more than the vector
//     holds, and a vector with none of them is consistent.
func FuzzCheckParsed(f *testing.F) {
	seeds := [][]byte{
		readTestdata(f, "get-features-metadata.json"),
		readTestdata(f, "get-features-batch-statuses.json"),
		[]byte(`{"result":{"features":[null,null]},"metadata":{"features":[{"name":"fv.a","status":"MISSING_DATA"},{"name":"fv.b","effectiveTime":"2026-12-04T10:00:00Z","status":"PRESENT"}]}}`),
		[]byte(`{"result":{"features":[null,"web"]},"metadata":{"features":[{"name":"fv.a","status":"CACHED_MISSING_DATA"},{"name":"odfv.channel","status":"PRESENT"}]}}`),
		[]byte(`{"result":[{"features":[null]},{"features":["3"]}],"metadata":{"features":[{"name":"fv.a","effectiveTime":[null,"2026-12-04T10:00:00.5Z"],"status":["MISSING_DATA","PRESENT"]}]}}`),
	}
	ts := time.Date(2026, 12, 4, 10, 0, 0, 500_000_000, time.UTC).UnixNano()
	for _, s := range seeds {
		for _, view := range []string{"fv", "odfv", "user_transaction_counts", "merchant_fraud_rate", ""} {
			f.Add(s, view, ts, int64(0))
			f.Add(s, view, ts, int64(time.Second))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte, view string, tsNanos, precisionNanos int64) {
		var vectors []*Vector
		if v, err := ParseResponse(body); err == nil {
			vectors = append(vectors, v)
		}
		if vs, err := ParseBatchResponse(body); err == nil {
			vectors = append(vectors, vs...)
		}
		ts := time.Unix(0, tsNanos).UTC()
		precision := time.Duration(precisionNanos)
		for _, v := range vectors {
			v.Precision = precision
			got := v.Check(view, ts)
			want := naiveCheck(v.Features, view, ts, precision)
			if got.Consistent != want.Consistent || got.Compared != want.Compared || got.Missing != want.Missing ||
				got.Behind != want.Behind || !got.Oldest.Equal(want.Oldest) {
				t.Fatalf("Check(%q, %s, %s) = %+v, naive reference %+v", view, ts.Format(time.RFC3339Nano), precision, got, want)
			}
			if got.Consistent != (got.Missing == 0 && got.Behind == 0) {
				t.Fatalf("%+v: Consistent disagrees with the counts", got)
			}
			own := 0
			for _, feat := range v.Features {
				if view == "" || feat.FeatureView != view {
					continue
				}
				own++
				if !feat.HasEffectiveTime && got.Consistent {
					t.Fatalf("consistent although %s (status %q) has no effective time", feat.Name, feat.Status)
				}
			}
			if got.Compared != own || got.Compared > len(v.Features) || (own == 0 && !got.Consistent) {
				t.Fatalf("%+v for %d features of %q among %d", got, own, view, len(v.Features))
			}
		}
	})
}

// FuzzParseEffectiveTime checks that parseEffectiveTime never panics and that every time it
// accepts is in UTC and survives a round trip through RFC 3339 with nanoseconds unchanged.
func FuzzParseEffectiveTime(f *testing.F) {
	for _, s := range []string{
		"2023-06-22T08:30Z", "2023-05-03T00:00:00Z", "2023-06-22T08:30:45+00:00",
		"2023-06-22T08:30:45.123Z", "2023-06-22T08:30:45.123+00:00", "2022-06-07T00:36:08.832793001Z",
		"2023-06-22T08:30-05:00", "", "x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseEffectiveTime(s)
		if err != nil {
			if !got.IsZero() {
				t.Fatalf("error with a non-zero time %v", got)
			}
			return
		}
		if got.Location() != time.UTC {
			t.Fatalf("parseEffectiveTime(%q) = %v, not UTC", s, got)
		}
		back, err := time.Parse(time.RFC3339Nano, got.Format(time.RFC3339Nano))
		if err != nil || !back.Equal(got) {
			t.Fatalf("round trip of %v: %v, %v", got, back, err)
		}
	})
}
