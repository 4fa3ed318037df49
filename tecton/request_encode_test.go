package tecton

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzAppendRequestBody holds appendRequestBody to json.Marshal's bytes for any workspace,
// feature service, join key names and values (escapes, HTML characters, invalid UTF-8), row
// count and cache bypass, in both the get-features and the get-features-batch shape.
func FuzzAppendRequestBody(f *testing.F) {
	f.Add("prod", "promo_fs", "user_id", "u1", "k2", "v2", uint8(5), true, false)
	f.Add("a<b>&c", "\u2028\xff\"\\\n", "", "", "é", "\x00", uint8(1), false, true)
	f.Fuzz(func(t *testing.T, ws, fs, k1, v1, k2, v2 string, rows uint8, bypass, single bool) {
		keys := map[string]string{k1: v1, k2: v2}
		p := wireParams{WorkspaceName: ws, FeatureServiceName: fs, MetadataOptions: allMetadata, RequestOptions: requestOptions(bypass)}
		if single {
			p.JoinKeyMap = keys
			if rows%3 == 0 {
				p.JoinKeyMap = nil
			}
		} else {
			for i := range int(rows % (MaxBatchSize + 1)) {
				d := wireRequestData{JoinKeyMap: keys}
				if i%2 == 1 {
					d.JoinKeyMap = map[string]string{k2: v1}
				}
				p.RequestData = append(p.RequestData, d)
			}
		}
		want, err := json.Marshal(wireRequest{Params: p})
		if err != nil {
			t.Fatal(err)
		}
		got, ok := appendRequestBody(nil, &p)
		if !ok {
			t.Fatal("appendRequestBody declined a body without request context")
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("appendRequestBody wrote\n%s\njson.Marshal\n%s", got, want)
		}
	})
}

func TestAppendRequestBodyDeclinesRequestContext(t *testing.T) {
	for _, p := range []wireParams{
		{RequestContextMap: map[string]any{"amount": 1.5}},
		{RequestData: []wireRequestData{{}, {RequestContextMap: map[string]any{"x": "y"}}}},
	} {
		if _, ok := appendRequestBody(nil, &p); ok {
			t.Errorf("appendRequestBody wrote a body with request context %+v", p)
		}
		if _, err := encodeRequest(&p); err != nil {
			t.Errorf("encodeRequest: %v", err)
		}
	}
}

// BenchmarkEncodeBatchRequest encodes a full get-features-batch request as the enricher sends
// it.
func BenchmarkEncodeBatchRequest(b *testing.B) {
	rows := make([]wireRequestData, MaxBatchSize)
	for i := range rows {
		rows[i] = wireRequestData{JoinKeyMap: map[string]string{"user_id": "u1234" + string(rune('0'+i))}}
	}
	p := &wireParams{WorkspaceName: "prod", FeatureServiceName: "promo_fs", RequestData: rows, MetadataOptions: allMetadata}
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := encodeRequest(p); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json.Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(wireRequest{Params: *p}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
