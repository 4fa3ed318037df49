package featureserver

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/outflow-dev/outflow/internal/testenv"
)

// TestConsumeSlowBroker: a broker whose every answer takes 300 ms longer
// than it should (a loaded machine: outflow dev runs initdb next to its
// in-process broker) must not turn idle fetches into "i/o timeout" warnings.
// With the reader's MaxWait at the broker's wait (250 ms), kafka-go gave an
// answer 62 ms: every fetch here timed out, and not one record arrived.
func TestConsumeSlowBroker(t *testing.T) {
	t.Parallel()
	const topic, delay = "slow", 300 * time.Millisecond
	brokers, answers := testenv.SlowKafka(t, topic, 2, delay)

	warns := &testenv.WarnLog{}
	srv, err := New(Config{Logger: slog.New(warns)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	consumeCtx, stop := context.WithCancel(ctx)
	consumed := make(chan error, 1)
	go func() { consumed <- srv.Consume(consumeCtx, brokers, []string{topic}, "slow-broker") }()

	transport := &kafkago.Transport{}
	w := &kafkago.Writer{Addr: kafkago.TCP(brokers...), Topic: topic, Balancer: &kafkago.Hash{},
		BatchTimeout: 10 * time.Millisecond, Transport: transport}
	const users = 4
	for i := range users {
		if err := w.WriteMessages(ctx, kafkago.Message{Key: fmt.Appendf(nil, "u%d", i),
			Value: []byte(cartRecordJSON(t, fmt.Sprint("u", i), time.Now().Add(-time.Minute)))}); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	transport.CloseIdleConnections()

	for srv.Stats().RecordsApplied < users {
		if ctx.Err() != nil {
			t.Fatalf("records not applied in time: %+v; warnings %q", srv.Stats(), warns.Records())
		}
		time.Sleep(20 * time.Millisecond) // polling the consumer's progress
	}
	// Then idle fetches: each partition's reader asks again and again while
	// nothing arrives; wait for a good dozen of them to be answered.
	for base := answers.Load(); answers.Load() < base+12; {
		if ctx.Err() != nil {
			t.Fatalf("the broker answered %d times while idle, want 12", answers.Load()-base)
		}
		time.Sleep(20 * time.Millisecond) // polling the broker's answers
	}
	stop()
	if err := <-consumed; err != nil {
		t.Errorf("Consume after cancel = %v, want nil", err)
	}
	for _, m := range warns.Records() {
		t.Errorf("warning from a healthy but slow broker: %s", m)
	}
}

// cartRecordJSON is an output-stream record of the cart view for user.
func cartRecordJSON(t *testing.T, user string, ts time.Time) string {
	t.Helper()
	return fmt.Sprintf(`{"version": "1", "producer": "tecton", "job_type": "stream", "feature_view_name": %q,
		"feature_timestamp": %q, "entity_keys": {"user_id": %q}, "feature_values": {"cart_count": "1", "cart_value": "1.5"}}`,
		cartView, ts.UTC().Format(time.RFC3339Nano), user)
}
