package feast

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// fuzzSeeds are small bodies that reach each branch of the parser, next to the real answers
// in testdata.
var fuzzSeeds = []string{
	``,
	`null`,
	`{}`,
	`{"metadata":{"feature_names":[]},"results":[]}`,
	`{"metadata":{"feature_names":["user_id","fv__f"]},"results":[{"values":["u"]},{"values":[1],"statuses":["PRESENT"],"event_timestamps":["2026-12-04T09:12:40Z"]}]}`,
	`{"metadata":{"feature_names":["fv__f","fv__g"]},"results":[{"values":[1,2],"statuses":["PRESENT","NOT_FOUND"],"event_timestamps":["2026-12-04T09:12:40.5+01:00","1970-01-01T00:00:00Z"]},{"values":[[1,2],{"a":1}]}]}`,
	`{"metadata":{"feature_names":["a__b","a__b"]},"results":[{"values":[1]},{"values":[2]}]}`,
}

// FuzzParseResponse checks that ParseResponse, fed any bytes and a row count of 1 to 3:
//   - never panics;
//   - returns exactly one of the vectors and an error, and fails only with a *ParseError;
//   - on success returns one Vector per row, each with Precision one second and the same
//     feature names in the same order, none of them the join key "user_id";
//   - gives every Feature a non-empty Name unique in its Vector, a FeatureView that is empty
//     or the prefix of Name before its first '.', and a Value that is valid JSON;
//   - gives an effective time only to a PRESENT feature, never the Unix epoch, and in UTC;
//   - and that Vector.Consistent on each result never panics and never compares more
//     features than the vector holds.
func FuzzParseResponse(f *testing.F) {
	for _, name := range []string{"not_found.json", "batch_mixed.json"} {
		f.Add(readFixture(f, name), uint8(1))
	}
	f.Add(readFixture(f, "batch_mixed.json"), uint8(3))
	for _, s := range fuzzSeeds {
		f.Add([]byte(s), uint8(1))
		f.Add([]byte(s), uint8(2))
	}
	f.Fuzz(func(t *testing.T, body []byte, rows8 uint8) {
		rows := int(rows8%3) + 1
		vs, err := ParseResponse(body, rows, []string{"user_id"})
		if err != nil {
			if vs != nil {
				t.Fatalf("returned both vectors and an error: %v", err)
			}
			if _, ok := errors.AsType[*ParseError](err); !ok {
				t.Fatalf("error %v (%T) is not a *ParseError", err, err)
			}
			return
		}
		if len(vs) != rows {
			t.Fatalf("%d vectors for %d rows", len(vs), rows)
		}
		for row, v := range vs {
			if v == nil {
				t.Fatalf("row %d: nil vector", row)
			}
			if v.Precision != time.Second {
				t.Fatalf("row %d: Precision %s", row, v.Precision)
			}
			if len(v.Features) != len(vs[0].Features) {
				t.Fatalf("row %d has %d features, row 0 has %d", row, len(v.Features), len(vs[0].Features))
			}
			seen := map[string]bool{}
			for i, f := range v.Features {
				if f.Name == "" || seen[f.Name] || f.Name == "user_id" {
					t.Fatalf("row %d feature %d: bad or repeated name %q", row, i, f.Name)
				}
				seen[f.Name] = true
				if f.Name != vs[0].Features[i].Name {
					t.Fatalf("row %d feature %d is %q, row 0 has %q", row, i, f.Name, vs[0].Features[i].Name)
				}
				if f.FeatureView != "" && !strings.HasPrefix(f.Name, f.FeatureView+".") {
					t.Fatalf("feature %q has view %q", f.Name, f.FeatureView)
				}
				if !json.Valid(f.Value) {
					t.Fatalf("feature %q: value %q is not JSON", f.Name, f.Value)
				}
				if f.HasEffectiveTime {
					if f.Status != StatusPresent {
						t.Fatalf("feature %q has an effective time with status %q", f.Name, f.Status)
					}
					if f.EffectiveTime.Equal(time.Unix(0, 0)) || f.EffectiveTime.Location() != time.UTC {
						t.Fatalf("feature %q: effective time %v", f.Name, f.EffectiveTime)
					}
				} else if !f.EffectiveTime.IsZero() {
					t.Fatalf("feature %q: effective time %v without HasEffectiveTime", f.Name, f.EffectiveTime)
				}
			}
			for _, fv := range []string{"", "fv", "a", "user_stats"} {
				if _, n := v.Consistent(fv, time.Unix(1e9, 5e8)); n > len(v.Features) {
					t.Fatalf("Consistent compared %d of %d features", n, len(v.Features))
				}
			}
		}
	})
}

// FuzzErrorText checks that the error-body reader, fed any bytes, never panics and returns
// class and message texts that newAPIError bounds to 512 bytes of valid UTF-8 without control
// characters.
func FuzzErrorText(f *testing.F) {
	for _, name := range []string{"error_404.json", "error_422.json", "error_500.json"} {
		f.Add(readFixture(f, name))
	}
	f.Add([]byte(`<html>bad gateway</html>`))
	f.Add([]byte(`"\"\\\"x\\\"\""`))
	f.Fuzz(func(t *testing.T, body []byte) {
		e := newAPIError(500, nil, body, time.Now())
		for _, s := range []string{e.Class, e.Message} {
			if len(s) > maxErrorTextLen+len("…") || strings.ContainsFunc(s, unicode.IsControl) || !utf8.ValidString(s) {
				t.Fatalf("unsafe error text %q", s)
			}
		}
		_ = e.Error()
	})
}
