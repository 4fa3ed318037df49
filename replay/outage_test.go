package replay

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outflow-dev/outflow/match"
	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/source"
	"github.com/outflow-dev/outflow/store"
	"github.com/outflow-dev/outflow/stream"
)

func TestClaimBackoff(t *testing.T) {
	for _, tc := range []struct {
		poll     time.Duration
		failures int
		want     time.Duration
	}{
		{time.Second, 0, time.Second},
		{time.Second, 1, time.Second},
		{time.Second, 2, 2 * time.Second},
		{time.Second, 5, 16 * time.Second},
		{time.Second, 6, maxClaimBackoff},
		{time.Second, 1000, maxClaimBackoff},
		{time.Minute, 1, time.Minute}, // a poll above the cap is kept
		{time.Minute, 3, time.Minute},
	} {
		if got := claimBackoff(tc.poll, tc.failures); got != tc.want {
			t.Errorf("claimBackoff(%s, %d) = %s, want %s", tc.poll, tc.failures, got, tc.want)
		}
	}
}

// lines counts the records a logger received, by message.
type lines struct {
	mu sync.Mutex
	n  map[string]int
}

func (l *lines) Enabled(context.Context, slog.Level) bool { return true }
func (l *lines) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n[r.Message]++
	return nil
}
func (l *lines) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *lines) WithGroup(string) slog.Handler      { return l }

// TestUnreachableDatabaseLogsBoundedLines: while the database refuses
// connections, the worker's claims back off and it logs a line per
// doubling of the wait, not one per poll (it was one a second: 20 lines in
// a 20 s outage, each with the same error).
func TestUnreachableDatabaseLogsBoundedLines(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: every connection is refused
	cfg, err := pgxpool.ParseConfig("postgres://outflow@" + addr + "/none?sslmode=disable&connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	h := &lines{n: map[string]int{}}
	const poll = time.Millisecond
	w, err := New(Config{
		Store: store.New(pool), Subscriptions: noSubs{}, Deliverer: noDeliverer{},
		Source: stream.Config{Topics: []string{"t"}, Source: nilLog{}},
		Poll:   poll, Logger: slog.New(h),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_ = w.Run(ctx)
	elapsed := time.Since(start)
	h.mu.Lock()
	defer h.mu.Unlock()
	got := h.n["replay: claiming a replay failed; retrying"]
	// Claims at 0, 1, 3, 7, 15 ... ms: about log2(elapsed/poll)+1 of them,
	// each logged; one per poll would be ~500.
	limit := 2
	for d := poll; d < elapsed; d *= 2 {
		limit++
	}
	if got < 2 || got > limit {
		t.Errorf("%d failure lines in %s of outage at a %s poll; want 2..%d", got, elapsed.Round(time.Millisecond), poll, limit)
	}
	for msg := range h.n {
		if !strings.HasPrefix(msg, "replay: claiming a replay failed") {
			t.Errorf("unexpected log line %q", msg)
		}
	}
}

// nilLog is a source.Log no test here reads.
type nilLog struct{ source.Log }

type noSubs struct{}

func (noSubs) Get(string) *match.Subscription { return nil }

type noDeliverer struct{}

func (noDeliverer) Replay(*source.Message, *record.Record, *match.Subscription) {}
