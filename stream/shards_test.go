package stream

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskinesis "github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/outflow-dev/outflow/internal/testenv"
	"github.com/outflow-dev/outflow/source/kinesis"
)

func TestSeqLess(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b string
		want bool
	}{
		{"", "1", true}, {"@5", "1", true}, {"1", "", false}, {"1", "@5", false},
		{"9", "10", true}, {"10", "9", false}, {"12", "13", true}, {"13", "13", false}, {"", "@5", false},
	}
	for _, tt := range tests {
		if got := seqLess(tt.a, tt.b); got != tt.want {
			t.Errorf("seqLess(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

// kinesisConfig returns a stream Config reading a new Kinesis stream with
// the given shards, and a function writing records to it.
func kinesisConfig(t *testing.T, shards int) (Config, func(recs []rec)) {
	t.Helper()
	name := testenv.NewKinesisStream(t, shards)
	client := testenv.KinesisClient(t)
	r, err := kinesis.NewReader(kinesis.ReaderConfig{AWS: testenv.KinesisAWS(), Endpoint: testenv.KinesisEndpoint(t), IdleWait: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	cfg := Config{
		Shards: r, KinesisStreams: []string{name}, Tokens: mustTokens(t, testKey(9)), Envelope: testEnvelope,
		PartitionWatchInterval: 200 * time.Millisecond,
		Logger:                 slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	put := func(recs []rec) {
		t.Helper()
		var entries []types.PutRecordsRequestEntry
		for _, r := range recs {
			entries = append(entries, types.PutRecordsRequestEntry{PartitionKey: aws.String(r.user), Data: r.value()})
		}
		ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
		defer cancel()
		out, err := client.PutRecords(ctx, &awskinesis.PutRecordsInput{StreamName: aws.String(name), Records: entries})
		if err != nil || aws.ToInt32(out.FailedRecordCount) > 0 {
			t.Fatalf("PutRecords: %v (%d failed)", err, aws.ToInt32(out.FailedRecordCount))
		}
	}
	return cfg, put
}

// TestStreamReadsKinesisAndResumes: a stream over two shards from a token
// that reads everything, interrupted and resumed with the last token, gets
// every matching record exactly once; a stream at the live tail gets only
// what arrives after it opened.
func TestStreamReadsKinesisAndResumes(t *testing.T) {
	t.Parallel()
	cfg, put := kinesisConfig(t, 2)
	sub := testSubscription(t, "sub_k", "")
	first := mixed(0, 200)
	put(first)

	s := open(t, cfg, Request{Subscription: sub, FromShards: ShardPosition{}})
	c := newCollector(t, sub.ID)
	want := wanted(first)
	readN(t, s, c, len(want)/2)
	token := c.last.ResumeToken
	s.Close()

	more := mixed(200, 100)
	put(more)
	for seq := range wanted(more) {
		want[seq] = true
	}
	from, shards, err := cfg.Tokens.DecodeAll(token, sub.ID)
	if err != nil || len(shards) != 1 {
		t.Fatalf("DecodeAll = %v, %v, %v", from, shards, err)
	}
	s2 := open(t, cfg, Request{Subscription: sub, From: from, FromShards: shards})
	c.newSession()
	readAll(t, s2, c, want)
	if c.dups != 0 {
		t.Errorf("%d records delivered twice across the resume, want none", c.dups)
	}

	// The live tail: only records arriving after Open.
	live := open(t, cfg, Request{Subscription: sub})
	c3 := newCollector(t, sub.ID)
	late := matching(1000, 10, 5)
	deadline := time.Now().Add(waitTimeout)
	for len(c3.seen) == 0 && time.Now().Before(deadline) {
		put(late)
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		ev, err := live.Next(ctx)
		cancel()
		if err == nil {
			c3.add(ev)
		}
	}
	for seq := range c3.seen {
		if seq < 1000 {
			t.Errorf("the live-tail stream delivered record %d, written before it opened", seq)
		}
	}
	if len(c3.seen) == 0 {
		t.Error("the live-tail stream delivered nothing")
	}
}

// TestStreamKeepsEntityOrderAcrossASplit: a shard split while a stream reads
// it; the children are found by the partition watch, read only once the
// parent is drained, and every user's records arrive in the order written.
func TestStreamKeepsEntityOrderAcrossASplit(t *testing.T) {
	t.Parallel()
	cfg, put := kinesisConfig(t, 1)
	sub := testSubscription(t, "sub_split", "")
	first := matching(0, 300, 7)
	put(first)
	s := open(t, cfg, Request{Subscription: sub, FromShards: ShardPosition{}})
	c := newCollector(t, sub.ID)
	readN(t, s, c, 50)

	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	client := testenv.KinesisClient(t)
	name := cfg.KinesisStreams[0]
	if _, err := client.SplitShard(ctx, &awskinesis.SplitShardInput{StreamName: aws.String(name), ShardToSplit: aws.String("shardId-000000000000"),
		NewStartingHashKey: aws.String("170141183460469231731687303715884105728")}); err != nil {
		t.Fatalf("SplitShard: %v", err)
	}
	if err := testenv.AwaitKinesisStream(ctx, client, name); err != nil {
		t.Fatal(err)
	}
	second := matching(300, 300, 7)
	put(second)
	want := wanted(first)
	for seq := range wanted(second) {
		want[seq] = true
	}
	last := map[string]int{}
	shards := map[string]bool{}
	for len(c.missing(want)) > 0 {
		ev, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("Next: %v (missing %d)", err, len(c.missing(want)))
		}
		c.add(ev)
		seq, user := seqOf(t, ev), ev.Record.EntityKeys["user_id"]
		if prev, ok := last[user]; ok && seq < prev {
			t.Errorf("user %s: record %d after %d", user, seq, prev)
		}
		last[user] = seq
		shards[ev.Position.Shard] = true
	}
	if len(shards) != 3 {
		t.Errorf("events from shards %v, want the parent and both children", shards)
	}
	if c.dups != 0 {
		t.Errorf("%d duplicates", c.dups)
	}
}
