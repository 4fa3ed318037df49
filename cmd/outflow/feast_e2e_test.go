package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/outflow-dev/outflow/internal/testenv"
	"github.com/outflow-dev/outflow/record"
)

// metricValue returns the value of the series whose line starts with series (name and labels,
// as exposed) in a /metrics body, or -1 when it is absent.
func metricValue(body, series string) float64 {
	for line := range strings.SplitSeq(body, "\n") {
		rest, ok := strings.CutPrefix(line, series+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err != nil {
			return -1
		}
		return v
	}
	return -1
}

// feastRecord is an output-stream record of the Feast test repo's feature view.
func feastRecord(seq int, user string, at time.Time) kafkago.Message {
	value, _ := json.Marshal(map[string]any{
		"version": "1", "producer": "tecton", "job_type": "stream",
		"feature_view_name": testenv.FeastFeatureView, "feature_view_id": "fv-" + testenv.FeastFeatureView,
		"feature_timestamp": at.Format(time.RFC3339Nano),
		"entity_keys":       map[string]string{testenv.FeastJoinKey: user},
		"seq":               seq,
	})
	return kafkago.Message{Key: []byte(user), Value: value}
}

// feastCounter passes requests through to a Feast feature server and counts, per user_id,
// the get-online-features calls that asked for it, so a test knows the gateway has been
// asking about every record.
type feastCounter struct {
	target string
	mu     sync.Mutex
	asked  map[string]int
}

func (c *feastCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if r.URL.Path == "/get-online-features" {
		var req struct {
			Entities map[string][]string `json:"entities"`
		}
		_ = json.Unmarshal(body, &req)
		c.mu.Lock()
		for _, u := range req.Entities[testenv.FeastJoinKey] {
			c.asked[u]++
		}
		c.mu.Unlock()
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, c.target+r.URL.Path, bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// leastAsked returns how many times the least-asked of users was asked for.
func (c *feastCounter) leastAsked(users []string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	least := -1
	for _, u := range users {
		if least < 0 || c.asked[u] < least {
			least = c.asked[u]
		}
	}
	return least
}

// TestFeastStrictEventsWaitForTheWrite is issue 9's load through Feast: the real binary, the
// real broker and a real `feast serve`. Each user's online store holds a value from an hour
// before its record, so a STRICT Feast subscription must not deliver: the gateway asks Feast
// about every record again and again (seen by a counting pass-through) and nothing arrives.
// Then the test pushes each user's new values with the record's own feature_timestamp
// (mid-second; Feast keeps whole seconds) and every event arrives once, consistent, after more
// than one feature-store call, carrying the pushed values under Tecton-style names.
func TestFeastStrictEventsWaitForTheWrite(t *testing.T) {
	t.Parallel()
	feastURL := testenv.FeastURL(t)
	counter := &feastCounter{target: feastURL, asked: map[string]int{}}
	proxy := httptest.NewServer(counter)
	t.Cleanup(proxy.Close)
	env := newLoadEnv(t, "--feast-url", proxy.URL)
	const n = 12

	base := time.Now().UTC().Truncate(time.Second).Add(500 * time.Millisecond)
	// A subscription's events go out on max_in_flight lanes, one at a time per lane, so a
	// STRICT event waiting for Feast holds back the others of its lane. Each user's event must
	// have a lane of its own, so that all are waited on at once and each is seen asking Feast
	// before the write: with 64 lanes and 12 users the least-loaded choice gives each an empty
	// lane, and the users are also picked with distinct entity hashes modulo 64, which kept
	// them apart when lanes were chosen by hash.
	const lanes = 64
	users := make([]string, 0, n)
	old := make([]testenv.FeastRow, 0, n)
	taken := map[uint64]bool{}
	for len(users) < n {
		u := testenv.FeastUserID(fmt.Sprintf("e2e%d_", len(users)))
		lane := (&record.Record{EntityKeys: map[string]string{testenv.FeastJoinKey: u}}).EntityHash() % lanes
		if taken[lane] {
			continue
		}
		taken[lane] = true
		users = append(users, u)
		old = append(old, testenv.FeastRow{UserID: u, CartCount: -1, LifetimeValue: -1, EventTimestamp: base.Add(-time.Hour)})
	}
	testenv.FeastPush(t, feastURL, old...)

	sub := &e2eSubscription{name: "feast STRICT", recv: newReceiver(t)}
	sub.body = map[string]any{
		"name": sub.name, "feature_view_names": []string{testenv.FeastFeatureView},
		"enrichment": map[string]any{"feature_service_name": testenv.FeastFeatureService, "backend": "FEAST",
			"consistency": "STRICT", "consistency_timeout": "120s"},
		"webhook": map[string]any{"url": sub.recv.srv.URL + "/hook", "max_in_flight": lanes},
	}
	env.subscribe(t, []*e2eSubscription{sub})

	msgs := make([]kafkago.Message, n)
	for i := range msgs {
		msgs[i] = feastRecord(i, users[i], base.Add(time.Duration(i)*time.Millisecond))
	}
	env.produceMessages(t, msgs)

	// The gateway must be waiting on Feast: every record asked for at least three times (the
	// first call and two consistency retries), and nothing delivered meanwhile.
	pollUntil(t, time.Minute, "three Feast calls for every record", func() bool { return counter.leastAsked(users) >= 3 })
	if got, _, _ := sub.recv.snapshot(); len(got) != 0 {
		t.Fatalf("%d events delivered before Feast held their values: %v", len(got), got)
	}

	rows := make([]testenv.FeastRow, n)
	for i := range rows {
		rows[i] = testenv.FeastRow{UserID: users[i], CartCount: int64(100 + i), LifetimeValue: float64(i) + 0.5,
			EventTimestamp: base.Add(time.Duration(i) * time.Millisecond)}
	}
	testenv.FeastPush(t, feastURL, rows...)

	pollUntil(t, time.Minute, fmt.Sprintf("%d events after the Feast write", n), func() bool {
		got, _, _ := sub.recv.snapshot()
		return len(got) == n
	})
	got, badSig, idMismatch := sub.recv.snapshot()
	if badSig != 0 || idMismatch != 0 {
		t.Errorf("%d bad signatures, %d id mismatches", badSig, idMismatch)
	}
	sub.recv.mu.Lock()
	defer sub.recv.mu.Unlock()
	for seq := range n {
		if got[seq] != 1 {
			t.Errorf("record %d arrived %d times", seq, got[seq])
		}
		ev := sub.recv.events[seq]
		fv, _ := ev["feature_vector"].(map[string]any)
		attempts, _ := fv["attempts"].(float64)
		if fv["consistent"] != true || attempts < 2 || fv["feature_service_name"] != testenv.FeastFeatureService {
			t.Errorf("record %d: feature_vector %v, want consistent after more than one call", seq, fv)
			continue
		}
		features, _ := fv["features"].(map[string]any)
		meta, _ := fv["metadata"].(map[string]any)
		cart, _ := meta["user_stats.cart_count"].(map[string]any)
		if fmt.Sprint(features["user_stats.cart_count"]) != strconv.Itoa(100+seq) || cart["status"] != "PRESENT" {
			t.Errorf("record %d: features %v metadata %v, want the pushed cart_count %d, PRESENT", seq, features, meta, 100+seq)
		}
	}
}

// TestRefusedFeatureStoreKeyDoesNotBurnRetries is issue 11 item 14: the feature store answers
// 403 for the gateway's own API key. That is the operator's misconfiguration, so a subscriber
// whose retry policy allows a single attempt must not lose the event: it waits in the retry
// queue with no attempt counted while the gateway retries with backoff, counts the failures in
// a metric and logs at error; once the key is accepted again the event is delivered. (Before
// the fix the first 403 dead-lettered the event.)
func TestRefusedFeatureStoreKeyDoesNotBurnRetries(t *testing.T) {
	t.Parallel()
	var refusing atomic.Bool
	var refusals atomic.Int64
	refusing.Store(true)
	var env *loadEnv
	var ready atomic.Bool
	tecton := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refusing.Load() || !ready.Load() {
			refusals.Add(1)
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `{"error":"Forbidden: the API key is not authorized to access workspace prod","message":"Forbidden","code":7}`)
			return
		}
		env.features.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(tecton.Close)
	env = newLoadEnv(t, "--tecton-url", tecton.URL, "--misconfig-backoff", "100ms")
	ready.Store(true)

	sub := &e2eSubscription{name: "one attempt only", recv: newReceiver(t)}
	sub.body = map[string]any{
		"name": sub.name, "feature_view_names": []string{fvCart},
		"enrichment":   map[string]any{"workspace_name": "prod", "feature_service_name": "promo_fs", "consistency": "STRICT"},
		"webhook":      map[string]any{"url": sub.recv.srv.URL + "/hook"},
		"retry_policy": map[string]any{"max_attempts": 1},
	}
	env.subscribe(t, []*e2eSubscription{sub})
	base := time.Now().UTC()
	env.produce(t, 0, 1, base) // record 0 is a cart record

	pollUntil(t, time.Minute, "four refusals of the key, or a dead letter", func() bool {
		return refusals.Load() >= 4 || len(env.deliveries(t, sub.id, "DEAD")) > 0
	})
	if dead := env.deliveries(t, sub.id, "DEAD"); len(dead) != 0 {
		t.Fatalf("the operator's 403 dead-lettered the subscriber's event: %v", dead)
	}
	queued := env.deliveries(t, sub.id, "RETRYING")
	if len(queued) != 1 {
		t.Fatalf("retry queue %v, want the one event waiting", queued)
	}
	dl := queued[0].(map[string]any)
	if attempts, _ := dl["attempts"].(float64); attempts != 0 || !strings.Contains(fmt.Sprint(dl["last_error"]), "403") {
		t.Errorf("queued delivery %v: want no attempt counted and the 403 kept as the last error", dl)
	}
	metrics := env.gateway.get(t, "/metrics")
	if v := metricValue(metrics, `outflow_enrichment_misconfigured_total{reason="credentials"}`); v < 4 {
		t.Errorf("outflow_enrichment_misconfigured_total{reason=\"credentials\"} = %v, want at least 4", v)
	}
	if logs := env.gateway.logs.String(); !strings.Contains(logs, "ERROR") || !strings.Contains(logs, "gateway's configuration") {
		t.Errorf("no error-level log of the misconfiguration:\n%s", tail(logs, 3000))
	}
	if strings.Contains(env.gateway.logs.String(), "e2e-key") {
		t.Error("the Tecton API key appears in the gateway's log")
	}

	refusing.Store(false) // the operator fixes the key
	pollUntil(t, time.Minute, "the event after the key is accepted", func() bool {
		got, _, _ := sub.recv.snapshot()
		return got[0] == 1
	})
	sub.recv.mu.Lock()
	fv, _ := sub.recv.events[0]["feature_vector"].(map[string]any)
	sub.recv.mu.Unlock()
	if fv["consistent"] != true {
		t.Errorf("feature_vector %v, want consistent", fv)
	}
}
