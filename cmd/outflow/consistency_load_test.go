package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/outflow-dev/outflow/featureserver"
	"github.com/outflow-dev/outflow/internal/testenv"
	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/tecton"
)

// The consistency load (issue 9): the real binary on the real Kafka broker, with the reference
// feature server as unkind as Tecton — a materialisation lag of 0.5 to 1.5 s, as in outflow dev, a key never
// written answering null with MISSING_DATA and no effective time, and a one-minute serving cache
// already holding stale values of the known users — and three webhook subscriptions to the same
// records: STRICT, BEST_EFFORT and NONE. The receivers judge every delivered vector by the rule
// of SPEC §4 themselves, from the envelope's metadata, never trusting the gateway's flag.

const (
	loadEntities = 1000 // half known (written before the load), half new
	loadRecords  = 2000 // two per entity: a new entity's first record finds nothing
	loadLag      = 500 * time.Millisecond
	loadJitter   = time.Second
)

// loadUser returns the entity of record seq: users alternate between known ("k<i>", written
// to the feature server before the load) and new ("n<i>", never written before their first
// record), and each appears twice, its second record after every first one.
func loadUser(seq int) (user string, known bool) {
	i := seq % loadEntities
	if i%2 == 0 {
		return fmt.Sprintf("k%d", i), true
	}
	return fmt.Sprintf("n%d", i), false
}

// loadRecord is record seq of the load, of the demo catalog's stream feature view.
func loadRecord(seq int, base time.Time) (key string, value []byte) {
	user, _ := loadUser(seq)
	value, _ = json.Marshal(map[string]any{
		"version": "1", "producer": "tecton", "job_type": "stream",
		"feature_view_name": fvCart, "feature_view_id": "fv-" + fvCart,
		"feature_timestamp": base.Add(time.Duration(seq) * time.Millisecond).Format(time.RFC3339Nano),
		"entity_keys":       map[string]string{"user_id": user},
		"feature_values":    map[string]string{"cart_count": fmt.Sprint(1 + seq%9), "cart_value": fmt.Sprintf("%d.25", seq%100)},
		"seq":               seq,
	})
	return user, value
}

// vectorArrival is one webhook request a vectorReceiver accepted.
type vectorArrival struct {
	eventID  string
	seq      int
	verdict  ruleVerdict
	claimed  *bool // feature_vector.consistent; nil when omitted
	attempts int
}

// vectorReceiver verifies every request with the Standard Webhooks reference library and keeps
// every arrival, so that losses and duplicates are counted by event id and every delivered
// vector — redeliveries included — is judged.
type vectorReceiver struct {
	srv      *httptest.Server
	mu       sync.Mutex
	secret   string
	arrivals []vectorArrival
	rejected []string
}

func newVectorReceiver(t *testing.T) *vectorReceiver {
	t.Helper()
	r := &vectorReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *vectorReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	wh, err := standardwebhooks.NewWebhook(r.secret)
	if err == nil {
		err = wh.Verify(body, req.Header)
	}
	var ev loadEvent
	if err == nil {
		err = json.Unmarshal(body, &ev)
	}
	if err == nil && ev.ID != req.Header.Get("webhook-id") {
		err = fmt.Errorf("webhook-id %q is not the event id %q", req.Header.Get("webhook-id"), ev.ID)
	}
	if err != nil {
		r.rejected = append(r.rejected, err.Error())
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	a := vectorArrival{eventID: ev.ID, seq: ev.Record.Seq, verdict: judge(ev)}
	if fv := ev.FeatureVector; fv != nil {
		a.claimed, a.attempts = fv.Consistent, fv.Attempts
	}
	r.arrivals = append(r.arrivals, a)
	w.WriteHeader(http.StatusOK)
}

func (r *vectorReceiver) snapshot() []vectorArrival {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]vectorArrival(nil), r.arrivals...)
}

// loadEvent is the part of an event envelope (SPEC §5) the load judges.
type loadEvent struct {
	ID     string `json:"id"`
	Record struct {
		Seq              int    `json:"seq"`
		FeatureViewName  string `json:"feature_view_name"`
		FeatureTimestamp string `json:"feature_timestamp"`
	} `json:"record"`
	FeatureVector *struct {
		Features map[string]json.RawMessage `json:"features"`
		Metadata map[string]struct {
			EffectiveTime *string `json:"effective_time"`
			Status        string  `json:"status"`
		} `json:"metadata"`
		Consistent *bool `json:"consistent"`
		Attempts   int   `json:"attempts"`
	} `json:"feature_vector"`
}

// ruleVerdict is the receiver's own reading of the rule for one delivered vector.
type ruleVerdict struct {
	hasVector bool
	own       int // features of the record's view in the vector
	missing   int // of those, without an effective time
	behind    int // of those, with an effective time before the record's
	nulls     int // of those, with a null value
	bad       string
}

func (v ruleVerdict) holds() bool {
	return v.hasVector && v.bad == "" && v.missing == 0 && v.behind == 0
}

// judge applies SPEC §4 to a delivered envelope, written from the JSON and independently of
// package tecton: every feature of the record's feature view needs an effective time at or
// after the record's feature_timestamp; one without an effective time has not caught up.
func judge(ev loadEvent) ruleVerdict {
	var v ruleVerdict
	fv := ev.FeatureVector
	if fv == nil {
		return v
	}
	v.hasVector = true
	ts, err := time.Parse(time.RFC3339Nano, ev.Record.FeatureTimestamp)
	if err != nil {
		v.bad = "record feature_timestamp: " + err.Error()
		return v
	}
	prefix := ev.Record.FeatureViewName + "."
	for name, raw := range fv.Features {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		v.own++
		if strings.TrimSpace(string(raw)) == "null" {
			v.nulls++
		}
		md, ok := fv.Metadata[name]
		if !ok || md.EffectiveTime == nil {
			v.missing++
			continue
		}
		et, err := time.Parse(time.RFC3339Nano, *md.EffectiveTime)
		if err != nil {
			v.bad = name + " effective_time: " + err.Error()
			continue
		}
		if et.Before(ts) {
			v.behind++
		}
	}
	if v.own != 2 {
		v.bad = fmt.Sprintf("%d features of %s in the vector, want the feature service's 2", v.own, ev.Record.FeatureViewName)
	}
	return v
}

// TestConsistencyLoad is issue 9's acceptance load: 2,000 records over 1,000 entities, half of
// them never written before their first record, through the real binary and broker to STRICT,
// BEST_EFFORT and NONE subscriptions. Every STRICT vector satisfies the rule; no BEST_EFFORT
// vector marked consistent breaks it; NONE is unchecked (and shows the hard shapes did occur);
// no event is lost or duplicated, counted by event id.
func TestConsistencyLoad(t *testing.T) {
	t.Parallel()
	env := &loadEnv{databaseURL: testenv.Postgres(t), brokers: testenv.KafkaBrokers(t), topic: testenv.NewTopic(t, 3)}
	runOutflow(t, env.databaseURL, "migrate")
	env.key = runOutflow(t, env.databaseURL, "apikey", "create", "--tenant", "load")

	fs, err := featureserver.New(featureserver.Config{Lag: loadLag, LagJitter: loadJitter, CacheTTL: time.Minute, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	env.features = fs
	fsHTTP := httptest.NewServer(fs.Handler())
	t.Cleanup(fsHTTP.Close)

	// The known half is written an hour before the load and read once, which also fills the
	// serving cache with those (soon stale) values.
	base := time.Now().UTC()
	preWrite(t, fs, fsHTTP.URL, base.Add(-time.Hour))

	ctx, cancel := context.WithCancel(context.Background())
	consumed := make(chan error, 1)
	go func() { consumed <- fs.Consume(ctx, env.brokers, []string{env.topic}, "fs-"+env.topic) }()
	t.Cleanup(func() {
		cancel()
		<-consumed
	})
	env.gateway = startGateway(t, env.databaseURL,
		"--kafka-brokers", strings.Join(env.brokers, ","), "--kafka-topics", env.topic, "--kafka-group", "gw-"+env.topic,
		"--tecton-url", fsHTTP.URL, "--tecton-api-key", "load-key", "--allow-insecure-urls", "--allow-cidrs", "127.0.0.0/8",
		"--retry-poll", "200ms")

	type loadSub struct {
		mode, timeout string
		recv          *vectorReceiver
	}
	subs := []*loadSub{{mode: "STRICT"}, {mode: "BEST_EFFORT", timeout: "0.8s"}, {mode: "NONE"}}
	for _, s := range subs {
		s.recv = newVectorReceiver(t)
		enrichment := map[string]any{"workspace_name": "prod", "feature_service_name": "promo_fs", "consistency": s.mode}
		if s.timeout != "" {
			enrichment["consistency_timeout"] = s.timeout
		}
		created := env.gateway.api(t, env.key, "POST", "/v1/subscriptions", map[string]any{
			"name": "load " + s.mode, "feature_view_names": []string{fvCart}, "enrichment": enrichment,
			"webhook": map[string]any{"url": s.recv.srv.URL + "/hook", "max_in_flight": 128},
		}, 200)
		s.recv.mu.Lock()
		s.recv.secret = created["secret"].(string)
		s.recv.mu.Unlock()
	}
	env.gateway.awaitSubscriptions(t, len(subs))

	start := time.Now()
	msgs := make([]kafkago.Message, loadRecords)
	for seq := range loadRecords {
		key, value := loadRecord(seq, base)
		msgs[seq] = kafkago.Message{Key: []byte(key), Value: value}
	}
	env.produceMessages(t, msgs)

	// Wait until every subscription has every record, polling.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		missing, example := 0, ""
		for _, s := range subs {
			got := map[int]bool{}
			for _, a := range s.recv.snapshot() {
				got[a.seq] = true
			}
			for seq := range loadRecords {
				if !got[seq] {
					if missing == 0 {
						example = fmt.Sprintf("%s seq %d", s.mode, seq)
					}
					missing++
				}
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d (subscription, record) pairs never arrived, e.g. %s", missing, example)
		}
		time.Sleep(100 * time.Millisecond) // polling the receivers of another process
	}
	took := time.Since(start)

	for _, s := range subs {
		arrivals := s.recv.snapshot()
		s.recv.mu.Lock()
		rejected := s.recv.rejected
		s.recv.mu.Unlock()
		if len(rejected) > 0 {
			t.Errorf("%s: %d requests rejected, e.g. %s", s.mode, len(rejected), rejected[0])
		}
		// Losses and duplicates by event id: one id per record, each arriving once.
		perID := map[string]int{}
		idOf := map[int]string{}
		var broken, retried, firstRetried, firstRecords, claimedTrue, claimedFalse, missingSeen, nullsSeen int
		for _, a := range arrivals {
			perID[a.eventID]++
			if prev, ok := idOf[a.seq]; ok && prev != a.eventID {
				t.Errorf("%s: record %d arrived as two events, %s and %s", s.mode, a.seq, prev, a.eventID)
			}
			idOf[a.seq] = a.eventID
			v := a.verdict
			if v.bad != "" {
				t.Errorf("%s: record %d: %s", s.mode, a.seq, v.bad)
			}
			if !v.holds() {
				broken++
			}
			if v.missing > 0 {
				missingSeen++
			}
			if v.nulls > 0 {
				nullsSeen++
			}
			if a.attempts > 1 {
				retried++
			}
			if _, known := loadUser(a.seq); !known && a.seq < loadEntities {
				firstRecords++
				if a.attempts > 1 {
					firstRetried++
				}
			}
			switch {
			case a.claimed == nil:
			case *a.claimed:
				claimedTrue++
			default:
				claimedFalse++
			}
			switch s.mode {
			case "STRICT":
				if !v.holds() || a.claimed == nil || !*a.claimed {
					t.Errorf("STRICT delivered record %d (event %s) with a vector that breaks the rule: %+v, consistent %v, attempts %d",
						a.seq, a.eventID, v, a.claimed, a.attempts)
				}
			case "BEST_EFFORT":
				if a.claimed == nil || (*a.claimed && !v.holds()) || (!*a.claimed && v.holds()) {
					t.Errorf("BEST_EFFORT record %d (event %s): rule holds %v (%+v) but consistent %v", a.seq, a.eventID, v.holds(), v, a.claimed)
				}
			case "NONE":
				if a.claimed != nil || a.attempts != 1 {
					t.Errorf("NONE record %d: consistent %v after %d attempts, want omitted after 1", a.seq, a.claimed, a.attempts)
				}
			}
		}
		dups := 0
		for _, n := range perID {
			dups += n - 1
		}
		lost := loadRecords - len(idOf)
		if lost != 0 || dups != 0 {
			t.Errorf("%s: %d records lost, %d duplicate deliveries (by event id)", s.mode, lost, dups)
		}
		t.Logf("%s: %d events, %d ids, lost %d, duplicates %d; rule broken by %d vectors (%d missing an effective time, %d with nulls); consistent true/false %d/%d; retried %d; new entities' first records %d, retried %d",
			s.mode, len(arrivals), len(perID), lost, dups, broken, missingSeen, nullsSeen, claimedTrue, claimedFalse, retried, firstRecords, firstRetried)
		if s.mode == "NONE" && missingSeen == 0 {
			t.Errorf("NONE never saw a vector without effective times: the load did not meet the first-record case it exists for")
		}
		if s.mode == "STRICT" && firstRetried == 0 {
			t.Errorf("STRICT never retried a new entity's first record: the load did not exercise the wait")
		}
	}
	t.Logf("%d records over %d entities (%d new) delivered to STRICT, BEST_EFFORT and NONE in %s", loadRecords, loadEntities, loadEntities/2, took.Round(time.Millisecond))
}

// preWrite writes one record for each known entity, stamped at ts, to the feature server and
// waits until all are materialised, reading through the serving cache's bypass (which, with
// write_to_cache, leaves those values in the cache).
func preWrite(t *testing.T, fs *featureserver.Server, url string, ts time.Time) {
	t.Helper()
	var users []string
	for seq := range loadEntities {
		user, known := loadUser(seq)
		if !known {
			continue
		}
		users = append(users, user)
		raw, _ := json.Marshal(map[string]any{
			"version": "1", "feature_view_name": fvCart, "feature_timestamp": ts.Format(time.RFC3339Nano),
			"entity_keys": map[string]string{"user_id": user}, "feature_values": map[string]string{"cart_count": "7", "cart_value": "70.00"},
		})
		rec, err := record.Decode(raw, record.DecodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		fs.Apply(rec)
	}
	transport := &http.Transport{}
	defer transport.CloseIdleConnections()
	client, err := tecton.NewClient(tecton.Config{BaseURL: url, APIKey: "load-key", HTTPClient: &http.Client{Transport: transport}})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; i < len(users); {
		reqs := make([]tecton.Request, 0, tecton.MaxBatchSize)
		for _, u := range users[i:min(i+tecton.MaxBatchSize, len(users))] {
			reqs = append(reqs, tecton.Request{Workspace: "prod", FeatureService: "promo_fs", JoinKeys: map[string]string{"user_id": u}, BypassCache: true})
		}
		vs, err := client.GetFeaturesBatch(t.Context(), reqs)
		if err != nil {
			t.Fatal(err)
		}
		done := true
		for _, v := range vs {
			if ok, _ := v.Consistent(fvCart, ts); !ok {
				done = false
			}
		}
		if done {
			i += len(reqs)
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("the known entities were not materialised within 30s")
		}
		time.Sleep(20 * time.Millisecond) // waiting out the materialisation lag
	}
}
