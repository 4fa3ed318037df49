package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	kafkago "github.com/segmentio/kafka-go"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/store"
	"github.com/outflow-dev/outflow/webhook"
)

// partitions is the topic size of every scenario, as in issue 10's runs.
const partitions = 6

// createTopic makes a topic of partitions partitions and waits for its
// leaders.
func createTopic(ctx context.Context, brokers []string, topic string) error {
	conn, err := kafkago.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		return fmt.Errorf("dialing kafka: %w", err)
	}
	ctrl, err := conn.Controller()
	conn.Close()
	if err != nil {
		return fmt.Errorf("finding the controller: %w", err)
	}
	cc, err := kafkago.DialContext(ctx, "tcp", net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port)))
	if err != nil {
		return fmt.Errorf("dialing the controller: %w", err)
	}
	defer cc.Close()
	if err := cc.CreateTopics(kafkago.TopicConfig{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1}); err != nil {
		return fmt.Errorf("creating topic %s: %w", topic, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ps, err := cc.ReadPartitions(topic)
		ok := err == nil && len(ps) == partitions
		for _, p := range ps {
			ok = ok && p.Leader.Host != ""
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("topic %s has no leaders after 30s (%v)", topic, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func deleteTopic(brokers []string, topic string) {
	client := &kafkago.Client{Addr: kafkago.TCP(brokers...), Timeout: 10 * time.Second}
	_, _ = client.DeleteTopics(context.Background(), &kafkago.DeleteTopicsRequest{Topics: []string{topic}})
}

// recordJSON is one output-stream record of the demo feature view, for user
// user; sent_ns (an unknown member, passed through untouched) is when it was
// produced, for the receiver's latency.
func recordJSON(user int, ts time.Time, sent time.Time) []byte {
	return fmt.Appendf(nil, `{"version":"1","producer":"tecton","job_type":"stream",`+
		`"feature_view_name":"user_items_added_to_cart","feature_view_id":"8d5a4e2c9f1b4c3a9e7d6f5a4b3c2d1e",`+
		`"feature_timestamp":%q,"entity_keys":{"user_id":"u%d"},`+
		`"feature_values":{"cart_count":"%d","cart_value":"%d.25"},"sent_ns":"%d"}`,
		ts.UTC().Format(time.RFC3339Nano), user, user%17, user%300, sent.UnixNano())
}

// producer writes records to a topic: a bulk write spread over the
// partitions by the key's hash, produceAt's writes one partition at a time.
type producer struct {
	w   *kafkago.Writer
	bal *tickBalancer
	// patience is how long a write is retried (15 s by default).
	patience time.Duration
}

func newProducer(brokers []string, topic string) *producer {
	bal := &tickBalancer{}
	bal.write.Store(-1)
	return &producer{bal: bal, w: &kafkago.Writer{
		Addr: kafkago.TCP(brokers...), Topic: topic,
		Balancer:  bal,
		BatchSize: 1000,
		// Every write hands the writer whole batches. kafka-go holds a
		// partition's batch that is not full (BatchSize) for BatchTimeout
		// before sending it, which would add the timeout to every record's
		// produce-to-receipt latency: the producer's delay, not the
		// gateway's or the broker's. One microsecond sends each write's
		// batch as soon as the write has filled it.
		BatchTimeout: time.Microsecond,
		RequiredAcks: kafkago.RequireOne,
	}}
}

// produce writes the records of users [from, to), each with its produce
// time.
func (p *producer) produce(ctx context.Context, from, to int) error {
	const chunk = 1000
	for lo := from; lo < to; lo += chunk {
		hi := min(lo+chunk, to)
		msgs := make([]kafkago.Message, 0, hi-lo)
		now := time.Now()
		for u := lo; u < hi; u++ {
			msgs = append(msgs, kafkago.Message{Key: []byte("u" + strconv.Itoa(u)), Value: recordJSON(u, now, now)})
		}
		if err := p.write(ctx, msgs); err != nil {
			return err
		}
	}
	return nil
}

// write writes msgs, retrying for up to patience: a topic just created may
// not be in every broker's metadata yet (UNKNOWN_TOPIC_OR_PARTITION), and a
// broker may be down on purpose.
func (p *producer) write(ctx context.Context, msgs []kafkago.Message) error {
	patience := p.patience
	if patience == 0 {
		patience = 15 * time.Second
	}
	deadline := time.Now().Add(patience)
	for {
		err := p.w.WriteMessages(ctx, msgs...)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("producing: %w", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// produceAt writes records of users from onwards at rate per second for d,
// every 2 ms (each write's records are stamped with its time), and returns
// how many it wrote. Each write goes to one partition, the next write to
// the next: the broker sees one produce request per write, as few as a
// 10 ms tick over all six partitions made, and the gateway sees records
// arrive as a stream rather than in bursts. The 10 ms tick (14 ms in
// practice, the write's own time added) delivered ~210 records at once at
// steady-latency's rate, and the last of each burst waited the ~9 ms the
// gateway took to deliver the burst: that wait, not the gateway's delay per
// record, was most of the p50 measured that way (9 ms, against 2 ms now).
func (p *producer) produceAt(ctx context.Context, from int, rate float64, d time.Duration) (int, error) {
	const tick = 2 * time.Millisecond
	defer p.bal.write.Store(-1)
	start := time.Now()
	next := start
	n := from
	for t := time.Now(); t.Sub(start) < d; t = time.Now() {
		due := from + int(rate*t.Sub(start).Seconds())
		if due > n {
			msgs := make([]kafkago.Message, 0, due-n)
			for u := n; u < due; u++ {
				msgs = append(msgs, kafkago.Message{Key: []byte("u" + strconv.Itoa(u)), Value: recordJSON(u, t, t)})
			}
			p.bal.write.Add(1)
			if err := p.write(ctx, msgs); err != nil {
				return n - from, err
			}
			n = due
		}
		next = next.Add(tick)
		if wait := time.Until(next); wait > 0 {
			select {
			case <-ctx.Done():
				return n - from, ctx.Err()
			case <-time.After(wait):
			}
		} else {
			next = time.Now()
		}
	}
	return n - from, nil
}

// tickBalancer puts each of produceAt's writes on one partition, the next
// write on the next one; other writes go by the key's hash. The bench's
// keys are unique, so no order between records is lost either way.
type tickBalancer struct {
	hash  kafkago.Hash
	write atomic.Int64 // produceAt's write count, -1 outside produceAt
}

func (b *tickBalancer) Balance(m kafkago.Message, partitions ...int) int {
	if w := b.write.Load(); w >= 0 {
		return partitions[int(w)%len(partitions)]
	}
	return b.hash.Balance(m, partitions...)
}

func (p *producer) close() { _ = p.w.Close() }

// database is one scenario's PostgreSQL database.
type database struct {
	admin string // URL of the maintenance database
	name  string
	url   string
}

func createDatabase(ctx context.Context, adminURL, name string) (*database, error) {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return nil, fmt.Errorf("creating database %s: %w", name, err)
	}
	u, err := url.Parse(adminURL)
	if err != nil {
		return nil, err
	}
	u.Path = "/" + name
	return &database{admin: adminURL, name: name, url: u.String()}, nil
}

func (db *database) drop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, db.admin)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db.name}.Sanitize()+" WITH (FORCE)")
}

// pgCounters are the database's cumulative statistics (pg_stat_database).
type pgCounters struct {
	Commits, Inserted, Updated, Deleted int64
}

func (db *database) counters(ctx context.Context) (pgCounters, error) {
	conn, err := pgx.Connect(ctx, db.admin)
	if err != nil {
		return pgCounters{}, err
	}
	defer conn.Close(ctx)
	var c pgCounters
	err = conn.QueryRow(ctx, `SELECT xact_commit, tup_inserted, tup_updated, tup_deleted
		FROM pg_stat_database WHERE datname = $1`, db.name).Scan(&c.Commits, &c.Inserted, &c.Updated, &c.Deleted)
	return c, err
}

// subSpec is a subscription the scenario needs.
type subSpec struct {
	// url is, in a scenario's list, the receiver label; createSubs gets the
	// full URL.
	url      string
	mode     string // receiver mode: ok (default), slow, fail
	user     string // entity filter on user_id; empty: none
	strict   bool   // enrich with promo_fs, STRICT
	inFlight int32
}

// createSubs stores the subscriptions, spread over tenants of at most 1000
// (the per-tenant bound of CreateSubscription), eight at a time.
func createSubs(ctx context.Context, dbURL string, specs []subSpec) error {
	pool, err := store.Open(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	st := store.New(pool)
	const perTenant = 1000
	var tenants []string
	for i := 0; i < len(specs); i += perTenant {
		key, _, err := st.CreateAPIKey(ctx, fmt.Sprintf("bench-%d", i/perTenant), "bench")
		if err != nil {
			return err
		}
		tenants = append(tenants, key.TenantID)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		work = make(chan int)
	)
	for range 8 {
		wg.Go(func() {
			for i := range work {
				if err := createSub(ctx, st, tenants[i/perTenant], i, specs[i]); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for i := range specs {
		work <- i
	}
	close(work)
	wg.Wait()
	return errors.Join(errs...)
}

func createSub(ctx context.Context, st *store.Store, tenant string, i int, s subSpec) error {
	if s.inFlight == 0 {
		s.inFlight = 16 // the API's default (server.DefaultMaxInFlight)
	}
	secret, err := webhook.GenerateSecret(rand.Reader, 0)
	if err != nil {
		return err
	}
	p := &outflowv1.Subscription{
		Id: fmt.Sprintf("sub_bench%06d", i), Name: fmt.Sprintf("bench %d", i), State: outflowv1.Subscription_ACTIVE,
		FeatureViewNames: []string{"user_items_added_to_cart"},
		Target:           &outflowv1.Subscription_Webhook{Webhook: &outflowv1.WebhookTarget{Url: s.url, MaxInFlight: s.inFlight}},
		RetryPolicy:      &outflowv1.RetryPolicy{MaxAttempts: 8},
	}
	if s.user != "" {
		p.EntityFilter = map[string]*outflowv1.EntityValues{"user_id": {Values: []string{s.user}}}
	}
	if s.strict {
		p.Enrichment = &outflowv1.Enrichment{WorkspaceName: "prod", FeatureServiceName: "promo_fs",
			Consistency: outflowv1.Enrichment_STRICT}
	}
	if _, err := st.CreateSubscription(ctx, tenant, p, secret, 1000); err != nil {
		return fmt.Errorf("creating subscription %d: %w", i, err)
	}
	return nil
}

// randomSuffix names a scenario's topic, group and database.
func randomSuffix() string { return strings.ToLower(rand.Text()[:10]) }
