package kinesis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awskinesis "github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/outflow-dev/outflow/source"
	"github.com/outflow-dev/outflow/store"
)

// Leases keeps shard checkpoints and leases: *store.Store.
type Leases interface {
	RegisterKinesisShards(ctx context.Context, group string, shards []store.KinesisShard) error
	BalanceKinesisLeases(ctx context.Context, b store.KinesisBalance) ([]store.KinesisShard, error)
	CheckpointKinesisShard(ctx context.Context, group, owner string, c store.KinesisCheckpoint) error
	ReleaseKinesisLeases(ctx context.Context, group, owner string) error
}

var (
	_ Leases          = (*store.Store)(nil)
	_ source.Consumer = (*Source)(nil)
)

// ErrAlreadyRunning is returned by Run while another Run of the Source has
// not returned.
var ErrAlreadyRunning = errors.New("kinesis source: already running")

// requestTimeout bounds each Kinesis and database request.
const requestTimeout = 10 * time.Second

// Source reads Kinesis streams as one replica of a lease group and hands
// each record to a source.Handler, checkpointing a shard only past records
// that are Done. Create it with New; Lag and Ready may be called while Run
// runs.
type Source struct {
	cfg    Config
	log    *slog.Logger
	client *awskinesis.Client
	// transport carries the client's requests; Run closes its idle
	// connections when it returns, so a stopped Source holds none.
	transport *http.Transport

	running atomic.Bool
	ready   atomic.Bool

	mu sync.Mutex
	// shards are the shards being read, by stream/shard id.
	shards map[string]*shard
}

// New returns a Source for cfg after applying Config.WithDefaults. It does
// not connect: Run does.
func New(cfg Config) (*Source, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Streams = slices.Clone(cfg.Streams)
	client, transport := newClient(cfg.AWS, cfg.Endpoint)
	return &Source{
		cfg:       cfg,
		log:       cfg.Logger.With(slog.String("group_id", cfg.GroupID), slog.String("worker_id", cfg.WorkerID)),
		client:    client,
		transport: transport,
		shards:    make(map[string]*shard),
	}, nil
}

// newClient returns a Kinesis client on awsCfg, at endpoint when set, with
// an HTTP transport of its own (the SDK's default settings) so that its
// connections can be closed.
func newClient(awsCfg aws.Config, endpoint string) (*awskinesis.Client, *http.Transport) {
	transport := awshttp.NewBuildableClient().GetTransport()
	client := awskinesis.NewFromConfig(awsCfg, func(o *awskinesis.Options) {
		o.HTTPClient = &http.Client{Transport: transport}
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
	})
	return client, transport
}

// WorkerID returns the name this Source holds leases under.
func (s *Source) WorkerID() string { return s.cfg.WorkerID }

// Ready reports whether the Source has listed its streams and holds its
// share of the shards (which may be none when the group has more replicas
// than shards): a readiness signal.
func (s *Source) Ready() bool { return s.ready.Load() }

// Lag returns, for each shard this replica reads, how far behind the tip of
// the stream its last GetRecords was (MillisBehindLatest), by stream and
// shard id; shards not read yet are absent. It is meant for a lag gauge.
func (s *Source) Lag() map[string]map[string]time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]map[string]time.Duration)
	for _, sh := range s.shards {
		ms := sh.behind.Load()
		if ms < 0 {
			continue
		}
		if out[sh.stream] == nil {
			out[sh.stream] = make(map[string]time.Duration)
		}
		out[sh.stream][sh.id] = time.Duration(ms) * time.Millisecond
	}
	return out
}

// Run reads the shards this replica holds leases on until ctx ends, calling
// h from one goroutine per shard in sequence-number order, and checkpoints
// each shard only past records that are Done (see the package doc). When ctx
// ends it stops reading, waits up to DrainTimeout for in-flight records,
// writes the last checkpoints, releases its leases (so other replicas take
// over at once) and returns nil. Failures of Kinesis or the database are
// logged and retried, a stream that does not exist (yet) included: like the
// Kafka source waiting for its topics, the Source then stays not Ready and
// warns. Run returns an error only when called twice (ErrAlreadyRunning).
func (s *Source) Run(ctx context.Context, h source.Handler) error {
	if h == nil {
		return errors.New("kinesis source: Run needs a handler")
	}
	if !s.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer s.running.Store(false)
	defer s.ready.Store(false)

	r := &run{s: s, h: h, ctx: ctx, resync: make(chan struct{}, 1)}
	err := r.loop()
	r.stopAll()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestTimeout)
	defer cancel()
	if rerr := s.cfg.Leases.ReleaseKinesisLeases(rctx, s.cfg.GroupID, s.cfg.WorkerID); rerr != nil {
		s.log.WarnContext(ctx, "kinesis: releasing leases failed; they expire on their own", slog.Any("error", rerr))
	}
	s.transport.CloseIdleConnections()
	s.log.InfoContext(ctx, "kinesis: stopped")
	return err
}

// run is the state of one call of Run.
type run struct {
	s   *Source
	h   source.Handler
	ctx context.Context
	// resync asks the loop to list the shards now (a shard ended).
	resync chan struct{}
	wg     sync.WaitGroup
}

// loop lists shards, balances leases and checkpoints until ctx ends.
func (r *run) loop() error {
	s := r.s
	cfg := s.cfg
	var lastSync, lastBalance time.Time
	tick := min(cfg.CommitInterval, cfg.RenewInterval)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return nil
		case <-r.resync:
			lastSync, lastBalance = time.Time{}, time.Time{}
		case <-timer.C:
		}
		now := time.Now()
		if now.Sub(lastSync) >= cfg.ShardSyncInterval {
			if err := r.syncShards(); err != nil {
				if r.ctx.Err() != nil {
					return nil
				}
				msg := "kinesis: listing shards failed; retrying"
				if errors.Is(err, errStreamNotFound) {
					msg = "kinesis: waiting for the stream to exist"
				}
				s.log.WarnContext(r.ctx, msg, slog.Any("error", err))
			} else {
				lastSync = now
			}
		}
		if now.Sub(lastBalance) >= cfg.RenewInterval && !lastSync.IsZero() {
			if err := r.balance(); err != nil {
				if r.ctx.Err() != nil {
					return nil
				}
				s.log.WarnContext(r.ctx, "kinesis: renewing leases failed; retrying", slog.Any("error", err))
			} else {
				lastBalance = now
				s.ready.Store(true)
			}
		}
		r.checkpointAll(false)
		timer.Reset(tick)
	}
}

// errStreamNotFound wraps a stream Kinesis does not know.
var errStreamNotFound = errors.New("kinesis source: stream not found")

// syncShards lists every stream's shards and records new ones.
func (r *run) syncShards() error {
	for _, stream := range r.s.cfg.Streams {
		shards, err := listShards(r.ctx, r.s.client, stream)
		if err != nil {
			return err
		}
		rows := make([]store.KinesisShard, 0, len(shards))
		for _, sh := range shards {
			row := store.KinesisShard{Stream: stream, ShardID: aws.ToString(sh.ShardId)}
			for _, p := range []*string{sh.ParentShardId, sh.AdjacentParentShardId} {
				if aws.ToString(p) != "" {
					row.ParentIDs = append(row.ParentIDs, *p)
				}
			}
			rows = append(rows, row)
		}
		ctx, cancel := context.WithTimeout(r.ctx, requestTimeout)
		err = r.s.cfg.Leases.RegisterKinesisShards(ctx, r.s.cfg.GroupID, rows)
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

// listShards returns every shard of stream, closed ones included.
func listShards(ctx context.Context, client *awskinesis.Client, stream string) ([]types.Shard, error) {
	var out []types.Shard
	in := &awskinesis.ListShardsInput{StreamName: aws.String(stream)}
	for {
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		resp, err := client.ListShards(rctx, in)
		cancel()
		var nf *types.ResourceNotFoundException
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("%w: %s: %w", errStreamNotFound, stream, err)
		}
		if err != nil {
			return nil, fmt.Errorf("listing the shards of %s: %w", stream, err)
		}
		out = append(out, resp.Shards...)
		if aws.ToString(resp.NextToken) == "" {
			return out, nil
		}
		// With a NextToken, Kinesis refuses the stream name.
		in = &awskinesis.ListShardsInput{NextToken: resp.NextToken}
	}
}

// balance renews leases and takes this replica's share, then starts readers
// for shards newly held and stops those of shards lost.
func (r *run) balance() error {
	s := r.s
	ctx, cancel := context.WithTimeout(r.ctx, requestTimeout)
	defer cancel()
	held, err := s.cfg.Leases.BalanceKinesisLeases(ctx, store.KinesisBalance{
		Group: s.cfg.GroupID, Owner: s.cfg.WorkerID, Streams: s.cfg.Streams, Lease: s.cfg.LeaseDuration,
	})
	if err != nil {
		return err
	}
	want := make(map[string]store.KinesisShard, len(held))
	for _, h := range held {
		want[h.Stream+"/"+h.ShardID] = h
	}
	s.mu.Lock()
	var lost []*shard
	for key, sh := range s.shards {
		if _, ok := want[key]; !ok && !sh.ended.Load() {
			lost = append(lost, sh)
			delete(s.shards, key)
		}
	}
	var started []*shard
	for key, h := range want {
		if old, ok := s.shards[key]; ok && !old.ended.Load() {
			continue
		}
		sh := newShard(s, h)
		s.shards[key] = sh
		started = append(started, sh)
	}
	s.mu.Unlock()
	for _, sh := range lost {
		s.log.InfoContext(r.ctx, "kinesis: lost a shard lease; stopping its reader", slog.String("stream", sh.stream), slog.String("shard", sh.id))
		sh.stop()
	}
	for _, sh := range started {
		s.log.InfoContext(r.ctx, "kinesis: reading a shard", slog.String("stream", sh.stream), slog.String("shard", sh.id),
			slog.String("checkpoint", sh.committed))
		r.wg.Go(func() { sh.read(r.ctx, r.h, r.resync) })
	}
	return nil
}

// checkpointAll writes the checkpoints that moved; with final it writes
// them whether or not they moved (renewing the leases one last time).
func (r *run) checkpointAll(final bool) {
	s := r.s
	s.mu.Lock()
	shards := make([]*shard, 0, len(s.shards))
	for key, sh := range s.shards {
		if sh.ended.Load() && sh.finishedWritten.Load() {
			delete(s.shards, key) // finished and recorded: nothing left to do
			continue
		}
		shards = append(shards, sh)
	}
	s.mu.Unlock()
	ctx := r.ctx
	if final {
		ctx = context.WithoutCancel(ctx)
	}
	for _, sh := range shards {
		if err := sh.commit(ctx, final); err != nil && !errors.Is(err, context.Canceled) {
			if errors.Is(err, store.ErrLeaseLost) {
				s.log.InfoContext(r.ctx, "kinesis: a shard was taken over; stopping its reader",
					slog.String("stream", sh.stream), slog.String("shard", sh.id))
				sh.stop()
				s.mu.Lock()
				if s.shards[sh.key()] == sh {
					delete(s.shards, sh.key())
				}
				s.mu.Unlock()
				continue
			}
			s.log.WarnContext(r.ctx, "kinesis: checkpointing failed", slog.String("stream", sh.stream),
				slog.String("shard", sh.id), slog.Any("error", err))
		}
	}
}

// stopAll stops reading, drains for up to DrainTimeout and checkpoints.
func (r *run) stopAll() {
	s := r.s
	s.mu.Lock()
	shards := make([]*shard, 0, len(s.shards))
	for _, sh := range s.shards {
		shards = append(shards, sh)
	}
	s.mu.Unlock()
	for _, sh := range shards {
		sh.stop()
	}
	r.wg.Wait()
	if s.cfg.DrainTimeout > 0 {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), s.cfg.DrainTimeout)
		for _, sh := range shards {
			_ = sh.tracker.waitIdle(ctx)
		}
		cancel()
	}
	r.checkpointAll(true)
	s.mu.Lock()
	clear(s.shards)
	s.mu.Unlock()
}
