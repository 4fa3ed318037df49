package enrich

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/outflow-dev/outflow/tecton"
)

// decodedVector is a feature_vector as a receiver decodes it with encoding/json: absent and
// zero fields alike.
type decodedVector struct {
	WorkspaceName      string         `json:"workspace_name"`
	FeatureServiceName string         `json:"feature_service_name"`
	Features           map[string]any `json:"features"`
	Metadata           map[string]struct {
		EffectiveTime *time.Time `json:"effective_time"`
		Status        string     `json:"status"`
	} `json:"metadata"`
	Consistent *bool `json:"consistent"`
	Attempts   int32 `json:"attempts"`
}

func decodeVector(t testing.TB, what string, b []byte) decodedVector {
	t.Helper()
	var v decodedVector
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s is not JSON a receiver can decode: %v\n%s", what, err, b)
	}
	if len(v.Metadata) == 0 {
		v.Metadata = nil
	}
	if len(v.Features) == 0 {
		v.Features = nil
	}
	return v
}

// checkSameAsProto is the invariant of AppendJSON and AppendVectorJSON: their output is valid
// JSON that encoding/json decodes to exactly what the protojson encoding of Proto's message
// decodes to.
func checkSameAsProto(t testing.TB, r *Result, workspace, service string) []byte {
	t.Helper()
	got := r.AppendJSON(nil, workspace, service)
	if !json.Valid(got) {
		t.Fatalf("AppendJSON wrote invalid JSON: %s", got)
	}
	want, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(r.Proto(workspace, service))
	if err != nil {
		t.Skipf("protojson cannot encode this vector either: %v", err)
	}
	g, w := decodeVector(t, "AppendJSON", got), decodeVector(t, "protojson", want)
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("AppendJSON decodes differently from protojson:\n got %s\nwant %s", got, want)
	}
	// The message form, as the stream package encodes it, reads the same too.
	fromProto, err := AppendVectorJSON(nil, r.Proto(workspace, service))
	if err != nil {
		t.Fatalf("AppendVectorJSON: %v", err)
	}
	if p := decodeVector(t, "AppendVectorJSON", fromProto); !reflect.DeepEqual(p, w) {
		t.Fatalf("AppendVectorJSON decodes differently from protojson:\n got %s\nwant %s", fromProto, want)
	}
	return got
}

func TestAppendJSON(t *testing.T) {
	t.Parallel()
	effective := time.Date(2026, 11, 24, 10, 0, 0, 123_000_000, time.UTC)
	yes := true
	for _, tt := range []struct {
		name   string
		result *Result
		want   string
	}{{
		name: "SPEC example",
		result: &Result{Consistent: &yes, Attempts: 2, Vector: &tecton.Vector{Features: []tecton.Feature{
			{Name: "user_stats.lifetime_value", Value: json.RawMessage(`1234.5`), Status: "PRESENT", EffectiveTime: effective, HasEffectiveTime: true},
		}}},
		want: `{"workspace_name":"prod","feature_service_name":"promo_fs","features":{"user_stats.lifetime_value":1234.5},` +
			`"metadata":{"user_stats.lifetime_value":{"effective_time":"2026-11-24T10:00:00.123Z","status":"PRESENT"}},"consistent":true,"attempts":2}`,
	}, {
		name: "values as sent, in name order; NONE omits consistent",
		result: &Result{Attempts: 1, Vector: &tecton.Vector{Features: []tecton.Feature{
			{Name: "b.count", Value: json.RawMessage(`"9007199254740993"`), Status: "PRESENT"},
			{Name: "a.emb", Value: json.RawMessage(`[1,2.5,null]`), Status: "MISSING_DATA"},
			{Name: "c.huge", Value: json.RawMessage(`1e400`), Status: "PRESENT"},
			{Name: "d.text", Value: json.RawMessage(`not json`), Status: "PRESENT"},
		}}},
		want: `{"workspace_name":"prod","feature_service_name":"promo_fs","features":{"a.emb":[1,2.5,null],"b.count":"9007199254740993",` +
			`"c.huge":"1e400","d.text":"not json"},"metadata":{"a.emb":{"status":"MISSING_DATA"},"b.count":{"status":"PRESENT"},` +
			`"c.huge":{"status":"PRESENT"},"d.text":{"status":"PRESENT"}},"attempts":1}`,
	}, {
		name:   "no vector: zero values present",
		result: &Result{},
		want:   `{"workspace_name":"prod","feature_service_name":"promo_fs","features":{},"metadata":{},"attempts":0}`,
	}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := checkSameAsProto(t, tt.result, "prod", "promo_fs")
			if string(got) != tt.want {
				t.Errorf("AppendJSON =\n%s\nwant\n%s", got, tt.want)
			}
			// JSONLen sizes the body AppendJSON writes into: never short
			// (a reallocation), and not far over.
			features := 0
			if tt.result.Vector != nil {
				features = len(tt.result.Vector.Features)
			}
			if n := tt.result.JSONLen("prod", "promo_fs"); n < len(got) || n > len(got)+32+64*features {
				t.Errorf("JSONLen = %d for %d bytes written", n, len(got))
			}
		})
	}
	if got := (*Result)(nil).AppendJSON([]byte("x"), "w", "s"); string(got) != "x" {
		t.Errorf("nil Result appended %q", got)
	}
}

// FuzzAppendJSON checks, for any feature value bytes, name, status and effective time, that
// AppendJSON writes valid JSON which encoding/json decodes to the same vector as the protojson
// encoding of Proto (the encoder it replaces on the hot path). For a value that is not JSON
// (never from a parsed feature-store answer) it checks only that the text arrives as a string:
// Proto's scalar fast path reads a few non-JSON numbers such as "00" leniently.
func FuzzAppendJSON(f *testing.F) {
	for _, seed := range []string{`1234.5`, `"3"`, `null`, `[1,"a",{"b":2}]`, `{"z":1,"a":"\u00e9"}`, `1e400`, `-0`,
		`"\ud800"`, "\"\xff\"", `tru`, ` 7 `, `"a\"b\\c\n"`, `[1e999]`, `{"k":[true,false]}`} {
		f.Add([]byte(seed), "fv.feature", "PRESENT", int64(123_456_789))
	}
	f.Fuzz(func(t *testing.T, value []byte, name, status string, nanos int64) {
		yes := true
		effective := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC).Add(time.Duration(nanos % int64(time.Hour)))
		r := &Result{Consistent: &yes, Attempts: 3, Vector: &tecton.Vector{Features: []tecton.Feature{
			{Name: name, Value: value, Status: status, EffectiveTime: effective, HasEffectiveTime: nanos%2 == 0},
			{Name: name + ".2", Value: json.RawMessage(`"x"`), Status: status},
		}}}
		if json.Valid(bytes.TrimSpace(value)) { // both encoders trim white space first
			checkSameAsProto(t, r, name, status)
			return
		}
		got := decodeVector(t, "AppendJSON", r.AppendJSON(nil, name, status))
		if _, ok := got.Features[name].(string); !ok && utf8.ValidString(name) && len(bytes.TrimSpace(value)) > 0 {
			t.Fatalf("a value that is not JSON decodes as %T, want its text", got.Features[name])
		}
	})
}

// FuzzPlainScalar checks the shortcut of appendValue: a value isPlainScalar accepts is written
// exactly as the full check (json.Valid, UTF-8, numbers within a double) writes it.
func FuzzPlainScalar(f *testing.F) {
	for _, seed := range []string{`null`, `true`, `false`, `"3"`, `"a b"`, `"é"`, `"a\"`, `1234.5`, `-0`, `01`, `1.`,
		`1e400`, `-1E-7`, `1e+2`, `.5`, `"\u0041"`, `nul`, `"`, `""`, `0x10`, `Infinity`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		raw = bytes.TrimSpace(raw)
		if len(raw) == 0 || !isPlainScalar(raw) {
			return
		}
		if want := appendValueChecked(nil, raw); !bytes.Equal(want, raw) {
			t.Fatalf("isPlainScalar passes %q through, the full check writes %q", raw, want)
		}
	})
}

// BenchmarkAppendJSON encodes the feature_vector object of a vector of the bench's promo_fs
// (two int64-as-string, two doubles, effective times, statuses): the per-event cost of the
// vector in a STRICT event body.
func BenchmarkAppendJSON(b *testing.B) {
	yes := true
	at := time.Date(2026, 12, 4, 11, 39, 30, 123456789, time.UTC)
	r := &Result{Consistent: &yes, Attempts: 1, Vector: &tecton.Vector{Features: []tecton.Feature{
		{Name: "user_items_added_to_cart.cart_count", Value: json.RawMessage(`"12"`), Status: "PRESENT", EffectiveTime: at, HasEffectiveTime: true},
		{Name: "user_items_added_to_cart.cart_value", Value: json.RawMessage(`31.25`), Status: "PRESENT", EffectiveTime: at, HasEffectiveTime: true},
		{Name: "user_stats.lifetime_value", Value: json.RawMessage(`3341.47`), Status: "PRESENT", EffectiveTime: at.Truncate(24 * time.Hour), HasEffectiveTime: true},
		{Name: "user_stats.offers_redeemed", Value: json.RawMessage(`"33"`), Status: "PRESENT", EffectiveTime: at.Truncate(24 * time.Hour), HasEffectiveTime: true},
	}}}
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = r.AppendJSON(buf[:0], "prod", "promo_fs")
	}
}
