package testenv

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

	"github.com/twmb/franz-go/pkg/kfake"
)

// SlowKafka starts an in-process Kafka-protocol broker (franz-go's kfake)
// with topic created, whose every answer is written delay late, as on a
// loaded machine or to a distant broker; the test's end stops it. answers
// counts the answers written, so a test can wait for idle fetches.
func SlowKafka(t testing.TB, topic string, partitions int, delay time.Duration) (brokers []string, answers *atomic.Int64) {
	t.Helper()
	answers = new(atomic.Int64)
	var lc net.ListenConfig
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(partitions), topic),
		kfake.ListenFn(func(network, addr string) (net.Listener, error) {
			l, err := lc.Listen(context.Background(), network, addr)
			if err != nil {
				return nil, err
			}
			return slowListener{Listener: l, delay: delay, answers: answers}, nil
		}))
	if err != nil {
		t.Fatalf("starting the slow Kafka broker: %v", err)
	}
	t.Cleanup(cluster.Close)
	return cluster.ListenAddrs(), answers
}

type slowListener struct {
	net.Listener
	delay   time.Duration
	answers *atomic.Int64
}

func (l slowListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return slowConn{Conn: c, delay: l.delay, answers: l.answers}, nil
}

// slowConn delays every write (every broker answer) by delay.
type slowConn struct {
	net.Conn
	delay   time.Duration
	answers *atomic.Int64
}

func (c slowConn) Write(p []byte) (int, error) {
	time.Sleep(c.delay) // the latency under test, not synchronisation
	c.answers.Add(1)
	return c.Conn.Write(p)
}

// WarnLog is a slog.Handler that keeps the records at WARN and above, with
// their attributes, for a test to assert there are none.
type WarnLog struct {
	mu   sync.Mutex
	msgs []string
}

// Enabled is true from slog.LevelWarn up.
func (w *WarnLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

// Handle keeps the record as "LEVEL message key=value ...".
func (w *WarnLog) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", rec.Level, rec.Message)
	rec.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s", a); return true })
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, b.String())
	return nil
}

// WithAttrs drops the attributes: the tests need the messages.
func (w *WarnLog) WithAttrs([]slog.Attr) slog.Handler { return w }

// WithGroup ignores the group.
func (w *WarnLog) WithGroup(string) slog.Handler { return w }

// Records returns what was kept so far.
func (w *WarnLog) Records() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.msgs...)
}
