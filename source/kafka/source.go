package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/outflow-dev/outflow/source"
)

// requestTimeout bounds each metadata and offset request of a Run.
const requestTimeout = 10 * time.Second

// Source consumes Kafka topics as one member of a consumer group and hands
// each record to a source.Handler, committing a partition's offset only past
// messages that are Done. Create it with New; it is safe for concurrent use,
// and Lag and Joined may be called while Run runs.
type Source struct {
	cfg    Config
	log    *slog.Logger
	dialer *kafkago.Dialer

	running atomic.Bool
	joined  atomic.Bool
	// hwmPolls counts high-watermark polls, so tests can let time pass by
	// events rather than sleeps.
	hwmPolls atomic.Int64

	mu sync.Mutex
	// owned are the partitions of the running generation, for Lag.
	owned []*partition
}

// New returns a Source for cfg after applying Config.WithDefaults. It checks
// the configuration but does not connect: Run does.
func New(cfg Config) (*Source, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Brokers = slices.Clone(cfg.Brokers)
	cfg.Topics = slices.Clone(cfg.Topics)
	dialer, err := cfg.Dialer()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return &Source{
		cfg:    cfg,
		log:    cfg.Logger.With(slog.String("group_id", cfg.GroupID)),
		dialer: dialer,
	}, nil
}

// Run joins the consumer group and, for as long as ctx lasts, reads every
// partition assigned to this member and calls h with each record, from one
// goroutine per partition, in offset order. Each partition's offset is
// committed every CommitInterval, when a rebalance ends a generation and at
// shutdown, and only up to its oldest message not yet Done (source.Message.Done),
// so every record is delivered at least once across crashes, restarts and
// rebalances (SPEC §5).
//
// The ctx passed to h ends when its partition stops being read (a rebalance
// or shutdown); h must return promptly then. A handler that gives up on a
// message must not call Done: the message will be read again.
//
// When a rebalance ends a generation, reading stops, Run waits up to
// RebalanceDrainTimeout for in-flight messages, commits what is safe, and
// joins the next generation. Messages of that generation that become Done
// later no longer move any commit; they are delivered again by the
// partition's next owner, possibly this member.
//
// When ctx ends, Run stops reading, waits up to DrainTimeout for in-flight
// messages, commits what is safe, leaves the group and returns nil. It
// returns a *FatalError when the brokers reject the Source's credentials,
// permissions or group settings (after the same drain and commit); every
// other failure is logged and retried. Run may be called again after it
// returned, but not concurrently (ErrAlreadyRunning).
func (s *Source) Run(ctx context.Context, h source.Handler) error {
	if h == nil {
		return errors.New("kafka source: Run needs a handler")
	}
	if !s.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer s.running.Store(false)

	transport, err := s.cfg.transport()
	if err != nil {
		return fmt.Errorf("kafka source: %w", err)
	}
	defer transport.CloseIdleConnections()
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	r := &run{
		s:      s,
		h:      h,
		ctx:    runCtx,
		cancel: cancel,
		client: &kafkago.Client{
			Addr:      kafkago.TCP(s.cfg.Brokers...),
			Transport: transport,
			Timeout:   requestTimeout,
		},
	}

	r.reader = (&Log{cfg: s.cfg}).NewReader(source.ReaderConfig{Streams: s.cfg.Topics})
	defer r.reader.Close()

	if err := r.awaitTopics(); err != nil {
		return err
	}
	watch := s.cfg.PartitionWatchInterval > 0
	cg, err := kafkago.NewConsumerGroup(kafkago.ConsumerGroupConfig{
		ID:                     s.cfg.GroupID,
		Brokers:                s.cfg.Brokers,
		Dialer:                 s.dialer,
		Topics:                 s.cfg.Topics,
		HeartbeatInterval:      s.cfg.HeartbeatInterval,
		SessionTimeout:         s.cfg.SessionTimeout,
		RebalanceTimeout:       s.cfg.RebalanceTimeout,
		JoinGroupBackoff:       s.cfg.JoinGroupBackoff,
		WatchPartitionChanges:  watch,
		PartitionWatchInterval: max(s.cfg.PartitionWatchInterval, 0),
		StartOffset:            s.cfg.StartOffset.kafkago(),
		// kafka-go's own diagnostics are debug noise here: the failures that
		// matter reach Next and are logged below, once.
		ErrorLogger: kafkaLogger(s.log, slog.LevelDebug),
	})
	if err != nil {
		return fmt.Errorf("kafka source: create consumer group: %w", err)
	}
	for runCtx.Err() == nil {
		gen, err := cg.Next(runCtx)
		switch {
		case runCtx.Err() != nil:
		case IsFatal(err):
			r.fail(&FatalError{Op: "join group", Err: err})
		case err != nil:
			// kafka-go backs off (JoinGroupBackoff) before the next try.
			s.log.WarnContext(ctx, "kafka: joining the consumer group failed; retrying", slog.Any("error", err))
		default:
			r.runGeneration(gen)
		}
	}
	// Close ends the generation, whose goroutine has committed and now waits
	// for exactly this, and leaves the group so that the partitions move to
	// the other members at once instead of after SessionTimeout.
	_ = cg.Close()
	s.log.InfoContext(ctx, "kafka: left the consumer group")
	return r.err()
}

// Joined reports whether the Source is a member of a running generation of
// its group and reading its assignment (which may be empty when the group has
// more members than partitions). It is false before the first join, during
// rebalances and after Run returned: a readiness signal.
func (s *Source) Joined() bool { return s.joined.Load() }

// Lag returns, for each partition this member is reading, how many records
// it is behind: the partition's high watermark minus the group's committed
// offset, by topic and partition. The high watermark is refreshed from every
// fetch and every CommitInterval (so it keeps moving while a partition is
// paused at its in-flight bound), the committed offset at every commit. A
// partition the group has never committed counts from the offset this
// generation resolved to start it at, where a restart would read it again
// too: a new group's backlog shows from the join on, not from its first
// commit. A partition whose numbers are not known yet is absent; the map is
// empty between generations. It is meant for a consumer-lag gauge (SPEC §8).
func (s *Source) Lag() map[string]map[int]int64 {
	s.mu.Lock()
	parts := s.owned
	s.mu.Unlock()
	lag := make(map[string]map[int]int64)
	for _, p := range parts {
		hwm, from := p.hwm.Load(), p.committed.Load()
		if from < 0 {
			from = p.start // set before the partition was published: no race
		}
		if hwm < 0 || from < 0 {
			continue
		}
		if lag[p.topic] == nil {
			lag[p.topic] = make(map[int]int64)
		}
		lag[p.topic][p.id] = max(hwm-from, 0)
	}
	return lag
}

// setOwned publishes the partitions of the running generation for Lag.
func (s *Source) setOwned(parts []*partition) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.owned = parts
}

// kafkago returns kafka-go's value for the start offset.
func (o StartOffset) kafkago() int64 {
	if o == StartLatest {
		return kafkago.LastOffset
	}
	return kafkago.FirstOffset
}
