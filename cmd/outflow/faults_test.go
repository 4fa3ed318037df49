package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	kafkago "github.com/segmentio/kafka-go"

	"github.com/outflow-dev/outflow/featureserver"
)

// pollUntil polls cond every 100ms until it holds or timeout passes.
func pollUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond) // polling other processes: nothing to block on
	}
}

func (env *loadEnv) deliveries(t *testing.T, subID, status string) []any {
	t.Helper()
	page := env.gateway.api(t, env.key, "GET", "/v1/subscriptions/"+subID+"/deliveries?page_size=1000&status="+status, nil, 200)
	list, _ := page["deliveries"].([]any)
	return list
}

// TestBadReceivers: one receiver always answers 500, one hangs past the
// timeout, one answers 410. The healthy one still receives everything; the
// failing ones' events go to the retry queue and then the dead letters;
// RetryDelivery redelivers one once its receiver recovers; the 410 one is
// DISABLED.
func TestBadReceivers(t *testing.T) {
	t.Parallel()
	env := newLoadEnv(t, "--breaker-cooldown", "1s")

	healthy := newReceiver(t)
	failing := newReceiver(t)
	var failingDown atomic.Bool
	failingDown.Store(true)
	failing.status = func() int {
		if failingDown.Load() {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	}
	gone := newReceiver(t)
	gone.status = func() int { return http.StatusGone }
	release := make(chan struct{})
	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(hanging.Close)
	t.Cleanup(func() { close(release) })

	shortRetries := map[string]any{"max_attempts": 2, "max_age": "3600s"}
	subs := map[string]map[string]any{
		"healthy": {"webhook": map[string]any{"url": healthy.srv.URL}},
		"failing": {"webhook": map[string]any{"url": failing.srv.URL}, "retry_policy": shortRetries},
		"hanging": {"webhook": map[string]any{"url": hanging.URL, "timeout": "0.5s"}, "retry_policy": shortRetries},
		"gone":    {"webhook": map[string]any{"url": gone.srv.URL}},
	}
	receivers := map[string]*receiver{"healthy": healthy, "failing": failing, "gone": gone}
	ids := map[string]string{}
	for name, body := range subs {
		body["name"] = name
		body["feature_view_names"] = []string{fvClicks}
		created := env.gateway.api(t, env.key, "POST", "/v1/subscriptions", body, 200)
		ids[name] = created["id"].(string)
		if r := receivers[name]; r != nil {
			r.mu.Lock()
			r.secret = created["secret"].(string)
			r.mu.Unlock()
		}
	}
	env.gateway.awaitSubscriptions(t, len(subs))

	const n = 300 // 100 of them on fv_clicks
	base := time.Now().UTC()
	start := time.Now()
	env.produce(t, 0, n, base)
	var clicks []int
	for seq := range n {
		if _, _, fv, _ := testRecord(seq, base); fv == fvClicks {
			clicks = append(clicks, seq)
		}
	}
	pollUntil(t, time.Minute, "the healthy receiver to get every click", func() bool {
		got, _, _ := healthy.snapshot()
		for _, seq := range clicks {
			if got[seq] == 0 {
				return false
			}
		}
		return true
	})
	t.Logf("healthy receiver got all %d events in %s beside a 500, a hanging and a 410 receiver", len(clicks), time.Since(start).Round(time.Millisecond))

	// The failing receiver's events: retrying first, then dead.
	pollUntil(t, 30*time.Second, "the failing receiver's events in the retry queue", func() bool {
		return len(env.deliveries(t, ids["failing"], "RETRYING")) > 0
	})
	pollUntil(t, 2*time.Minute, "every event of the failing and hanging receivers dead-lettered", func() bool {
		return len(env.deliveries(t, ids["failing"], "DEAD")) == len(clicks) && len(env.deliveries(t, ids["hanging"], "DEAD")) == len(clicks)
	})
	dead := env.deliveries(t, ids["failing"], "DEAD")[0].(map[string]any)
	if dead["last_status_code"] != float64(500) || dead["event"] == nil {
		t.Errorf("a dead delivery = %v, want last_status_code 500 and the event", dead)
	}

	// The 410 receiver asked to stop: DISABLED.
	pollUntil(t, 30*time.Second, "the 410 subscription to be DISABLED", func() bool {
		return env.gateway.api(t, env.key, "GET", "/v1/subscriptions/"+ids["gone"], nil, 200)["state"] == "DISABLED"
	})

	// The failing receiver recovers: RetryDelivery redelivers one dead event.
	failingDown.Store(false)
	deliveryID := dead["id"].(string)
	seq := int(dead["event"].(map[string]any)["record"].(map[string]any)["seq"].(float64))
	retried := env.gateway.api(t, env.key, "POST", "/v1/subscriptions/"+ids["failing"]+"/deliveries/"+deliveryID+":retry", map[string]any{}, 200)
	if retried["status"] != "RETRYING" {
		t.Fatalf("retry = %v", retried)
	}
	pollUntil(t, 30*time.Second, "the redelivered event at the recovered receiver", func() bool {
		got, _, _ := failing.snapshot()
		return got[seq] == 1
	})
	pollUntil(t, 10*time.Second, "the delivery marked DELIVERED", func() bool {
		for _, d := range env.deliveries(t, ids["failing"], "DELIVERED") {
			if d.(map[string]any)["id"] == deliveryID {
				return true
			}
		}
		return false
	})
}

// poisonCases are bad records, each with the reason it must be kept under.
func poisonCases() []struct {
	name   string
	value  []byte
	reason string
} {
	good := func(edit func(m map[string]any)) []byte {
		m := map[string]any{"version": "1", "feature_view_name": fvClicks, "feature_timestamp": "2026-11-24T10:00:00Z",
			"entity_keys": map[string]any{"user_id": "u1"}}
		edit(m)
		b, _ := json.Marshal(m)
		return b
	}
	deep := `{"version":"1","feature_view_name":"fv_clicks","feature_timestamp":"2026-11-24T10:00:00Z","entity_keys":{"user_id":"u1"},"x":` +
		strings.Repeat("[", 1000) + strings.Repeat("]", 1000) + `}`
	huge := good(func(m map[string]any) { m["blob"] = strings.Repeat("a", 5<<20) })
	return []struct {
		name   string
		value  []byte
		reason string
	}{
		{"not JSON", []byte("hello"), "invalid_json"},
		{"truncated", []byte(`{"version":"1","feature_view_name":"fv`), "invalid_json"},
		{"empty", []byte{}, "invalid_json"},
		{"array", []byte(`[1,2]`), "not_object"},
		{"null", []byte(`null`), "not_object"},
		{"string", []byte(`"record"`), "not_object"},
		{"version 2", good(func(m map[string]any) { m["version"] = "2" }), "unsupported_version"},
		{"version as number", good(func(m map[string]any) { m["version"] = 1 }), "unsupported_version"},
		{"no version", good(func(m map[string]any) { delete(m, "version") }), "missing_field"},
		{"no feature view", good(func(m map[string]any) { delete(m, "feature_view_name") }), "missing_field"},
		{"feature view number", good(func(m map[string]any) { m["feature_view_name"] = 5 }), "invalid_field"},
		{"no timestamp", good(func(m map[string]any) { delete(m, "feature_timestamp") }), "missing_field"},
		{"bad timestamp", good(func(m map[string]any) { m["feature_timestamp"] = "yesterday" }), "invalid_field"},
		{"timestamp without zone", good(func(m map[string]any) { m["feature_timestamp"] = "2026-11-24T10:00:00" }), "invalid_field"},
		{"no entity keys", good(func(m map[string]any) { delete(m, "entity_keys") }), "missing_field"},
		{"empty entity keys", good(func(m map[string]any) { m["entity_keys"] = map[string]any{} }), "invalid_field"},
		{"entity keys array", good(func(m map[string]any) { m["entity_keys"] = []string{"u1"} }), "invalid_field"},
		{"entity value number", good(func(m map[string]any) { m["entity_keys"] = map[string]any{"user_id": 7} }), "invalid_field"},
		{"feature values array", good(func(m map[string]any) { m["feature_values"] = []string{"1"} }), "invalid_field"},
		{"invalid UTF-8", append([]byte(`{"version":"1","feature_view_name":"fv_`), 0xff, 0xfe, '"', '}'), "invalid_utf8"},
		{"byte order mark", append([]byte{0xef, 0xbb, 0xbf}, good(func(map[string]any) {})...), "invalid_json"},
		{"trailing garbage", append(good(func(map[string]any) {}), []byte("xyz")...), "invalid_json"},
		{"duplicate keys", []byte(`{"version":"1","version":"1","feature_view_name":"fv_clicks","feature_timestamp":"2026-11-24T10:00:00Z","entity_keys":{"user_id":"u1"}}`), "invalid_field"},
		{"deeply nested", []byte(deep), "too_deep"},
		{"5 MiB record", huge, "too_large"},
	}
}

// TestPoison interleaves 25 kinds of bad records with good ones: every good
// one is delivered, every bad one is kept in poison_records with its reason,
// and the consumer never stalls.
func TestPoison(t *testing.T) {
	t.Parallel()
	env := newLoadEnv(t)
	recv := newReceiver(t)
	created := env.gateway.api(t, env.key, "POST", "/v1/subscriptions", map[string]any{
		"name": "clicks", "feature_view_names": []string{fvClicks}, "webhook": map[string]any{"url": recv.srv.URL}}, 200)
	recv.mu.Lock()
	recv.secret = created["secret"].(string)
	recv.mu.Unlock()
	env.gateway.awaitSubscriptions(t, 1)

	cases := poisonCases()
	if len(cases) < 20 {
		t.Fatalf("only %d kinds of poison", len(cases))
	}
	base := time.Now().UTC()
	var msgs []kafkago.Message
	var goodSeqs []int
	seq := 0
	for _, c := range cases {
		// A good click record before each bad one, all on one key (one
		// partition), so a stalled consumer would starve the good ones.
		for {
			_, value, fv, _ := testRecord(seq, base)
			seq++
			if fv == fvClicks {
				msgs = append(msgs, kafkago.Message{Key: []byte("same"), Value: value})
				goodSeqs = append(goodSeqs, seq-1)
				break
			}
		}
		msgs = append(msgs, kafkago.Message{Key: []byte("same"), Value: c.value})
	}
	env.produceMessages(t, msgs)

	pollUntil(t, time.Minute, "every good record delivered", func() bool {
		got, _, _ := recv.snapshot()
		for _, s := range goodSeqs {
			if got[s] == 0 {
				return false
			}
		}
		return true
	})

	ctx := context.Background()
	db, err := pgx.Connect(ctx, env.databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	var reasons map[string]int
	pollUntil(t, 30*time.Second, "every poison record kept", func() bool {
		rows, err := db.Query(ctx, "SELECT reason, count(*) FROM poison_records GROUP BY reason")
		if err != nil {
			t.Fatal(err)
		}
		reasons = map[string]int{}
		total := 0
		for rows.Next() {
			var r string
			var c int
			if err := rows.Scan(&r, &c); err != nil {
				t.Fatal(err)
			}
			reasons[r] = c
			total += c
		}
		return total == len(cases)
	})
	want := map[string]int{}
	for _, c := range cases {
		want[c.reason]++
	}
	if fmt.Sprint(reasons) != fmt.Sprint(want) {
		t.Errorf("poison by reason = %v, want %v", reasons, want)
	}
	var rawSize, kept int
	if err := db.QueryRow(ctx, "SELECT raw_size, length(raw) FROM poison_records WHERE reason = 'too_large'").Scan(&rawSize, &kept); err != nil {
		t.Fatal(err)
	}
	if rawSize < 5<<20 || kept > 4096 {
		t.Errorf("the 5 MiB record was kept as %d bytes of %d; want at most 4 KiB of more than 5 MiB", kept, rawSize)
	}
	metrics := env.gateway.get(t, "/metrics")
	if !strings.Contains(metrics, `outflow_records_poison_total{reason="too_large"} 1`) {
		t.Errorf("the poison metric does not count the oversized record:\n%s", grepLines(metrics, "outflow_records_poison_total"))
	}
	t.Logf("%d good records delivered around %d poison records kept by reason %v", len(goodSeqs), len(cases), reasons)
}

// TestFeatureStoreFaults: 503 bursts and slow answers delay but never lose
// events; an unknown feature service (404) dead-letters the event at once
// with the error kept.
func TestFeatureStoreFaults(t *testing.T) {
	t.Parallel()
	env := newLoadEnv(t)
	if err := env.features.SetFaults(featureserver.Faults{ErrorRate: 0.3, ErrorStatus: 503, Latency: 30 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	ok := newReceiver(t)
	missing := newReceiver(t)
	for _, s := range []struct {
		r       *receiver
		name    string
		service string
	}{{ok, "strict carts", "promo_fs"}, {missing, "unknown service", "no_such_fs"}} {
		created := env.gateway.api(t, env.key, "POST", "/v1/subscriptions", map[string]any{
			"name": s.name, "feature_view_names": []string{fvCart},
			"enrichment": map[string]any{"workspace_name": "prod", "feature_service_name": s.service},
			"webhook":    map[string]any{"url": s.r.srv.URL, "max_in_flight": 64}}, 200)
		s.r.mu.Lock()
		s.r.secret = created["secret"].(string)
		s.r.id = created["id"].(string)
		s.r.mu.Unlock()
	}
	env.gateway.awaitSubscriptions(t, 2)
	const n = 600 // 200 cart records
	base := time.Now().UTC()
	env.produce(t, 0, n, base)
	var carts []int
	for seq := range n {
		if _, _, fv, _ := testRecord(seq, base); fv == fvCart {
			carts = append(carts, seq)
		}
	}
	pollUntil(t, 2*time.Minute, "every cart event delivered despite 503s", func() bool {
		got, _, _ := ok.snapshot()
		for _, s := range carts {
			if got[s] == 0 {
				return false
			}
		}
		return true
	})
	pollUntil(t, time.Minute, "every unknown-service event dead-lettered", func() bool {
		return len(env.deliveries(t, missing.id, "DEAD")) == len(carts)
	})
	dead := env.deliveries(t, missing.id, "DEAD")[0].(map[string]any)
	if msg := fmt.Sprint(dead["last_error"]); !strings.Contains(msg, "feature store") || !strings.Contains(msg, "404") {
		t.Errorf("last_error = %q, want the feature store's 404", msg)
	}
	if got, _, _ := missing.snapshot(); len(got) != 0 {
		t.Errorf("the unknown-service subscription delivered %d events without a vector", len(got))
	}
	metrics := env.gateway.get(t, "/metrics")
	if !strings.Contains(metrics, `outflow_getfeatures_duration_seconds_count{op="get-features",result="error"}`) &&
		!strings.Contains(metrics, `outflow_getfeatures_duration_seconds_count{op="get-features-batch",result="error"}`) {
		t.Errorf("no failed GetFeatures calls in the metrics:\n%s", grepLines(metrics, "outflow_getfeatures"))
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestLimitsRespected: a subscription's max_in_flight bounds concurrent
// requests to its receiver, and rate_limit bounds their pace. Both checks
// are bounds a slow machine cannot break: concurrency at most 2, and 100
// events at 40/s (burst 40) take at least 1.5s.
func TestLimitsRespected(t *testing.T) {
	t.Parallel()
	env := newLoadEnv(t)
	var inFlight, peak, total atomic.Int32
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(5 * time.Millisecond) // a receiver's work, so requests overlap
		total.Add(1)
	}))
	t.Cleanup(recv.Close)
	env.gateway.api(t, env.key, "POST", "/v1/subscriptions", map[string]any{
		"name": "limited", "feature_view_names": []string{fvClicks},
		"webhook": map[string]any{"url": recv.URL, "max_in_flight": 2, "rate_limit": 40}}, 200)
	env.gateway.awaitSubscriptions(t, 1)

	start := time.Now()
	env.produce(t, 0, 300, time.Now().UTC()) // 100 clicks
	pollUntil(t, time.Minute, "100 limited deliveries", func() bool { return total.Load() >= 100 })
	elapsed := time.Since(start)
	if p := peak.Load(); p > 2 {
		t.Errorf("%d requests in flight at once, max_in_flight is 2", p)
	}
	if elapsed < 1500*time.Millisecond {
		t.Errorf("100 events at rate_limit 40/s arrived in %s, faster than the limit allows", elapsed)
	}
	t.Logf("100 events with max_in_flight 2 and rate_limit 40/s: peak concurrency %d, %s", peak.Load(), elapsed.Round(time.Millisecond))
}
