package kafka

import (
	"log/slog"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/internal/testenv"
	"github.com/outflow-dev/outflow/source"
)

// TestRunSlowBroker: a broker whose every answer comes 300 ms late (a
// loaded machine: outflow dev runs initdb next to its in-process broker)
// must not turn the partition readers' idle fetches into "i/o timeout"
// warnings. With MaxWait at the broker's wait (500 ms), kafka-go gave an
// answer 125 ms: every fetch here timed out, and not one record arrived.
func TestRunSlowBroker(t *testing.T) {
	t.Parallel()
	const topic, partitions, n, delay = "slow", 2, 5, 300 * time.Millisecond
	brokers, answers := testenv.SlowKafka(t, topic, partitions, delay)
	for p := range partitions {
		produce(t, brokers, topic, p, 0, n)
	}

	warns := &testenv.WarnLog{}
	cfg := testConfig(t, brokers, topic, newGroup())
	cfg.Logger = slog.New(warns)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder(func(m *source.Message) { m.Done() })
	r := start(t, s, rec.handle)
	waitUntil(t, waitTimeout, "every record", func() bool { return rec.count(-1) >= partitions*n })
	// Then idle fetches: each partition reader asks again and again while
	// nothing arrives; wait for a good dozen answers.
	base := answers.Load()
	waitUntil(t, waitTimeout, "a dozen answers while idle", func() bool { return answers.Load() >= base+12 })
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil after cancel", err)
	}
	for _, m := range warns.Records() {
		t.Errorf("warning from a healthy but slow broker: %s", m)
	}
}
