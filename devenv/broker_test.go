package devenv

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/featureserver"
	"github.com/outflow-dev/outflow/filter"
	"github.com/outflow-dev/outflow/match"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/source"
	"github.com/outflow-dev/outflow/source/kafka"
	"github.com/outflow-dev/outflow/store"
	"github.com/outflow-dev/outflow/stream"
)

// TestDevBrokerServesKafkaGo proves that every Kafka client the gateway and
// `outflow dev` use works against the in-process broker: kafka-go's Writer
// (demo producer), its group Reader (feature server), the consumer group of
// package source/kafka with its commits, and the Client.Fetch/ListOffsets
// readers of package stream.
func TestDevBrokerServesKafkaGo(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b, err := startDevBroker(ctx, devBrokerConfig{Addr: "127.0.0.1:0", Topic: DemoTopic, Partitions: 3, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	brokers := []string{b.Addr()}

	const n = 30
	before := time.Now()
	if err := Produce(ctx, ProducerConfig{Brokers: brokers, Rate: 1000, Count: n, Seed: 1, Logger: logger}); err != nil {
		t.Fatal(err)
	}

	// The feature server's consumer group reader.
	fs, err := featureserver.New(featureserver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	fsCtx, fsStop := context.WithCancel(ctx)
	fsDone := make(chan error, 1)
	go func() { fsDone <- fs.Consume(fsCtx, brokers, []string{DemoTopic}, "fs") }()
	devWaitFor(t, ctx, "the feature server to apply every record", func() bool { return fs.Stats().RecordsApplied == n })
	fsStop()
	if err := <-fsDone; err != nil {
		t.Fatal(err)
	}

	// The gateway's consumer group, twice: the second run must start where
	// the first one committed.
	consume := func(want int) map[int32]int {
		src, err := kafka.New(kafka.Config{Brokers: brokers, Topics: []string{DemoTopic}, GroupID: "gw",
			CommitInterval: 50 * time.Millisecond, Logger: logger})
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		got := map[int32]int{}
		total := 0
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- src.Run(runCtx, func(_ context.Context, m *source.Message) {
				mu.Lock()
				got[m.Position.Partition]++
				total++
				mu.Unlock()
				m.Done()
			})
		}()
		devWaitFor(t, ctx, "the consumer group to join", src.Joined)
		devWaitFor(t, ctx, "the consumer group to read the records", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return total >= want
		})
		stop()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if total != want {
			t.Errorf("the consumer group read %d records, want %d", total, want)
		}
		return got
	}
	if got := consume(n); len(got) != 3 {
		t.Errorf("records came from partitions %v, want all 3", got)
	}
	if err := Produce(ctx, ProducerConfig{Brokers: brokers, Rate: 1000, Count: 5, Seed: 2, Logger: logger}); err != nil {
		t.Fatal(err)
	}
	consume(5) // only the new ones: the offsets were committed

	// A stream reading everything retained (a non-nil empty From), then the
	// live tail.
	tokens, err := stream.NewTokens(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	filters, err := filter.NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	sub := match.Compile(filters, &store.Subscription{Proto: &outflowv1.Subscription{
		Id: "sub_test", FeatureViewNames: []string{DemoFeatureView}, State: outflowv1.Subscription_ACTIVE}})
	klog, err := kafka.NewLog(kafka.Config{Brokers: brokers})
	if err != nil {
		t.Fatal(err)
	}
	st, err := stream.Open(ctx, stream.Config{Source: klog, Topics: []string{DemoTopic}, Tokens: tokens,
		Envelope: func(string, source.Position, []byte, *outflowv1.FeatureVector) ([]byte, error) {
			return []byte("{}"), nil
		},
		Logger: logger}, stream.Request{Subscription: sub, From: stream.Position{}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i := range n + 5 {
		if _, err := st.Next(ctx); err != nil {
			t.Fatalf("stream event %d: %v", i, err)
		}
	}
	if err := Produce(ctx, ProducerConfig{Brokers: brokers, Rate: 1000, Count: 1, Logger: logger}); err != nil {
		t.Fatal(err)
	}
	ev, err := st.Next(ctx)
	if err != nil {
		t.Fatalf("live stream event: %v", err)
	}
	if ev.Record.FeatureViewName != DemoFeatureView {
		t.Errorf("stream event of %q", ev.Record.FeatureViewName)
	}

	// ListOffsets by timestamp (replays): every record lies in
	// [before, now), none after now.
	cfg := stream.Config{Source: klog, Topics: []string{DemoTopic}}
	count := func(from, to time.Time) int64 {
		ranges, err := stream.Ranges(ctx, cfg, from, to)
		if err != nil {
			t.Fatal(err)
		}
		var total int64
		for _, r := range ranges {
			total += r.End - r.Start
		}
		return total
	}
	after := time.Now().Add(time.Second)
	if got := count(before, after); got != n+6 {
		t.Errorf("records in [before, after) by ListOffsets: %d, want %d", got, n+6)
	}
	if got := count(after, after.Add(time.Hour)); got != 0 {
		t.Errorf("records after the last one by ListOffsets: %d, want 0", got)
	}
}

// devWaitFor polls cond until it holds or ctx ends.
func devWaitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, errors.Unwrap(context.Cause(ctx)))
		case <-tick.C:
		}
	}
}
