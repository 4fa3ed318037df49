// Package gateway is Outflow's composition root: a Gateway owns the store,
// the sources (Kafka, Kinesis), the feature-store backends (Tecton, Feast),
// the dispatcher and its retry worker, replays, stream clients, the API
// servers, the metrics registry and readiness, and the order in which they
// start and stop. `outflow serve` maps its flags to a Config and runs one;
// `outflow dev` runs one on its local stand-ins.
//
// Shutdown follows SPEC §8 and keeps the at-least-once promise of the
// commit rule (package source): the API and the sources stop first (stop
// fetching; each source drains what it handed over and commits what is
// safe, within its DrainTimeout), replays hand over their last events, the
// dispatcher finishes in-flight deliveries or parks them in the retry
// queue (within Dispatch.DrainTimeout), the retry worker stops, the
// matcher (which in-flight deliveries read) stops last, and the database
// pool closes. Open API calls get API.ShutdownTimeout to finish.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/outflow-dev/outflow/dispatcher"
	"github.com/outflow-dev/outflow/enrich"
	"github.com/outflow-dev/outflow/feast"
	"github.com/outflow-dev/outflow/match"
	"github.com/outflow-dev/outflow/replay"
	"github.com/outflow-dev/outflow/server"
	"github.com/outflow-dev/outflow/source"
	"github.com/outflow-dev/outflow/source/kafka"
	"github.com/outflow-dev/outflow/source/kinesis"
	"github.com/outflow-dev/outflow/store"
	"github.com/outflow-dev/outflow/stream"
	"github.com/outflow-dev/outflow/tecton"
	"github.com/outflow-dev/outflow/webhook"
)

// Gateway is one running Outflow gateway. Build it with New, run it with
// Run; Stop (or cancelling Run's context) shuts it down gracefully.
type Gateway struct {
	cfg Config

	started  atomic.Bool
	stop     chan struct{} // closed by Stop
	stopOnce sync.Once
	done     chan struct{} // closed when Run returns
}

// New checks cfg and returns a Gateway that has not started: nothing is
// opened or listened on until Run.
func New(cfg Config) (*Gateway, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Gateway{cfg: cfg, stop: make(chan struct{}), done: make(chan struct{})}, nil
}

// Stop shuts the gateway down in the documented order and returns when Run
// has returned. It may be called any number of times, from any goroutine,
// before, during or after Run.
func (g *Gateway) Stop() {
	g.stopOnce.Do(func() { close(g.stop) })
	if g.started.Load() {
		<-g.done
	}
}

// Run builds and starts every component, then blocks until ctx is done,
// Stop is called or a component fails; it then shuts down in the order of
// the package doc. It returns the first component failure, or nil after a
// requested stop. Run may be called once.
func (g *Gateway) Run(ctx context.Context) error {
	if !g.started.CompareAndSwap(false, true) {
		return errors.New("gateway: Run called twice")
	}
	defer close(g.done)
	select {
	case <-g.stop:
		return nil // stopped before it ran: nothing to open
	default:
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-g.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := g.run(ctx)
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil // stopped while starting
	}
	return err
}

// parts are the built components.
type parts struct {
	logger    *slog.Logger
	matcher   *match.Matcher
	disp      *dispatcher.Dispatcher
	backends  *enrich.Backends
	api       *server.Server
	consumers []namedConsumer
	replays   *replay.Worker
	grpcLis   net.Listener
	httpLis   net.Listener
}

// namedConsumer is a source read as a group (Kafka topics, Kinesis
// streams), handing records to the dispatcher.
type namedConsumer struct {
	name string
	src  source.Consumer
}

func (g *Gateway) run(ctx context.Context) error {
	cfg := g.cfg
	// The listeners are the Gateway's to close, whatever happens.
	defer func() {
		for _, l := range []net.Listener{cfg.GRPCListener, cfg.HTTPListener} {
			if l != nil {
				_ = l.Close()
			}
		}
	}()
	if cfg.Migrate {
		if err := Migrate(ctx, cfg.DatabaseURL, cfg.Logger); err != nil {
			return err
		}
	}
	keys, err := store.ParseSecretKeys(cfg.SecretKeys)
	if err != nil {
		return fmt.Errorf("secret keys: %w", err)
	}
	pool, err := store.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	st := store.New(pool, store.WithSecretKeys(keys))

	var closers []func()
	defer func() {
		for _, c := range slices.Backward(closers) {
			c()
		}
	}()
	p, err := g.build(ctx, st, &closers)
	if err != nil {
		return err
	}
	return g.serve(ctx, p)
}

// build wires the components; closers collects what must be closed after
// they have all stopped, in the order it is appended (closed in reverse).
func (g *Gateway) build(ctx context.Context, st *store.Store, closers *[]func()) (*parts, error) {
	cfg := g.cfg
	logger := cfg.Logger
	registry := cfg.Registry
	if registry == nil {
		registry = prometheus.NewRegistry()
		registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	metrics := dispatcher.NewMetrics(registry)

	guard, err := webhook.NewGuard(webhook.GuardConfig{AllowCIDRs: cfg.API.AllowCIDRs, AllowInsecure: cfg.API.AllowInsecureURLs})
	if err != nil {
		return nil, err
	}
	sender, err := webhook.NewSender(webhook.SenderConfig{
		Guard: guard, UserAgent: cfg.Dispatch.UserAgent, Logger: logger,
		// Every attempt the sender pool can have under way to one receiver
		// keeps its connection when it ends. Several subscriptions often
		// share a receiver (one service, several feature views); with a
		// smaller idle bound, each connection returned past it is closed
		// and the next attempt dials (and shakes hands) again.
		MaxIdleConnsPerHost: cfg.Dispatch.WithDefaults().Senders,
	})
	if err != nil {
		return nil, err
	}
	*closers = append(*closers, sender.CloseIdleConnections)

	backends, err := g.newBackends(ctx, metrics)
	if err != nil {
		return nil, err
	}
	var enricher dispatcher.Enricher = backends

	// Stream subscriptions are matched by their clients' own readers, only
	// while a client is connected.
	matcher, err := match.New(match.Config{Store: st, Logger: logger, WebhooksOnly: true})
	if err != nil {
		return nil, err
	}
	disp, err := dispatcher.New(dispatcher.Params{
		Config: cfg.Dispatch, Store: st, Matcher: matcher, Enricher: enricher, Sender: sender,
		Metrics: metrics, Logger: logger, TracerProvider: cfg.TracerProvider,
	})
	if err != nil {
		return nil, err
	}
	p := &parts{logger: logger, matcher: matcher, disp: disp, backends: backends}

	// Stream clients and replays read every configured source.
	streamCfg := stream.Config{Logger: logger}
	replayCfg := replay.Config{Store: st, Subscriptions: matcher, Deliverer: disp, Poll: cfg.ReplayPoll, Logger: logger}
	if len(cfg.Kafka.Brokers) > 0 {
		kcfg := cfg.Kafka
		// The replica that owns a partition reads the detached
		// subscriptions' cursors of it (see dispatcher.Assigned).
		kcfg.Ownership = disp
		src, err := kafka.New(kcfg)
		if err != nil {
			return nil, err
		}
		registry.MustRegister(lagCollector{src})
		p.consumers = append(p.consumers, namedConsumer{"kafka source", src})
		// Stream clients read the topics directly, so any replica serves any
		// client.
		klog, err := kafka.NewLog(cfg.Kafka)
		if err != nil {
			return nil, err
		}
		// All stream clients read through one transport: they share the
		// metadata connection and reuse each other's idle fetch connections.
		disp.EnableDetach(klog, st) // a receiver that cannot keep up reads the topics on its own
		shared := klog.Shared(source.ReaderConfig{Streams: slices.Clone(cfg.Kafka.Topics)})
		*closers = append(*closers, shared.CloseIdleConnections) // after the API, and so every stream, has stopped
		streamCfg.Source, streamCfg.Topics = shared, cfg.Kafka.Topics
		replayCfg.Source = stream.Config{Source: klog, Topics: cfg.Kafka.Topics, Logger: logger}
	}
	if len(cfg.Kinesis.Streams) > 0 {
		kcfg := cfg.Kinesis
		kcfg.Leases = st
		ksrc, err := kinesis.New(kcfg)
		if err != nil {
			return nil, err
		}
		registry.MustRegister(kinesisLagCollector{ksrc})
		p.consumers = append(p.consumers, namedConsumer{"kinesis source", ksrc})
		kreader, err := kinesis.NewReader(kinesis.ReaderConfig{AWS: kcfg.AWS, Endpoint: kcfg.Endpoint, IdleWait: kcfg.IdleWait, Logger: kcfg.Logger})
		if err != nil {
			return nil, err
		}
		*closers = append(*closers, kreader.Close)
		replayCfg.Kinesis = kreader
		replayCfg.KinesisStreams = slices.Clone(kcfg.Streams)
		streamCfg.Shards, streamCfg.KinesisStreams = kreader, replayCfg.KinesisStreams
	}
	var streams server.Streams
	if streamCfg.Source != nil || streamCfg.Shards != nil {
		// Resume tokens are signed with a key all replicas share, so any
		// replica continues any client's stream.
		key, err := st.ServerKey(ctx, "resume_token")
		if err != nil {
			return nil, err
		}
		if streamCfg.Tokens, err = stream.NewTokens(key); err != nil {
			return nil, err
		}
		if streams, err = newStreamSource(streamCfg, matcher, enricher); err != nil {
			return nil, err
		}
	}
	if replayCfg.Source.Source != nil || replayCfg.Kinesis != nil {
		if p.replays, err = replay.New(replayCfg); err != nil {
			return nil, err
		}
	}
	registry.MustRegister(retryQueueGauge(st), subscriptionsGauge(matcher))

	p.api, err = server.New(ctx, server.Params{Config: cfg.API, Store: st, Logger: logger, Registry: registry,
		Sender: sender, Ready: p.ready, Streams: streams, Replays: p.replays != nil, Stats: metrics.Stats()})
	if err != nil {
		return nil, err
	}
	if p.grpcLis, err = listen(ctx, cfg.GRPCListener, cfg.GRPCAddr, "gRPC"); err != nil {
		return nil, err
	}
	*closers = append(*closers, func() { _ = p.grpcLis.Close() })
	if p.httpLis, err = listen(ctx, cfg.HTTPListener, cfg.HTTPAddr, "HTTP"); err != nil {
		return nil, err
	}
	*closers = append(*closers, func() { _ = p.httpLis.Close() })
	return p, nil
}

// listen returns l, or a new listener on addr.
func listen(ctx context.Context, l net.Listener, addr, what string) (net.Listener, error) {
	if l != nil {
		return l, nil
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for %s: %w", what, err)
	}
	return l, nil
}

// ready is the readiness check of /readyz: subscriptions loaded and every
// source reading.
func (p *parts) ready() error {
	select {
	case <-p.matcher.Ready():
	default:
		return errors.New("subscriptions not loaded yet")
	}
	for _, c := range p.consumers {
		if !c.src.Ready() {
			return fmt.Errorf("the %s is not reading yet", c.name)
		}
	}
	return nil
}

// serve starts the built components, waits for ctx or the first failure,
// then stops them in the order of the package doc.
func (g *Gateway) serve(ctx context.Context, p *parts) error {
	logger := p.logger
	// runCtx ends on a stop or on the first component failure. The matcher
	// outlives the consumer (deliveries in flight read it), so it has its
	// own context, cancelled last.
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	matcherCtx, stopMatcher := context.WithCancel(context.WithoutCancel(ctx))
	defer stopMatcher()
	var wg sync.WaitGroup
	errs := make(chan error, 5+len(p.consumers)) // one per component at most
	run := func(wg *sync.WaitGroup, name string, fn func() error) {
		wg.Go(func() {
			if err := fn(); err != nil && !errors.Is(err, context.Canceled) {
				errs <- fmt.Errorf("%s: %w", name, err)
			}
		})
	}
	run(&wg, "matcher", func() error { return p.matcher.Run(matcherCtx) })
	run(&wg, "api", func() error { return p.api.Serve(runCtx, p.grpcLis, p.httpLis) })

	select {
	case <-p.matcher.Ready():
	case <-runCtx.Done():
	}
	var consumers sync.WaitGroup
	for _, c := range p.consumers {
		if runCtx.Err() != nil {
			break
		}
		run(&consumers, c.name, func() error { return c.src.Run(runCtx, p.disp.Handle) })
	}
	if p.replays != nil {
		// Like the consumers, the replay worker hands events to the
		// dispatcher, so it stops before the dispatcher does.
		run(&consumers, "replays", func() error { return p.replays.Run(runCtx) })
	}
	run(&wg, "retries", func() error { return p.disp.RunRetries(runCtx) })
	logger.InfoContext(ctx, "gateway running", slog.Int("sources", len(p.consumers)),
		slog.Bool("tecton", p.backends.Tecton != nil), slog.Bool("feast", p.backends.Feast != nil))

	var firstErr error
	select {
	case firstErr = <-errs:
		logger.ErrorContext(ctx, "stopping after a failure", slog.Any("error", firstErr))
	case <-runCtx.Done():
		select { // a failure that cancelled runCtx itself is still the answer
		case firstErr = <-errs:
			logger.ErrorContext(ctx, "stopping after a failure", slog.Any("error", firstErr))
		default:
		}
	}
	stopRun()
	consumers.Wait() // the sources drain, then commit what is safe; replays hand over
	p.disp.Stop()    // finish or park whatever is still in flight
	stopMatcher()
	wg.Wait()
	logger.Info("gateway stopped")
	return firstErr
}

// newBackends builds one Enricher per configured feature store. A backend
// without a URL is left nil: its subscriptions' events wait in the retry
// queue (enrich.ErrNoBackend, never spending their retry policy) until the
// gateway is configured for it.
func (g *Gateway) newBackends(ctx context.Context, metrics *dispatcher.Metrics) (*enrich.Backends, error) {
	cfg, logger := g.cfg, g.cfg.Logger
	var b enrich.Backends
	if cfg.Tecton.BaseURL != "" {
		client, err := tecton.NewClient(cfg.Tecton)
		if err != nil {
			return nil, fmt.Errorf("tecton client: %w", err)
		}
		if b.Tecton, err = enrich.New(enrich.Config{Store: client, Observer: metrics, Logger: logger}); err != nil {
			return nil, err
		}
	} else {
		logger.WarnContext(ctx, "no Tecton URL: deliveries of subscriptions with Tecton enrichment will wait in the retry queue")
	}
	if cfg.Feast.BaseURL != "" {
		client, err := feast.NewClient(cfg.Feast)
		if err != nil {
			return nil, fmt.Errorf("feast client: %w", err)
		}
		// Feast may answer mid-push with a stale value under the new timestamp: a record
		// that catches up is read twice (enrich.Config.ConfirmCatchUp).
		if b.Feast, err = enrich.New(enrich.Config{Store: client, Observer: metrics, Logger: logger, ConfirmCatchUp: true}); err != nil {
			return nil, err
		}
	}
	return &b, nil
}

// retryQueueGauge exports the retry queue's depth, read when scraped.
func retryQueueGauge(st *store.Store) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "outflow_retry_queue_depth", Help: "Webhook deliveries waiting in the retry queue.",
	}, func() float64 {
		qctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		n, err := st.RetryQueueDepth(qctx)
		if err != nil {
			return -1
		}
		return float64(n)
	})
}

// subscriptionsGauge exports how many subscriptions the matcher holds. A
// subscription reaches it by LISTEN/NOTIFY a moment after the API commits
// it; records consumed before then do not see it, so operators (and tests)
// can watch this to know a change has taken effect on a replica.
func subscriptionsGauge(m *match.Matcher) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "outflow_subscriptions_loaded",
		Help: "Subscriptions this replica's matcher holds, in every state. A change reaches it by LISTEN/NOTIFY moments after the API commits it; records consumed before then do not see it.",
	}, func() float64 {
		if ix := m.Index(); ix != nil {
			return float64(ix.Len())
		}
		return 0
	})
}
