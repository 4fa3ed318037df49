package featureserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/outflow-dev/outflow/internal/testenv"
)

// TestConsume produces output-stream records to a real Kafka topic and polls GetFeatures until
// the server has read and materialised every one of them; poison records and records of
// other feature views are counted and skipped without stopping the consumer.
func TestConsume(t *testing.T) {
	t.Parallel()
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.NewTopic(t, 3)

	srv, err := New(Config{Lag: 50 * time.Millisecond, LagJitter: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	client := newClient(t, ts.URL, "unused")

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	consumed := make(chan error, 1)
	go func() { consumed <- srv.Consume(ctx, brokers, []string{topic}, "featureserver-test-"+topic) }()

	const users = 6
	stamp := time.Now().UTC().Add(-time.Minute).Truncate(time.Microsecond)
	var msgs []kafkago.Message
	for i := range users {
		user := fmt.Sprint("u", i)
		value, err := json.Marshal(map[string]any{
			"version": "1", "producer": "tecton", "job_type": "stream",
			"feature_view_name": cartView,
			"feature_timestamp": stamp.Add(time.Duration(i) * time.Millisecond).Format(time.RFC3339Nano),
			"entity_keys":       map[string]string{"user_id": user},
			"feature_values":    map[string]string{"cart_count": fmt.Sprint(i + 1), "cart_value": "1.5"},
		})
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, kafkago.Message{Key: []byte(user), Value: value})
	}
	msgs = append(msgs,
		kafkago.Message{Key: []byte("u0"), Value: []byte(`{"version": "1", "feature_view_name": `)}, // poison: cut short
		kafkago.Message{Key: []byte("u1"), Value: []byte(`{"version": "1", "feature_view_name": "other_view",
			"feature_timestamp": "2026-01-01T00:00:00Z", "entity_keys": {"user_id": "u1"}}`)},
	)
	// The writer gets its own Transport, so that its pooled connections can be closed:
	// kafka-go's DefaultTransport would keep them (and goleak would see them) forever.
	transport := &kafkago.Transport{}
	w := &kafkago.Writer{
		Addr:         kafkago.TCP(brokers...),
		Topic:        topic,
		Balancer:     &kafkago.Hash{},
		RequiredAcks: kafkago.RequireAll,
		BatchTimeout: 10 * time.Millisecond,
		Transport:    transport,
	}
	err = w.WriteMessages(ctx, msgs...)
	w.Close()
	transport.CloseIdleConnections()
	if err != nil {
		t.Fatalf("producing: %v", err)
	}

	// Poll, with a deadline, until every user's vector reflects its record.
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; i < users; {
		v, err := client.GetFeatures(ctx, promoRequest(fmt.Sprint("u", i)))
		if err != nil {
			t.Fatal(err)
		}
		want := stamp.Add(time.Duration(i) * time.Millisecond)
		if ok, _ := v.Consistent(cartView, want); ok {
			if got := string(mustFeature(t, v, cartCount).Value); got != fmt.Sprintf("%q", fmt.Sprint(i+1)) {
				t.Errorf("u%d: cart_count = %s, want \"%d\"", i, got, i+1)
			}
			i++
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("u%d not materialised within the deadline; stats %+v", i, srv.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for srv.Stats().RecordsPoison != 1 || srv.Stats().RecordsIgnored != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v, want 1 poison and 1 ignored record", srv.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := srv.Stats(); got.RecordsApplied != users {
		t.Errorf("stats %+v, want %d applied", got, users)
	}

	cancel()
	if err := <-consumed; err != nil {
		t.Errorf("Consume after cancel = %v, want nil", err)
	}
}

func TestConsumeValidates(t *testing.T) {
	t.Parallel()
	srv, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		brokers, topics []string
		group           string
	}{
		{nil, []string{"t"}, "g"},
		{[]string{"127.0.0.1:1"}, nil, "g"},
		{[]string{"127.0.0.1:1"}, []string{"t"}, ""},
	} {
		if err := srv.Consume(t.Context(), tt.brokers, tt.topics, tt.group); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("Consume(%v, %v, %q) = %v, want ErrInvalidConfig", tt.brokers, tt.topics, tt.group, err)
		}
	}
}
