package devenv

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"strconv"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// The SPEC §1 workflow the demo producer plays: a stream feature view
// user_items_added_to_cart, computed from add_item_to_cart events, writes one
// output-stream record per event to the topic fv-output. The reference
// feature server's DemoCatalog serves the same view in feature service
// promo_fs of workspace prod.
const (
	DemoTopic         = "fv-output"
	DemoFeatureView   = "user_items_added_to_cart"
	demoFeatureViewID = "5f0c2b1e8d7a4c3f9b6e1a2d4c8f7e90"
	DemoWorkspace     = "prod"
	DemoService       = "promo_fs"
)

// demoItems are the products shoppers add to their carts, with their prices
// in cents.
var demoItems = [...]int64{499, 899, 1299, 1999, 2450, 3999, 5900, 8999, 12900}

// DefaultDemoNewUsers is the share of demo events that come from a
// first-time shopper: a user the feature store has never seen, whose first
// record finds nothing materialised (null, MISSING_DATA, no effective time)
// — the most common case in a real shop and the one the consistency rule
// must wait for.
const DefaultDemoNewUsers = 0.25

// demoCarts turns simulated add_item_to_cart events into the records the
// stream feature view writes: per user, the number of items in the cart
// (cart_count) and their total value (cart_value), which is what the view's
// features are in the demo catalog. Now and then a user checks out, which
// empties the cart before the next item is added. A share of the events
// comes from first-time shoppers new1, new2, ..., each of whom adds one item
// and leaves, so every event of a "new" user is that user's first record. It
// is not safe for concurrent use.
type demoCarts struct {
	rng       *mrand.Rand
	carts     []demoCart // index i is user "u<i+1>"
	newShare  float64    // probability that an event is a first-time shopper's
	newcomers int        // first-time shoppers so far
}

// demoCart is one user's cart.
type demoCart struct {
	count int64
	cents int64
	// last is the feature timestamp of the user's previous record: each
	// user's records must move forward in time, as a real stream's do.
	last time.Time
}

// newDemoCarts returns a generator for returning users u1..u<users> and,
// for a newShare of the events (0 to 1), first-time shoppers new1, new2,
// ...; the same seed gives the same sequence of users, items and checkouts.
func newDemoCarts(users int, newShare float64, seed uint64) *demoCarts {
	return &demoCarts{rng: mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), carts: make([]demoCart, users), newShare: newShare}
}

// demoOutputRecord is the output-stream record, schema version "1" (SPEC §2).
type demoOutputRecord struct {
	Version          string            `json:"version"`
	Producer         string            `json:"producer"`
	JobType          string            `json:"job_type"`
	FeatureViewName  string            `json:"feature_view_name"`
	FeatureViewID    string            `json:"feature_view_id"`
	FeatureTimestamp string            `json:"feature_timestamp"`
	EntityKeys       map[string]string `json:"entity_keys"`
	FeatureValues    map[string]string `json:"feature_values"`
}

// next simulates one add_item_to_cart event at now and returns the Kafka key
// (the user id, so one user's records share a partition and stay in order)
// and the record.
func (d *demoCarts) next(now time.Time) (key, value []byte) {
	var (
		c        *demoCart
		user     string
		newcomer demoCart // a first-time shopper's cart, used once
	)
	if d.newShare > 0 && d.rng.Float64() < d.newShare {
		d.newcomers++
		c, user = &newcomer, "new"+strconv.Itoa(d.newcomers)
	} else {
		i := d.rng.IntN(len(d.carts))
		c, user = &d.carts[i], "u"+strconv.Itoa(i+1)
	}
	if c.count > 0 && d.rng.IntN(8) == 0 { // checked out since the last event
		c.count, c.cents = 0, 0
	}
	qty := int64(1 + d.rng.IntN(2))
	c.count += qty
	c.cents += qty * demoItems[d.rng.IntN(len(demoItems))]
	ts := now.UTC().Truncate(time.Microsecond)
	if !ts.After(c.last) {
		ts = c.last.Add(time.Microsecond)
	}
	c.last = ts
	rec := demoOutputRecord{
		Version:          "1",
		Producer:         "tecton",
		JobType:          "stream",
		FeatureViewName:  DemoFeatureView,
		FeatureViewID:    demoFeatureViewID,
		FeatureTimestamp: ts.Format("2006-01-02T15:04:05.000000Z07:00"),
		EntityKeys:       map[string]string{"user_id": user},
		FeatureValues: map[string]string{
			"cart_count": strconv.FormatInt(c.count, 10),
			"cart_value": fmt.Sprintf("%d.%02d", c.cents/100, c.cents%100),
		},
	}
	value, _ = json.Marshal(rec) // strings and string maps: it cannot fail
	return []byte(user), value
}

// pause returns the wait before the next event: exponentially distributed
// with mean 1/rate seconds, as independent shoppers' events arrive, capped at
// five means so the demo never seems stuck.
func (d *demoCarts) pause(rate float64) time.Duration {
	mean := float64(time.Second) / rate
	return time.Duration(min(d.rng.ExpFloat64(), 5) * mean)
}

// ProducerConfig configures the demo producer.
type ProducerConfig struct {
	// Brokers are the bootstrap brokers, host:port. Required.
	Brokers []string
	// Topic receives the records. Default DemoTopic ("fv-output").
	Topic string
	// Rate is the mean number of records per second; it must be positive.
	Rate float64
	// Users is how many returning users (u1..uN) add items. Default 20.
	Users int
	// NewUsers is the share of events, 0 to 1, from first-time shoppers
	// (new1, new2, ...), each seen once. Default DefaultDemoNewUsers (0.25)
	// when nil; 0 turns them off.
	NewUsers *float64
	// Count stops the producer after this many records; 0 runs until the
	// context ends.
	Count int
	// Seed makes the sequence of users and items reproducible; 0 picks a
	// random seed.
	Seed uint64
	// Logger receives one debug line per record and warnings for failed
	// writes. Default: discard.
	Logger *slog.Logger
}

func (c ProducerConfig) withDefaults() ProducerConfig {
	if c.Topic == "" {
		c.Topic = DemoTopic
	}
	if c.Users == 0 {
		c.Users = 20
	}
	if c.NewUsers == nil {
		c.NewUsers = new(float64(DefaultDemoNewUsers))
	}
	if c.Seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		c.Seed = binary.LittleEndian.Uint64(b[:]) | 1
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c ProducerConfig) validate() error {
	switch {
	case len(c.Brokers) == 0:
		return errors.New("the demo producer needs --kafka-brokers")
	case !(c.Rate > 0) || c.Rate > 10_000:
		return fmt.Errorf("--rate %v: want more than 0 and at most 10000 records per second", c.Rate)
	case c.Users < 1 || c.Users > 1_000_000:
		return fmt.Errorf("--users %d: want 1 to 1000000", c.Users)
	case c.NewUsers != nil && !(*c.NewUsers >= 0 && *c.NewUsers <= 1):
		return fmt.Errorf("--new-users %v: want a share from 0 to 1", *c.NewUsers)
	case c.Count < 0:
		return fmt.Errorf("--count %d: must not be negative", c.Count)
	}
	return nil
}

// Backoff of the demo producer after a failed write.
const (
	demoBackoffMin = 250 * time.Millisecond
	demoBackoffMax = 5 * time.Second
)

// Produce writes demo records until ctx ends (then it returns nil) or
// Count records were written. A failed write (the broker not up yet, the
// topic not created yet) is logged and retried with backoff, so the producer
// can start before Kafka does; that record is dropped.
func Produce(ctx context.Context, cfg ProducerConfig) error {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return err
	}
	transport := &kafkago.Transport{ClientID: "outflow-demo-producer"}
	defer transport.CloseIdleConnections()
	w := &kafkago.Writer{
		Addr:     kafkago.TCP(cfg.Brokers...),
		Topic:    cfg.Topic,
		Balancer: &kafkago.Hash{},
		// One record per write, sent at once: kafka-go's default batch
		// timeout (1 s) would hold each record back that long.
		BatchTimeout: time.Millisecond,
		RequiredAcks: kafkago.RequireAll,
		Transport:    transport,
	}
	defer w.Close()
	carts := newDemoCarts(cfg.Users, *cfg.NewUsers, cfg.Seed)
	log := cfg.Logger.With(slog.String("topic", cfg.Topic))
	log.InfoContext(ctx, "demo producer: writing add_item_to_cart records",
		slog.Any("brokers", cfg.Brokers), slog.Float64("rate_per_second", cfg.Rate), slog.Int("users", cfg.Users),
		slog.Float64("new_users", *cfg.NewUsers))

	written, failures := 0, 0
	timer := time.NewTimer(0)
	defer timer.Stop()
	for cfg.Count == 0 || written < cfg.Count {
		select {
		case <-ctx.Done():
			log.InfoContext(ctx, "demo producer stopped", slog.Int("records", written))
			return nil
		case <-timer.C:
		}
		key, value := carts.next(time.Now())
		err := w.WriteMessages(ctx, kafkago.Message{Key: key, Value: value})
		switch {
		case ctx.Err() != nil:
			continue
		case err != nil:
			failures++
			backoff := min(demoBackoffMin<<min(failures-1, 5), demoBackoffMax)
			log.WarnContext(ctx, "demo producer: writing a record failed; retrying",
				slog.Any("error", err), slog.Duration("backoff", backoff))
			timer.Reset(backoff)
			continue
		}
		failures = 0
		written++
		log.DebugContext(ctx, "demo producer: record written", slog.String("user_id", string(key)))
		timer.Reset(carts.pause(cfg.Rate))
	}
	log.InfoContext(ctx, "demo producer done", slog.Int("records", written))
	return nil
}
