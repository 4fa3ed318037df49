package enrich

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/outflow-dev/outflow/tecton"
)

func TestJSONValue(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		raw  string
		want string // protojson of the structpb.Value, compacted
	}{
		{"int64 as string stays a string", `"9223372036854775807"`, `"9223372036854775807"`},
		{"float", `1234.5`, `1234.5`},
		{"integer number", `42`, `42`},
		{"null", `null`, `null`},
		{"empty raw is null", ``, `null`},
		{"bool", `true`, `true`},
		{"array of int64", `["1","2"]`, `["1","2"]`},
		{"array of floats with null", `[0.5,null,2]`, `[0.5,null,2]`},
		{"struct as positional array", `["gold",3,[1.5]]`, `["gold",3,[1.5]]`},
		{"object", `{"a":1,"b":"x"}`, `{"a":1,"b":"x"}`},
		{"NaN as Tecton sends it", `"NaN"`, `"NaN"`},
		{"string with escapes", `"a\"b\u00e9\n"`, `"a\"bé\n"`},
		{"non-ASCII string", `"müller"`, `"müller"`},
		{"negative exponent", `-1.5e-3`, `-0.0015`},
		{"surrounding space", ` 7 `, `7`},
		{"lone minus is kept as text", `-`, `"-"`},
		{"number beyond float64 is kept as text", `1e400`, `"1e400"`},
		{"not JSON is kept as text", `{bad`, `"{bad"`},
		{"trailing data is kept as text", `1 2`, `"1 2"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v := jsonValue(json.RawMessage(tt.raw))
			got, err := protojson.Marshal(v)
			if err != nil {
				t.Fatalf("protojson.Marshal: %v", err)
			}
			if compactJSON(t, got) != compactJSON(t, []byte(tt.want)) {
				t.Errorf("jsonValue(%s) = %s, want %s", tt.raw, got, tt.want)
			}
		})
	}
}

func compactJSON(t *testing.T, b []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("not JSON: %s", b)
	}
	out, _ := json.Marshal(v)
	return string(out)
}

func TestResultProto(t *testing.T) {
	t.Parallel()

	eff := time.Date(2026, 11, 24, 10, 0, 0, 123_456_789, time.UTC)
	vec := &tecton.Vector{Features: []tecton.Feature{
		{Name: "user_stats.purchases", FeatureView: "user_stats", Value: json.RawMessage(`"9007199254740993"`), EffectiveTime: eff, HasEffectiveTime: true, Status: tecton.StatusPresent},
		{Name: "user_stats.lifetime_value", FeatureView: "user_stats", Value: json.RawMessage(`1234.5`), EffectiveTime: eff, HasEffectiveTime: true, Status: tecton.StatusCachedPresent},
		{Name: "user_stats.last_items", FeatureView: "user_stats", Value: json.RawMessage(`["a","b"]`), EffectiveTime: eff, HasEffectiveTime: true, Status: tecton.StatusPresent},
		{Name: "user_stats.offers", FeatureView: "user_stats", Value: json.RawMessage(`null`), EffectiveTime: eff, HasEffectiveTime: true, Status: tecton.StatusMissingData},
		{Name: "promo_odfv.uplift", FeatureView: "promo_odfv", Value: json.RawMessage(`0.12`), Status: tecton.StatusPresent},
	}}

	tests := []struct {
		name       string
		consistent *bool
		want       string
	}{
		{"consistent", new(true), `"consistent":true`},
		{"inconsistent", new(false), `"consistent":false`},
		{"NONE omits consistent", nil, ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := &Result{Vector: vec, Consistent: tt.consistent, Attempts: 2}
			got, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(res.Proto("prod", "promo_fs"))
			if err != nil {
				t.Fatal(err)
			}
			var decoded map[string]any
			dec := json.NewDecoder(bytes.NewReader(got))
			dec.UseNumber()
			if err := dec.Decode(&decoded); err != nil {
				t.Fatal(err)
			}
			consistent, present := decoded["consistent"]
			switch {
			case tt.consistent == nil && present:
				t.Errorf("consistent = %v, want absent", consistent)
			case tt.consistent != nil && consistent != *tt.consistent:
				t.Errorf("consistent = %v, want %v", consistent, *tt.consistent)
			}
			if decoded["workspace_name"] != "prod" || decoded["feature_service_name"] != "promo_fs" || decoded["attempts"] != json.Number("2") {
				t.Errorf("header fields wrong: %s", got)
			}
			features := decoded["features"].(map[string]any)
			if features["user_stats.purchases"] != "9007199254740993" {
				t.Errorf("int64 value = %#v, want the exact string", features["user_stats.purchases"])
			}
			if features["user_stats.lifetime_value"] != json.Number("1234.5") {
				t.Errorf("float value = %#v", features["user_stats.lifetime_value"])
			}
			if v, ok := features["user_stats.offers"]; !ok || v != nil {
				t.Errorf("null value = %#v (present %v), want null", v, ok)
			}
			if items, ok := features["user_stats.last_items"].([]any); !ok || len(items) != 2 || items[0] != "a" {
				t.Errorf("array value = %#v", features["user_stats.last_items"])
			}
			md := decoded["metadata"].(map[string]any)
			p := md["user_stats.purchases"].(map[string]any)
			if p["effective_time"] != "2026-11-24T10:00:00.123456789Z" || p["status"] != "PRESENT" {
				t.Errorf("metadata = %v", p)
			}
			if lv := md["user_stats.lifetime_value"].(map[string]any); lv["status"] != "CACHED_PRESENT" {
				t.Errorf("status = %v", lv["status"])
			}
			odfv := md["promo_odfv.uplift"].(map[string]any)
			if _, has := odfv["effective_time"]; has || odfv["status"] != "PRESENT" {
				t.Errorf("on-demand metadata = %v, want a status and no effective time", odfv)
			}
		})
	}
}

func TestResultProtoNil(t *testing.T) {
	t.Parallel()
	var r *Result
	if r.Proto("prod", "fs") != nil {
		t.Error("nil Result gave a message")
	}
	fv := (&Result{Attempts: 1}).Proto("prod", "fs")
	if fv.GetFeatures() == nil || len(fv.GetMetadata()) != 0 || fv.Consistent != nil {
		t.Errorf("Result without a vector = %v", fv)
	}
}

// BenchmarkResultProto measures building the envelope's feature_vector for a typical vector.
func BenchmarkResultProto(b *testing.B) {
	res := &Result{Vector: testVector(recordTime, "1234"), Consistent: new(true), Attempts: 1}
	b.ReportAllocs()
	for b.Loop() {
		_ = res.Proto("prod", "promo_fs")
	}
}

// FuzzJSONValue checks, for any input, that jsonValue never panics and always yields a value
// protojson can write (no NaN or ±Inf numbers), and that for valid JSON it agrees with
// protojson's own reading of the same text as a google.protobuf.Value — so the fast path for
// scalars and the full decoder agree.
func FuzzJSONValue(f *testing.F) {
	for _, seed := range []string{`"123"`, `1.5`, `null`, `true`, `[1,"2",null]`, `{"a":[{}]}`, `"\u00e9"`, `1e400`, `-0`, `01`, `"`, ``} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		v := jsonValue(raw)
		if _, err := protojson.Marshal(v); err != nil {
			t.Fatalf("jsonValue(%q) cannot be written as JSON: %v", raw, err)
		}
		if !json.Valid(raw) {
			return
		}
		var ref structpb.Value
		if err := protojson.Unmarshal(raw, &ref); err != nil {
			return // protojson refuses some valid JSON (numbers beyond float64, duplicate keys)
		}
		if !proto.Equal(v, &ref) {
			t.Fatalf("jsonValue(%q) = %v, protojson reads %v", raw, v, &ref)
		}
	})
}
