package gateway_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outflow-dev/outflow/dispatcher"
	"github.com/outflow-dev/outflow/gateway"
	"github.com/outflow-dev/outflow/internal/storetest"
	"github.com/outflow-dev/outflow/internal/testenv"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/server"
	"github.com/outflow-dev/outflow/source/kafka"
	"github.com/outflow-dev/outflow/store"
	"github.com/outflow-dev/outflow/webhook"
)

// hook is one webhook request as the receiver got it.
type hook struct {
	body   []byte
	header http.Header
}

// TestGatewayDeliversAndStops runs a Gateway on the real PostgreSQL and
// Kafka: a subscription created through its REST API gets the one record
// written to the topic as a signed webhook; Stop then returns with every
// goroutine of the Gateway ended, and a second Stop is a no-op.
func TestGatewayDeliversAndStops(t *testing.T) {
	// Registered first, so it runs last: after Stop and every cleanup of
	// the test's own resources, nothing of the Gateway may be left.
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	db := storetest.New(t)
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.NewTopic(t, 2)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	key, apiKey, err := db.Store.CreateAPIKey(ctx, "t", "gateway test")
	if err != nil {
		t.Fatal(err)
	}

	hooks := make(chan hook, 10)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		hooks <- hook{body, r.Header.Clone()}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer recv.Close()

	// The subscription exists before the Gateway starts, so the matcher has
	// it when the Gateway is ready (the API is checked below by reading it).
	secret, err := webhook.GenerateSecret(rand.Reader, 32)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := db.Store.CreateSubscription(ctx, key.TenantID, &outflowv1.Subscription{
		Id: "sub_gw", Name: "carts", FeatureViewNames: []string{"fv_cart"}, State: outflowv1.Subscription_ACTIVE,
		Target: &outflowv1.Subscription_Webhook{Webhook: &outflowv1.WebhookTarget{
			Url: recv.URL + "/hook", Timeout: durationpb.New(10 * time.Second), MaxInFlight: 4}},
		RetryPolicy: &outflowv1.RetryPolicy{MaxAttempts: 5, MaxAge: durationpb.New(time.Hour)},
	}, secret, 10)
	if err != nil {
		t.Fatal(err)
	}

	httpLis := listen(t)
	gw, err := gateway.New(testConfig(t, db, brokers, topic, httpLis))
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- gw.Run(ctx) }()
	defer gw.Stop()
	base := "http://" + httpLis.Addr().String()
	awaitReady(t, ctx, base+"/readyz", ran)

	got := call(t, http.MethodGet, base+"/v1/subscriptions/"+sub.Proto.GetId(), apiKey, nil)
	if got["name"] != "carts" {
		t.Fatalf("GET the subscription = %v, want the one named carts", got)
	}

	transport := &kafkago.Transport{}
	defer transport.CloseIdleConnections()
	w := &kafkago.Writer{Addr: kafkago.TCP(brokers...), Topic: topic, RequiredAcks: kafkago.RequireAll, Transport: transport}
	value := []byte(`{"version":"1","producer":"tecton","job_type":"stream","feature_view_name":"fv_cart",` +
		`"feature_view_id":"fv-cart","feature_timestamp":"` + time.Now().UTC().Format(time.RFC3339Nano) + `",` +
		`"entity_keys":{"user_id":"u1"},"feature_values":{"cart_count":"3"}}`)
	if err := w.WriteMessages(ctx, kafkago.Message{Key: []byte("u1"), Value: value}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	var h hook
	select {
	case h = <-hooks:
	case err := <-ran:
		t.Fatalf("the gateway stopped before delivering: %v", err)
	case <-ctx.Done():
		t.Fatal("no webhook within the test's deadline")
	}
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(h.body, h.header); err != nil {
		t.Errorf("the webhook's signature does not verify: %v", err)
	}
	if !bytes.Contains(h.body, []byte(`"user_id":"u1"`)) {
		t.Errorf("the webhook's body lacks the record's entity: %s", h.body)
	}

	gw.Stop()
	if err := <-ran; err != nil {
		t.Errorf("Run after Stop = %v, want nil", err)
	}
	gw.Stop() // idempotent
	if err := gw.Run(ctx); err == nil {
		t.Error("a second Run succeeded, want an error")
	}
	select {
	case h := <-hooks:
		t.Errorf("an unexpected second webhook: %s", h.body)
	default:
	}
}

// TestNewValidates checks that New refuses a Config without what the
// Gateway cannot run without.
func TestNewValidates(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  gateway.Config
	}{
		{"no database", gateway.Config{SecretKeys: "x"}},
		{"no secret keys", gateway.Config{DatabaseURL: "postgres://localhost/x"}},
		{"bad secret keys", gateway.Config{DatabaseURL: "postgres://localhost/x", SecretKeys: "not a key"}},
		{"brokers without topics", gateway.Config{DatabaseURL: "postgres://localhost/x", SecretKeys: validKeys(t),
			Kafka: kafka.Config{Brokers: []string{"127.0.0.1:9092"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := gateway.New(tc.cfg); !errors.Is(err, gateway.ErrInvalidConfig) {
				t.Errorf("New = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

// TestStopBeforeRun checks that a Gateway stopped before it ran returns at
// once from Run, without opening anything.
func TestStopBeforeRun(t *testing.T) {
	t.Parallel()
	gw, err := gateway.New(gateway.Config{DatabaseURL: "postgres://127.0.0.1:1/none", SecretKeys: validKeys(t)})
	if err != nil {
		t.Fatal(err)
	}
	gw.Stop()
	if err := gw.Run(t.Context()); err != nil {
		t.Errorf("Run after Stop = %v, want nil", err)
	}
}

// testConfig is a Gateway on the test database and one topic, read from
// its start by a group of its own, delivering to loopback receivers.
func testConfig(t *testing.T, db *storetest.DB, brokers []string, topic string, httpLis net.Listener) gateway.Config {
	return gateway.Config{
		DatabaseURL:  db.URL,
		SecretKeys:   db.KeySpec,
		HTTPListener: httpLis,
		GRPCListener: listen(t),
		API: server.Config{AllowInsecureURLs: true, ShutdownTimeout: 5 * time.Second,
			AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
		Kafka: kafka.Config{Brokers: brokers, Topics: []string{topic}, GroupID: "gw-" + topic,
			StartOffset: kafka.StartEarliest},
		Dispatch: dispatcher.Config{DrainTimeout: 5 * time.Second},
	}
}

// validKeys returns a new, valid secret-key spec.
func validKeys(t *testing.T) string {
	t.Helper()
	spec, err := store.GenerateSecretKey("test")
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	var lc net.ListenConfig
	l, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// awaitReady polls url until it answers 200.
func awaitReady(t *testing.T, ctx context.Context, url string, ran <-chan error) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-ran:
			t.Fatalf("the gateway stopped while starting: %v", err)
		case <-ctx.Done():
			t.Fatalf("not ready: %v", ctx.Err())
		case <-tick.C:
		}
	}
}

func call(t *testing.T, method, url, key string, body any) map[string]any {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(t.Context(), method, url, r)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s = %d %s", method, url, resp.StatusCode, strings.TrimSpace(string(raw)))
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return out
}

// TestSubscriptionsSharingAReceiverKeepTheirConnections checks that
// subscriptions whose webhooks go to one receiver (host and port) keep the
// connections their concurrent attempts opened: four subscriptions of 16
// lanes each have up to 64 attempts under way to the receiver, and a
// backlog of 2,000 records (8,000 deliveries) must not make the gateway
// close any of the connections it opened for them. An idle pool bounded
// below the concurrency closes a connection each time one more than its
// bound is returned, and the next burst of attempts dials again.
func TestSubscriptionsSharingAReceiverKeepTheirConnections(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	db := storetest.New(t)
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.NewTopic(t, 4)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	key, _, err := db.Store.CreateAPIKey(ctx, "t", "gateway test")
	if err != nil {
		t.Fatal(err)
	}

	const subs, lanes, records = 4, 16, 2000
	var (
		mu        sync.Mutex
		dialed    int // connections the receiver accepted
		closed    int // of them, closed before the last delivery
		finished  bool
		delivered = map[string]int{} // webhook-id → requests
	)
	done := make(chan struct{})
	recv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		delivered[r.Header.Get("webhook-id")+r.URL.Path]++
		if len(delivered) == subs*records && !finished {
			finished = true
			close(done)
		}
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	recv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case s == http.StateNew:
			dialed++
		case s == http.StateClosed && !finished:
			closed++
		}
	}
	recv.Start()
	defer recv.Close()

	for i := range subs {
		secret, err := webhook.GenerateSecret(rand.Reader, 32)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Store.CreateSubscription(ctx, key.TenantID, &outflowv1.Subscription{
			Id: fmt.Sprintf("sub_%d", i), Name: fmt.Sprintf("carts %d", i), FeatureViewNames: []string{"fv_cart"},
			State: outflowv1.Subscription_ACTIVE,
			Target: &outflowv1.Subscription_Webhook{Webhook: &outflowv1.WebhookTarget{
				Url: fmt.Sprintf("%s/hook/%d", recv.URL, i), Timeout: durationpb.New(10 * time.Second), MaxInFlight: lanes}},
			RetryPolicy: &outflowv1.RetryPolicy{MaxAttempts: 5, MaxAge: durationpb.New(time.Hour)},
		}, secret, 10); err != nil {
			t.Fatal(err)
		}
	}

	// The backlog is on the topic before the gateway starts, so that the
	// lanes fill at once.
	produceCarts(t, ctx, brokers, topic, records)

	gw, err := gateway.New(testConfig(t, db, brokers, topic, listen(t)))
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- gw.Run(ctx) }()
	defer gw.Stop()
	select {
	case <-done:
	case err := <-ran:
		t.Fatalf("the gateway stopped before delivering: %v", err)
	case <-ctx.Done():
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("%d of %d deliveries within the test's deadline", len(delivered), subs*records)
	}
	gw.Stop()
	if err := <-ran; err != nil {
		t.Errorf("Run after Stop = %v, want nil", err)
	}

	mu.Lock()
	defer mu.Unlock()
	// A few more than 64 may be dialed: an attempt that finds no idle
	// connection dials, and one returned meanwhile serves it instead; the
	// dialed one is kept for the next. None is closed while they are busy.
	if closed > 0 || dialed > 2*subs*lanes {
		t.Errorf("the gateway opened %d connections to the receiver for %d deliveries and closed %d of them before the last; "+
			"want none closed, and about one per attempt under way at once (%d)", dialed, len(delivered), closed, subs*lanes)
	}
	t.Logf("%d connections for %d deliveries, %d closed before the last", dialed, len(delivered), closed)
}

// TestAStopHandsOverWhatWasDelivered: a gateway stopped while a slow
// subscription is detached, with events of its reader in its lane, lets
// those deliveries finish within the source's drain and hands the
// subscription's cursor over past them. The next gateway of the group
// delivers every remaining event once, and none the first one delivered.
func TestAStopHandsOverWhatWasDelivered(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	db := storetest.New(t)
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.NewTopic(t, 2)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	key, _, err := db.Store.CreateAPIKey(ctx, "t", "gateway test")
	if err != nil {
		t.Fatal(err)
	}

	const records = 600
	var (
		mu        sync.Mutex
		delivered = map[string]int{} // the slow subscription's webhook-id → requests
	)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		time.Sleep(10 * time.Millisecond)
		mu.Lock()
		delivered[r.Header.Get("webhook-id")]++
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer slow.Close()
	fast := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer fast.Close()
	for _, s := range []struct {
		id, url  string
		inFlight int32
	}{{"sub_fast", fast.URL, 16}, {"sub_slow", slow.URL, 1}} {
		secret, err := webhook.GenerateSecret(rand.Reader, 32)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Store.CreateSubscription(ctx, key.TenantID, &outflowv1.Subscription{
			Id: s.id, Name: s.id, FeatureViewNames: []string{"fv_cart"}, State: outflowv1.Subscription_ACTIVE,
			Target: &outflowv1.Subscription_Webhook{Webhook: &outflowv1.WebhookTarget{
				Url: s.url + "/hook", Timeout: durationpb.New(10 * time.Second), MaxInFlight: s.inFlight}},
			RetryPolicy: &outflowv1.RetryPolicy{MaxAttempts: 5, MaxAge: durationpb.New(time.Hour)},
		}, secret, 10); err != nil {
			t.Fatal(err)
		}
	}
	produceCarts(t, ctx, brokers, topic, records)
	counts := func() (events, dups int) {
		mu.Lock()
		defer mu.Unlock()
		for _, n := range delivered {
			dups += n - 1
		}
		return len(delivered), dups
	}

	run := func(until func() bool, what string) {
		t.Helper()
		gw, err := gateway.New(testConfig(t, db, brokers, topic, listen(t)))
		if err != nil {
			t.Fatal(err)
		}
		ran := make(chan error, 1)
		go func() { ran <- gw.Run(ctx) }()
		defer gw.Stop()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for !until() {
			select {
			case err := <-ran:
				t.Fatalf("the gateway stopped before %s: %v", what, err)
			case <-ctx.Done():
				events, _ := counts()
				t.Fatalf("%d of %d events delivered to the slow receiver, waiting for %s", events, records, what)
			case <-tick.C:
			}
		}
		gw.Stop()
		if err := <-ran; err != nil {
			t.Errorf("Run after Stop = %v, want nil", err)
		}
	}

	detached := func() bool {
		cs, err := db.Store.Cursors(ctx)
		return err == nil && len(cs) > 0
	}
	run(func() bool { events, _ := counts(); return events >= 100 && detached() }, "the slow subscription detached")
	first, dups := counts()
	if dups != 0 {
		t.Fatalf("%d duplicates before the restart; want none", dups)
	}
	run(func() bool { events, _ := counts(); return events == records }, "every event")
	if _, dups := counts(); dups != 0 {
		t.Errorf("%d of the %d events the first gateway delivered were delivered again after a clean stop; want none", dups, first)
	}
	t.Logf("the first gateway delivered %d events to the slow receiver", first)
}

// produceCarts writes n fv_cart records, one user each, to topic.
func produceCarts(t *testing.T, ctx context.Context, brokers []string, topic string, n int) {
	t.Helper()
	transport := &kafkago.Transport{}
	defer transport.CloseIdleConnections()
	w := &kafkago.Writer{Addr: kafkago.TCP(brokers...), Topic: topic, RequiredAcks: kafkago.RequireAll,
		Transport: transport, Balancer: &kafkago.Hash{}, BatchSize: n}
	msgs := make([]kafkago.Message, n)
	for i := range msgs {
		user := fmt.Sprintf("u%d", i)
		msgs[i] = kafkago.Message{Key: []byte(user), Value: []byte(`{"version":"1","producer":"tecton","job_type":"stream",` +
			`"feature_view_name":"fv_cart","feature_view_id":"fv-cart","feature_timestamp":"` +
			time.Now().UTC().Format(time.RFC3339Nano) + `","entity_keys":{"user_id":"` + user + `"},` +
			`"feature_values":{"cart_count":"3"}}`)}
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}
