package stream

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/outflow-dev/outflow/enrich"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/record"
)

// TestLiveTail opens a stream without a token: records written before Open
// are not delivered, and every matching record written after is, once, in
// offset order per partition; non-matching and poison records are skipped.
func TestLiveTail(t *testing.T) {
	t.Parallel()
	e := setup(t, 3)
	p := newProducer(t, e, 100)
	p.mustProduce(t, matching(-50, 50, 10)) // before Open: seqs -50..-1
	sub := testSubscription(t, "sub_x", "")
	s := open(t, e.config(t), Request{Subscription: sub})

	recs := mixed(0, 1000)
	p.mustProduce(t, recs)
	c := newCollector(t, sub.ID)
	want := wanted(recs)
	readAll(t, s, c, want)
	if c.dups != 0 {
		t.Errorf("%d duplicates", c.dups)
	}
	expectQuiet(t, s, 300*time.Millisecond)
	for seq := range c.seen {
		if seq < 0 {
			t.Errorf("record %d, written before Open, was delivered", seq)
		}
	}
}

// TestResume reads part of the stream, closes it, and resumes from the last
// token while more records arrive: the union is complete, without
// duplicates, because the token covers exactly what was delivered (skipped
// records included).
func TestResume(t *testing.T) {
	t.Parallel()
	e := setup(t, 3)
	p := newProducer(t, e, 100)
	sub := testSubscription(t, "sub_x", "")
	cfg := e.config(t)
	c := newCollector(t, sub.ID)

	s := open(t, cfg, Request{Subscription: sub})
	first := mixed(0, 700) // 400 of them match
	p.mustProduce(t, first)
	readN(t, s, c, 300)
	token := c.last.ResumeToken
	s.Close()
	if _, err := s.Next(t.Context()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close = %v, want ErrClosed", err)
	}

	second := mixed(700, 500)
	p.mustProduce(t, second)
	from, err := e.tokens.Decode(token, sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	c.newSession()
	s = open(t, cfg, Request{Subscription: sub, From: from})
	want := wanted(append(first, second...))
	readAll(t, s, c, want)
	if c.dups != 0 {
		t.Errorf("%d duplicates after resuming from the exact last token", c.dups)
	}
	expectQuiet(t, s, 300*time.Millisecond)
}

// TestReconnectUnderLoad reconnects five times with the last token while
// 10,000 records are being written: every matching record arrives, none
// twice.
func TestReconnectUnderLoad(t *testing.T) {
	t.Parallel()
	e := setup(t, 3)
	p := newProducer(t, e, 200)
	sub := testSubscription(t, "sub_x", "")
	cfg := e.config(t)
	cfg.BufferSize = 64
	c := newCollector(t, sub.ID)

	const total, batch = 10_000, 250
	all := mixed(0, total)
	s := open(t, cfg, Request{Subscription: sub})
	produced := make(chan error, 1)
	go func() {
		for i := 0; i < total; i += batch {
			if err := p.produce(context.Background(), all[i:i+batch]); err != nil {
				produced <- err
				return
			}
		}
		produced <- nil
	}()

	want := wanted(all)
	for range 5 {
		readN(t, s, c, len(want)/7)
		from, err := e.tokens.Decode(c.last.ResumeToken, sub.ID)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		c.newSession()
		s = open(t, cfg, Request{Subscription: sub, From: from})
	}
	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	readAll(t, s, c, want)
	if c.dups != 0 {
		t.Errorf("%d duplicates", c.dups)
	}
}

// TestShards splits a subscription over three streams: each record arrives
// on exactly one, the one its entity hash names, so an entity always lands
// on the same stream.
func TestShards(t *testing.T) {
	t.Parallel()
	e := setup(t, 3)
	p := newProducer(t, e, 100)
	sub := testSubscription(t, "sub_x", "")
	const count = 3
	streams := make([]*Stream, count)
	for i := range streams {
		streams[i] = open(t, e.config(t), Request{Subscription: sub, Shard: &Shard{Index: int32(i), Count: count}})
	}
	recs := matching(0, 900, 300)
	p.mustProduce(t, recs)

	want := make([]map[int]bool, count)
	for i := range want {
		want[i] = make(map[int]bool)
	}
	for _, r := range recs {
		h := (&record.Record{EntityKeys: map[string]string{"user_id": r.user}}).EntityHash()
		want[h%count][r.seq] = true
	}
	shardOf := make(map[string]int) // user → shard
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, s := range streams {
		if len(want[i]) == 0 {
			t.Fatalf("shard %d gets no records: pick other entities", i)
		}
		c := newCollector(t, sub.ID)
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
			defer cancel()
			for len(c.missing(want[i])) > 0 {
				ev, err := s.Next(ctx)
				if err != nil {
					t.Errorf("shard %d: Next: %v", i, err)
					return
				}
				c.add(ev)
				if seq := seqOf(t, ev); !want[i][seq] {
					t.Errorf("shard %d got record %d of another shard", i, seq)
				}
				mu.Lock()
				user := ev.Record.EntityKeys["user_id"]
				if prev, ok := shardOf[user]; ok && prev != i {
					t.Errorf("entity %s on shards %d and %d", user, prev, i)
				}
				shardOf[user] = i
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// TestSkippedRecordsAdvanceToken checks that records skipped after a
// partition's last event move that partition's token position, so a
// reconnecting client does not read them again.
func TestSkippedRecordsAdvanceToken(t *testing.T) {
	t.Parallel()
	e := setup(t, 2)
	p := newProducer(t, e, 100)
	sub := testSubscription(t, "sub_x", "")
	s := open(t, e.config(t), Request{Subscription: sub})

	skipped := make([]rec, 10) // offsets 0..9 of partition 0, none matching
	for i := range skipped {
		skipped[i] = rec{seq: i, user: "u", fv: "other", partition: 0, poison: i%2 == 0}
	}
	p.mustProduce(t, skipped)
	c := newCollector(t, sub.ID)
	deadline := time.Now().Add(waitTimeout)
	for seq := 100; ; seq++ {
		if time.Now().After(deadline) {
			t.Fatal("partition 0's token position never moved past the skipped records")
		}
		// One matching record on partition 1 per round: its token shows
		// where partition 0 stands.
		p.mustProduce(t, []rec{{seq: seq, user: "v", fv: "fv", partition: 1}})
		readN(t, s, c, 1)
		pos, err := e.tokens.Decode(c.last.ResumeToken, sub.ID)
		if err != nil {
			t.Fatal(err)
		}
		if pos[e.topic][0] == 10 {
			break
		}
		if got := pos[e.topic][0]; got > 10 {
			t.Fatalf("partition 0 at %d, past its end", got)
		}
	}
}

// TestSlowClient: a client that stops taking events has its stream ended
// with ErrSlowClient, while another stream of the same subscription reading
// promptly gets everything.
func TestSlowClient(t *testing.T) {
	t.Parallel()
	e := setup(t, 3)
	p := newProducer(t, e, 100)
	sub := testSubscription(t, "sub_x", "")
	cfg := e.config(t)
	cfg.BufferSize = 10
	cfg.SlowClientGrace = 200 * time.Millisecond
	slow := open(t, cfg, Request{Subscription: sub})
	prompt := open(t, cfg, Request{Subscription: sub})

	recs := matching(0, 100, 10)
	p.mustProduce(t, recs)
	c := newCollector(t, sub.ID)
	readAll(t, prompt, c, wanted(recs))

	select {
	case <-slow.Done():
	case <-time.After(waitTimeout):
		t.Fatal("the slow stream did not end")
	}
	if ev, err := slow.Next(t.Context()); !errors.Is(err, ErrSlowClient) {
		t.Fatalf("Next on the slow stream = %v, %v; want ErrSlowClient", ev, err)
	}
	select {
	case <-prompt.Done():
		t.Fatal("the prompt stream ended too")
	default:
	}
}

// TestClientTakingSlowlyIsNotCutOff: a client that keeps taking events, if
// slowly, while the buffer stays full is not a slow client.
func TestClientTakingSlowlyIsNotCutOff(t *testing.T) {
	t.Parallel()
	e := setup(t, 1)
	p := newProducer(t, e, 100)
	sub := testSubscription(t, "sub_x", "")
	cfg := e.config(t)
	cfg.BufferSize = 2
	cfg.SlowClientGrace = time.Second
	s := open(t, cfg, Request{Subscription: sub})
	recs := matching(0, 12, 3)
	p.mustProduce(t, recs)
	c := newCollector(t, sub.ID)
	ticker := time.NewTicker(cfg.SlowClientGrace / 10) // pacing the client, not synchronisation
	defer ticker.Stop()
	for range len(recs) {
		<-ticker.C
		readN(t, s, c, 1)
	}
	if len(c.missing(wanted(recs))) != 0 {
		t.Fatal("missing records")
	}
}

// TestTokenTooOld: a token below the earliest retained offset is refused at
// Open with a *TokenTooOldError; one beyond the end starts at the end.
func TestTokenTooOld(t *testing.T) {
	t.Parallel()
	e := setup(t, 2)
	p := newProducer(t, e, 100)
	sub := testSubscription(t, "sub_x", "")
	cfg := e.config(t)
	recs := matching(0, 10, 3)
	for i := range recs {
		recs[i].partition = 0
	}
	p.mustProduce(t, recs)
	deleteRecords(t, e.brokers[0], e.topic, 0, 5)

	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	_, err := Open(ctx, cfg, Request{Subscription: sub, From: Position{e.topic: {0: 4, 1: 0}}})
	var tooOld *TokenTooOldError
	if !errors.As(err, &tooOld) {
		t.Fatalf("Open with a token below retention = %v, want *TokenTooOldError", err)
	}
	if want := (TokenTooOldError{Topic: e.topic, Partition: 0, Wanted: 4, Earliest: 5}); *tooOld != want {
		t.Fatalf("got %+v, want %+v", *tooOld, want)
	}

	// At the earliest retained offset: fine, records 5..9 arrive.
	c := newCollector(t, sub.ID)
	s := open(t, cfg, Request{Subscription: sub, From: Position{e.topic: {0: 5, 1: 0}}})
	readAll(t, s, c, map[int]bool{5: true, 6: true, 7: true, 8: true, 9: true})

	// Beyond the end: starts at the end, so only newer records arrive.
	c = newCollector(t, sub.ID)
	beyond := open(t, cfg, Request{Subscription: sub, From: Position{e.topic: {0: 1_000_000, 1: 0}}})
	later := []rec{{seq: 10, user: "u", fv: "fv", partition: 0}}
	p.mustProduce(t, later)
	readAll(t, beyond, c, wanted(later))
}

// TestTokenTooOldWhileReading: retention deleting records the stream has not
// read yet ends it with a *TokenTooOldError instead of skipping them.
func TestTokenTooOldWhileReading(t *testing.T) {
	t.Parallel()
	e := setup(t, 1)
	p := newProducer(t, e, 1) // one record per batch, so a fetch can return just one
	sub := testSubscription(t, "sub_x", "")
	recs := matching(0, 100, 3)
	p.mustProduce(t, recs)

	cfg := e.config(t)
	cfg.BufferSize = 1
	cfg.FetchMaxBytes = 1
	cfg.SlowClientGrace = waitTimeout
	s := open(t, cfg, Request{Subscription: sub, From: Position{e.topic: {0: 0}}})
	c := newCollector(t, sub.ID)
	readN(t, s, c, 1)
	deleteRecords(t, e.brokers[0], e.topic, 0, 50)

	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	for {
		ev, err := s.Next(ctx)
		if err == nil {
			if ev.Position.Offset >= 50 {
				t.Fatalf("read offset %d past deleted records without an error", ev.Position.Offset)
			}
			continue
		}
		var tooOld *TokenTooOldError
		if !errors.As(err, &tooOld) || tooOld.Earliest != 50 || tooOld.Wanted >= 50 {
			t.Fatalf("Next = %v, want *TokenTooOldError with Earliest 50", err)
		}
		return
	}
}

// TestNewPartitionsAreRead: partitions added while a stream runs are read
// from their earliest offset.
func TestNewPartitionsAreRead(t *testing.T) {
	t.Parallel()
	e := setup(t, 1)
	p := newProducer(t, e, 100)
	sub := testSubscription(t, "sub_x", "")
	cfg := e.config(t)
	cfg.PartitionWatchInterval = 100 * time.Millisecond
	s := open(t, cfg, Request{Subscription: sub})

	transport := &kafkago.Transport{}
	defer transport.CloseIdleConnections()
	client := &kafkago.Client{Addr: kafkago.TCP(e.brokers...), Transport: transport, Timeout: waitTimeout}
	resp, err := client.CreatePartitions(t.Context(), &kafkago.CreatePartitionsRequest{
		Topics: []kafkago.TopicPartitionsConfig{{Name: e.topic, Count: 2}},
	})
	if err == nil {
		err = resp.Errors[e.topic]
	}
	if err != nil {
		t.Fatalf("adding a partition: %v", err)
	}

	// The producer may not see the new partition at once; retry until a
	// record lands there.
	c := newCollector(t, sub.ID)
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	recs := []rec{{seq: 1, user: "u", fv: "fv", partition: 1}}
	for {
		err := p.produce(ctx, recs)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("producing to the new partition: %v", err)
		}
	}
	readAll(t, s, c, wanted(recs))
	if c.last.Position.Partition != 1 {
		t.Fatalf("event from partition %d, want 1", c.last.Position.Partition)
	}
	pos, err := e.tokens.Decode(c.last.ResumeToken, sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := pos[e.topic][1]; !ok {
		t.Fatalf("token %v lacks the new partition", pos)
	}
}

// TestEnrich: events carry the vector Enrich returns, retriable failures
// are retried without breaking partition order, and a permanent failure
// ends the stream with an *EnrichError.
func TestEnrich(t *testing.T) {
	t.Parallel()
	e := setup(t, 3)
	p := newProducer(t, e, 100)
	sub := testSubscription(t, "sub_x", "")
	var calls atomic.Int64
	failedOnce := sync.Map{}
	enrichFn := func(ctx context.Context, r *record.Record) (*outflowv1.FeatureVector, error) {
		calls.Add(1)
		seq := r.FeatureValues["seq"]
		if seq == "999" {
			return nil, &enrich.StoreError{Err: errors.New("404 feature service not found"), Retriable: false, Attempts: 1}
		}
		if _, loaded := failedOnce.LoadOrStore(seq, true); !loaded && strings.HasSuffix(seq, "17") {
			return nil, &enrich.StoreError{Err: errors.New("503"), Retriable: true, Attempts: 1}
		}
		// Vary latency so that enrichments finish out of order.
		d := time.Duration(rand.IntN(3)) * time.Millisecond
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return &outflowv1.FeatureVector{FeatureServiceName: "fs_" + seq}, nil
	}
	cfg := e.config(t)
	cfg.EnrichConcurrency = 4
	s := open(t, cfg, Request{Subscription: sub, Enrich: enrichFn})

	recs := matching(0, 300, 20)
	p.mustProduce(t, recs)
	c := newCollector(t, sub.ID)
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	for len(c.missing(wanted(recs))) > 0 {
		ev, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		c.add(ev)
		if want := fmt.Sprintf("fs_%d", seqOf(t, ev)); ev.FeatureVector.GetFeatureServiceName() != want {
			t.Errorf("event %d has vector %v", seqOf(t, ev), ev.FeatureVector)
		}
	}
	if calls.Load() <= int64(len(recs)) {
		t.Errorf("%d Enrich calls for %d records: the retriable failures were not retried", calls.Load(), len(recs))
	}

	p.mustProduce(t, []rec{{seq: 999, user: "u", fv: "fv", partition: -1}})
	_, err := s.Next(ctx)
	var enrichErr *EnrichError
	if !errors.As(err, &enrichErr) || enrich.IsRetriable(err) {
		t.Fatalf("Next = %v, want a permanent *EnrichError", err)
	}
}

// TestFilterAndUnknownTopic: the subscription's CEL filter applies, and a
// topic that does not exist fails Open.
func TestFilterAndUnknownTopic(t *testing.T) {
	t.Parallel()
	e := setup(t, 1)
	p := newProducer(t, e, 100)
	sub := testSubscription(t, "sub_x", `record.entity_keys.user_id.startsWith("vip_")`)
	s := open(t, e.config(t), Request{Subscription: sub})
	recs := matching(0, 20, 4)
	for i := range recs {
		if i%4 == 0 {
			recs[i].user = "vip_" + recs[i].user
		}
	}
	p.mustProduce(t, recs)
	want := make(map[int]bool)
	for _, r := range recs {
		if strings.HasPrefix(r.user, "vip_") {
			want[r.seq] = true
		}
	}
	c := newCollector(t, sub.ID)
	readAll(t, s, c, want)
	expectQuiet(t, s, 300*time.Millisecond)

	cfg := e.config(t)
	cfg.Topics = []string{e.topic + "-missing"}
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	if s, err := Open(ctx, cfg, Request{Subscription: sub}); !errors.Is(err, kafkago.UnknownTopicOrPartition) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open on a missing topic = %v, want UnknownTopicOrPartition", err)
	}
}

// TestCarriedPositions: positions of topics the stream does not read pass
// through into its tokens unchanged.
func TestCarriedPositions(t *testing.T) {
	t.Parallel()
	e := setup(t, 1)
	p := newProducer(t, e, 100)
	sub := testSubscription(t, "sub_x", "")
	s := open(t, e.config(t), Request{Subscription: sub, From: Position{e.topic: {0: 0}, "elsewhere": {3: 42}}})
	recs := matching(0, 1, 1)
	p.mustProduce(t, recs)
	c := newCollector(t, sub.ID)
	readAll(t, s, c, wanted(recs))
	pos, err := e.tokens.Decode(c.last.ResumeToken, sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	if pos["elsewhere"][3] != 42 || pos[e.topic][0] != 1 {
		t.Fatalf("token position %v, want elsewhere/3 at 42 and %s/0 at 1", pos, e.topic)
	}
}

// TestCloseWhileNext: Close unblocks a Next in progress, is idempotent and
// safe to call concurrently.
func TestCloseWhileNext(t *testing.T) {
	t.Parallel()
	e := setup(t, 3)
	sub := testSubscription(t, "sub_x", "")
	s := open(t, e.config(t), Request{Subscription: sub})
	errc := make(chan error, 1)
	go func() {
		_, err := s.Next(context.Background())
		errc <- err
	}()
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(s.Close)
	}
	wg.Wait()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("Next = %v, want ErrClosed", err)
	}
	select {
	case <-s.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
}
