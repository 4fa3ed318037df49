package stream

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/outflow-dev/outflow/filter"
	"github.com/outflow-dev/outflow/internal/testenv"
	"github.com/outflow-dev/outflow/match"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/source"
	"github.com/outflow-dev/outflow/source/kafka"
	"github.com/outflow-dev/outflow/store"
)

// waitTimeout bounds every wait on the broker in these tests: generous for a
// loaded 2-core CI machine running the suite in parallel under -race.
const waitTimeout = 60 * time.Second

// testSubscription compiles an ACTIVE stream subscription to feature view
// "fv" with an optional CEL filter.
func testSubscription(t testing.TB, id, celFilter string) *match.Subscription {
	t.Helper()
	env, err := filter.NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	return match.Compile(env, &store.Subscription{Proto: &outflowv1.Subscription{
		Id:               id,
		FeatureViewNames: []string{"fv"},
		Filter:           celFilter,
		State:            outflowv1.Subscription_ACTIVE,
		Target:           &outflowv1.Subscription_Stream{Stream: &outflowv1.StreamTarget{}},
	}})
}

// testEnvelope stands in for the dispatcher's envelope: enough to check that
// the stream passes subscription, position, record and vector through.
func testEnvelope(subID string, pos source.Position, raw []byte, fv *outflowv1.FeatureVector) ([]byte, error) {
	env := map[string]any{
		"subscription_id": subID,
		"record":          json.RawMessage(raw),
		"source":          map[string]any{"kind": pos.Kind, "topic": pos.Topic, "partition": pos.Partition, "offset": pos.Offset},
	}
	if fv != nil {
		env["feature_vector"] = map[string]any{"feature_service_name": fv.GetFeatureServiceName()}
	}
	return json.Marshal(env)
}

// kafkaEnv is what a stream test needs from the broker.
type kafkaEnv struct {
	brokers []string
	topic   string
	tokens  *Tokens
}

// setup creates a topic with the given partitions for the test.
func setup(t *testing.T, partitions int) kafkaEnv {
	t.Helper()
	return kafkaEnv{
		brokers: testenv.KafkaBrokers(t),
		topic:   testenv.NewTopic(t, partitions),
		tokens:  mustTokens(t, testKey(9)),
	}
}

// config returns a stream Config for the test's topic with quick timings.
func (e kafkaEnv) config(t *testing.T) Config {
	return Config{
		Source:   testLog(t, e.brokers),
		Topics:   []string{e.topic},
		Tokens:   e.tokens,
		Envelope: testEnvelope,
		MaxWait:  100 * time.Millisecond,
		Logger:   slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
}

// open opens a stream and closes it when the test ends.
func open(t *testing.T, cfg Config, req Request) *Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	s, err := Open(ctx, cfg, req)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// rec is a record to produce: seq identifies it in feature_values, user is
// its entity, fv its feature view; partition, when not negative, pins it to
// a partition (otherwise the entity's hash picks one). poison replaces the
// value with bytes that do not decode.
type rec struct {
	seq       int
	user      string
	fv        string
	partition int
	poison    bool
}

func (r rec) value() []byte {
	if r.poison {
		return []byte("not json " + strconv.Itoa(r.seq))
	}
	return fmt.Appendf(nil, `{"version":"1","producer":"test","feature_view_name":%q,"feature_timestamp":"2026-01-02T03:04:05.123456Z","entity_keys":{"user_id":%q},"feature_values":{"seq":"%d"}}`,
		r.fv, r.user, r.seq)
}

// matching returns n records of feature view "fv" numbered from first, with
// users cycling through users entities.
func matching(first, n, users int) []rec {
	out := make([]rec, n)
	for i := range out {
		seq := first + i
		out[i] = rec{seq: seq, user: "u" + strconv.Itoa(seq%users), fv: "fv", partition: -1}
	}
	return out
}

// mixed returns n records numbered from first where every third is of
// another feature view and every seventh is poison; the rest match "fv".
func mixed(first, n int) []rec {
	out := matching(first, n, 97)
	for i := range out {
		switch seq := out[i].seq; {
		case seq%7 == 0:
			out[i].poison = true
		case seq%3 == 0:
			out[i].fv = "other"
		}
	}
	return out
}

// wanted returns the seqs of the records a subscription to "fv" receives.
func wanted(recs []rec) map[int]bool {
	out := make(map[int]bool)
	for _, r := range recs {
		if !r.poison && r.fv == "fv" {
			out[r.seq] = true
		}
	}
	return out
}

// producer writes records to a topic with its own transport.
type producer struct {
	w         *kafkago.Writer
	transport *kafkago.Transport
}

// pinned is the header that pins a message to a partition.
const pinned = "partition"

func newProducer(t *testing.T, e kafkaEnv, batchSize int) *producer {
	t.Helper()
	transport := &kafkago.Transport{}
	hash := &kafkago.Hash{}
	w := &kafkago.Writer{
		Addr:         kafkago.TCP(e.brokers...),
		Topic:        e.topic,
		Transport:    transport,
		BatchSize:    batchSize,
		BatchTimeout: 5 * time.Millisecond,
		RequiredAcks: kafkago.RequireAll,
		Balancer: kafkago.BalancerFunc(func(m kafkago.Message, partitions ...int) int {
			for _, h := range m.Headers {
				if h.Key == pinned {
					n, _ := strconv.Atoi(string(h.Value))
					return n
				}
			}
			return hash.Balance(m, partitions...)
		}),
	}
	p := &producer{w: w, transport: transport}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("closing the writer: %v", err)
		}
		transport.CloseIdleConnections()
	})
	return p
}

// produce writes records, returning once the broker acknowledged them all.
// Usable from any goroutine: it returns its error instead of failing.
func (p *producer) produce(ctx context.Context, recs []rec) error {
	msgs := make([]kafkago.Message, len(recs))
	for i, r := range recs {
		msgs[i] = kafkago.Message{Key: []byte(r.user), Value: r.value()}
		if r.partition >= 0 {
			msgs[i].Headers = []kafkago.Header{{Key: pinned, Value: []byte(strconv.Itoa(r.partition))}}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	if err := p.w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("producing %d records: %w", len(recs), err)
	}
	return nil
}

// mustProduce is produce for the test goroutine.
func (p *producer) mustProduce(t *testing.T, recs []rec) {
	t.Helper()
	if err := p.produce(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
}

// seqOf returns the seq a test record carries.
func seqOf(t testing.TB, ev *Event) int {
	t.Helper()
	n, err := strconv.Atoi(ev.Record.FeatureValues["seq"])
	if err != nil {
		t.Fatalf("event at %s has no seq: %v", ev.Position.Key(), err)
	}
	return n
}

// collector gathers a stream's events and checks them as they come: the
// envelope is the test envelope of the event's subscription and position,
// and offsets grow within each partition.
type collector struct {
	t     testing.TB
	subID string
	mu    sync.Mutex
	seen  map[int]int // seq → times received
	dups  int
	last  *Event
	// next is, per partition, the offset after the last event of the
	// current session (reset by newSession).
	next map[int32]int64
	// seqs is the same per Kinesis shard: the last sequence number.
	seqs map[string]string
}

func newCollector(t testing.TB, subID string) *collector {
	return &collector{t: t, subID: subID, seen: make(map[int]int), next: make(map[int32]int64)}
}

// newSession forgets the per-partition order of the previous stream.
func (c *collector) newSession() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next = make(map[int32]int64)
	c.seqs = nil
}

// add checks and records one event.
func (c *collector) add(ev *Event) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if ev.Position.Kind == "kinesis" {
		if c.seqs == nil {
			c.seqs = make(map[string]string)
		}
		if !seqLess(c.seqs[ev.Position.Shard], ev.Position.Sequence) {
			c.t.Errorf("shard %s: sequence %s after %s: out of order", ev.Position.Shard, ev.Position.Sequence, c.seqs[ev.Position.Shard])
		}
		c.seqs[ev.Position.Shard] = ev.Position.Sequence
	} else {
		if ev.Position.Offset < c.next[ev.Position.Partition] {
			c.t.Errorf("partition %d: offset %d after %d: out of order", ev.Position.Partition, ev.Position.Offset, c.next[ev.Position.Partition]-1)
		}
		c.next[ev.Position.Partition] = ev.Position.Offset + 1
	}
	var env struct {
		SubscriptionID string `json:"subscription_id"`
		Source         struct {
			Offset int64 `json:"offset"`
		} `json:"source"`
	}
	if err := json.Unmarshal(ev.Envelope, &env); err != nil || env.SubscriptionID != c.subID || env.Source.Offset != ev.Position.Offset {
		c.t.Errorf("event at %s has envelope %s (%v)", ev.Position.Key(), ev.Envelope, err)
	}
	if ev.ResumeToken == "" {
		c.t.Errorf("event at %s has no resume token", ev.Position.Key())
	}
	seq := seqOf(c.t, ev)
	c.seen[seq]++
	if c.seen[seq] > 1 {
		c.dups++
	}
	c.last = ev
}

// missing returns how many seqs of want were not seen.
func (c *collector) missing(want map[int]bool) []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for seq := range want {
		if c.seen[seq] == 0 {
			out = append(out, seq)
		}
	}
	return out
}

// readN reads n events into c, failing the test if they do not come within
// waitTimeout.
func readN(t *testing.T, s *Stream, c *collector, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	for range n {
		ev, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		c.add(ev)
	}
}

// readAll reads until c has seen every seq of want, failing the test after
// waitTimeout, and reports unexpected ones.
func readAll(t *testing.T, s *Stream, c *collector, want map[int]bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	for len(c.missing(want)) > 0 {
		ev, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("Next: %v (still missing %d of %d)", err, len(c.missing(want)), len(want))
		}
		c.add(ev)
		if seq := seqOf(t, ev); !want[seq] {
			t.Errorf("unexpected record %d at %s", seq, ev.Position.Key())
		}
	}
}

// expectQuiet checks that no event arrives for a short while: used after
// everything expected was read, to catch extra events. It is a bounded
// wait for something that must not happen, not synchronisation.
func expectQuiet(t *testing.T, s *Stream, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	if ev, err := s.Next(ctx); err == nil {
		t.Errorf("unexpected extra event at %s", ev.Position.Key())
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Next: %v", err)
	}
}

// deleteRecords deletes the records of a partition below offset, as
// retention would, with Kafka's DeleteRecords API (version 0), which
// kafka-go does not implement. The test broker is the only broker, so it
// leads every partition.
func deleteRecords(t *testing.T, broker, topic string, partition int32, offset int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", broker)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		t.Fatal(err)
	}

	const apiKeyDeleteRecords, correlationID = 21, 7
	var body []byte
	str := func(s string) { body = binary.BigEndian.AppendUint16(body, uint16(len(s))); body = append(body, s...) }
	body = binary.BigEndian.AppendUint16(body, apiKeyDeleteRecords)
	body = binary.BigEndian.AppendUint16(body, 0) // version
	body = binary.BigEndian.AppendUint32(body, correlationID)
	str("stream-test")
	body = binary.BigEndian.AppendUint32(body, 1) // topics
	str(topic)
	body = binary.BigEndian.AppendUint32(body, 1) // partitions
	body = binary.BigEndian.AppendUint32(body, uint32(partition))
	body = binary.BigEndian.AppendUint64(body, uint64(offset))
	body = binary.BigEndian.AppendUint32(body, uint32(waitTimeout/time.Millisecond)) // timeout_ms
	if _, err := conn.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)); err != nil {
		t.Fatal(err)
	}

	r := bufio.NewReader(conn)
	var size int32
	if err := binary.Read(r, binary.BigEndian, &size); err != nil {
		t.Fatal(err)
	}
	resp := make([]byte, size)
	if _, err := io.ReadFull(r, resp); err != nil {
		t.Fatal(err)
	}
	// correlation id, throttle ms, topic count, topic name, partition
	// count, partition, low watermark, error code.
	nameLen := len(topic)
	want := 4 + 4 + 4 + 2 + nameLen + 4 + 4 + 8 + 2
	if len(resp) < want || binary.BigEndian.Uint32(resp) != correlationID {
		t.Fatalf("DeleteRecords: unexpected response %x", resp)
	}
	tail := resp[4+4+4+2+nameLen+4:]
	low := int64(binary.BigEndian.Uint64(tail[4:]))
	if code := int16(binary.BigEndian.Uint16(tail[12:])); code != 0 {
		t.Fatalf("DeleteRecords %s/%d below %d: %v", topic, partition, offset, kafkago.Error(code))
	}
	if low != offset {
		t.Fatalf("DeleteRecords: low watermark %d, want %d", low, offset)
	}
}

// testLog returns the Kafka log of brokers that streams read.
func testLog(t testing.TB, brokers []string) *kafka.Log {
	t.Helper()
	l, err := kafka.NewLog(kafka.Config{Brokers: brokers})
	if err != nil {
		t.Fatalf("kafka.NewLog: %v", err)
	}
	return l
}
