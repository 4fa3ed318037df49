package kafka

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/outflow-dev/outflow/internal/testenv"
	"github.com/outflow-dev/outflow/source"
)

// waitTimeout bounds every wait on the broker in these tests: generous for a
// loaded 2-core CI machine running the suite in parallel under -race.
const waitTimeout = 60 * time.Second

// testConfig returns a Config for topic and a fresh group with timings that
// keep the tests fast: quick commits and heartbeats (so rebalances are
// noticed within a fraction of a second), short drains.
func testConfig(t *testing.T, brokers []string, topic, group string) Config {
	t.Helper()
	return Config{
		Brokers:               brokers,
		Topics:                []string{topic},
		GroupID:               group,
		CommitInterval:        100 * time.Millisecond,
		HeartbeatInterval:     300 * time.Millisecond,
		SessionTimeout:        10 * time.Second, // the broker's minimum is 6 s
		RebalanceTimeout:      10 * time.Second,
		DrainTimeout:          2 * time.Second,
		RebalanceDrainTimeout: time.Second,
		Logger:                slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
}

// newGroup returns a consumer group id unique to the test.
func newGroup() string { return "test-group-" + strings.ToLower(rand.Text()) }

// produce appends n records to one partition, returning once the broker
// acknowledged them. Values are "<partition>/<index>", index counting from
// first, and each carries a header "n" with the same text (and "traceparent":
// the headers a producer's tracing adds). A topic just created may still answer NotLeaderForPartition for a
// moment, so temporary errors are retried until waitTimeout.
func produce(t *testing.T, brokers []string, topic string, partition, first, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	msgs := make([]kafkago.Message, n)
	for i := range msgs {
		msgs[i] = kafkago.Message{
			Key:   fmt.Appendf(nil, "k%d", first+i),
			Value: fmt.Appendf(nil, "%d/%d", partition, first+i),
			Headers: []kafkago.Header{
				{Key: "n", Value: fmt.Appendf(nil, "%d/%d", partition, first+i)},
				{Key: "traceparent", Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")},
			},
		}
	}
	for {
		err := produceOnce(ctx, brokers[0], topic, partition, msgs)
		if err == nil {
			return
		}
		var kerr kafkago.Error
		if !errors.As(err, &kerr) || !kerr.Temporary() || ctx.Err() != nil {
			t.Fatalf("produce to %s/%d: %v", topic, partition, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// produceOnce writes msgs to the partition's leader in one request.
func produceOnce(ctx context.Context, broker, topic string, partition int, msgs []kafkago.Message) error {
	conn, err := kafkago.DialLeader(ctx, "tcp", broker, topic, partition)
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		return err
	}
	_, err = conn.WriteMessages(msgs...)
	return err
}

// committed reads the group's committed offsets of topic's partitions
// 0..partitions-1 (-1: none), failing the test on error.
func committed(t *testing.T, brokers []string, group, topic string, partitions int) map[int]int64 {
	t.Helper()
	c, err := fetchCommitted(t.Context(), brokers, group, topic, partitions)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fetchCommitted is committed for goroutines other than the test's.
func fetchCommitted(ctx context.Context, brokers []string, group, topic string, partitions int) (map[int]int64, error) {
	transport := &kafkago.Transport{}
	defer transport.CloseIdleConnections()
	client := &kafkago.Client{Addr: kafkago.TCP(brokers...), Transport: transport, Timeout: waitTimeout}
	ids := make([]int, partitions)
	for i := range ids {
		ids[i] = i
	}
	resp, err := client.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: ids}})
	if err != nil {
		return nil, fmt.Errorf("offset fetch: %w", err)
	}
	if resp.Error != nil {
		return nil, fmt.Errorf("offset fetch: %w", resp.Error)
	}
	out := make(map[int]int64)
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("offset fetch of partition %d: %w", p.Partition, p.Error)
		}
		out[p.Partition] = p.CommittedOffset
	}
	return out, nil
}

// running is a Source whose Run runs in the background.
type running struct {
	*Source
	cancel context.CancelFunc
	result chan error
	once   sync.Once
	err    error
}

// start runs s with h until stop (or the end of the test).
func start(t *testing.T, s *Source, h source.Handler) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Source: s, cancel: cancel, result: make(chan error, 1)}
	go func() { r.result <- s.Run(ctx, h) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run and returns its result, failing the test if Run does not
// return in time. It may be called more than once.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.result:
		case <-time.After(waitTimeout):
			t.Fatal("Run did not return after its context was cancelled")
		}
	})
	return r.err
}

// recorder is a handler that keeps every message it receives.
type recorder struct {
	mu   sync.Mutex
	msgs map[int][]*source.Message // by partition, in arrival order
	// onMessage, if set, runs after the message is recorded.
	onMessage func(*source.Message)
}

func newRecorder(onMessage func(*source.Message)) *recorder {
	return &recorder{msgs: make(map[int][]*source.Message), onMessage: onMessage}
}

func (r *recorder) handle(_ context.Context, m *source.Message) {
	r.mu.Lock()
	r.msgs[int(m.Position.Partition)] = append(r.msgs[int(m.Position.Partition)], m)
	r.mu.Unlock()
	if r.onMessage != nil {
		r.onMessage(m)
	}
}

// count returns how many messages arrived, in all or one partition (p >= 0).
func (r *recorder) count(p int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p >= 0 {
		return len(r.msgs[p])
	}
	n := 0
	for _, ms := range r.msgs {
		n += len(ms)
	}
	return n
}

// offsets returns the offsets that arrived on partition p, in arrival order.
func (r *recorder) offsets(p int) []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int64
	for _, m := range r.msgs[p] {
		out = append(out, m.Position.Offset)
	}
	return out
}

// seq returns [from, to).
func seq(from, to int64) []int64 {
	var out []int64
	for o := from; o < to; o++ {
		out = append(out, o)
	}
	return out
}

func TestRunDeliversEveryMessageOnceInPartitionOrder(t *testing.T) {
	t.Parallel()
	brokers := testenv.KafkaBrokers(t)
	const partitions, before, after = 3, 40, 20
	topic := testenv.NewTopic(t, partitions)
	for p := range partitions {
		produce(t, brokers, topic, p, 0, before)
	}
	group := newGroup()
	s, err := New(testConfig(t, brokers, topic, group))
	if err != nil {
		t.Fatal(err)
	}
	if s.Joined() {
		t.Fatal("Joined() before Run")
	}
	began := time.Now()
	rec := newRecorder(func(m *source.Message) { go m.Done() }) // Done from another goroutine
	r := start(t, s, rec.handle)

	waitUntil(t, waitTimeout, "the first records", func() bool { return rec.count(-1) >= partitions*before })
	if !s.Joined() {
		t.Fatal("Joined() = false while consuming")
	}
	// Records appended while the source runs arrive too.
	for p := range partitions {
		produce(t, brokers, topic, p, before, after)
	}
	const total = before + after
	waitUntil(t, waitTimeout, "every record", func() bool { return rec.count(-1) >= partitions*total })
	waitUntil(t, waitTimeout, "the lag to reach zero", func() bool {
		lag := s.Lag()[topic]
		return len(lag) == partitions && lag[0] == 0 && lag[1] == 0 && lag[2] == 0
	})
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil after cancel", err)
	}
	if s.Joined() {
		t.Fatal("Joined() = true after Run returned")
	}
	if lag := s.Lag(); len(lag) != 0 {
		t.Fatalf("Lag() after Run = %v, want empty", lag)
	}

	for p := range partitions {
		if got, want := rec.offsets(p), seq(0, total); !slices.Equal(got, want) {
			t.Errorf("partition %d: offsets %v, want each of %v once, in order", p, got, want)
		}
		for i, m := range rec.msgs[p] {
			wantPos := source.Position{Kind: "kafka", Topic: topic, Partition: int32(p), Offset: int64(i)}
			if m.Position != wantPos {
				t.Errorf("partition %d message %d: position %+v, want %+v", p, i, m.Position, wantPos)
			}
			if got, want := string(m.Value), fmt.Sprintf("%d/%d", p, i); got != want {
				t.Errorf("partition %d message %d: value %q, want %q", p, i, got, want)
			}
			if got, want := string(m.Key), fmt.Sprintf("k%d", i); got != want {
				t.Errorf("partition %d message %d: key %q, want %q", p, i, got, want)
			}
			// Headers arrive in order, values intact after the fetch buffer
			// was released (the dispatcher reads a trace context from them).
			wantHeaders := []source.Header{{Key: "n", Value: fmt.Appendf(nil, "%d/%d", p, i)},
				{Key: "traceparent", Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")}}
			if !reflect.DeepEqual(m.Headers, wantHeaders) {
				t.Errorf("partition %d message %d: headers %q, want %q", p, i, m.Headers, wantHeaders)
			}
			if m.AppendTime.Before(began.Add(-time.Minute)) || m.AppendTime.After(time.Now().Add(time.Minute)) {
				t.Errorf("partition %d message %d: append time %s not near now", p, i, m.AppendTime)
			}
		}
	}
	want := map[int]int64{0: total, 1: total, 2: total}
	if got := committed(t, brokers, group, topic, partitions); !maps.Equal(got, want) {
		t.Fatalf("committed offsets %v, want the end offsets %v", got, want)
	}
}

// TestRunCommitsOnlyPastDoneMessages completes messages out of order and
// never completes offset 5 of partition 0: the commit of partition 0 must
// stop exactly there, and a new member of the group must re-read from 5.
func TestRunCommitsOnlyPastDoneMessages(t *testing.T) {
	t.Parallel()
	brokers := testenv.KafkaBrokers(t)
	const partitions, n = 3, 10
	topic := testenv.NewTopic(t, partitions)
	for p := range partitions {
		produce(t, brokers, topic, p, 0, n)
	}
	group := newGroup()
	cfg := testConfig(t, brokers, topic, group)
	cfg.DrainTimeout = 300 * time.Millisecond // offset 5 never completes
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}

	// Complete each partition's messages in reverse order once all ten
	// arrived, skipping partition 0's offset 5.
	var mu sync.Mutex
	pending := make(map[int][]*source.Message)
	completed := 0
	rec := newRecorder(func(m *source.Message) {
		mu.Lock()
		defer mu.Unlock()
		p := int(m.Position.Partition)
		pending[p] = append(pending[p], m)
		if len(pending[p]) < n {
			return
		}
		for _, m := range slices.Backward(pending[p]) {
			if p == 0 && m.Position.Offset == 5 {
				continue
			}
			m.Done()
			completed++
		}
	})
	r := start(t, s, rec.handle)
	waitUntil(t, waitTimeout, "all but one message to be done", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return completed == partitions*n-1
	})
	waitUntil(t, waitTimeout, "the periodic commit", func() bool {
		c := committed(t, brokers, group, topic, partitions)
		return c[0] == 5 && c[1] == n && c[2] == n
	})
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	want := map[int]int64{0: 5, 1: n, 2: n}
	if got := committed(t, brokers, group, topic, partitions); !maps.Equal(got, want) {
		t.Fatalf("committed after shutdown %v, want %v", got, want)
	}

	// A new member re-reads partition 0 from 5 (at-least-once) and nothing
	// before; partitions 1 and 2 resume after their last record, so the
	// first thing it sees there is a record appended now.
	s2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec2 := newRecorder(func(m *source.Message) { m.Done() })
	r2 := start(t, s2, rec2.handle)
	produce(t, brokers, topic, 1, n, 1)
	produce(t, brokers, topic, 2, n, 1)
	waitUntil(t, waitTimeout, "the redelivery and the new records", func() bool {
		return rec2.count(0) >= 5 && rec2.count(1) >= 1 && rec2.count(2) >= 1
	})
	if err := r2.stop(t); err != nil {
		t.Fatalf("second Run = %v", err)
	}
	if got, want := rec2.offsets(0), seq(5, n); !slices.Equal(got, want) {
		t.Errorf("restart read partition 0 offsets %v, want %v", got, want)
	}
	for _, p := range []int{1, 2} {
		if got, want := rec2.offsets(p), []int64{n}; !slices.Equal(got, want) {
			t.Errorf("restart read partition %d offsets %v, want only the new record %v", p, got, want)
		}
	}
}

// TestLagOfANewGroupBeforeItsFirstCommit checks that a group that never
// committed shows its backlog in Lag from the join on: the lag gauge is
// read from where the generation started, not absent until the first
// commit (here never: the commit interval outlasts the test).
func TestLagOfANewGroupBeforeItsFirstCommit(t *testing.T) {
	t.Parallel()
	brokers := testenv.KafkaBrokers(t)
	const partitions, n = 2, 30
	topic := testenv.NewTopic(t, partitions)
	produce(t, brokers, topic, 0, 0, n)
	cfg := testConfig(t, brokers, topic, newGroup())
	cfg.CommitInterval = time.Hour
	cfg.DrainTimeout = -1 // nothing will ever be done, nor committed
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder(nil) // never calls Done
	r := start(t, s, rec.handle)
	waitUntil(t, waitTimeout, "the join", s.Joined)
	lag := s.Lag()[topic]
	if want := map[int]int64{0: n, 1: 0}; !maps.Equal(lag, want) {
		t.Errorf("Lag() right after the join = %v, want %v: the backlog from the start, before any commit", lag, want)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if got := committed(t, brokers, cfg.GroupID, topic, partitions); len(got) != 0 && !maps.Equal(got, map[int]int64{0: 0, 1: 0}) {
		t.Errorf("committed %v; nothing was done, so at most the start offsets", got)
	}
}

// TestRunPausesAtTheInFlightBound never completes a message: the source
// must hand out exactly MaxInFlightPerPartition per partition, then park the
// partition (once, not in a polling loop) while records keep waiting.
func TestRunPausesAtTheInFlightBound(t *testing.T) {
	t.Parallel()
	brokers := testenv.KafkaBrokers(t)
	const partitions, n, bound = 3, 50, 10
	topic := testenv.NewTopic(t, partitions)
	for p := range partitions {
		produce(t, brokers, topic, p, 0, n)
	}
	cfg := testConfig(t, brokers, topic, newGroup())
	cfg.MaxInFlightPerPartition = bound
	cfg.DrainTimeout = -1 // nothing will ever be done
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder(nil) // never calls Done
	r := start(t, s, rec.handle)

	waitUntil(t, waitTimeout, "the bound to be reached on every partition", func() bool {
		return rec.count(0) == bound && rec.count(1) == bound && rec.count(2) == bound
	})
	// Let time pass by events, not sleeps: the lag gauge shows the whole
	// backlog once the high watermarks were polled, and several commit
	// intervals have gone by once the poll has run again.
	waitUntil(t, waitTimeout, "the lag to show the backlog", func() bool {
		lag := s.Lag()[topic]
		return len(lag) == partitions && lag[0] == n && lag[1] == n && lag[2] == n
	})
	polls := s.hwmPolls.Load()
	waitUntil(t, waitTimeout, "five more high-watermark polls", func() bool { return s.hwmPolls.Load() >= polls+5 })
	for p := range partitions {
		if got := rec.count(p); got != bound {
			t.Errorf("partition %d: %d messages handed out, want the bound %d", p, got, bound)
		}
	}
	s.mu.Lock()
	owned := slices.Clone(s.owned)
	s.mu.Unlock()
	for _, p := range owned {
		inFlight, parks := p.tracker.stats()
		if inFlight != bound || parks != 1 {
			t.Errorf("%s: %d in flight, parked %d times; want %d in flight, parked once (no polling)", p, inFlight, parks, bound)
		}
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	want := map[int]int64{0: 0, 1: 0, 2: 0}
	if got := committed(t, brokers, cfg.GroupID, topic, partitions); !maps.Equal(got, want) {
		t.Fatalf("committed %v, want %v: nothing was done", got, want)
	}
}

// TestRunRebalanceKeepsAtLeastOnce runs two members of one group: the
// second joins while the first consumes, with messages in flight (some of
// which the first member never completes). Every record must be handled by
// at least one member, a committed offset must never pass a message no
// member has completed, and after both stop the group resumes exactly at
// the end of the partitions.
func TestRunRebalanceKeepsAtLeastOnce(t *testing.T) {
	t.Parallel()
	brokers := testenv.KafkaBrokers(t)
	const partitions, batch = 4, 100
	topic := testenv.NewTopic(t, partitions)
	group := newGroup()
	cfg := testConfig(t, brokers, topic, group)

	// done[p][offset] is set, before Message.Done is called, by whichever
	// member completes the message.
	var mu sync.Mutex
	done := make(map[int]map[int64]bool)
	handledBy := make(map[string]map[int]map[int64]bool)
	for p := range partitions {
		done[p] = make(map[int64]bool)
	}
	firstNotDone := func(p int) int64 {
		o := int64(0)
		for done[p][o] {
			o++
		}
		return o
	}
	handler := func(member string, stuck func(p int, o int64) bool) source.Handler {
		mu.Lock()
		handledBy[member] = make(map[int]map[int64]bool)
		mu.Unlock()
		return func(_ context.Context, m *source.Message) {
			p, o := int(m.Position.Partition), m.Position.Offset
			mu.Lock()
			if handledBy[member][p] == nil {
				handledBy[member][p] = make(map[int64]bool)
			}
			handledBy[member][p][o] = true
			never := stuck(p, o)
			mu.Unlock()
			if never {
				return
			}
			// Complete on another goroutine after simulated work of up to
			// 20ms, so that messages are in flight when the rebalance hits
			// and complete out of order.
			time.AfterFunc(time.Duration(o%7)*3*time.Millisecond, func() {
				mu.Lock()
				done[p][o] = true
				mu.Unlock()
				m.Done()
			})
		}
	}
	// Until b has joined, member a never completes the first delivery of
	// every 40th record: its commit stalls there until the record is
	// redelivered after the rebalance.
	var rebalanced atomic.Bool
	seenByA := make(map[[2]int64]bool)
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ra := start(t, a, handler("a", func(p int, o int64) bool {
		k := [2]int64{int64(p), o}
		first := !seenByA[k]
		seenByA[k] = true
		return first && o%40 == 39 && !rebalanced.Load()
	}))

	// A checker samples the committed offsets and, after each sample, what
	// has been completed: a commit may only be computed from completions
	// that happened before it, so a later snapshot can only be larger.
	checkCtx, stopCheck := context.WithCancel(t.Context())
	var violations []string
	var checker sync.WaitGroup
	checker.Go(func() {
		for checkCtx.Err() == nil {
			c, err := fetchCommitted(checkCtx, brokers, group, topic, partitions)
			if err != nil {
				continue // cancelled at the end, or a transient error
			}
			mu.Lock()
			for p, off := range c {
				if limit := firstNotDone(p); off > limit {
					violations = append(violations, fmt.Sprintf("partition %d committed at %d, but offset %d was never done", p, off, limit))
				}
			}
			mu.Unlock()
			select {
			case <-checkCtx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	})

	for p := range partitions {
		produce(t, brokers, topic, p, 0, batch)
	}
	waitUntil(t, waitTimeout, "member a to consume", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, offs := range handledBy["a"] {
			n += len(offs)
		}
		return n >= partitions*batch/2
	})
	rb := start(t, b, handler("b", func(int, int64) bool { return false }))
	waitUntil(t, waitTimeout, "member b to join", b.Joined)
	rebalanced.Store(true) // a's first generation is over: it rejoined for b to join
	for p := range partitions {
		produce(t, brokers, topic, p, batch, batch)
	}
	const total = 2 * batch
	waitUntil(t, waitTimeout, "every record to be done by some member", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for p := range partitions {
			if firstNotDone(p) < total {
				return false
			}
		}
		return true
	})
	if err := ra.stop(t); err != nil {
		t.Fatalf("member a: Run = %v", err)
	}
	if err := rb.stop(t); err != nil {
		t.Fatalf("member b: Run = %v", err)
	}
	stopCheck()
	checker.Wait()
	for _, v := range violations {
		t.Error(v)
	}

	mu.Lock()
	for p := range partitions {
		if len(handledBy["a"][p]) == 0 && len(handledBy["b"][p]) == 0 {
			t.Errorf("partition %d handled by no member", p)
		}
	}
	if len(handledBy["b"]) == 0 {
		t.Error("member b never received a partition: no rebalance happened")
	}
	mu.Unlock()

	// Restart the group: it must resume exactly at the end of every
	// partition, the first record it sees being one appended now.
	want := map[int]int64{}
	for p := range partitions {
		want[p] = total
	}
	if got := committed(t, brokers, group, topic, partitions); !maps.Equal(got, want) {
		t.Errorf("committed after both stopped %v, want %v", got, want)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder(func(m *source.Message) { m.Done() })
	rc := start(t, c, rec.handle)
	for p := range partitions {
		produce(t, brokers, topic, p, total, 1)
	}
	waitUntil(t, waitTimeout, "the restarted group to read", func() bool {
		for p := range partitions {
			if rec.count(p) < 1 {
				return false
			}
		}
		return true
	})
	if err := rc.stop(t); err != nil {
		t.Fatalf("restart: Run = %v", err)
	}
	for p := range partitions {
		if got := rec.offsets(p); got[0] != total {
			t.Errorf("restart read partition %d from %d, want %d (nothing skipped, nothing re-read)", p, got[0], total)
		}
	}
}

// TestRunStartLatest checks a new group with StartLatest skips the backlog
// but commits its starting point at once, so records appended while it is
// down are not skipped after a restart.
func TestRunStartLatest(t *testing.T) {
	t.Parallel()
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.NewTopic(t, 1)
	produce(t, brokers, topic, 0, 0, 5)
	cfg := testConfig(t, brokers, topic, newGroup())
	cfg.StartOffset = StartLatest

	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, s, newRecorder(func(m *source.Message) { m.Done() }).handle)
	waitUntil(t, waitTimeout, "the start to be committed", func() bool {
		return committed(t, brokers, cfg.GroupID, topic, 1)[0] == 5
	})
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	produce(t, brokers, topic, 0, 5, 3) // while no member runs

	s2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder(func(m *source.Message) { m.Done() })
	r2 := start(t, s2, rec.handle)
	waitUntil(t, waitTimeout, "the records appended while down", func() bool { return rec.count(0) >= 3 })
	if err := r2.stop(t); err != nil {
		t.Fatalf("second Run = %v", err)
	}
	if got, want := rec.offsets(0), seq(5, 8); !slices.Equal(got, want) {
		t.Fatalf("offsets %v, want %v", got, want)
	}
}

// TestRunWaitsForMissingTopics checks a topic that does not exist keeps the
// Source unready (not crashing, not consuming) until it is stopped, and that
// a second concurrent Run is refused.
func TestRunWaitsForMissingTopics(t *testing.T) {
	t.Parallel()
	brokers := testenv.KafkaBrokers(t)
	cfg := testConfig(t, brokers, "missing-"+strings.ToLower(rand.Text()), newGroup())
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, s, newRecorder(nil).handle)
	waitUntil(t, waitTimeout, "Run to start", s.running.Load)
	if err := s.Run(t.Context(), newRecorder(nil).handle); !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("second Run = %v, want ErrAlreadyRunning", err)
	}
	if s.Joined() {
		t.Fatal("Joined() = true for a missing topic")
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
}

// TestRunFailsOnRejectedSASL checks that a broker refusing the credentials
// (this one has no SASL at all) stops Run with a FatalError instead of a
// silent retry loop.
func TestRunFailsOnRejectedSASL(t *testing.T) {
	t.Parallel()
	brokers := testenv.KafkaBrokers(t)
	topic := testenv.NewTopic(t, 1)
	cfg := testConfig(t, brokers, topic, newGroup())
	cfg.SASL = SASL{Mechanism: SASLScramSHA512, Username: "u", Password: "p"}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	err = s.Run(ctx, newRecorder(nil).handle)
	var fatal *FatalError
	if !errors.As(err, &fatal) {
		t.Fatalf("Run = %v, want a *FatalError", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Run returned only because the test's deadline passed")
	}
}
