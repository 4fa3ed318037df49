package tecton

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// batchBody returns a get-features-batch answer of rows rows as the reference feature server
// (`outflow featureserver`) sends it for the bench's promo_fs: two stream features with
// per-row effective times (nanosecond precision, as a record's feature_timestamp has), two
// batch features effective at midnight, names, data types and statuses.
func batchBody(rows int) []byte {
	var b strings.Builder
	b.WriteString(`{"result":[`)
	for r := range rows {
		if r > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"features":["%d",%d.25,%d.47,"%d"]}`, r%17, r*31%300, 1000+r*977, 30+r)
	}
	b.WriteString(`],"metadata":{"features":[`)
	list := func(f func(r int) string) string {
		items := make([]string, rows)
		for r := range items {
			items[r] = f(r)
		}
		return "[" + strings.Join(items, ",") + "]"
	}
	stream := list(func(r int) string {
		return `"` + time.Date(2026, 12, 4, 11, 39, 30, 123456789+r*1000, time.UTC).Format(time.RFC3339Nano) + `"`
	})
	daily := list(func(int) string { return `"2026-12-04T00:00:00Z"` })
	present := list(func(int) string { return `"PRESENT"` })
	for i, f := range []struct{ name, typ, times string }{
		{"user_items_added_to_cart.cart_count", "int64", stream},
		{"user_items_added_to_cart.cart_value", "float64", stream},
		{"user_stats.lifetime_value", "float64", daily},
		{"user_stats.offers_redeemed", "int64", daily},
	} {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"name":%q,"effectiveTime":%s,"dataType":{"type":%q},"status":%s}`, f.name, f.times, f.typ, present)
	}
	b.WriteString(`]}}`)
	return []byte(b.String())
}

// BenchmarkParseBatchResponse decodes a full (MaxBatchSize rows) get-features-batch answer, the
// gateway's per-call cost of a STRICT backlog (issue 10).
func BenchmarkParseBatchResponse(b *testing.B) {
	body := batchBody(MaxBatchSize)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		vecs, err := ParseBatchResponse(body)
		if err != nil || len(vecs) != MaxBatchSize {
			b.Fatal(len(vecs), err)
		}
	}
}

// BenchmarkParseResponse decodes a get-features answer of the same four features.
func BenchmarkParseResponse(b *testing.B) {
	body := []byte(`{"result":{"features":["3",31.25,1977.47,"31"]},"metadata":{"features":[` +
		`{"name":"user_items_added_to_cart.cart_count","effectiveTime":"2026-12-04T11:39:30.123456789Z","dataType":{"type":"int64"},"status":"PRESENT"},` +
		`{"name":"user_items_added_to_cart.cart_value","effectiveTime":"2026-12-04T11:39:30.123456789Z","dataType":{"type":"float64"},"status":"PRESENT"},` +
		`{"name":"user_stats.lifetime_value","effectiveTime":"2026-12-04T00:00:00Z","dataType":{"type":"float64"},"status":"PRESENT"},` +
		`{"name":"user_stats.offers_redeemed","effectiveTime":"2026-12-04T00:00:00Z","dataType":{"type":"int64"},"status":"PRESENT"}]}}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseResponse(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseBatchResponseJSON decodes the same answer with the encoding/json path alone:
// what ParseBatchResponse cost before its fast path, and still costs for unusual bodies.
func BenchmarkParseBatchResponseJSON(b *testing.B) {
	body := batchBody(MaxBatchSize)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseBatchJSON(body); err != nil {
			b.Fatal(err)
		}
	}
}
