package featureserver

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/record"
)

// batchRequestBody is the get-features-batch body the gateway's tecton.Client sends for rows
// users of the demo catalog's promo_fs.
func batchRequestBody(users ...int) string {
	rows := make([]string, len(users))
	for i, u := range users {
		rows[i] = fmt.Sprintf(`{"join_key_map":{"user_id":"u%d"}}`, u)
	}
	return `{"params":{"workspace_name":"prod","feature_service_name":"promo_fs","request_data":[` +
		strings.Join(rows, ",") + `],"metadata_options":{"include_names":true,"include_effective_times":true,` +
		`"include_data_types":true,"include_serving_status":true}}}`
}

// BenchmarkGetFeaturesBatch serves full (MaxBatchSize rows) get-features-batch calls for keys
// the store holds, as in the STRICT backlog of issue 10's benchmark: the feature server's
// cost per call, from the request body to the response bytes.
func BenchmarkGetFeaturesBatch(b *testing.B) {
	srv, err := New(Config{})
	if err != nil {
		b.Fatal(err)
	}
	ts := time.Date(2026, 12, 4, 11, 39, 30, 123456789, time.UTC)
	for u := range 100 {
		srv.Apply(&record.Record{
			FeatureViewName:  "user_items_added_to_cart",
			FeatureTimestamp: ts.Add(time.Duration(u) * time.Microsecond),
			EntityKeys:       map[string]string{"user_id": fmt.Sprintf("u%d", u)},
			FeatureValues:    map[string]string{"cart_count": fmt.Sprint(u % 17), "cart_value": fmt.Sprintf("%d.25", u)},
		})
	}
	bodies := make([]string, 20)
	for i := range bodies {
		bodies[i] = batchRequestBody(5*i, 5*i+1, 5*i+2, 5*i+3, 5*i+4)
	}
	h := srv.Handler()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, GetFeaturesBatchPath, strings.NewReader(bodies[i%len(bodies)]))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
		i++
	}
}
