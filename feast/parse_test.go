package feast

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The fixtures are answers of a real `feast serve` (feast 0.67.0, SQLite online store) to the
// feature service of scripts/testenv.sh: a key never written, and a batch of a pushed key, a
// key never written and a key pushed with a null value.
func TestParseRealAnswers(t *testing.T) {
	t.Parallel()
	at40 := time.Date(2026, 12, 4, 9, 12, 40, 0, time.UTC)
	at41 := at40.Add(time.Second)
	type want struct {
		name, view, value, status string
		effective                 time.Time // zero: no effective time
	}
	tests := []struct {
		fixture string
		rows    int
		want    [][]want
	}{
		{"not_found.json", 1, [][]want{{
			{"user_stats.cart_count", "user_stats", "null", StatusNotFound, time.Time{}},
			{"user_stats.lifetime_value", "user_stats", "null", StatusNotFound, time.Time{}},
		}}},
		{"batch_mixed.json", 3, [][]want{
			{
				{"user_stats.cart_count", "user_stats", "7", StatusPresent, at40},
				{"user_stats.lifetime_value", "user_stats", "1234.5", StatusPresent, at40},
			},
			{
				{"user_stats.cart_count", "user_stats", "null", StatusNotFound, time.Time{}},
				{"user_stats.lifetime_value", "user_stats", "null", StatusNotFound, time.Time{}},
			},
			{
				{"user_stats.cart_count", "user_stats", "2", StatusPresent, at41},
				{"user_stats.lifetime_value", "user_stats", "null", StatusPresent, at41},
			},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			t.Parallel()
			vs, err := ParseResponse(readFixture(t, tt.fixture), tt.rows, []string{"user_id"})
			if err != nil {
				t.Fatal(err)
			}
			if len(vs) != len(tt.want) {
				t.Fatalf("%d vectors, want %d", len(vs), len(tt.want))
			}
			for row, v := range vs {
				if v.Precision != time.Second {
					t.Errorf("row %d: Precision %s, want 1s", row, v.Precision)
				}
				if len(v.Features) != len(tt.want[row]) {
					t.Fatalf("row %d: %d features (%+v), want %d: the join key column must be dropped", row, len(v.Features), v.Features, len(tt.want[row]))
				}
				for i, w := range tt.want[row] {
					f := v.Features[i]
					if f.Name != w.name || f.FeatureView != w.view || string(f.Value) != w.value || f.Status != w.status {
						t.Errorf("row %d feature %d = %s/%s=%s %s, want %s/%s=%s %s", row, i, f.FeatureView, f.Name, f.Value, f.Status, w.view, w.name, w.value, w.status)
					}
					if f.HasEffectiveTime != !w.effective.IsZero() || !f.EffectiveTime.Equal(w.effective) {
						t.Errorf("row %d feature %s: effective %v (%v), want %v", row, f.Name, f.EffectiveTime, f.HasEffectiveTime, w.effective)
					}
				}
			}
		})
	}
}

// TestParsedVectorsFeedTheConsistencyRule checks the translation against tecton.Vector's rule
// as the enrich loop uses it: a stored second catches up a record within that second, the epoch
// never does.
func TestParsedVectorsFeedTheConsistencyRule(t *testing.T) {
	t.Parallel()
	vs, err := ParseResponse(readFixture(t, "batch_mixed.json"), 3, []string{"user_id"})
	if err != nil {
		t.Fatal(err)
	}
	record := time.Date(2026, 12, 4, 9, 12, 40, 512345000, time.UTC) // pushed, stored as :40
	if ok, n := vs[0].Consistent("user_stats", record); !ok || n != 2 {
		t.Errorf("pushed row: Consistent = %v over %d features, want true over 2", ok, n)
	}
	if ok, _ := vs[0].Consistent("user_stats", record.Add(time.Second)); ok {
		t.Error("pushed row is consistent with a record a second later")
	}
	if f, ok := vs[1].Lookup("user_stats.cart_count"); !ok || f.HasEffectiveTime {
		t.Errorf("never-written row: %+v; the epoch must not be an effective time", f)
	}
}

func TestParseStatusesWithoutAValue(t *testing.T) {
	t.Parallel()
	for _, status := range []string{StatusNotFound, StatusNullValue, StatusOutsideMaxAge, "SOMETHING_NEW"} {
		t.Run(status, func(t *testing.T) {
			t.Parallel()
			body := `{"metadata":{"feature_names":["user_id","fv__f"]},"results":[` +
				`{"values":["u"],"statuses":["PRESENT"],"event_timestamps":["1970-01-01T00:00:00Z"]},` +
				`{"values":[1],"statuses":["` + status + `"],"event_timestamps":["2026-12-04T09:12:40Z"]}]}`
			vs, err := ParseResponse([]byte(body), 1, []string{"user_id"})
			if err != nil {
				t.Fatal(err)
			}
			f := vs[0].Features[0]
			if f.HasEffectiveTime || f.Status != status {
				t.Errorf("status %s: %+v, want no effective time and the status kept", status, f)
			}
		})
	}
}

func TestParseNames(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, name, view string }{
		{"user_stats__cart_count", "user_stats.cart_count", "user_stats"},
		{"a__b__c", "a.b__c", "a"},
		{"plain", "plain", ""},
		{"__x", "__x", ""},
		{"x__", "x__", ""},
	}
	for _, tt := range tests {
		name, view := translateName(tt.in)
		if name != tt.name || view != tt.view {
			t.Errorf("translateName(%q) = %q, %q; want %q, %q", tt.in, name, view, tt.name, tt.view)
		}
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		body      string
		rows      int
		retriable bool
	}{
		{"empty", ``, 1, true},
		{"cut short", `{"metadata":{"feature_names":["a__b"]},"results":[{"values":[1`, 1, true},
		{"not json", `<html>`, 1, false},
		{"trailing data", `{"metadata":{"feature_names":[]},"results":[]} x`, 1, false},
		{"no metadata", `{"results":[]}`, 1, false},
		{"names and results differ", `{"metadata":{"feature_names":["a__b"]},"results":[]}`, 1, false},
		{"too few values", `{"metadata":{"feature_names":["a__b"]},"results":[{"values":[1]}]}`, 2, false},
		{"too few statuses", `{"metadata":{"feature_names":["a__b"]},"results":[{"values":[1,2],"statuses":["PRESENT"]}]}`, 2, false},
		{"too few timestamps", `{"metadata":{"feature_names":["a__b"]},"results":[{"values":[1,2],"event_timestamps":[]}]}`, 2, false},
		{"bad timestamp", `{"metadata":{"feature_names":["a__b"]},"results":[{"values":[1],"statuses":["PRESENT"],"event_timestamps":["yesterday"]}]}`, 1, false},
		{"empty name", `{"metadata":{"feature_names":[""]},"results":[{"values":[1]}]}`, 1, false},
		{"duplicate name", `{"metadata":{"feature_names":["a__b","a__b"]},"results":[{"values":[1]},{"values":[2]}]}`, 1, false},
		{"wrong type", `{"metadata":{"feature_names":"a"},"results":[]}`, 1, false},
		{"no rows", `{"metadata":{"feature_names":[]},"results":[]}`, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseResponse([]byte(tt.body), tt.rows, []string{"user_id"})
			if err == nil {
				t.Fatal("no error")
			}
			if _, ok := err.(*ParseError); !ok {
				t.Fatalf("error %v (%T), want *ParseError", err, err)
			}
			if IsRetriable(err) != tt.retriable {
				t.Errorf("IsRetriable = %v, want %v (%v)", IsRetriable(err), tt.retriable, err)
			}
		})
	}
}
