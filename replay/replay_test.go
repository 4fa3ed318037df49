package replay_test

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskinesis "github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"go.uber.org/goleak"

	"github.com/outflow-dev/outflow/filter"
	"github.com/outflow-dev/outflow/internal/storetest"
	"github.com/outflow-dev/outflow/internal/testenv"
	"github.com/outflow-dev/outflow/match"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/replay"
	"github.com/outflow-dev/outflow/source"
	"github.com/outflow-dev/outflow/source/kinesis"
	"github.com/outflow-dev/outflow/store"
)

// TestMain fails the tests if a worker, a heartbeat or a reader outlives
// them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// subs is the Subscriptions of one compiled subscription.
type subs struct{ sub *match.Subscription }

func (s subs) Get(id string) *match.Subscription {
	if s.sub.ID == id {
		return s.sub
	}
	return nil
}

// deliverer records what a replay hands to delivery and settles it at once.
type deliverer struct {
	mu   sync.Mutex
	seen map[string]int // record value → times
	pos  map[string]source.Position
}

func (d *deliverer) Replay(m *source.Message, _ *record.Record, _ *match.Subscription) {
	d.mu.Lock()
	d.seen[string(m.Value)]++
	d.pos[string(m.Value)] = m.Position
	d.mu.Unlock()
	m.Done()
}

func (d *deliverer) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.seen)
}

// TestWorkerReplaysAKinesisTimeRange: records arrive on a 2-shard stream
// in three batches apart in time; a replay of the middle batch's range hands
// exactly its matching records to delivery, once each, with their Kinesis
// positions, records its progress, and ends SUCCEEDED.
func TestWorkerReplaysAKinesisTimeRange(t *testing.T) {
	t.Parallel()
	st := storetest.New(t).Store
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	key, _, err := st.CreateAPIKey(ctx, "t", "k")
	if err != nil {
		t.Fatal(err)
	}
	proto := &outflowv1.Subscription{Id: "sub_r", Name: "r", FeatureViewNames: []string{"fv"}, State: outflowv1.Subscription_ACTIVE,
		Target: &outflowv1.Subscription_Webhook{Webhook: &outflowv1.WebhookTarget{Url: "https://example.com/hook"}}}
	if _, err := st.CreateSubscription(ctx, key.TenantID, proto, "whsec_x", 10); err != nil {
		t.Fatal(err)
	}
	env, err := filter.NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	compiled := match.Compile(env, &store.Subscription{Proto: proto, TenantID: key.TenantID})

	name := testenv.NewKinesisStream(t, 2)
	client := testenv.KinesisClient(t)
	put := func(from, n int) {
		var entries []types.PutRecordsRequestEntry
		for i := from; i < from+n; i++ {
			fv := "fv"
			if i%4 == 0 {
				fv = "other" // not matching
			}
			entries = append(entries, types.PutRecordsRequestEntry{PartitionKey: aws.String("u" + strconv.Itoa(i%9)),
				Data: []byte(`{"version":"1","feature_view_name":"` + fv + `","feature_timestamp":"2026-01-02T03:04:05Z","entity_keys":{"user_id":"u"},"seq":` + strconv.Itoa(i) + `}`)})
		}
		if _, err := client.PutRecords(ctx, &awskinesis.PutRecordsInput{StreamName: aws.String(name), Records: entries}); err != nil {
			t.Fatal(err)
		}
	}
	// Kinesis times records by arrival: the sleeps make the time ranges.
	boundary := func() time.Time {
		time.Sleep(200 * time.Millisecond)
		at := time.Now()
		time.Sleep(200 * time.Millisecond)
		return at
	}
	put(0, 40)
	from := boundary()
	put(40, 40)
	to := boundary()
	put(80, 40)

	r, err := st.CreateReplay(ctx, &store.Replay{ID: "rpl_k", SubscriptionID: "sub_r", TenantID: key.TenantID,
		StartTime: from, EndTime: to, State: store.ReplayRunning})
	if err != nil {
		t.Fatal(err)
	}
	reader, err := kinesis.NewReader(kinesis.ReaderConfig{AWS: testenv.KinesisAWS(), Endpoint: testenv.KinesisEndpoint(t), IdleWait: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	d := &deliverer{seen: map[string]int{}, pos: map[string]source.Position{}}
	w, err := replay.New(replay.Config{Store: st, Subscriptions: subs{compiled}, Deliverer: d, Kinesis: reader, KinesisStreams: []string{name},
		Poll: 50 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	var got *store.Replay
	for {
		got, err = st.GetReplay(ctx, key.TenantID, "sub_r", r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != store.ReplayRunning || ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond) // polling the database: nothing to wait on
	}
	stop()
	<-done
	if got.State != store.ReplaySucceeded {
		t.Fatalf("replay ended %s (%s)", got.State, got.Error)
	}
	want := 0
	for i := 40; i < 80; i++ {
		if i%4 != 0 {
			want++
		}
	}
	if d.count() != want {
		t.Errorf("replayed %d records, want the %d matching ones of the range", d.count(), want)
	}
	for v, n := range d.seen {
		p := d.pos[v]
		if n != 1 || p.Kind != "kinesis" || p.Stream != name || p.Sequence == "" {
			t.Errorf("record %s handed out %d times at %+v", v, n, p)
		}
	}
	if got.RecordsRead != 40 || got.RecordsTotal != 40 || got.EventsDelivered != int64(want) || len(got.Plan) != 2 || !got.Plan[0].Done || !got.Plan[1].Done {
		t.Errorf("progress: read %d of %d, delivered %d, plan %+v; want 40 of 40, %d, two shards done", got.RecordsRead, got.RecordsTotal, got.EventsDelivered, got.Plan, want)
	}
}
