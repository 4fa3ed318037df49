package kinesis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskinesis "github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/outflow-dev/outflow/internal/storetest"
	"github.com/outflow-dev/outflow/internal/testenv"
	"github.com/outflow-dev/outflow/source"
	"github.com/outflow-dev/outflow/store"
)

// waitTimeout bounds every wait of these tests.
const waitTimeout = 60 * time.Second

// bundle is what a test needs: a stream on the local Kinesis, a migrated
// database and a client.
type bundle struct {
	stream string
	client *awskinesis.Client
	store  *store.Store
	log    *slog.Logger
}

func setup(t *testing.T, shards int) bundle {
	t.Helper()
	return bundle{
		stream: testenv.NewKinesisStream(t, shards),
		client: testenv.KinesisClient(t),
		store:  storetest.New(t).Store,
		log:    slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
}

// config returns a Source config with quick timings for the test.
func (b bundle) config(t *testing.T, worker string) Config {
	return Config{
		Streams: []string{b.stream}, AWS: testenv.KinesisAWS(), Endpoint: testenv.KinesisEndpoint(t),
		Leases: b.store, WorkerID: worker, LeaseDuration: 2 * time.Second, RenewInterval: 300 * time.Millisecond,
		ShardSyncInterval: 500 * time.Millisecond, IdleWait: 50 * time.Millisecond, CommitInterval: 100 * time.Millisecond,
		Logger: b.log.With(slog.String("worker", worker)),
	}
}

// put writes n records for keys entity-0..entity-(keys-1) round robin, the
// value "entity-k:i" giving each key's own counter i.
func (b bundle) put(t *testing.T, from, n, keys int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	for start := from; start < from+n; start += 500 {
		var entries []types.PutRecordsRequestEntry
		for i := start; i < min(start+500, from+n); i++ {
			key := "entity-" + strconv.Itoa(i%keys)
			entries = append(entries, types.PutRecordsRequestEntry{
				PartitionKey: aws.String(key), Data: []byte(key + ":" + strconv.Itoa(i/keys)),
			})
		}
		out, err := b.client.PutRecords(ctx, &awskinesis.PutRecordsInput{StreamName: aws.String(b.stream), Records: entries})
		if err != nil {
			t.Fatalf("PutRecords: %v", err)
		}
		if n := aws.ToInt32(out.FailedRecordCount); n > 0 {
			t.Fatalf("PutRecords: %d records failed", n)
		}
	}
}

// collector records what a Source hands out, by entity, and marks each
// message Done.
type collector struct {
	mu     sync.Mutex
	seen   map[string]int // value → times handed out
	order  map[string][]int
	shards map[string]bool
	total  int
}

func newCollector() *collector {
	return &collector{seen: map[string]int{}, order: map[string][]int{}, shards: map[string]bool{}}
}

func (c *collector) handle(_ context.Context, m *source.Message) {
	key, n, _ := strings.Cut(string(m.Value), ":")
	i, _ := strconv.Atoi(n)
	c.mu.Lock()
	c.seen[string(m.Value)]++
	c.order[key] = append(c.order[key], i)
	c.shards[m.Position.Shard] = true
	c.total++
	c.mu.Unlock()
	if m.Position.Kind != "kinesis" || m.Position.Sequence == "" || string(m.Key) != key {
		panic(fmt.Sprintf("bad position or key: %+v key %q", m.Position, m.Key))
	}
	m.Done()
}

// distinct returns how many different records were handed out.
func (c *collector) distinct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

// checkOrder fails the test when an entity's records were first handed out
// out of order, or with a gap: redeliveries repeat records already seen,
// which receivers de-duplicate, but a record seen for the first time must be
// the entity's next one.
func (c *collector) checkOrder(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for key, seq := range c.order {
		if len(seq) == 0 {
			continue
		}
		firsts := map[int]bool{}
		last := seq[0] - 1
		for _, v := range seq {
			if firsts[v] {
				continue
			}
			firsts[v] = true
			if v != last+1 {
				t.Errorf("entity %s: record %d handed out first after %d", key, v, last)
				return
			}
			last = v
		}
	}
}

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// start runs a Source until the test ends or stop is called.
func start(t *testing.T, cfg Config, h source.Handler) (src *Source, stop func()) {
	t.Helper()
	src, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, h) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return src, stop
}

func TestSourceDeliversEveryRecordOnceAcrossARestart(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	const n, keys = 1000, 20
	b.put(t, 0, n, keys)
	c := newCollector()
	src, stop := start(t, b.config(t, "w1"), c.handle)
	waitFor(t, "every record", func() bool { return c.distinct() == n })
	waitFor(t, "lag of both shards", func() bool { return len(src.Lag()[b.stream]) == 2 })
	if !src.Ready() {
		t.Error("Ready = false while reading")
	}
	stop()
	c.checkOrder(t)
	if len(c.shards) != 2 {
		t.Errorf("records from %d shards, want 2", len(c.shards))
	}

	// A restart resumes after the checkpoints: only the new records come.
	b.put(t, n, 100, keys)
	c2 := newCollector()
	_, stop2 := start(t, b.config(t, "w2"), c2.handle)
	waitFor(t, "the new records", func() bool { return c2.distinct() == 100 })
	stop2()
	if c2.total != 100 {
		t.Errorf("after a clean restart %d records were handed out, want the 100 new ones", c2.total)
	}
	c2.checkOrder(t)
}

func TestSourceRecordsNotDoneAreReadAgain(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	b.put(t, 0, 10, 1)
	var mu sync.Mutex
	var held []*source.Message
	_, stop := start(t, b.config(t, "w1"), func(_ context.Context, m *source.Message) {
		mu.Lock()
		defer mu.Unlock()
		held = append(held, m)
		if len(held) <= 3 {
			m.Done() // the rest stay in flight
		}
	})
	waitFor(t, "ten records", func() bool { mu.Lock(); defer mu.Unlock(); return len(held) == 10 })
	stop()
	c := newCollector()
	_, stop2 := start(t, b.config(t, "w2"), c.handle)
	waitFor(t, "the records not done", func() bool { return c.distinct() == 7 })
	stop2()
	if c.seen["entity-0:2"] != 0 || c.seen["entity-0:3"] != 1 {
		t.Errorf("redelivered %v, want records 3..9 exactly", c.seen)
	}
}

func TestSourceShardSplitKeepsEntityOrder(t *testing.T) {
	t.Parallel()
	b := setup(t, 1)
	const keys = 10
	b.put(t, 0, 500, keys)
	c := newCollector()
	_, stop := start(t, b.config(t, "w1"), c.handle)
	waitFor(t, "some records", func() bool { return c.distinct() > 0 })

	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	shards, err := listShards(ctx, b.client, b.stream)
	if err != nil || len(shards) != 1 {
		t.Fatalf("listShards = %d shards, %v", len(shards), err)
	}
	if _, err := b.client.SplitShard(ctx, &awskinesis.SplitShardInput{
		StreamName: aws.String(b.stream), ShardToSplit: shards[0].ShardId,
		NewStartingHashKey: aws.String("170141183460469231731687303715884105728"), // 2^127
	}); err != nil {
		t.Fatalf("SplitShard: %v", err)
	}
	if err := testenv.AwaitKinesisStream(ctx, b.client, b.stream); err != nil {
		t.Fatal(err)
	}
	b.put(t, 500, 1000, keys)
	waitFor(t, "every record", func() bool { return c.distinct() == 1500 })
	stop()
	c.checkOrder(t)
	if len(c.shards) != 3 {
		t.Errorf("records from %d shards, want the parent and its two children", len(c.shards))
	}
}

// failingLeases is the lease store of a replica that died: every call fails.
type failingLeases struct {
	Leases
	mu   sync.Mutex
	dead bool
}

var errDead = errors.New("replica is dead")

func (f *failingLeases) isDead() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.dead }

func (f *failingLeases) BalanceKinesisLeases(ctx context.Context, b store.KinesisBalance) ([]store.KinesisShard, error) {
	if f.isDead() {
		return nil, errDead
	}
	return f.Leases.BalanceKinesisLeases(ctx, b)
}

func (f *failingLeases) CheckpointKinesisShard(ctx context.Context, group, owner string, c store.KinesisCheckpoint) error {
	if f.isDead() {
		return errDead
	}
	return f.Leases.CheckpointKinesisShard(ctx, group, owner, c)
}

func (f *failingLeases) ReleaseKinesisLeases(ctx context.Context, group, owner string) error {
	if f.isDead() {
		return errDead
	}
	return f.Leases.ReleaseKinesisLeases(ctx, group, owner)
}

func TestTwoSourcesSplitTheShardsAndTakeOver(t *testing.T) {
	t.Parallel()
	b := setup(t, 4)
	c := newCollector()
	dying := &failingLeases{Leases: b.store}
	cfgA := b.config(t, "a")
	cfgA.Leases = dying
	srcA, stopA := start(t, cfgA, c.handle)
	srcB, _ := start(t, b.config(t, "b"), c.handle)
	held := func(s *Source) int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.shards) }
	waitFor(t, "two shards each", func() bool { return held(srcA) == 2 && held(srcB) == 2 })

	b.put(t, 0, 400, 40)
	waitFor(t, "every record", func() bool { return c.distinct() == 400 })

	// A dies: it can no longer renew nor release its leases. B takes its
	// shards over once they expire, and reads what A left.
	dying.mu.Lock()
	dying.dead = true
	dying.mu.Unlock()
	stopA()
	b.put(t, 400, 400, 40)
	waitFor(t, "B holding every shard", func() bool { return held(srcB) == 4 })
	waitFor(t, "every record after the takeover", func() bool { return c.distinct() == 800 })
	c.checkOrder(t)
}

// TestSourceWaitsForAMissingStream: a Source started before its stream
// exists is not Ready, keeps trying, and reads the stream once it appears.
func TestSourceWaitsForAMissingStream(t *testing.T) {
	t.Parallel()
	b := bundle{client: testenv.KinesisClient(t), store: storetest.New(t).Store,
		log: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))}
	b.stream = "late-" + strings.ToLower(strconv.FormatInt(time.Now().UnixNano(), 36))
	c := newCollector()
	src, stop := start(t, b.config(t, "w"), c.handle)
	if src.Ready() {
		t.Fatal("Ready before the stream exists")
	}
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	if _, err := b.client.CreateStream(ctx, &awskinesis.CreateStreamInput{StreamName: aws.String(b.stream), ShardCount: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = b.client.DeleteStream(context.Background(), &awskinesis.DeleteStreamInput{StreamName: aws.String(b.stream)})
	})
	if err := testenv.AwaitKinesisStream(ctx, b.client, b.stream); err != nil {
		t.Fatal(err)
	}
	b.put(t, 0, 10, 2)
	waitFor(t, "the records of the late stream", func() bool { return c.distinct() == 10 })
	if !src.Ready() {
		t.Error("not Ready while reading")
	}
	stop()
}

func TestSourceShardMergeKeepsEntityOrder(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	const keys = 10
	b.put(t, 0, 400, keys)
	c := newCollector()
	_, stop := start(t, b.config(t, "w1"), c.handle)
	waitFor(t, "some records", func() bool { return c.distinct() > 0 })
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	if _, err := b.client.MergeShards(ctx, &awskinesis.MergeShardsInput{StreamName: aws.String(b.stream),
		ShardToMerge: aws.String("shardId-000000000000"), AdjacentShardToMerge: aws.String("shardId-000000000001")}); err != nil {
		t.Fatalf("MergeShards: %v", err)
	}
	if err := testenv.AwaitKinesisStream(ctx, b.client, b.stream); err != nil {
		t.Fatal(err)
	}
	b.put(t, 400, 600, keys)
	waitFor(t, "every record", func() bool { return c.distinct() == 1000 })
	stop()
	c.checkOrder(t)
	if len(c.shards) != 3 {
		t.Errorf("records from %d shards, want both parents and the merged child", len(c.shards))
	}
}
