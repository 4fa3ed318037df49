package record

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
)

// minimalMembers are the required members of a valid record, in order.
var minimalMembers = [][2]string{
	{"version", `"1"`},
	{"feature_view_name", `"user_items_added_to_cart"`},
	{"feature_timestamp", `"2022-06-07T00:36:08.832793Z"`},
	{"entity_keys", `{"user_id":"u1"}`},
}

// rec returns a minimal valid record with members changed: kv holds pairs of
// member name and raw JSON value. A required member's value is replaced, an
// empty value removes the member, and other members are appended in order.
func rec(kv ...string) string {
	if len(kv)%2 != 0 {
		panic("rec: odd number of arguments")
	}
	override := map[string]string{}
	var extra []string
	for i := 0; i < len(kv); i += 2 {
		override[kv[i]] = kv[i+1]
		if !slices.ContainsFunc(minimalMembers, func(m [2]string) bool { return m[0] == kv[i] }) {
			extra = append(extra, kv[i])
		}
	}
	var members []string
	add := func(name, value string) {
		if value != "" {
			members = append(members, fmt.Sprintf("%q:%s", name, value))
		}
	}
	for _, m := range minimalMembers {
		v, ok := override[m[0]]
		if !ok {
			v = m[1]
		}
		add(m[0], v)
	}
	for _, name := range extra {
		add(name, override[name])
	}
	return "{" + strings.Join(members, ",") + "}"
}

// withMembers adds members, given as raw JSON text, at the end of the object
// record.
func withMembers(record, members string) string {
	return strings.TrimSuffix(record, "}") + "," + members + "}"
}

// specTimestamp is the feature_timestamp of minimalMembers.
var specTimestamp = time.Date(2022, 6, 7, 0, 36, 8, 832793000, time.UTC)

// realisticRecord is a record as Tecton writes it to an output stream with
// include_features, about 400 bytes.
const realisticRecord = `{"version":"1","producer":"tecton","job_type":"stream",` +
	`"feature_view_name":"user_items_added_to_cart","feature_view_id":"8d5a4e2c9f1b4c3a9e7d6f5a4b3c2d1e",` +
	`"feature_timestamp":"2022-06-07T00:36:08.832793Z",` +
	`"entity_keys":{"user_id":"user_4f2a9c81","merchant_id":"m_10293"},` +
	`"feature_values":{"items_added_count_1h":"3","items_added_count_24h":"11","last_item_id":"sku_88213",` +
	`"cart_value_usd":"143.25","distinct_categories_7d":"4"}}`

// validCase is a record Decode must accept, and what it must return.
type validCase struct {
	name string
	in   string
	opts DecodeOptions
	want Record // Raw is always the input
}

// validCases returns the records Decode must accept; the fuzz test seeds its
// corpus with them too.
func validCases() []validCase {
	minimal := Record{
		Version:          "1",
		FeatureViewName:  "user_items_added_to_cart",
		FeatureTimestamp: specTimestamp,
		EntityKeys:       map[string]string{"user_id": "u1"},
	}
	with := func(change func(r *Record)) Record {
		r := minimal
		r.EntityKeys = map[string]string{"user_id": "u1"}
		change(&r)
		return r
	}
	deep := strings.Repeat("[", DefaultMaxDepth-1) + strings.Repeat("]", DefaultMaxDepth-1)
	exactlyMax := rec("padding", `"`+strings.Repeat("x", 1000)+`"`)

	return []validCase{
		{name: "minimal", in: rec(), want: minimal},
		{
			name: "realistic with producer, job type, id and feature values",
			in:   realisticRecord,
			want: Record{
				Version:          "1",
				Producer:         "tecton",
				JobType:          "stream",
				FeatureViewName:  "user_items_added_to_cart",
				FeatureViewID:    "8d5a4e2c9f1b4c3a9e7d6f5a4b3c2d1e",
				FeatureTimestamp: specTimestamp,
				EntityKeys:       map[string]string{"user_id": "user_4f2a9c81", "merchant_id": "m_10293"},
				FeatureValues: map[string]string{
					"items_added_count_1h": "3", "items_added_count_24h": "11", "last_item_id": "sku_88213",
					"cart_value_usd": "143.25", "distinct_categories_7d": "4",
				},
			},
		},
		{
			name: "unknown members survive in Raw",
			in:   rec("trace", `{"id":"t-1","spans":[1,2.5e3,-0,true,false,null,{"a":[]}]}`, "partition_hint", `7`),
			want: minimal,
		},
		{
			name: "nanosecond timestamp",
			in:   rec("feature_timestamp", `"2022-06-07T00:36:08.832793123Z"`),
			want: with(func(r *Record) { r.FeatureTimestamp = time.Date(2022, 6, 7, 0, 36, 8, 832793123, time.UTC) }),
		},
		{
			name: "positive offset is converted to UTC",
			in:   rec("feature_timestamp", `"2022-06-07T02:36:08.832793+02:00"`),
			want: minimal,
		},
		{
			name: "negative offset with minutes",
			in:   rec("feature_timestamp", `"2022-06-06T21:06:08.832793-03:30"`),
			want: minimal,
		},
		{
			name: "lowercase t and z, as RFC 3339 allows",
			in:   rec("feature_timestamp", `"2022-06-07t00:36:08.832793z"`),
			want: minimal,
		},
		{
			name: "whole seconds, leap day",
			in:   rec("feature_timestamp", `"2024-02-29T23:59:59Z"`),
			want: with(func(r *Record) { r.FeatureTimestamp = time.Date(2024, 2, 29, 23, 59, 59, 0, time.UTC) }),
		},
		{
			name: "feature_values null is absent",
			in:   rec("feature_values", `null`),
			want: minimal,
		},
		{
			name: "feature_values empty object is an empty map",
			in:   rec("feature_values", `{}`),
			want: with(func(r *Record) { r.FeatureValues = map[string]string{} }),
		},
		{
			name: "feature value names may be empty, values too",
			in:   rec("feature_values", `{"":"","a":""}`),
			want: with(func(r *Record) { r.FeatureValues = map[string]string{"": "", "a": ""} }),
		},
		{
			name: "entity key values may be empty",
			in:   rec("entity_keys", `{"user_id":""}`),
			want: with(func(r *Record) { r.EntityKeys = map[string]string{"user_id": ""} }),
		},
		{
			name: "optional strings null are empty",
			in:   rec("producer", `null`, "job_type", `null`, "feature_view_id", `null`),
			want: minimal,
		},
		{
			name: "escapes are decoded",
			in: rec("feature_view_name", `"fv\u00e9\n\"\\\/\t\b\f\r"`,
				"entity_keys", `{"us\u0065r_id":"\ud83d\ude00 \u0000"}`),
			want: with(func(r *Record) {
				r.FeatureViewName = "fvé\n\"\\/\t\b\f\r"
				r.EntityKeys = map[string]string{"user_id": "😀 \x00"}
			}),
		},
		{
			name: "an escaped member name is the member",
			in:   `{"\u0076ersion":"1","feature_view_name":"user_items_added_to_cart","feature_timestamp":"2022-06-07T00:36:08.832793Z","entity_keys":{"user_id":"u1"}}`,
			want: minimal,
		},
		{
			name: "raw UTF-8 in strings",
			in:   rec("entity_keys", `{"ユーザー":"ü1"}`),
			want: with(func(r *Record) { r.EntityKeys = map[string]string{"ユーザー": "ü1"} }),
		},
		{
			name: "pretty-printed with surrounding whitespace",
			in: "\n\t {\r\n  \"version\" : \"1\" ,\n  \"feature_view_name\" :\"user_items_added_to_cart\",\n" +
				"  \"feature_timestamp\": \"2022-06-07T00:36:08.832793Z\",\n  \"entity_keys\": { \"user_id\" : \"u1\" }\n}\n ",
			want: minimal,
		},
		{
			name: "same names in different objects are not duplicates",
			in:   rec("x", `{"a":1,"b":{"a":2}}`, "y", `[{"a":1},{"a":2}]`, "a", `{"version":"2"}`),
			want: minimal,
		},
		{
			name: "numbers at the float64 edges",
			in:   rec("n", `[1e308,-1.7976931348623157e308,1e-400,0.0000001,123456789012345678901234567890]`),
			want: minimal,
		},
		{
			name: "nesting of exactly MaxDepth",
			in:   rec("deep", deep),
			want: minimal,
		},
		{
			// The parser keeps its own stack of open containers rather than
			// recursing, so only MaxDepth bounds nesting.
			name: "100k-deep nesting when MaxDepth allows it",
			in:   rec("deep", strings.Repeat(`[{"a":`, 50_000)+"1"+strings.Repeat("}]", 50_000)),
			opts: DecodeOptions{MaxDepth: 200_000},
			want: minimal,
		},
		{
			name: "exactly MaxBytes",
			in:   exactlyMax,
			opts: DecodeOptions{MaxBytes: len(exactlyMax)},
			want: minimal,
		},
		{
			name: "exactly MaxEntityKeys",
			in:   rec("entity_keys", `{"a":"1","b":"2"}`),
			opts: DecodeOptions{MaxEntityKeys: 2},
			want: with(func(r *Record) { r.EntityKeys = map[string]string{"a": "1", "b": "2"} }),
		},
		{
			name: "the lowest and highest timestamps",
			in:   rec("feature_timestamp", `"0001-01-01T00:00:00Z"`, "feature_values", `{}`),
			want: with(func(r *Record) {
				r.FeatureTimestamp = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
				r.FeatureValues = map[string]string{}
			}),
		},
		{
			name: "highest timestamp",
			in:   rec("feature_timestamp", `"9999-12-31T23:59:59.999999999Z"`),
			want: with(func(r *Record) { r.FeatureTimestamp = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC) }),
		},
	}
}

func TestDecodeValid(t *testing.T) {
	t.Parallel()
	tests := validCases()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Decode([]byte(tt.in), tt.opts)
			if err != nil {
				t.Fatalf("Decode() error = %v", err)
			}
			want := tt.want
			want.Raw = json.RawMessage(tt.in)
			if !reflect.DeepEqual(*got, want) {
				t.Errorf("Decode() =\n%#v\nwant\n%#v", *got, want)
			}
			if got.FeatureTimestamp.Location() != time.UTC {
				t.Errorf("FeatureTimestamp location = %v, want UTC", got.FeatureTimestamp.Location())
			}
		})
	}
}

// poisonCase is a record Decode must reject, with the Reason and Field it
// must report.
type poisonCase struct {
	name   string
	in     string
	opts   DecodeOptions
	reason Reason
	field  string
}

// poisonCases returns the records Decode must reject; the fuzz test seeds its
// corpus with them too.
func poisonCases() []poisonCase {
	fiveMiB := rec("padding", `"`+strings.Repeat("x", 5<<20)+`"`)
	deepArrays := strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000)
	deepObjects := strings.Repeat(`{"a":`, 100_000) + "1" + strings.Repeat("}", 100_000)
	tooDeep := strings.Repeat("[", DefaultMaxDepth) + strings.Repeat("]", DefaultMaxDepth)
	manyKeys := func(n int) string {
		var b strings.Builder
		b.WriteString("{")
		for i := range n {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `"k%d":"v"`, i)
		}
		b.WriteString("}")
		return b.String()
	}
	valid := rec()

	return []poisonCase{
		// Whole-record problems.
		{name: "not JSON", in: `version=1`, reason: ReasonInvalidJSON},
		{name: "truncated", in: valid[:len(valid)-1], reason: ReasonInvalidJSON},
		{name: "truncated in a string", in: `{"version":"1`, reason: ReasonInvalidJSON},
		{name: "truncated in an escape", in: `{"version":"\u00`, reason: ReasonInvalidJSON},
		{name: "empty", in: ``, reason: ReasonInvalidJSON},
		{name: "only whitespace", in: " \n\t\r", reason: ReasonInvalidJSON},
		{name: "array at top level", in: `[` + valid + `]`, reason: ReasonNotObject},
		{name: "null at top level", in: `null`, reason: ReasonNotObject},
		{name: "string at top level", in: `"{\"version\":\"1\"}"`, reason: ReasonNotObject},
		{name: "number at top level", in: ` 42 `, reason: ReasonNotObject},
		{name: "truncated array at top level is not JSON first", in: `[1,`, reason: ReasonInvalidJSON},
		{name: "byte order mark", in: "\uFEFF" + valid, reason: ReasonInvalidJSON},
		{name: "trailing garbage", in: valid + "x", reason: ReasonInvalidJSON},
		{name: "two objects", in: `{}{}`, reason: ReasonInvalidJSON},
		{name: "two records", in: valid + "\n" + valid, reason: ReasonInvalidJSON},
		{name: "trailing comma", in: strings.TrimSuffix(valid, "}") + `,}`, reason: ReasonInvalidJSON},
		{name: "single quotes", in: `{'version':'1'}`, reason: ReasonInvalidJSON},
		{name: "unquoted name", in: `{version:"1"}`, reason: ReasonInvalidJSON},
		{name: "missing colon", in: `{"version" "1"}`, reason: ReasonInvalidJSON},
		{name: "control character in a string", in: rec("feature_view_name", "\"fv\x01\""), reason: ReasonInvalidJSON},
		{name: "invalid escape", in: rec("feature_view_name", `"fv\x41"`), reason: ReasonInvalidJSON},
		{name: "NaN", in: rec("n", `NaN`), reason: ReasonInvalidJSON},
		{name: "leading zero", in: rec("n", `01`), reason: ReasonInvalidJSON},
		{name: "bare minus", in: rec("n", `-`), reason: ReasonInvalidJSON},
		{name: "fraction without digits", in: rec("n", `1.`), reason: ReasonInvalidJSON},
		{name: "exponent without digits", in: rec("n", `1e+`), reason: ReasonInvalidJSON},
		{name: "misspelt literal", in: rec("n", `nul`), reason: ReasonInvalidJSON},
		{name: "syntax error wins over an earlier field problem", in: `{"version":"2","x":}`, reason: ReasonInvalidJSON},
		{name: "invalid UTF-8 in a string", in: rec("feature_view_name", "\"fv\xff\""), reason: ReasonInvalidUTF8},
		{name: "invalid UTF-8 outside strings", in: valid + "\xc3", reason: ReasonInvalidUTF8},
		{name: "overlong UTF-8 encoding", in: rec("feature_view_name", "\"\xc0\xaf\""), reason: ReasonInvalidUTF8},
		{name: "UTF-8 encoded surrogate", in: rec("feature_view_name", "\"\xed\xa0\x80\""), reason: ReasonInvalidUTF8},
		{name: "lone high surrogate escape", in: rec("feature_view_name", `"fv\ud800"`), reason: ReasonInvalidUTF8, field: "feature_view_name"},
		{name: "lone low surrogate escape", in: rec("entity_keys", `{"user_id":"\udc00"}`), reason: ReasonInvalidUTF8, field: "entity_keys"},
		{name: "high surrogate then another escape", in: rec("x", `"\ud800\u0041"`), reason: ReasonInvalidUTF8, field: "x"},
		{name: "5 MiB record", in: fiveMiB, reason: ReasonTooLarge},
		{name: "one byte over MaxBytes", in: valid, opts: DecodeOptions{MaxBytes: len(valid) - 1}, reason: ReasonTooLarge},
		{name: "100k-deep arrays", in: deepArrays, reason: ReasonTooDeep},
		{name: "100k-deep objects in an unknown member", in: rec("extra", deepObjects), reason: ReasonTooDeep, field: "extra"},
		{name: "one level too deep", in: rec("extra", tooDeep), reason: ReasonTooDeep, field: "extra"},
		{name: "nesting within entity_keys", in: rec("entity_keys", `{"user_id":[[1]]}`), opts: DecodeOptions{MaxDepth: 3}, reason: ReasonTooDeep, field: "entity_keys"},

		// version.
		{name: "version 2", in: rec("version", `"2"`), reason: ReasonUnsupportedVersion, field: "version"},
		{name: "version 1 as a number", in: rec("version", `1`), reason: ReasonUnsupportedVersion, field: "version"},
		{name: "version 1.0", in: rec("version", `"1.0"`), reason: ReasonUnsupportedVersion, field: "version"},
		{name: "version empty", in: rec("version", `""`), reason: ReasonUnsupportedVersion, field: "version"},
		{name: "version as an object", in: rec("version", `{"major":1}`), reason: ReasonUnsupportedVersion, field: "version"},
		{name: "version missing", in: rec("version", ``), reason: ReasonMissingField, field: "version"},
		{name: "version null", in: rec("version", `null`), reason: ReasonMissingField, field: "version"},
		{name: "unsupported version wins over other problems", in: `{"version":"2","entity_keys":[]}`, reason: ReasonUnsupportedVersion, field: "version"},
		{name: "escaped member name is still version", in: strings.Replace(rec("version", `"2"`), `"version"`, `"\u0076ersion"`, 1), reason: ReasonUnsupportedVersion, field: "version"},

		// feature_view_name.
		{name: "feature_view_name missing", in: rec("feature_view_name", ``), reason: ReasonMissingField, field: "feature_view_name"},
		{name: "feature_view_name null", in: rec("feature_view_name", `null`), reason: ReasonMissingField, field: "feature_view_name"},
		{name: "feature_view_name empty", in: rec("feature_view_name", `""`), reason: ReasonInvalidField, field: "feature_view_name"},
		{name: "feature_view_name a number", in: rec("feature_view_name", `42`), reason: ReasonInvalidField, field: "feature_view_name"},
		{name: "feature_view_name an array", in: rec("feature_view_name", `["a"]`), reason: ReasonInvalidField, field: "feature_view_name"},
		{name: "feature_view_name twice", in: withMembers(valid, `"feature_view_name":"b"`), reason: ReasonInvalidField, field: "feature_view_name"},
		{name: "version twice, both valid", in: withMembers(valid, `"version":"1"`), reason: ReasonInvalidField, field: "version"},
		{name: "entity_keys twice, the second null", in: withMembers(valid, `"entity_keys":null`), reason: ReasonInvalidField, field: "entity_keys"},

		// feature_timestamp.
		{name: "feature_timestamp missing", in: rec("feature_timestamp", ``), reason: ReasonMissingField, field: "feature_timestamp"},
		{name: "feature_timestamp yesterday", in: rec("feature_timestamp", `"yesterday"`), reason: ReasonInvalidField, field: "feature_timestamp"},
		{name: "feature_timestamp without zone", in: rec("feature_timestamp", `"2022-06-07T00:36:08.832793"`), reason: ReasonInvalidField, field: "feature_timestamp"},
		{name: "feature_timestamp as a number", in: rec("feature_timestamp", `1654562168`), reason: ReasonInvalidField, field: "feature_timestamp"},
		{name: "feature_timestamp empty", in: rec("feature_timestamp", `""`), reason: ReasonInvalidField, field: "feature_timestamp"},
		{name: "feature_timestamp with 10 fractional digits", in: rec("feature_timestamp", `"2022-06-07T00:36:08.8327931234Z"`), reason: ReasonInvalidField, field: "feature_timestamp"},
		{name: "feature_timestamp with a comma", in: rec("feature_timestamp", `"2022-06-07T00:36:08,5Z"`), reason: ReasonInvalidField, field: "feature_timestamp"},
		{name: "feature_timestamp with a space", in: rec("feature_timestamp", `"2022-06-07 00:36:08Z"`), reason: ReasonInvalidField, field: "feature_timestamp"},
		{name: "feature_timestamp date only", in: rec("feature_timestamp", `"2022-06-07"`), reason: ReasonInvalidField, field: "feature_timestamp"},
		{name: "feature_timestamp February 30", in: rec("feature_timestamp", `"2022-02-30T00:00:00Z"`), reason: ReasonInvalidField, field: "feature_timestamp"},
		{name: "feature_timestamp February 29 of a common year", in: rec("feature_timestamp", `"2100-02-29T00:00:00Z"`), reason: ReasonInvalidField, field: "feature_timestamp"},
		{name: "feature_timestamp hour 24", in: rec("feature_timestamp", `"2022-06-07T24:00:00Z"`), reason: ReasonInvalidField, field: "feature_timestamp"},
		{name: "feature_timestamp leap second", in: rec("feature_timestamp", `"2016-12-31T23:59:60Z"`), reason: ReasonInvalidField, field: "feature_timestamp"},
		{name: "feature_timestamp offset +24:00", in: rec("feature_timestamp", `"2022-06-07T00:36:08+24:00"`), reason: ReasonInvalidField, field: "feature_timestamp"},
		{name: "feature_timestamp offset without colon", in: rec("feature_timestamp", `"2022-06-07T00:36:08+0200"`), reason: ReasonInvalidField, field: "feature_timestamp"},
		{name: "feature_timestamp year 0", in: rec("feature_timestamp", `"0000-01-01T00:00:00Z"`), reason: ReasonInvalidField, field: "feature_timestamp"},
		{name: "feature_timestamp before year 1 in UTC", in: rec("feature_timestamp", `"0001-01-01T00:00:00+01:00"`), reason: ReasonInvalidField, field: "feature_timestamp"},

		// entity_keys.
		{name: "entity_keys missing", in: rec("entity_keys", ``), reason: ReasonMissingField, field: "entity_keys"},
		{name: "entity_keys null", in: rec("entity_keys", `null`), reason: ReasonMissingField, field: "entity_keys"},
		{name: "entity_keys empty", in: rec("entity_keys", `{}`), reason: ReasonInvalidField, field: "entity_keys"},
		{name: "entity_keys an array", in: rec("entity_keys", `["u1"]`), reason: ReasonInvalidField, field: "entity_keys"},
		{name: "entity_keys a string", in: rec("entity_keys", `"user_id=u1"`), reason: ReasonInvalidField, field: "entity_keys"},
		{name: "entity key value a number", in: rec("entity_keys", `{"user_id":42}`), reason: ReasonInvalidField, field: "entity_keys.user_id"},
		{name: "entity key value null", in: rec("entity_keys", `{"user_id":null}`), reason: ReasonInvalidField, field: "entity_keys.user_id"},
		{name: "entity key value an object", in: rec("entity_keys", `{"user_id":{"id":"u1"}}`), reason: ReasonInvalidField, field: "entity_keys.user_id"},
		{name: "empty entity key name", in: rec("entity_keys", `{"":"u1"}`), reason: ReasonInvalidField, field: "entity_keys"},
		{name: "entity key twice", in: rec("entity_keys", `{"user_id":"u1","user_id":"u2"}`), reason: ReasonInvalidField, field: "entity_keys.user_id"},
		{name: "entity key twice, once escaped", in: rec("entity_keys", `{"user_id":"u1","user\u005fid":"u1"}`), reason: ReasonInvalidField, field: "entity_keys.user_id"},
		{name: "too many entity keys", in: rec("entity_keys", manyKeys(DefaultMaxEntityKeys+1)), reason: ReasonTooLarge, field: "entity_keys"},

		// feature_values.
		{name: "feature_values an array", in: rec("feature_values", `["3"]`), reason: ReasonInvalidField, field: "feature_values"},
		{name: "feature_values value a number", in: rec("feature_values", `{"n":3}`), reason: ReasonInvalidField, field: "feature_values.n"},
		{name: "feature_values value null", in: rec("feature_values", `{"n":null}`), reason: ReasonInvalidField, field: "feature_values.n"},
		{name: "feature_values name twice", in: rec("feature_values", `{"n":"1","n":"2"}`), reason: ReasonInvalidField, field: "feature_values.n"},
		{name: "too many feature values", in: rec("feature_values", manyKeys(3)), opts: DecodeOptions{MaxFeatureValues: 2}, reason: ReasonTooLarge, field: "feature_values"},

		// Optional and unknown members.
		{name: "producer a number", in: rec("producer", `1`), reason: ReasonInvalidField, field: "producer"},
		{name: "job_type a boolean", in: rec("job_type", `true`), reason: ReasonInvalidField, field: "job_type"},
		{name: "feature_view_id an object", in: rec("feature_view_id", `{}`), reason: ReasonInvalidField, field: "feature_view_id"},
		{name: "unknown member twice", in: withMembers(valid, `"extra":1,"extra":2`), reason: ReasonInvalidField, field: "extra"},
		{name: "unknown member twice, once escaped", in: withMembers(valid, `"e\u0078tra":1,"extra":2`), reason: ReasonInvalidField, field: "extra"},
		{name: "unknown member twice among many", in: withMembers(valid, manyMembers(40)+`,"m0":2`), reason: ReasonInvalidField, field: "m0"},
		{name: "unknown member twice, the first past the scan", in: withMembers(valid, manyMembers(40)+`,"m39":2`), reason: ReasonInvalidField, field: "m39"},
		{name: "unknown nested member twice", in: rec("extra", `{"a":{"b":1,"c":2,"b":3}}`), reason: ReasonInvalidField, field: "extra"},
		{name: "number overflowing float64", in: rec("extra", `[1e400]`), reason: ReasonInvalidField, field: "extra"},
		{name: "long integer overflowing float64", in: rec("extra", "1"+strings.Repeat("0", 400)), reason: ReasonInvalidField, field: "extra"},
		{name: "field problems in SPEC order", in: rec("producer", `1`, "feature_view_name", `2`), reason: ReasonInvalidField, field: "producer"},
		{name: "required field missing wins over later field problems", in: rec("feature_timestamp", ``, "feature_values", `[]`), reason: ReasonMissingField, field: "feature_timestamp"},
	}
}

func TestDecodePoison(t *testing.T) {
	t.Parallel()
	tests := poisonCases()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Decode([]byte(tt.in), tt.opts)
			if got != nil {
				t.Errorf("Decode() record = %+v, want nil", got)
			}
			var perr *PoisonError
			if !errors.As(err, &perr) {
				t.Fatalf("Decode() error = %T %v, want *PoisonError", err, err)
			}
			if perr.Reason != tt.reason || perr.Field != tt.field {
				t.Errorf("Decode() = (%q, %q), want (%q, %q); error: %v", perr.Reason, perr.Field, tt.reason, tt.field, err)
			}
			if perr.Err == nil || errors.Unwrap(err) != perr.Err {
				t.Errorf("Unwrap() = %v, want the detail error %v", errors.Unwrap(err), perr.Err)
			}
			checkMessage(t, err, tt.in)
		})
	}
}

// checkMessage checks the error message is short, valid UTF-8, on one line,
// and does not quote the record.
func checkMessage(t *testing.T, err error, in string) {
	t.Helper()
	msg := err.Error()
	if len(msg) > 300 {
		t.Errorf("error message is %d bytes, want at most 300: %.300s", len(msg), msg)
	}
	if !utf8.ValidString(msg) || strings.ContainsAny(msg, "\n\r") {
		t.Errorf("error message is not one line of valid UTF-8: %q", msg)
	}
	if len(in) > 100 && strings.Contains(msg, in) {
		t.Errorf("error message contains the whole record")
	}
}

// TestDecodeErrorsAreShort feeds huge values into every place an error
// message quotes from.
func TestDecodeErrorsAreShort(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("é", 100_000)
	hugeBad := "\xff" + huge
	tests := []struct {
		name  string
		in    string
		field string
	}{
		{"huge version", rec("version", `"`+huge+`"`), "version"},
		{"huge version array", rec("version", `[`+strings.Repeat(`"a",`, 50_000)+`1]`), "version"},
		{"huge timestamp", rec("feature_timestamp", `"`+huge+`"`), "feature_timestamp"},
		{"huge unknown member name twice", withMembers(rec(), `"`+huge+`":1,"`+huge+`":2`), strings.Repeat("é", maxExcerpt/2) + "…"},
		{"huge entity key name", rec("entity_keys", `{"`+huge+`":1}`), "entity_keys." + strings.Repeat("é", maxExcerpt/2) + "…"},
		{"huge nested duplicate name", rec("x", `{"`+huge+`":1,"`+huge+`":1}`), "x"},
		{"huge number", rec("x", "1"+strings.Repeat("0", 100_000)), "x"},
		{"control characters in a member name", withMembers(rec(), `"a\nb\u0000":1,"a\nb\u0000":2`), "a\uFFFDb\uFFFD"},
		{"invalid UTF-8 far in", rec("x", `"`+hugeBad+`"`), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Decode([]byte(tt.in), DecodeOptions{})
			var perr *PoisonError
			if !errors.As(err, &perr) {
				t.Fatalf("Decode() error = %v, want *PoisonError", err)
			}
			if perr.Field != tt.field {
				t.Errorf("Field = %q, want %q", perr.Field, tt.field)
			}
			checkMessage(t, err, tt.in)
		})
	}
}

func TestPoisonErrorError(t *testing.T) {
	t.Parallel()
	detail := errors.New("must not be empty")
	tests := []struct {
		err  *PoisonError
		want string
	}{
		{&PoisonError{Reason: ReasonInvalidField, Field: "feature_view_name", Err: detail}, "poison record (invalid_field): feature_view_name: must not be empty"},
		{&PoisonError{Reason: ReasonTooLarge, Err: detail}, "poison record (too_large): must not be empty"},
		{&PoisonError{Reason: ReasonNotObject}, "poison record (not_object)"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			t.Parallel()
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
			if !errors.Is(tt.err, detail) && tt.err.Err != nil {
				t.Errorf("errors.Is(err, detail) = false")
			}
		})
	}
}

func TestReasons(t *testing.T) {
	t.Parallel()
	seen := map[Reason]bool{}
	for _, r := range Reasons() {
		if seen[r] {
			t.Errorf("Reasons() lists %q twice", r)
		}
		seen[r] = true
		if r == "" || strings.Trim(string(r), "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
			t.Errorf("reason %q is not a snake_case label value", r)
		}
	}
	if len(seen) != 9 {
		t.Errorf("Reasons() has %d reasons, want 9", len(seen))
	}
}

func TestDecodeOptionsWithDefaults(t *testing.T) {
	t.Parallel()
	defaults := DecodeOptions{MaxBytes: 1 << 20, MaxDepth: 32, MaxEntityKeys: 64, MaxFeatureValues: 1024}
	tests := []struct {
		name string
		in   DecodeOptions
		want DecodeOptions
	}{
		{"zero", DecodeOptions{}, defaults},
		{"negative", DecodeOptions{MaxBytes: -1, MaxDepth: -1, MaxEntityKeys: -1, MaxFeatureValues: -1}, defaults},
		{"set", DecodeOptions{MaxBytes: 10, MaxDepth: 5, MaxEntityKeys: 2, MaxFeatureValues: 3}, DecodeOptions{MaxBytes: 10, MaxDepth: 5, MaxEntityKeys: 2, MaxFeatureValues: 3}},
		{"depth 1 is raised to 2", DecodeOptions{MaxDepth: 1}, DecodeOptions{MaxBytes: 1 << 20, MaxDepth: 2, MaxEntityKeys: 64, MaxFeatureValues: 1024}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.in.WithDefaults(); got != tt.want {
				t.Errorf("WithDefaults() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDecodeCopiesInput(t *testing.T) {
	t.Parallel()
	in := []byte(realisticRecord)
	r, err := Decode(in, DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range in {
		in[i] = ' '
	}
	if string(r.Raw) != realisticRecord {
		t.Errorf("Raw changed with the input buffer: %s", r.Raw)
	}
	if r.FeatureViewName != "user_items_added_to_cart" || r.EntityKeys["user_id"] != "user_4f2a9c81" {
		t.Errorf("fields changed with the input buffer: %+v", r)
	}
}

// TestDecodeConcurrent checks that pooled decoders never leak state between
// records decoded at the same time (run with -race).
func TestDecodeConcurrent(t *testing.T) {
	t.Parallel()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				user := fmt.Sprintf("u%d-%d", g, i)
				in := rec("entity_keys", fmt.Sprintf(`{"user_id":%q}`, user), "feature_values", fmt.Sprintf(`{"i":"%d"}`, i))
				if i%3 == 0 {
					in = rec("entity_keys", `{"user_id":7}`)
				}
				r, err := Decode([]byte(in), DecodeOptions{})
				switch {
				case i%3 == 0 && err == nil:
					t.Errorf("Decode(%s) = nil error", in)
					return
				case i%3 != 0 && (err != nil || r.EntityKeys["user_id"] != user || r.FeatureValues["i"] != fmt.Sprint(i)):
					t.Errorf("Decode(%s) = %+v, %v", in, r, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestRecordProto(t *testing.T) {
	t.Parallel()
	r, err := Decode([]byte(realisticRecord), DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := r.Proto()
	want := &outflowv1.Record{
		Version:          "1",
		Producer:         "tecton",
		JobType:          "stream",
		FeatureViewName:  "user_items_added_to_cart",
		FeatureViewId:    "8d5a4e2c9f1b4c3a9e7d6f5a4b3c2d1e",
		FeatureTimestamp: timestamppb.New(specTimestamp),
		EntityKeys:       map[string]string{"user_id": "user_4f2a9c81", "merchant_id": "m_10293"},
		FeatureValues: map[string]string{
			"items_added_count_1h": "3", "items_added_count_24h": "11", "last_item_id": "sku_88213",
			"cart_value_usd": "143.25", "distinct_categories_7d": "4",
		},
	}
	if !proto.Equal(got, want) {
		t.Errorf("Proto() = %v, want %v", got, want)
	}
	if got.FeatureTimestamp.GetNanos() != 832793000 {
		t.Errorf("Proto() nanos = %d, want 832793000", got.FeatureTimestamp.GetNanos())
	}
	got.EntityKeys["user_id"] = "changed"
	if r.EntityKeys["user_id"] != "user_4f2a9c81" {
		t.Errorf("changing the message changed the record")
	}

	minimal, err := Decode([]byte(rec()), DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if fv := minimal.Proto().FeatureValues; fv != nil {
		t.Errorf("Proto().FeatureValues = %v, want nil without feature_values", fv)
	}
}

// TestEntityHashSpreadsEvenly: the hash modulo small counts (shards, lanes)
// gives every bucket close to its share, even for similar keys.
func TestEntityHashSpreadsEvenly(t *testing.T) {
	t.Parallel()
	const users = 10_000
	for count := uint64(2); count <= 16; count++ {
		buckets := make([]int, count)
		for i := range users {
			r := &Record{EntityKeys: map[string]string{"user_id": fmt.Sprintf("u%d", i)}}
			buckets[r.EntityHash()%count]++
		}
		share := users / int(count)
		for b, n := range buckets {
			if n < share*9/10 || n > share*11/10 {
				t.Errorf("count %d: bucket %d holds %d of %d keys, more than 10%% off its share %d", count, b, n, users, share)
			}
		}
	}
}

func TestRecordEntityHash(t *testing.T) {
	t.Parallel()
	// reference computes the documented hash with hash/fnv and fmix64
	// written out again.
	reference := func(keys map[string]string) uint64 {
		h := fnv.New64a()
		names := slices.Sorted(func(yield func(string) bool) {
			for k := range keys {
				if !yield(k) {
					return
				}
			}
		})
		for _, k := range names {
			h.Write([]byte(k))
			h.Write([]byte{0})
			h.Write([]byte(keys[k]))
			h.Write([]byte{0})
		}
		k := h.Sum64()
		k ^= k >> 33
		k *= 0xff51afd7ed558ccd
		k ^= k >> 33
		k *= 0xc4ceb9fe1a85ec53
		k ^= k >> 33
		return k
	}
	tests := []struct {
		name string
		keys map[string]string
		want uint64 // 0: only compare with the reference
	}{
		{"documented example", map[string]string{"user_id": "u1"}, 0xe919038c15959078},
		{"no keys is fmix64 of the FNV offset basis", nil, 0xefd01f60ba992926},
		{"two keys", map[string]string{"user_id": "u1", "merchant_id": "m1"}, 0},
		{"bytewise order, uppercase first", map[string]string{"b": "1", "B": "2", "a": "3", "é": "4"}, 0},
		{"empty value", map[string]string{"user_id": ""}, 0},
		{"many keys", map[string]string{"a": "1", "b": "2", "c": "3", "d": "4", "e": "5", "f": "6", "g": "7", "h": "8", "i": "9", "j": "10"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := &Record{EntityKeys: tt.keys}
			got := r.EntityHash()
			if want := reference(tt.keys); got != want {
				t.Errorf("EntityHash() = %#x, reference %#x", got, want)
			}
			if tt.want != 0 && got != tt.want {
				t.Errorf("EntityHash() = %#x, want %#x", got, tt.want)
			}
		})
	}
	// The hash separates name from value.
	a := &Record{EntityKeys: map[string]string{"ab": "c"}}
	b := &Record{EntityKeys: map[string]string{"a": "bc"}}
	if a.EntityHash() == b.EntityHash() {
		t.Errorf("EntityHash() of %v and %v are equal", a.EntityKeys, b.EntityKeys)
	}
}

func TestRecordEntityKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		keys map[string]string
		want string
	}{
		{map[string]string{"user_id": "u1"}, "user_id=u1"},
		{map[string]string{"user_id": "u 1", "org": "a&b"}, "org=a%26b&user_id=u+1"},
		{map[string]string{"b": "=", "B": "é", "a": ""}, "B=%C3%A9&a=&b=%3D"},
		{map[string]string{"a=b": "c", "a": "b=c"}, "a=b%3Dc&a%3Db=c"},
		{nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			t.Parallel()
			r := &Record{EntityKeys: tt.keys}
			got := r.EntityKey()
			if got != tt.want {
				t.Errorf("EntityKey() = %q, want %q", got, tt.want)
			}
			values := url.Values{}
			for k, v := range tt.keys {
				values.Set(k, v)
			}
			if enc := values.Encode(); got != enc {
				t.Errorf("EntityKey() = %q, url.Values.Encode() = %q", got, enc)
			}
		})
	}
}

func TestParseTimestamp(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want time.Time // zero: an error is wanted
	}{
		{"2022-06-07T00:36:08.832793Z", specTimestamp},
		{"2022-06-07T00:36:08.1Z", time.Date(2022, 6, 7, 0, 36, 8, 100_000_000, time.UTC)},
		{"2022-06-07T00:36:08.000000001Z", time.Date(2022, 6, 7, 0, 36, 8, 1, time.UTC)},
		{"2022-06-07T00:36:08-00:00", time.Date(2022, 6, 7, 0, 36, 8, 0, time.UTC)},
		{"2022-06-07T00:36:08+23:59", time.Date(2022, 6, 6, 0, 37, 8, 0, time.UTC)},
		{"2000-02-29T00:00:00Z", time.Date(2000, 2, 29, 0, 0, 0, 0, time.UTC)},
		{"9999-12-31T23:59:59-01:00", time.Time{}},
		{"1900-02-29T00:00:00Z", time.Time{}},
		{"2022-13-01T00:00:00Z", time.Time{}},
		{"2022-00-01T00:00:00Z", time.Time{}},
		{"2022-06-00T00:00:00Z", time.Time{}},
		{"2022-04-31T00:00:00Z", time.Time{}},
		{"2022-06-07T00:60:00Z", time.Time{}},
		{"2022-06-07T00:36:08.Z", time.Time{}},
		{"2022-06-07T00:36:08.1", time.Time{}},
		{"2022-06-07T00:36:08+02:60", time.Time{}},
		{"2022-06-07T00:36:08+2:00", time.Time{}},
		{"2022-06-07T00:36:08Z ", time.Time{}},
		{"+2022-06-07T00:36:08Z", time.Time{}},
		{"2022-06-07T0a:36:08Z", time.Time{}},
		{"2022-06-07T00:36:08ZZ", time.Time{}},
		{"2022-06-07T00:36:08", time.Time{}},
		{"-022-06-07T00:36:08Z", time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := parseTimestamp([]byte(tt.in))
			if tt.want.IsZero() {
				if err == nil {
					t.Errorf("parseTimestamp() = %v, want an error", got)
				}
				return
			}
			if err != nil || !got.Equal(tt.want) || got.Location() != time.UTC {
				t.Errorf("parseTimestamp() = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestExcerpt(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 30)
	tests := []struct{ got, want string }{
		{excerpt([]byte("short")), `"short"`},
		{excerpt([]byte(long)), `"` + strings.Repeat("é", 20) + `"…`},
		{excerpt([]byte("a\x00")), `"a\x00"`},
		{rawExcerpt([]byte("[1,\n2]")), "[1, 2]"},
		{rawExcerpt([]byte(strings.Repeat("1", 50))), strings.Repeat("1", 40) + "…"},
		{fieldName([]byte("a\tb")), "a\uFFFDb"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	in := []byte(realisticRecord)
	b.Run("record", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(in)))
		for b.Loop() {
			if _, err := Decode(in, DecodeOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	// encoding/json into typed fields, for comparison only: it checks less
	// (no duplicate names, no null map values, no strict timestamps).
	b.Run("encoding_json_reference", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(in)))
		for b.Loop() {
			var v struct {
				Version          string            `json:"version"`
				Producer         string            `json:"producer"`
				JobType          string            `json:"job_type"`
				FeatureViewName  string            `json:"feature_view_name"`
				FeatureViewID    string            `json:"feature_view_id"`
				FeatureTimestamp time.Time         `json:"feature_timestamp"`
				EntityKeys       map[string]string `json:"entity_keys"`
				FeatureValues    map[string]string `json:"feature_values"`
			}
			if err := json.Unmarshal(in, &v); err != nil {
				b.Fatal(err)
			}
			_ = bytes.Clone(in)
		}
	})
	b.Run("poison", func(b *testing.B) {
		bad := []byte(rec("feature_timestamp", `"yesterday"`))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Decode(bad, DecodeOptions{}); err == nil {
				b.Fatal("no error")
			}
		}
	})
}

func BenchmarkRecordEntity(b *testing.B) {
	r, err := Decode([]byte(realisticRecord), DecodeOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("EntityHash", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = r.EntityHash()
		}
	})
	b.Run("EntityKey", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = r.EntityKey()
		}
	})
	b.Run("Proto", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = r.Proto()
		}
	})
}

// manyMembers returns n unknown members, "m0":0 to "m<n-1>":<n-1>, for
// records with more than the decoder compares one by one.
func manyMembers(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`"m%d":%d`, i, i)
	}
	return strings.Join(parts, ",")
}

func TestManyUnknownMembers(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, maxExtraScan, maxExtraScan + 1, 200} {
		in := withMembers(rec(), manyMembers(n)+`,"\u006d_escaped":true`)
		r, err := Decode([]byte(in), DecodeOptions{})
		if err != nil {
			t.Fatalf("%d unknown members: %v", n, err)
		}
		if !bytes.Contains(r.Raw, []byte(fmt.Sprintf(`"m%d":%d`, n-1, n-1))) {
			t.Fatalf("%d unknown members: Raw lost the last: %s", n, r.Raw)
		}
	}
}
