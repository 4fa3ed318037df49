package tecton

import (
	"bytes"
	"testing"
)

// fastSeeds are batch bodies in and just outside the fast path's shape.
var fastSeeds = []string{
	`{"result":[],"metadata":{"features":[]}}`,
	`{"result":[{"features":[1]}],"metadata":{"features":[{"name":"a.b","dataType":{"type":"int64"},"effectiveTime":"2024-01-01T00:00:00Z","status":"PRESENT"}]}}`,
	`{"result":[{"features":["1"]},{"features":[null]}],"metadata":{"features":[{"name":"a.b","effectiveTime":["2024-01-01T00:00:00.5Z",null],"status":["PRESENT","MISSING_DATA"]}]}}`,
	` { "result" : [ { "features" : [ [1, 2] , {"k" : "v"} ] } ] , "metadata" : { "features" : [ {"name":"a.x"}, {"name":"b.y","dataType":{"type":"array","elementType":{"type":"int64"}}} ] } } `,
	`{"result":[{"features":[1]}],"metadata":{"features":[{"name":"a.b","effective_time":"2024-01-01T00:00:00Z"}]}}`,
	`{"result":[{"features":[1]}],"metadata":{"features":[{"NAME":"a.b"}]}}`,
	`{"result":[{"features":[1]}],"metadata":{"features":[{"name":"a.b","name":"a.c"}]}}`,
	`{"result":[{"features":[1]}],"metadata":{"features":[{"name":"a\u002eb"}]}}`,
	`{"result":[{"features":[1],"Features":[2]}],"metadata":{"features":[{"name":"a.b"}]}}`,
	`{"metadata":{"features":[{"name":"a.b"}]},"result":[{"features":[1]}]}`,
	`{"result":[{"features":[1]}],"metadata":{"features":[{"name":"a.b","status":["PRESENT","PRESENT"]}]},"sloInfo":{"x":[1,{"y":null}]}}`,
	`{"result":[{"features":[1e400, -0.0e-0, "\ud800", "\u00e9"]}],"metadata":{"features":[{"name":"a"},{"name":"b"},{"name":"c"},{"name":"d"}]}}`,
	`{"result":[{"features":[1]}],"metadata":{"features":[{"name":"a.b"}]}} x`,
	`{"result":[{"features":[1]}],"metadata":{"features":[{"name":"a.b","dataType":null,"effectiveTime":null,"status":null}]}}`,
	`{"result":[{"features":[1]}],"metadata":{"features":[{"name":"a.b","dataType":{"type":"<int>"}}]}}`,
	`{"result":[{"features":[01]}],"metadata":{"features":[{"name":"a.b"}]}}`,
}

// FuzzParseBatchFastMatches checks the fast path of ParseBatchResponse against the
// encoding/json path it short-cuts: whatever body the fast path accepts, the encoding/json
// path accepts too and yields equal vectors (names, feature views, values byte for byte, data
// types, effective times, statuses). The fast path may decline any body; it must never accept
// one the reference rejects, nor read it differently.
func FuzzParseBatchFastMatches(f *testing.F) {
	addSeeds(f)
	for _, s := range fastSeeds {
		f.Add([]byte(s))
	}
	f.Add(batchBody(MaxBatchSize))
	f.Add(batchBody(1))
	f.Fuzz(func(t *testing.T, body []byte) {
		fast, ok := parseBatchFast(body)
		if !ok {
			return
		}
		want, err := parseBatchJSON(body)
		if err != nil {
			t.Fatalf("fast path accepted a body the encoding/json path rejects: %v", err)
		}
		if fast == nil {
			t.Fatal("fast path returned nil vectors")
		}
		if len(fast) != len(want) {
			t.Fatalf("fast path: %d vectors, encoding/json: %d", len(fast), len(want))
		}
		for r := range want {
			if d := diffVector(fast[r], want[r]); d != "" {
				t.Fatalf("row %d: %s", r, d)
			}
		}
	})
}

// diffVector describes the first difference between two vectors, or returns "".
func diffVector(got, want *Vector) string {
	if len(got.Features) != len(want.Features) {
		return "feature counts differ"
	}
	if got.Precision != want.Precision {
		return "precision differs"
	}
	for i, g := range got.Features {
		w := want.Features[i]
		switch {
		case g.Name != w.Name, g.FeatureView != w.FeatureView:
			return "name " + g.Name + " / " + w.Name
		case !bytes.Equal(g.Value, w.Value):
			return "value of " + w.Name + ": " + string(g.Value) + " / " + string(w.Value)
		case !bytes.Equal(g.DataType, w.DataType), (g.DataType == nil) != (w.DataType == nil):
			return "data type of " + w.Name + ": " + string(g.DataType) + " / " + string(w.DataType)
		case g.HasEffectiveTime != w.HasEffectiveTime, !g.EffectiveTime.Equal(w.EffectiveTime),
			g.EffectiveTime.Location() != w.EffectiveTime.Location():
			return "effective time of " + w.Name
		case g.Status != w.Status:
			return "status of " + w.Name + ": " + g.Status + " / " + w.Status
		}
	}
	return ""
}

// TestParseBatchFastTakesTectonShape checks that the answers Tecton's servers and the reference
// feature server send take the fast path (else the fast path would be dead code), and that
// unusual spellings are left to encoding/json.
func TestParseBatchFastTakesTectonShape(t *testing.T) {
	tests := []struct {
		name string
		body []byte
		fast bool
	}{
		{"reference feature server, 5 rows", batchBody(MaxBatchSize), true},
		{"reference feature server, 1 row", batchBody(1), true},
		{"Tecton fixture", readTestdata(t, "get-features-batch.json"), true},
		{"snake_case fixture", readTestdata(t, "get-features-batch-statuses.json"), false},
		{"indented", []byte(fastSeeds[3]), true},
		{"snake_case effective_time", []byte(fastSeeds[4]), false},
		{"upper-case key", []byte(fastSeeds[5]), false},
		{"duplicate key", []byte(fastSeeds[6]), false},
		{"escaped name", []byte(fastSeeds[7]), false},
		{"metadata first", []byte(fastSeeds[9]), false},
		{"trailing data", []byte(fastSeeds[12]), false},
		{"leading zero", []byte(fastSeeds[15]), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fast, ok := parseBatchFast(tt.body)
			if ok != tt.fast {
				t.Fatalf("fast path taken = %v, want %v", ok, tt.fast)
			}
			want, err := parseBatchJSON(tt.body)
			if !ok {
				return
			}
			if err != nil {
				t.Fatalf("encoding/json path: %v", err)
			}
			for r := range want {
				if d := diffVector(fast[r], want[r]); d != "" {
					t.Fatalf("row %d: %s", r, d)
				}
			}
		})
	}
}

// TestParseBatchFastValuesDoNotAlias checks that values neither alias the body nor each
// other: appending to one must not change its neighbour.
func TestParseBatchFastValuesDoNotAlias(t *testing.T) {
	body := batchBody(2)
	vecs, ok := parseBatchFast(body)
	if !ok {
		t.Fatal("fast path not taken")
	}
	before := string(vecs[0].Features[1].Value)
	_ = append(vecs[0].Features[0].Value, "xxxxxxxx"...)
	if got := string(vecs[0].Features[1].Value); got != before {
		t.Fatalf("appending to one value changed the next: %q, was %q", got, before)
	}
	for i := range body {
		body[i] = ' '
	}
	if string(vecs[0].Features[1].Value) != before {
		t.Fatal("values alias the body")
	}
}
