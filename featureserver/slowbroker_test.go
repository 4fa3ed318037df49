package featureserver

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

// slowConn delays every write (every broker response) by delay, as a busy
// machine or a distant broker does.
type slowConn struct {
	net.Conn
	delay  time.Duration
	writes *atomic.Int64
}

func (c slowConn) Write(p []byte) (int, error) {
	time.Sleep(c.delay) // the latency under test, not synchronisation
	c.writes.Add(1)
	return c.Conn.Write(p)
}

type slowListener struct {
	net.Listener
	delay  time.Duration
	writes *atomic.Int64
}

func (l slowListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return slowConn{Conn: c, delay: l.delay, writes: l.writes}, nil
}

// warnRecorder keeps the messages of records at WARN and above.
type warnRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *warnRecorder) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (r *warnRecorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Message)
	rec.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s", a); return true })
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, b.String())
	return nil
}
func (r *warnRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *warnRecorder) WithGroup(string) slog.Handler      { return r }

func (r *warnRecorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}

// TestConsumeSlowBroker: a broker whose every answer takes 300 ms longer
// than it should (a loaded machine: outflow dev runs initdb next to its
// in-process broker) must not turn idle fetches into "i/o timeout" warnings.
// With the reader's MaxWait at the broker's wait (250 ms), kafka-go gave an
// answer 62 ms, and every idle fetch here failed and reconnected.
func TestConsumeSlowBroker(t *testing.T) {
	t.Parallel()
	const topic, delay = "slow", 300 * time.Millisecond
	var writes atomic.Int64
	var lc net.ListenConfig
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, topic),
		kfake.ListenFn(func(network, addr string) (net.Listener, error) {
			l, err := lc.Listen(t.Context(), network, addr)
			if err != nil {
				return nil, err
			}
			return slowListener{Listener: l, delay: delay, writes: &writes}, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()

	warns := &warnRecorder{}
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
			t.Fatalf("records not applied in time: %+v; warnings %q", srv.Stats(), warns.all())
		}
		time.Sleep(20 * time.Millisecond) // polling the consumer's progress
	}
	// Then idle fetches: each partition's reader asks again and again while
	// nothing arrives; wait for a good dozen of them to be answered.
	for base := writes.Load(); writes.Load() < base+12; {
		if ctx.Err() != nil {
			t.Fatalf("the broker answered %d times while idle, want 12", writes.Load()-base)
		}
		time.Sleep(20 * time.Millisecond) // polling the broker's answers
	}
	stop()
	if err := <-consumed; err != nil {
		t.Errorf("Consume after cancel = %v, want nil", err)
	}
	for _, m := range warns.all() {
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
