package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awskinesis "github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/jackc/pgx/v5"

	"github.com/outflow-dev/outflow/dispatcher"
	"github.com/outflow-dev/outflow/featureserver"
	"github.com/outflow-dev/outflow/internal/testenv"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/source"
	"github.com/outflow-dev/outflow/source/kinesis"
)

// kinesisEnv is loadEnv over Kinesis: a migrated database with a key, a
// stream on the local Kinesis, the reference feature server materialising
// the records it reads from the stream itself (as it consumes the Kafka
// topic in loadEnv, so its lag behind the gateway is as real), and gateways
// reading the stream.
type kinesisEnv struct {
	databaseURL string
	stream      string
	client      *awskinesis.Client
	key         string
	features    *featureserver.Server
	fsURL       string
	gateways    []*gateway
}

func newKinesisEnv(t *testing.T, shards int) *kinesisEnv {
	t.Helper()
	env := &kinesisEnv{databaseURL: testenv.Postgres(t), stream: testenv.NewKinesisStream(t, shards), client: testenv.KinesisClient(t)}
	runOutflow(t, env.databaseURL, "migrate")
	env.key = runOutflow(t, env.databaseURL, "apikey", "create", "--tenant", "e2e")
	fs, err := featureserver.New(featureserver.Config{Catalog: featureserver.DemoCatalog(), Lag: 150 * time.Millisecond, LagJitter: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	env.features = fs
	fsHTTP := httptest.NewServer(fs.Handler())
	t.Cleanup(fsHTTP.Close)
	env.fsURL = fsHTTP.URL

	// The feature server reads every shard the stream starts with from its
	// start (the tests that split a shard use no enrichment).
	reader, err := kinesis.NewReader(kinesis.ReaderConfig{AWS: testenv.KinesisAWS(), Endpoint: testenv.KinesisEndpoint(t), IdleWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	list, err := reader.Shards(t.Context(), env.stream)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, sh := range list {
		wg.Go(func() {
			_ = reader.ReadRange(ctx, source.ShardRangeRequest{Stream: env.stream, Shard: sh.ID, From: time.Unix(0, 0), To: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)},
				func(batch []source.ShardRecord) error {
					for _, r := range batch {
						if rec, err := record.Decode(r.Value, record.DecodeOptions{}); err == nil {
							fs.Apply(rec)
						}
					}
					return nil
				})
		})
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		reader.Close()
	})
	return env
}

// startGateway starts a gateway reading the stream, with AWS credentials in
// its environment as the standard chain reads them.
func (env *kinesisEnv) startGateway(t *testing.T, args ...string) *gateway {
	t.Helper()
	g := &gateway{t: t, logs: &lockedBuffer{}, env: append(os.Environ(),
		"OUTFLOW_DATABASE_URL="+env.databaseURL, "OUTFLOW_SECRET_KEYS="+testSecretKeys,
		"AWS_ACCESS_KEY_ID=outflow-test", "AWS_SECRET_ACCESS_KEY=outflow-test", "AWS_REGION="+testenv.KinesisRegion,
		"AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null")}
	g.args = append([]string{
		"--kinesis-streams", env.stream, "--kinesis-endpoint", testenv.KinesisEndpoint(t), "--kinesis-group", "gw-" + env.stream,
		"--kinesis-idle-wait", "100ms",
		"--tecton-url", env.fsURL, "--tecton-api-key", "e2e-key", "--allow-insecure-urls", "--allow-cidrs", "127.0.0.0/8",
		"--retry-poll", "200ms"}, args...)
	g.start()
	t.Cleanup(func() {
		g.stop()
		if t.Failed() {
			t.Logf("gateway log (tail):\n%s", tail(g.logs.String(), 4000))
		}
	})
	env.gateways = append(env.gateways, g)
	return g
}

func (env *kinesisEnv) subscribe(t *testing.T, g *gateway, subs []*e2eSubscription) {
	t.Helper()
	(&loadEnv{gateway: g, key: env.key}).subscribe(t, subs)
}

// produce writes records [from, to) with the user as partition key, so one
// user's records share a shard (and follow it through a split).
func (env *kinesisEnv) produce(t *testing.T, from, to int, base time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for start := from; start < to; start += 500 {
		var entries []types.PutRecordsRequestEntry
		for seq := start; seq < min(start+500, to); seq++ {
			key, value, _, _ := testRecord(seq, base)
			entries = append(entries, types.PutRecordsRequestEntry{PartitionKey: aws.String(key), Data: value})
		}
		// PutRecords may fail some entries (throttling); those are sent again,
		// in order, before the next batch.
		for len(entries) > 0 {
			out, err := env.client.PutRecords(ctx, &awskinesis.PutRecordsInput{StreamName: aws.String(env.stream), Records: entries})
			if err != nil {
				t.Fatalf("PutRecords: %v", err)
			}
			var again []types.PutRecordsRequestEntry
			for i, r := range out.Records {
				if r.ErrorCode != nil {
					again = append(again, entries[i])
				}
			}
			entries = again
		}
	}
}

// kinesisShardsRead returns the shards a gateway reports lag for.
func kinesisShardsRead(t *testing.T, g *gateway) []string {
	t.Helper()
	var shards []string
	for _, m := range regexp.MustCompile(`outflow_kinesis_lag_seconds\{shard="([^"]+)"`).FindAllStringSubmatch(g.get(t, "/metrics"), -1) {
		shards = append(shards, m[1])
	}
	return shards
}

// TestKinesisEndToEnd: 5,000 records over 3 feature views on a 2-shard
// Kinesis stream reach the same webhook subscriptions as TestEndToEnd:
// every matching pair at least once, no other, every signature verified,
// STRICT vectors consistent, ids derived from the Kinesis position, and the
// envelope's source naming stream, shard and sequence.
func TestKinesisEndToEnd(t *testing.T) {
	t.Parallel()
	const n = 5000
	env := newKinesisEnv(t, 2)
	g := env.startGateway(t)
	subs := e2eSubscriptions(t)
	env.subscribe(t, g, subs)
	base := time.Now().UTC()
	start := time.Now()
	env.produce(t, 0, n, base)
	dups := checkDelivered(t, subs, expected(subs, n, base), 4*time.Minute)
	t.Logf("%d Kinesis records delivered to %d subscriptions in %s; duplicates per subscription: %v", n, len(subs), time.Since(start).Round(time.Millisecond), dups)
	checkVectors(t, subs[3], subs[4])

	shards := map[string]bool{}
	s := subs[0]
	s.recv.mu.Lock()
	for seq, ev := range s.recv.events {
		src, _ := ev["source"].(map[string]any)
		pos := source.Position{Kind: "kinesis", Stream: fmt.Sprint(src["stream"]), Shard: fmt.Sprint(src["shard"]), Sequence: fmt.Sprint(src["sequence"])}
		if src["kind"] != "kinesis" || pos.Stream != env.stream || !strings.HasPrefix(pos.Shard, "shardId-") || pos.Sequence == "" || len(src) != 4 {
			t.Errorf("record %d: source = %v, want kind, stream, shard and sequence", seq, src)
		} else if id := dispatcher.EventID(s.id, pos); ev["id"] != id {
			t.Errorf("record %d: id %v, want %s from its Kinesis position", seq, ev["id"], id)
		}
		shards[pos.Shard] = true
	}
	s.recv.mu.Unlock()
	if len(shards) != 2 {
		t.Errorf("events came from shards %v, want both", shards)
	}

	metrics := g.get(t, "/metrics")
	for _, series := range []string{fmt.Sprintf("outflow_records_consumed_total %d", n), `outflow_kinesis_lag_seconds{shard="shardId-000000000000",stream="` + env.stream + `"}`} {
		if !strings.Contains(metrics, series) {
			t.Errorf("/metrics lacks %s:\n%s", series, grepLines(metrics, "outflow_"))
		}
	}
}

// TestKinesisCrashLosesNothing kills the gateway with SIGKILL three times
// during the load and restarts it: no (subscription, record) pair is lost;
// the duplicates are counted and reported.
func TestKinesisCrashLosesNothing(t *testing.T) {
	t.Parallel()
	const n = 5000
	env := newKinesisEnv(t, 2)
	// A short lease: a restarted gateway is a new replica, and waits for the
	// killed one's leases to expire before it reads.
	g := env.startGateway(t, "--kinesis-lease-duration", "2s")
	subs := e2eSubscriptions(t)[:4]
	env.subscribe(t, g, subs)
	base := time.Now().UTC()
	for i := range 4 {
		env.produce(t, i*n/4, (i+1)*n/4, base)
		if i < 3 {
			time.Sleep(time.Duration(300+200*i) * time.Millisecond) // let it get some way into the batch
			g.kill9()
			g.start()
		}
	}
	dups := checkDelivered(t, subs, expected(subs, n, base), 5*time.Minute)
	total := 0
	for _, d := range dups {
		total += d
	}
	t.Logf("3 SIGKILLs during %d Kinesis records: nothing lost; %d duplicates in all (per subscription %v)", n, total, dups)
}

// TestKinesisTwoReplicasTakeOver: two gateways split a 4-shard stream's
// shards; one is killed with SIGKILL; the other takes its shards over once
// their leases expire; nothing is lost.
func TestKinesisTwoReplicasTakeOver(t *testing.T) {
	t.Parallel()
	const n = 4000
	env := newKinesisEnv(t, 4)
	a := env.startGateway(t, "--kinesis-lease-duration", "3s")
	b := env.startGateway(t, "--kinesis-lease-duration", "3s")
	subs := e2eSubscriptions(t)[:3]
	env.subscribe(t, a, subs)
	b.awaitSubscriptions(t, len(subs)) // b reads shards too, and learns of them on its own
	base := time.Now().UTC()
	env.produce(t, 0, n/2, base)
	pollUntil(t, time.Minute, "each replica reading two shards", func() bool {
		return len(kinesisShardsRead(t, a)) == 2 && len(kinesisShardsRead(t, b)) == 2
	})
	t.Logf("shards before the kill: a %v, b %v", kinesisShardsRead(t, a), kinesisShardsRead(t, b))
	a.kill9()
	env.produce(t, n/2, n, base)
	pollUntil(t, time.Minute, "the survivor reading every shard", func() bool { return len(kinesisShardsRead(t, b)) == 4 })
	dups := checkDelivered(t, subs, expected(subs, n, base), 4*time.Minute)
	t.Logf("one of two replicas killed: the other took its shards over; nothing lost; duplicates per subscription %v", dups)
}

// orderReceiver records, per user, the seqs of the events it receives in
// arrival order (one at a time: its subscription has max_in_flight 1).
type orderReceiver struct {
	srv   *httptest.Server
	mu    sync.Mutex
	order map[string][]int
}

func newOrderReceiver(t *testing.T) *orderReceiver {
	r := &orderReceiver{order: map[string][]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var ev struct {
			Record struct {
				Seq        int               `json:"seq"`
				EntityKeys map[string]string `json:"entity_keys"`
			} `json:"record"`
		}
		if err := json.NewDecoder(req.Body).Decode(&ev); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		u := ev.Record.EntityKeys["user_id"]
		r.order[u] = append(r.order[u], ev.Record.Seq)
		r.mu.Unlock()
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// TestKinesisShardSplitMidLoad splits a shard while records flow: nothing is
// lost, and each user's events arrive in order (a redelivery may repeat
// earlier ones, but no record arrives for the first time before an earlier
// one of the same user).
func TestKinesisShardSplitMidLoad(t *testing.T) {
	t.Parallel()
	const n = 4000
	env := newKinesisEnv(t, 1)
	// Lanes large enough that no event of the ordered subscription (one
	// delivery at a time) spills to the retry queue, which would reorder
	// it by design: this test is about the source's order.
	g := env.startGateway(t, "--lane-queue", "20000")
	subs := e2eSubscriptions(t)[:2]
	env.subscribe(t, g, subs)
	ordered := newOrderReceiver(t)
	g.api(t, env.key, "POST", "/v1/subscriptions", map[string]any{"name": "ordered clicks", "feature_view_names": []string{fvClicks},
		"webhook": map[string]any{"url": ordered.srv.URL + "/hook", "max_in_flight": 1}}, 200)
	g.awaitSubscriptions(t, len(subs)+1)
	base := time.Now().UTC()
	env.produce(t, 0, n/2, base)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := env.client.SplitShard(ctx, &awskinesis.SplitShardInput{
		StreamName: aws.String(env.stream), ShardToSplit: aws.String("shardId-000000000000"),
		NewStartingHashKey: aws.String("170141183460469231731687303715884105728"), // 2^127: halves
	}); err != nil {
		t.Fatalf("SplitShard: %v", err)
	}
	if err := testenv.AwaitKinesisStream(ctx, env.client, env.stream); err != nil {
		t.Fatal(err)
	}
	env.produce(t, n/2, n, base)
	dups := checkDelivered(t, subs, expected(subs, n, base), 4*time.Minute)
	clicks := expected(subs[:1], n, base)[0]
	pollUntil(t, 2*time.Minute, "every click at the ordered receiver", func() bool {
		ordered.mu.Lock()
		defer ordered.mu.Unlock()
		seen := map[int]bool{}
		for _, seqs := range ordered.order {
			for _, s := range seqs {
				seen[s] = true
			}
		}
		return len(seen) == len(clicks)
	})
	ordered.mu.Lock()
	defer ordered.mu.Unlock()
	for user, seqs := range ordered.order {
		seen, last := map[int]bool{}, -1
		for _, s := range seqs {
			if seen[s] {
				continue
			}
			seen[s] = true
			if s < last {
				t.Errorf("user %s: record %d arrived first after %d", user, s, last)
			}
			last = s
		}
	}
	t.Logf("a split mid-load of %d records: nothing lost; per-user order kept across parent and children; duplicates per subscription %v", n, dups)
	if rd := kinesisShardsRead(t, g); len(rd) != 2 {
		t.Errorf("after the split the gateway reads %v, want the two children", rd)
	}
}

// TestKinesisReplay: records arrive on a 2-shard stream in three batches
// apart in time; replaying the middle batch's time range re-delivers exactly
// its matching events, once each, with the ids they had, and to no other
// subscription.
func TestKinesisReplay(t *testing.T) {
	t.Parallel()
	env := newKinesisEnv(t, 2)
	g := env.startGateway(t)
	clicks, views := newReceiver(t), newReceiver(t)
	subs := []*e2eSubscription{
		{name: "clicks", recv: clicks, wants: func(fv, _ string) bool { return fv == fvClicks },
			body: map[string]any{"feature_view_names": []string{fvClicks}, "webhook": map[string]any{"url": clicks.srv.URL, "max_in_flight": 16}}},
		{name: "views", recv: views, wants: func(fv, _ string) bool { return fv == fvViews },
			body: map[string]any{"feature_view_names": []string{fvViews}, "webhook": map[string]any{"url": views.srv.URL}}},
	}
	for _, s := range subs {
		s.body["name"] = s.name
	}
	env.subscribe(t, g, subs)

	// Kinesis times records by arrival, so the batches are apart in real
	// time: the sleeps make the time ranges, they synchronise nothing.
	const per, n = 300, 900
	base := time.Now().UTC()
	boundary := func() time.Time {
		time.Sleep(300 * time.Millisecond)
		at := time.Now()
		time.Sleep(300 * time.Millisecond)
		return at
	}
	env.produce(t, 0, per, base)
	from := boundary()
	env.produce(t, per, 2*per, base)
	to := boundary()
	env.produce(t, 2*per, n, base)
	checkDelivered(t, subs, expected(subs, n, base), 2*time.Minute)
	before := make([]map[int]int, len(subs))
	for i, s := range subs {
		before[i], _, _ = s.recv.snapshot()
	}

	rp := g.api(t, env.key, "POST", "/v1/subscriptions/"+subs[0].id+":replay", map[string]any{
		"start_time": from.Format(time.RFC3339Nano), "end_time": to.Format(time.RFC3339Nano)}, 200)
	replayID, _ := rp["id"].(string)
	var final map[string]any
	pollUntil(t, time.Minute, "the replay to succeed", func() bool {
		final = g.api(t, env.key, "GET", "/v1/subscriptions/"+subs[0].id+"/replays/"+replayID, nil, 200)
		if final["state"] == "FAILED" {
			t.Fatalf("the replay failed: %v", final)
		}
		return final["state"] == "SUCCEEDED"
	})
	want := map[int]bool{}
	for seq := per; seq < 2*per; seq++ {
		if _, _, fv, _ := testRecord(seq, base); fv == fvClicks {
			want[seq] = true
		}
	}
	got, badSig, idMismatch := clicks.snapshot()
	again := 0
	for seq, c := range got {
		switch extra := c - before[0][seq]; {
		case extra == 1 && want[seq]:
			again++
		case extra != 0:
			t.Errorf("record %d (clicks): %d extra deliveries after the replay, want %d", seq, extra, map[bool]int{true: 1}[want[seq]])
		}
	}
	if again != len(want) {
		t.Errorf("the replay re-delivered %d of the batch's %d clicks", again, len(want))
	}
	if badSig != 0 || idMismatch != 0 {
		t.Errorf("clicks receiver: %d bad signatures, %d events whose id changed", badSig, idMismatch)
	}
	if vgot, _, _ := views.snapshot(); len(vgot) != len(before[1]) {
		t.Error("a subscription that was not replayed received events during the replay")
	}
	if read, delivered := final["records_read"], final["events_delivered"]; read != fmt.Sprint(per) || delivered != fmt.Sprint(len(want)) {
		t.Errorf("replay progress: records_read %v, events_delivered %v; want %d, %d", read, delivered, per, len(want))
	}
	t.Logf("replayed a Kinesis time range: %d records read on 2 shards, %d events re-delivered with their ids", per, again)
}

// TestKinesisStreamResume: a stream client of a subscription on a Kinesis
// stream reads part of a load, the gateway is killed with SIGKILL, more
// records arrive, and the client resumes with its last token on the
// restarted gateway: every click arrives, none is lost. Then a stream
// replay (ReplaySubscription of a stream subscription) answers a token from
// which the stream re-delivers from the replay's start.
func TestKinesisStreamResume(t *testing.T) {
	t.Parallel()
	env := newKinesisEnv(t, 2)
	g := env.startGateway(t)
	subID := g.api(t, env.key, "POST", "/v1/subscriptions", map[string]any{
		"name": "clicks stream", "feature_view_names": []string{fvClicks}, "stream": map[string]any{}}, 200)["id"].(string)

	// A token for "everything from now on", taken before the load: the
	// stream replay at the load's start.
	base := time.Now().UTC()
	client, authed := streamClient(t, g, env.key)
	s, err := client.StreamEvents(authed, &outflowv1.StreamEventsRequest{SubscriptionId: subID})
	if err != nil {
		t.Fatal(err)
	}
	// The server resolves the live tail after the call starts: warm up with
	// a click every second until one arrives.
	got := make(chan streamed, 1)
	failed := make(chan error, 1)
	go func() {
		ev, err := nextEvent(s)
		if err != nil {
			failed <- err
			return
		}
		got <- ev
	}()
	var last streamed
warm:
	for i := 0; ; i++ {
		if i == 30 {
			t.Fatal("the stream never delivered a warm-up event")
		}
		env.produce(t, 1_000_000+3*i, 1_000_001+3*i, base) // a click (seq % 3 == 1)
		select {
		case last = <-got:
			break warm
		case err := <-failed:
			t.Fatalf("stream: %v", err)
		case <-time.After(time.Second):
		}
	}

	const n = 3000
	var clicks []int
	for seq := range n {
		if _, _, fv, _ := testRecord(seq, base); fv == fvClicks {
			clicks = append(clicks, seq)
		}
	}
	loadStart := time.Now()
	seen := map[int]int{}
	env.produce(t, 0, n/2, base)
	for len(seen) < len(clicks)/4 {
		ev, err := nextEvent(s)
		if err != nil {
			t.Fatalf("stream before the kill: %v", err)
		}
		if ev.seq < n {
			seen[ev.seq]++
		}
		last = ev
	}
	g.kill9()
	env.produce(t, n/2, n, base)
	g.start()

	complete := func(seen map[int]int) bool {
		for _, c := range clicks {
			if seen[c] == 0 {
				return false
			}
		}
		return true
	}
	client2, authed2 := streamClient(t, g, env.key)
	s2, err := client2.StreamEvents(authed2, &outflowv1.StreamEventsRequest{SubscriptionId: subID, ResumeToken: last.token})
	if err != nil {
		t.Fatal(err)
	}
	for !complete(seen) {
		ev, err := nextEvent(s2)
		if err != nil {
			t.Fatalf("stream after the restart, %d clicks in: %v", len(seen), err)
		}
		if ev.seq < n {
			seen[ev.seq]++
		}
	}
	dups := 0
	for _, c := range seen {
		dups += c - 1
	}
	t.Logf("Kinesis stream resumed with its token across a SIGKILL and restart: %d clicks, none lost, %d duplicates", len(clicks), dups)

	// Stream replay: the token at the load's start re-delivers the load.
	rp := g.api(t, env.key, "POST", "/v1/subscriptions/"+subID+":replay", map[string]any{
		"start_time": loadStart.Format(time.RFC3339Nano)}, 200)
	token, _ := rp["resume_token"].(string)
	if rp["state"] != "SUCCEEDED" || token == "" {
		t.Fatalf("stream replay answered %v", rp)
	}
	s3, err := client2.StreamEvents(authed2, &outflowv1.StreamEventsRequest{SubscriptionId: subID, ResumeToken: token})
	if err != nil {
		t.Fatal(err)
	}
	again := map[int]int{}
	for !complete(again) {
		ev, err := nextEvent(s3)
		if err != nil {
			t.Fatalf("replayed stream, %d clicks in: %v", len(again), err)
		}
		if ev.seq >= n {
			t.Fatalf("the replayed stream delivered warm-up record %d, from before the replay's start", ev.seq)
		}
		again[ev.seq]++
	}
	t.Logf("the stream replay from the load's start re-delivered all %d clicks", len(again))
}

// TestKinesisPoison interleaves the bad records of TestPoison that Kinesis
// accepts (up to 1 MiB, not empty) with good ones on one shard: every good
// one is delivered, every bad one is kept with its reason and its Kinesis
// position, and the shard never stalls.
func TestKinesisPoison(t *testing.T) {
	t.Parallel()
	env := newKinesisEnv(t, 1)
	g := env.startGateway(t)
	recv := newReceiver(t)
	created := g.api(t, env.key, "POST", "/v1/subscriptions", map[string]any{
		"name": "clicks", "feature_view_names": []string{fvClicks}, "webhook": map[string]any{"url": recv.srv.URL}}, 200)
	recv.mu.Lock()
	recv.secret = created["secret"].(string)
	recv.mu.Unlock()
	g.awaitSubscriptions(t, 1)

	base := time.Now().UTC()
	var entries []types.PutRecordsRequestEntry
	var goodSeqs []int
	want := map[string]int{}
	seq := 0
	for _, c := range poisonCases() {
		if len(c.value) == 0 || len(c.value) > 1<<20 {
			continue // Kinesis refuses these itself
		}
		for {
			_, value, fv, _ := testRecord(seq, base)
			seq++
			if fv == fvClicks {
				entries = append(entries, types.PutRecordsRequestEntry{PartitionKey: aws.String("same"), Data: value})
				goodSeqs = append(goodSeqs, seq-1)
				break
			}
		}
		entries = append(entries, types.PutRecordsRequestEntry{PartitionKey: aws.String("same"), Data: c.value})
		want[c.reason]++
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := env.client.PutRecords(ctx, &awskinesis.PutRecordsInput{StreamName: aws.String(env.stream), Records: entries})
	if err != nil || aws.ToInt32(out.FailedRecordCount) > 0 {
		t.Fatalf("PutRecords: %v (%d failed)", err, aws.ToInt32(out.FailedRecordCount))
	}
	pollUntil(t, time.Minute, "every good record delivered", func() bool {
		got, _, _ := recv.snapshot()
		for _, s := range goodSeqs {
			if got[s] == 0 {
				return false
			}
		}
		return true
	})

	db, err := pgx.Connect(ctx, env.databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	total := 0
	for _, n := range want {
		total += n
	}
	var reasons map[string]int
	pollUntil(t, 30*time.Second, "every poison record kept", func() bool {
		rows, err := db.Query(ctx, `SELECT reason, count(*) FROM poison_records
			WHERE source_kind = 'kinesis' AND stream = $1 AND shard = 'shardId-000000000000' AND sequence_number <> ''
			GROUP BY reason`, env.stream)
		if err != nil {
			t.Fatal(err)
		}
		reasons = map[string]int{}
		n := 0
		for rows.Next() {
			var r string
			var c int
			if err := rows.Scan(&r, &c); err != nil {
				t.Fatal(err)
			}
			reasons[r] = c
			n += c
		}
		return n == total
	})
	if fmt.Sprint(reasons) != fmt.Sprint(want) {
		t.Errorf("poison by reason = %v, want %v", reasons, want)
	}
	t.Logf("%d good Kinesis records delivered around %d poison records kept with their positions, by reason %v", len(goodSeqs), total, reasons)
}
