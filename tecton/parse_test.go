package tecton

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("reading testdata: %v", err)
	}
	return b
}

func mustTime(t testing.TB, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("parsing %q: %v", s, err)
	}
	return tm.UTC()
}

func TestParseResponseMetadataFixture(t *testing.T) {
	t.Parallel()

	v, err := ParseResponse(readTestdata(t, "get-features-metadata.json"))
	if err != nil {
		t.Fatalf("ParseResponse: %v", err)
	}
	want := []Feature{
		{
			Name: "transaction_amount.is_present", FeatureView: "transaction_amount",
			Value: json.RawMessage(`true`), DataType: json.RawMessage(`{"type":"boolean"}`),
			EffectiveTime: mustTime(t, "2023-06-22T08:30:00Z"), HasEffectiveTime: true, Status: StatusPresent,
		},
		{
			Name: "merchant_fraud_rate.is_fraud_mean_90d_1d", FeatureView: "merchant_fraud_rate",
			Value: json.RawMessage(`null`), DataType: json.RawMessage(`{"type":"float64"}`),
			EffectiveTime: mustTime(t, "2023-05-03T00:00:00Z"), HasEffectiveTime: true, Status: StatusMissingData,
		},
		{
			Name: "user_transaction_counts.transaction_id_last_3_1d_1d", FeatureView: "user_transaction_counts",
			Value: json.RawMessage(`"669"`), DataType: json.RawMessage(`{"type":"int64"}`),
			EffectiveTime: mustTime(t, "2023-06-22T08:30:45Z"), HasEffectiveTime: true, Status: StatusPresent,
		},
		{
			Name: "user_transaction_amount_metrics.amt_mean_1d_10m", FeatureView: "user_transaction_amount_metrics",
			Value: json.RawMessage(`842.8599999999999`), DataType: json.RawMessage(`{"type":"float64"}`),
			EffectiveTime: mustTime(t, "2023-06-22T08:30:45.123Z"), HasEffectiveTime: true, Status: StatusPresent,
		},
		{
			Name: "user_transaction_counts.test", FeatureView: "user_transaction_counts",
			Value:            json.RawMessage(`["892054b9598370dce846bb6e4b5805a1","cc9f13814a736160984bc9896222e4d9","43a9799c961de6ebb22c122d8c7eb340"]`),
			DataType:         json.RawMessage(`{"elementType":{"type":"string"},"type":"array"}`),
			EffectiveTime:    mustTime(t, "2023-06-22T08:30:45.123Z"),
			HasEffectiveTime: true, Status: StatusPresent,
		},
	}
	assertFeatures(t, v.Features, want)
}

func TestParseResponseSnakeCaseMatchesCamelCase(t *testing.T) {
	t.Parallel()

	camel, err := ParseResponse(readTestdata(t, "get-features-metadata.json"))
	if err != nil {
		t.Fatalf("ParseResponse(camelCase): %v", err)
	}
	snake, err := ParseResponse(readTestdata(t, "get-features-metadata-snake.json"))
	if err != nil {
		t.Fatalf("ParseResponse(snake_case): %v", err)
	}
	assertFeatures(t, snake.Features, camel.Features)
}

func TestParseResponseMixedFixture(t *testing.T) {
	t.Parallel()

	v, err := ParseResponse(readTestdata(t, "get-features-mixed.json"))
	if err != nil {
		t.Fatalf("ParseResponse: %v", err)
	}
	wantValues := map[string]string{
		"test.output_struct1": `null`,
		"test.output_struct2": `["2.46",2.46]`,
		"test.output_array":   `[1,2,3,null,5]`,
		"test.output_string":  `"test"`,
		"test.output_int1":    `24`,
		"test.output_int2":    `691`,
	}
	if len(v.Features) != len(wantValues) {
		t.Fatalf("got %d features, want %d", len(v.Features), len(wantValues))
	}
	order := []string{"test.output_struct1", "test.output_struct2", "test.output_array", "test.output_string", "test.output_int1", "test.output_int2"}
	for i, f := range v.Features {
		if f.Name != order[i] {
			t.Errorf("feature %d: name %q, want %q (positional order)", i, f.Name, order[i])
		}
		if got := string(f.Value); got != wantValues[f.Name] {
			t.Errorf("%s: value %s, want %s", f.Name, got, wantValues[f.Name])
		}
		if f.HasEffectiveTime || !f.EffectiveTime.IsZero() {
			t.Errorf("%s: has an effective time %v; the fixture has none", f.Name, f.EffectiveTime)
		}
		if f.Status != "" {
			t.Errorf("%s: status %q; the fixture has none", f.Name, f.Status)
		}
		if f.FeatureView != "test" {
			t.Errorf("%s: feature view %q, want test", f.Name, f.FeatureView)
		}
	}
	structType, _ := v.Lookup("test.output_struct2")
	if !strings.Contains(string(structType.DataType), `"fields":[{"dataType":{"type":"string"},"name":"string_field"}`) {
		t.Errorf("struct data type not kept: %s", structType.DataType)
	}
}

func TestParseBatchResponseFixture(t *testing.T) {
	t.Parallel()

	vs, err := ParseBatchResponse(readTestdata(t, "get-features-batch.json"))
	if err != nil {
		t.Fatalf("ParseBatchResponse: %v", err)
	}
	if len(vs) != 3 {
		t.Fatalf("got %d rows, want 3", len(vs))
	}
	tests := []struct {
		row   int
		name  string
		value string
	}{
		{0, "transaction_amount_is_higher_than_average.transaction_amount_is_higher_than_average", `false`},
		{0, "merchant_fraud_rate.is_fraud_mean_1d_1d", `0.01818181818181818`},
		{0, "user_distinct_merchant_transaction_count_30d.distinct_merchant_transaction_count_30d", `"672"`},
		{0, "user_transaction_counts.transaction_count_90d_1d", `"61328"`},
		{1, "transaction_amount_is_higher_than_average.transaction_amount_is_higher_than_average", `true`},
		{1, "merchant_fraud_rate.is_fraud_mean_1d_1d", `0`},
		{1, "user_transaction_amount_metrics.amt_sum_3d_10m", `91879.02000000005`},
		{2, "user_transaction_counts.transaction_count_1d_1d", `"1300"`},
		{2, "user_transaction_counts.transaction_count_90d_1d", `"121947"`},
	}
	for _, tt := range tests {
		f, ok := vs[tt.row].Lookup(tt.name)
		if !ok {
			t.Errorf("row %d: %s missing", tt.row, tt.name)
			continue
		}
		if string(f.Value) != tt.value {
			t.Errorf("row %d: %s = %s, want %s", tt.row, tt.name, f.Value, tt.value)
		}
	}
	for row, v := range vs {
		if len(v.Features) != 14 {
			t.Errorf("row %d: %d features, want 14", row, len(v.Features))
		}
		for _, f := range v.Features {
			if f.HasEffectiveTime || f.Status != "" {
				t.Errorf("row %d: %s has effective time or status; the fixture has names and types only", row, f.Name)
			}
			if len(f.DataType) == 0 {
				t.Errorf("row %d: %s has no data type", row, f.Name)
			}
		}
	}
}

func TestParseBatchResponsePerRowMetadata(t *testing.T) {
	t.Parallel()

	vs, err := ParseBatchResponse(readTestdata(t, "get-features-batch-statuses.json"))
	if err != nil {
		t.Fatalf("ParseBatchResponse: %v", err)
	}
	if len(vs) != 2 {
		t.Fatalf("got %d rows, want 2", len(vs))
	}
	shared := mustTime(t, "2024-03-01T10:00:00Z")
	want := [][]Feature{
		{
			{Name: "user_counts.count_1d", FeatureView: "user_counts", Value: json.RawMessage(`"12"`), DataType: json.RawMessage(`{"type":"int64"}`), EffectiveTime: shared, HasEffectiveTime: true, Status: StatusPresent},
			{Name: "user_stats.ratio", FeatureView: "user_stats", Value: json.RawMessage(`0.5`), DataType: json.RawMessage(`{"type":"float64"}`), EffectiveTime: mustTime(t, "2024-03-01T10:00:00.5Z"), HasEffectiveTime: true, Status: StatusCachedPresent},
			{Name: "user_odfv.label", FeatureView: "user_odfv", Value: json.RawMessage(`"on_demand_a"`), DataType: json.RawMessage(`{"type":"string"}`), Status: StatusPresent},
		},
		{
			{Name: "user_counts.count_1d", FeatureView: "user_counts", Value: json.RawMessage(`null`), DataType: json.RawMessage(`{"type":"int64"}`), EffectiveTime: shared, HasEffectiveTime: true, Status: StatusMissingData},
			{Name: "user_stats.ratio", FeatureView: "user_stats", Value: json.RawMessage(`1.25`), DataType: json.RawMessage(`{"type":"float64"}`), Status: StatusCachedPresent},
			{Name: "user_odfv.label", FeatureView: "user_odfv", Value: json.RawMessage(`"on_demand_b"`), DataType: json.RawMessage(`{"type":"string"}`), Status: "SOME_FUTURE_STATUS"},
		},
	}
	for row := range want {
		assertFeatures(t, vs[row].Features, want[row])
	}
}

func TestParseResponseErrors(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name      string
		body      string
		retriable bool
		contains  string
	}{
		{"empty body", ``, true, "ends before"},
		{"whitespace body", "  \n", true, "ends before"},
		{"truncated", `{"result": {"features": [1, 2`, true, "ends before"},
		{"html from a proxy", `<html>502</html>`, false, "invalid character"},
		{"trailing garbage", `{"result":{"features":[]}} x`, false, "after the JSON value"},
		{"null", `null`, false, "no result object"},
		{"array", `[]`, false, "cannot unmarshal"},
		{"batch body", `{"result":[{"features":[1]}],"metadata":{"features":[{"name":"a.b"}]}}`, false, "cannot unmarshal"},
		{"no features", `{"result":{}}`, false, "no result.features"},
		{"no metadata", `{"result":{"features":[1]}}`, false, "1 feature values but metadata has 0"},
		{"more metadata", `{"result":{"features":[1]},"metadata":{"features":[{"name":"a.x"},{"name":"a.y"}]}}`, false, "1 feature values but metadata has 2"},
		{"missing name", `{"result":{"features":[1]},"metadata":{"features":[{"dataType":{"type":"int64"}}]}}`, false, "no name"},
		{"duplicate name", `{"result":{"features":[1,2]},"metadata":{"features":[{"name":"a.x"},{"name":"a.x"}]}}`, false, "repeats the name"},
		{"bad time", `{"result":{"features":[1]},"metadata":{"features":[{"name":"a.x","effectiveTime":"yesterday"}]}}`, false, "unrecognised time"},
		{"empty time", `{"result":{"features":[1]},"metadata":{"features":[{"name":"a.x","effectiveTime":""}]}}`, false, "unrecognised time"},
		{"time without zone", `{"result":{"features":[1]},"metadata":{"features":[{"name":"a.x","effectiveTime":"2023-06-22T08:30:45"}]}}`, false, "unrecognised time"},
		{"numeric time", `{"result":{"features":[1]},"metadata":{"features":[{"name":"a.x","effectiveTime":1687422645}]}}`, false, "cannot unmarshal"},
		{"time list outside batch", `{"result":{"features":[1]},"metadata":{"features":[{"name":"a.x","effectiveTime":["2023-06-22T08:30Z"]}]}}`, false, "only valid in a batch"},
		{"status list outside batch", `{"result":{"features":[1]},"metadata":{"features":[{"name":"a.x","status":["PRESENT"]}]}}`, false, "only valid in a batch"},
		{"both spellings", `{"result":{"features":[1]},"metadata":{"features":[{"name":"a.x","effectiveTime":"2023-06-22T08:30Z","effective_time":"2023-06-22T08:30Z"}]}}`, false, "both effectiveTime and effective_time"},
		{"numeric name", `{"result":{"features":[1]},"metadata":{"features":[{"name":7}]}}`, false, "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, err := ParseResponse([]byte(tt.body))
			if err == nil {
				t.Fatalf("ParseResponse(%q) = %+v, want an error", tt.body, v)
			}
			if v != nil {
				t.Errorf("ParseResponse returned a Vector with its error")
			}
			pErr, ok := errors.AsType[*ParseError](err)
			if !ok {
				t.Fatalf("error %v (%T) is not a *ParseError", err, err)
			}
			if pErr.Retriable != tt.retriable || IsRetriable(err) != tt.retriable {
				t.Errorf("retriable = %v, IsRetriable = %v, want %v", pErr.Retriable, IsRetriable(err), tt.retriable)
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("error %q does not mention %q", err, tt.contains)
			}
		})
	}
}

func TestParseBatchResponseErrors(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name     string
		body     string
		contains string
	}{
		{"single body", `{"result":{"features":[1]}}`, "cannot unmarshal"},
		{"no result", `{"metadata":{}}`, "no result list"},
		{"row without features", `{"result":[{}],"metadata":{"features":[]}}`, "result[0] has no features"},
		{"row length mismatch", `{"result":[{"features":[1]},{"features":[1,2]}],"metadata":{"features":[{"name":"a.x"}]}}`, "result[1]: result has 2 feature values"},
		{"status list too short", `{"result":[{"features":[1]},{"features":[2]}],"metadata":{"features":[{"name":"a.x","status":["PRESENT"]}]}}`, "list has 1 entries for 2 rows"},
		{"time list too long", `{"result":[{"features":[1]}],"metadata":{"features":[{"name":"a.x","effectiveTime":["2023-06-22T08:30Z","2023-06-22T08:30Z"]}]}}`, "list has 2 entries for 1 rows"},
		{"bad time in list", `{"result":[{"features":[1]}],"metadata":{"features":[{"name":"a.x","effectiveTime":["soon"]}]}}`, "row 0: unrecognised time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			vs, err := ParseBatchResponse([]byte(tt.body))
			if err == nil {
				t.Fatalf("ParseBatchResponse(%q) = %v, want an error", tt.body, vs)
			}
			if _, ok := errors.AsType[*ParseError](err); !ok {
				t.Fatalf("error %v (%T) is not a *ParseError", err, err)
			}
			if IsRetriable(err) {
				t.Errorf("IsRetriable(%v) = true, want false", err)
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("error %q does not mention %q", err, tt.contains)
			}
		})
	}
}

func TestParseResponseEdgeCases(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		body string
		want []Feature
	}{
		{
			name: "explicit empty vector",
			body: `{"result":{"features":[]},"metadata":{"features":[]}}`,
			want: []Feature{},
		},
		{
			name: "name without feature view prefix",
			body: `{"result":{"features":[1]},"metadata":{"features":[{"name":"bare","effectiveTime":"2024-01-01T00:00:00Z"}]}}`,
			want: []Feature{{Name: "bare", Value: json.RawMessage(`1`), EffectiveTime: mustTime(t, "2024-01-01T00:00:00Z"), HasEffectiveTime: true}},
		},
		{
			name: "feature view is the prefix before the first dot",
			body: `{"result":{"features":[1]},"metadata":{"features":[{"name":"fv.f.g"}]}}`,
			want: []Feature{{Name: "fv.f.g", FeatureView: "fv", Value: json.RawMessage(`1`)}},
		},
		{
			name: "null effective time, data type and status",
			body: `{"result":{"features":[{"a": 1}]},"metadata":{"features":[{"name":"fv.m","effectiveTime":null,"dataType":null,"status":null}]}}`,
			want: []Feature{{Name: "fv.m", FeatureView: "fv", Value: json.RawMessage(`{"a":1}`)}},
		},
		{
			name: "unknown fields are ignored",
			body: `{"result":{"features":[1],"extra":true},"metadata":{"features":[{"name":"fv.x","description":"d","tags":{"k":"v"}}],"batchSloInfo":{}},"future":1}`,
			want: []Feature{{Name: "fv.x", FeatureView: "fv", Value: json.RawMessage(`1`)}},
		},
		{
			name: "large int64 kept exactly",
			body: `{"result":{"features":["9223372036854775807", 12345678901234567890]},"metadata":{"features":[{"name":"fv.a"},{"name":"fv.b"}]}}`,
			want: []Feature{
				{Name: "fv.a", FeatureView: "fv", Value: json.RawMessage(`"9223372036854775807"`)},
				{Name: "fv.b", FeatureView: "fv", Value: json.RawMessage(`12345678901234567890`)},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, err := ParseResponse([]byte(tt.body))
			if err != nil {
				t.Fatalf("ParseResponse: %v", err)
			}
			assertFeatures(t, v.Features, tt.want)
		})
	}
}

func TestParseResponseValueDoesNotAliasBody(t *testing.T) {
	t.Parallel()

	body := []byte(`{"result":{"features":["abc"]},"metadata":{"features":[{"name":"fv.x"}]}}`)
	v, err := ParseResponse(body)
	if err != nil {
		t.Fatalf("ParseResponse: %v", err)
	}
	for i := range body {
		body[i] = 'X'
	}
	if got := string(v.Features[0].Value); got != `"abc"` {
		t.Errorf("value changed with the body: %s", got)
	}
}

func TestParseEffectiveTime(t *testing.T) {
	t.Parallel()

	tests := []struct {
		in      string
		want    time.Time
		wantErr bool
	}{
		// Every spelling in the fixtures.
		{in: "2023-06-22T08:30Z", want: time.Date(2023, 6, 22, 8, 30, 0, 0, time.UTC)},
		{in: "2023-05-03T00:00:00Z", want: time.Date(2023, 5, 3, 0, 0, 0, 0, time.UTC)},
		{in: "2023-06-22T08:30:45+00:00", want: time.Date(2023, 6, 22, 8, 30, 45, 0, time.UTC)},
		{in: "2023-06-22T08:30:45.123Z", want: time.Date(2023, 6, 22, 8, 30, 45, 123_000_000, time.UTC)},
		{in: "2023-06-22T08:30:45.123+00:00", want: time.Date(2023, 6, 22, 8, 30, 45, 123_000_000, time.UTC)},
		// Nanoseconds, as a record's feature_timestamp carries them.
		{in: "2022-06-07T00:36:08.832793Z", want: time.Date(2022, 6, 7, 0, 36, 8, 832_793_000, time.UTC)},
		{in: "2022-06-07T00:36:08.832793001Z", want: time.Date(2022, 6, 7, 0, 36, 8, 832_793_001, time.UTC)},
		{in: "2022-06-07T00:36:08.000000001+00:00", want: time.Date(2022, 6, 7, 0, 36, 8, 1, time.UTC)},
		// Other offsets are converted to UTC.
		{in: "2023-06-22T10:30:45+02:00", want: time.Date(2023, 6, 22, 8, 30, 45, 0, time.UTC)},
		{in: "2023-06-22T03:30-05:00", want: time.Date(2023, 6, 22, 8, 30, 0, 0, time.UTC)},
		{in: "1970-01-01T00:00:00Z", want: time.Unix(0, 0).UTC()},
		// Rejected: no zone, not a time, empty, out of range.
		{in: "2023-06-22T08:30:45", wantErr: true},
		{in: "2023-06-22", wantErr: true},
		{in: "", wantErr: true},
		{in: "now", wantErr: true},
		{in: "2023-13-22T08:30:45Z", wantErr: true},
		{in: "2023-06-22T08:30Zjunk", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := parseEffectiveTime(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parseEffectiveTime(%q) = %v, want an error", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseEffectiveTime(%q): %v", tt.in, err)
			}
			if !got.Equal(tt.want) || got.Location() != time.UTC {
				t.Errorf("parseEffectiveTime(%q) = %v, want %v in UTC", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseEffectiveTimeBoundsErrorText(t *testing.T) {
	t.Parallel()

	_, err := parseEffectiveTime(strings.Repeat("9", 10_000))
	if err == nil {
		t.Fatal("want an error")
	}
	if len(err.Error()) > 200 {
		t.Errorf("error text is %d bytes; it must quote a bounded excerpt", len(err.Error()))
	}
}

func TestSnakeToCamel(t *testing.T) {
	t.Parallel()

	tests := map[string]string{
		"type":         "type",
		"element_type": "elementType",
		"data_type":    "dataType",
		"key_type":     "keyType",
		"elementType":  "elementType",
		"a_b_c":        "aBC",
	}
	for in, want := range tests {
		if got := snakeToCamel(in); got != want {
			t.Errorf("snakeToCamel(%q) = %q, want %q", in, got, want)
		}
	}
}

// assertFeatures compares features field by field, comparing times with Equal and JSON
// byte-for-byte.
func assertFeatures(t *testing.T, got, want []Feature) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d features, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if !g.EffectiveTime.Equal(w.EffectiveTime) {
			t.Errorf("feature %d (%s): effective time %v, want %v", i, w.Name, g.EffectiveTime, w.EffectiveTime)
		}
		g.EffectiveTime, w.EffectiveTime = time.Time{}, time.Time{}
		if string(g.Value) != string(w.Value) {
			t.Errorf("feature %d (%s): value %s, want %s", i, w.Name, g.Value, w.Value)
		}
		if string(g.DataType) != string(w.DataType) {
			t.Errorf("feature %d (%s): data type %s, want %s", i, w.Name, g.DataType, w.DataType)
		}
		g.Value, w.Value, g.DataType, w.DataType = nil, nil, nil, nil
		if !reflect.DeepEqual(g, w) {
			t.Errorf("feature %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
}
