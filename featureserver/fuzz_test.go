package featureserver

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/tecton"
)

// FuzzGetFeaturesRequest feeds arbitrary bodies to get-features and get-features-batch and
// checks the invariants every client relies on:
//
//   - the handler never panics;
//   - every answer is JSON with Content-Type application/json;
//   - a non-200 answer is a 400 or 404 (no key, no faults configured) with Tecton's error body:
//     a non-empty error and message and the matching gRPC code;
//   - a 200 answer that carries metadata names parses with tecton.ParseResponse (or
//     ParseBatchResponse) into one vector per requested row, with the feature service's
//     features in order;
//   - a feature of the stream view carries an effective time exactly when its status (if
//     asked for) says a value is present: a never-written key is null with MISSING_DATA or
//     CACHED_MISSING_DATA and no effective time, and is never consistent with a record.
func FuzzGetFeaturesRequest(f *testing.F) {
	seeds := []string{
		`{"params": {"workspace_name": "prod", "feature_service_name": "promo_fs", "join_key_map": {"user_id": "u1"}, "metadata_options": {"include_names": true, "include_effective_times": true, "include_serving_status": true, "include_data_types": true}}}`,
		`{"params": {"workspaceName": "prod", "featureServiceName": "promo_realtime_fs", "joinKeyMap": {"user_id": 7}, "requestContextMap": {"channel": "web"}, "metadataOptions": {"includeNames": true}, "requestOptions": {"readFromCache": false}}}`,
		`{"params": {"workspace_name": "prod", "feature_service_name": "promo_fs", "request_data": [{"join_key_map": {"user_id": "u1"}}, {"joinKeyMap": {"user_id": "u2"}}], "metadata_options": {"include_names": true, "include_slo_info": true}}}`,
		`{"params": {"workspace_name": "prod", "feature_service_name": "promo_fs", "join_key_map": {"user_id": null}}}`,
		`{"params": {"workspace_name": "prod", "feature_service_name": "promo_fs", "join_key_map": {"user_id": "u1"}, "joinKeyMap": {}}}`,
		`{"params": null}`,
		`{"params": {"request_data": [{}, {}, {}, {}, {}, {}]}}`,
		`[]`,
		`"params"`,
		`{"params": {"workspace_name": 1}}`,
		"{\"params\": {\"workspace_name\": \"\xff\"}}",
		``,
	}
	for _, s := range seeds {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	clock := &fakeClock{now: t0}
	srv, err := New(Config{Now: clock.Now, CacheTTL: time.Minute})
	if err != nil {
		f.Fatal(err)
	}
	srv.Apply(cartRecord(f, "u1", t0, map[string]string{"cart_count": "1", "cart_value": "0.5"}))
	handler := srv.Handler()

	f.Fuzz(func(t *testing.T, body []byte, batch bool) {
		path := GetFeaturesPath
		if batch {
			path = GetFeaturesBatchPath
		}
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
		out := rec.Body.Bytes()
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("Content-Type %q", ct)
		}
		if !json.Valid(out) {
			t.Fatalf("answer is not JSON: %q", out)
		}
		if rec.Code != http.StatusOK {
			if rec.Code != http.StatusBadRequest && rec.Code != http.StatusNotFound {
				t.Fatalf("status %d for a client error: %s", rec.Code, out)
			}
			var e errorBody
			if err := json.Unmarshal(out, &e); err != nil || e.Error == "" || e.Message == "" || e.Code != grpcCode(rec.Code) {
				t.Fatalf("status %d with error body %s", rec.Code, out)
			}
			return
		}
		var probe struct {
			Metadata struct {
				Features []struct {
					Name string `json:"name"`
				} `json:"features"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(out, &probe); err != nil {
			t.Fatalf("200 answer %s: %v", out, err)
		}
		if len(probe.Metadata.Features) == 0 || probe.Metadata.Features[0].Name == "" {
			return // no names asked for: positional values only, which the client rejects by design
		}
		var vectors []*tecton.Vector
		if batch {
			vectors, err = tecton.ParseBatchResponse(out)
		} else {
			var v *tecton.Vector
			v, err = tecton.ParseResponse(out)
			vectors = []*tecton.Vector{v}
		}
		if err != nil {
			t.Fatalf("200 answer does not parse: %v\n%s", err, out)
		}
		for _, v := range vectors {
			if len(v.Features) < 4 || v.Features[0].Name != cartCount {
				t.Fatalf("unexpected vector %+v", v)
			}
			for _, feat := range v.Features[:2] {
				present := feat.Status == tecton.StatusPresent || feat.Status == tecton.StatusCachedPresent
				missing := feat.Status == tecton.StatusMissingData || feat.Status == tecton.StatusCachedMissingData
				switch {
				case feat.Status == "":
				case !present && !missing:
					t.Fatalf("%s: status %q", feat.Name, feat.Status)
				case missing && (feat.HasEffectiveTime || string(feat.Value) != "null"):
					t.Fatalf("%s: %s with value %s, effective time set %v; want null and none", feat.Name, feat.Status, feat.Value, feat.HasEffectiveTime)
				case present && !feat.HasEffectiveTime:
					t.Fatalf("%s: %s without an effective time", feat.Name, feat.Status)
				case missing:
					if ok, _ := v.Consistent(cartView, time.Time{}); ok {
						t.Fatalf("a vector with %s %s is consistent", feat.Name, feat.Status)
					}
				}
			}
		}
	})
}
