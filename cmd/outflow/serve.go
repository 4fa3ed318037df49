package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/outflow-dev/outflow/dispatcher"
	"github.com/outflow-dev/outflow/enrich"
	"github.com/outflow-dev/outflow/feast"
	"github.com/outflow-dev/outflow/internal/httpretry"
	"github.com/outflow-dev/outflow/match"
	"github.com/outflow-dev/outflow/migrations"
	"github.com/outflow-dev/outflow/replay"
	"github.com/outflow-dev/outflow/server"
	"github.com/outflow-dev/outflow/source"
	"github.com/outflow-dev/outflow/source/kafka"
	"github.com/outflow-dev/outflow/store"
	"github.com/outflow-dev/outflow/stream"
	"github.com/outflow-dev/outflow/tecton"
	"github.com/outflow-dev/outflow/webhook"
)

// serveFlags are the flags of `outflow serve`.
type serveFlags struct {
	logs        logFlags
	databaseURL string
	grpcAddr    string
	httpAddr    string
	migrate     bool
	cidrs       string
	api         server.Config

	kafkaBrokers  string
	kafkaTopics   string
	kafkaGroup    string
	kafkaStart    string
	kafkaSASL     string
	kafkaUser     string
	kafkaPassword string
	kafkaTLS      bool

	kinesis kinesisFlags

	tectonURL  string
	tectonKey  string
	feastURL   string
	feastToken string

	// secretKeys encrypt webhook secrets at rest; never logged.
	secretKeys string

	dispatch   dispatcher.Config
	replayPoll time.Duration
}

func runServe(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "serve")
	var f serveFlags
	f.logs.register(fs)
	fs.StringVar(&f.databaseURL, "database-url", "", "PostgreSQL connection URL (required)")
	fs.StringVar(&f.grpcAddr, "grpc-addr", ":9090", "address of the gRPC API")
	fs.StringVar(&f.httpAddr, "http-addr", ":8080", "address of the REST API, /openapi.json, /metrics, /healthz and /readyz")
	fs.BoolVar(&f.migrate, "migrate", false, "apply pending database migrations before serving")
	fs.StringVar(&f.cidrs, "allow-cidrs", "", "comma-separated CIDRs webhooks may reach although private (e.g. 10.0.0.0/8,127.0.0.0/8)")
	fs.IntVar(&f.api.MaxRequestBytes, "max-request-bytes", 1<<20, "largest accepted request body or message, in bytes")
	fs.IntVar(&f.api.MaxSubscriptionsPerTenant, "max-subscriptions-per-tenant", 1000, "most subscriptions one tenant may have")
	fs.DurationVar(&f.api.SecretOverlap, "secret-overlap", 24*time.Hour, "how long a rotated-out webhook secret keeps signing")
	fs.BoolVar(&f.api.AllowInsecureURLs, "allow-insecure-urls", false, "accept http:// webhook URLs")
	fs.DurationVar(&f.api.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long open calls get to finish on SIGTERM")
	fs.Float64Var(&f.api.RequestsPerSecond, "api-rate-limit", 50, "API calls per second one tenant may make on this replica, beyond which it gets 429 / RESOURCE_EXHAUSTED with Retry-After; negative: no limit")
	fs.IntVar(&f.api.RequestBurst, "api-rate-burst", 100, "API calls one tenant may make at once above --api-rate-limit")
	fs.Float64Var(&f.api.TestEventsPerSecond, "test-event-rate-limit", 1, "test events (:test) per second one subscription may send on this replica; its webhook rate_limit and max_in_flight apply too; negative: no limit of the server's own")
	fs.IntVar(&f.api.TestEventBurst, "test-event-burst", 5, "test events one subscription may send at once above --test-event-rate-limit")
	fs.IntVar(&f.api.MaxStreamsPerSubscription, "max-streams-per-subscription", 64, "most StreamEvents clients of one subscription open at once on this replica; more get 429/RESOURCE_EXHAUSTED with Retry-After")
	fs.IntVar(&f.api.MaxStreamsPerTenant, "max-streams-per-tenant", 256, "most StreamEvents clients of one tenant open at once on this replica, all subscriptions together")

	fs.StringVar(&f.kafkaBrokers, "kafka-brokers", "", "comma-separated Kafka bootstrap brokers; without them the gateway serves the API and retries only")
	fs.StringVar(&f.kafkaTopics, "kafka-topics", "fv-output", "comma-separated output-stream topics to consume")
	fs.StringVar(&f.kafkaGroup, "kafka-group", "outflow", "Kafka consumer group shared by the replicas")
	fs.StringVar(&f.kafkaStart, "kafka-start-offset", "earliest", "where a new consumer group starts: earliest or latest")
	fs.StringVar(&f.kafkaSASL, "kafka-sasl-mechanism", "", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (none when empty)")
	fs.StringVar(&f.kafkaUser, "kafka-username", "", "SASL username")
	fs.StringVar(&f.kafkaPassword, "kafka-password", "", "SASL password (prefer the environment variable)")
	fs.BoolVar(&f.kafkaTLS, "kafka-tls", false, "connect to the brokers over TLS (system roots)")
	f.kinesis.register(fs)

	fs.StringVar(&f.tectonURL, "tecton-url", "", "base URL of the GetFeatures API (Tecton, or `outflow featureserver`); enrichment fails without it")
	fs.StringVar(&f.tectonKey, "tecton-api-key", "", "Tecton API key, required with --tecton-url (prefer the environment variable)")
	fs.StringVar(&f.feastURL, "feast-url", "", "base URL of a Feast feature server (feast serve) for subscriptions with enrichment backend FEAST; they wait in the retry queue without it")
	fs.StringVar(&f.feastToken, "feast-token", "", "bearer token for --feast-url when the feature server has auth enabled (prefer the environment variable)")
	fs.DurationVar(&f.dispatch.MisconfigBackoff, "misconfig-backoff", 5*time.Second, "first wait before retrying an event the gateway's own configuration failed (feature-store credentials refused, backend not configured); doubles up to 5m, never spends the retry policy")
	fs.StringVar(&f.secretKeys, "secret-keys", "", secretKeysUsage+" (required)")

	fs.IntVar(&f.dispatch.LaneQueue, "lane-queue", 256, "events one delivery lane may hold; when it is full the consumer waits (see --lane-wait)")
	fs.IntVar(&f.dispatch.Senders, "senders", 512, "webhook attempts under way at once across all subscriptions (the sender pool)")
	fs.DurationVar(&f.dispatch.LaneWait, "lane-wait", 500*time.Millisecond, "longest the consumer waits for room in one subscription's lane before that subscription is detached onto its own cursor (or, with --detach=false, its events go to the retry queue until its lane drains)")
	fs.BoolFunc("detach", "detach a subscription that cannot keep up (lane full past --lane-wait, circuit open) onto its own cursor in PostgreSQL, read from Kafka at its receiver's pace until it rejoins, instead of parking its events in the retry queue (default true)", func(v string) error {
		on, err := strconv.ParseBool(v)
		f.dispatch.Detach.Disabled = !on
		return err
	})
	fs.DurationVar(&f.dispatch.DrainTimeout, "drain-timeout", 10*time.Second, "on SIGTERM, how long in-flight deliveries get before they are parked in the retry queue")
	fs.DurationVar(&f.dispatch.Breaker.Cooldown, "breaker-cooldown", 30*time.Second, "how long an open circuit parks a failing receiver's events")
	fs.DurationVar(&f.dispatch.Breaker.DisableAfter, "disable-after", 72*time.Hour, "disable a subscription whose receiver has failed without a success for this long")
	fs.DurationVar(&f.dispatch.Retry.Poll, "retry-poll", time.Second, "how often the retry queue is polled when idle")
	fs.DurationVar(&f.replayPoll, "replay-poll", time.Second, "how often an idle replica looks for a replay to run")

	if err := parseFlags(env, fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if err := requireFlags(fs, "database-url", "secret-keys"); err != nil {
		return err
	}
	var err error
	if _, err := store.ParseSecretKeys(f.secretKeys); err != nil {
		return fmt.Errorf("--secret-keys: %w", err)
	}
	if f.api.AllowCIDRs, err = parseCIDRs(f.cidrs); err != nil {
		return err
	}
	logger, err := f.logs.logger(env.stderr)
	if err != nil {
		return err
	}
	return serve(ctx, &f, logger)
}

// serve runs the API, the matcher, the retry worker and the configured
// sources (Kafka topics, Kinesis streams, or both) until ctx is done, then
// shuts down in the order that keeps the at-least-once promise: stop
// fetching and let the sources drain and commit, park what is still in
// flight, then stop the rest.
func serve(ctx context.Context, f *serveFlags, logger *slog.Logger) error {
	if f.migrate {
		if err := migrateUp(ctx, f.databaseURL, migrations.Options{Logger: logger}); err != nil {
			return err
		}
	}
	keys, err := store.ParseSecretKeys(f.secretKeys)
	if err != nil {
		return fmt.Errorf("--secret-keys: %w", err)
	}
	pool, err := store.Open(ctx, f.databaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	st := store.New(pool, store.WithSecretKeys(keys))

	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := dispatcher.NewMetrics(registry)

	guard, err := webhook.NewGuard(webhook.GuardConfig{AllowCIDRs: f.api.AllowCIDRs, AllowInsecure: f.api.AllowInsecureURLs})
	if err != nil {
		return err
	}
	sender, err := webhook.NewSender(webhook.SenderConfig{Guard: guard, UserAgent: "outflow/" + buildVersion(), Logger: logger})
	if err != nil {
		return err
	}
	defer sender.CloseIdleConnections()

	backends, err := newBackends(ctx, f, metrics, logger)
	if err != nil {
		return err
	}
	var enricher dispatcher.Enricher = backends

	// Stream subscriptions are matched by their clients' own readers, only
	// while a client is connected.
	matcher, err := match.New(match.Config{Store: st, Logger: logger, WebhooksOnly: true})
	if err != nil {
		return err
	}
	disp, err := dispatcher.New(dispatcher.Params{
		Config: f.dispatch, Store: st, Matcher: matcher, Enricher: enricher, Sender: sender,
		Metrics: metrics, Logger: logger,
	})
	if err != nil {
		return err
	}

	// consumers are the sources read as a group (Kafka topics, Kinesis
	// streams; several at once), each handing records to the dispatcher.
	type namedConsumer struct {
		name string
		src  source.Consumer
	}
	var consumers []namedConsumer
	// Stream clients and replays read every configured source.
	streamCfg := stream.Config{Logger: logger}
	// Replays read every configured source again.
	replayCfg := replay.Config{Store: st, Subscriptions: matcher, Deliverer: disp, Poll: f.replayPoll, Logger: logger}
	var src *kafka.Source
	var streams server.Streams
	var replays *replay.Worker
	if f.kafkaBrokers != "" {
		kcfg := kafkaConfig(f, logger)
		if src, err = kafka.New(kcfg); err != nil {
			return err
		}
		registry.MustRegister(lagCollector{src})
		consumers = append(consumers, namedConsumer{"kafka source", src})
		// Stream clients read the topics directly, so any replica serves any
		// client.
		klog, err := kafka.NewLog(kcfg)
		if err != nil {
			return err
		}
		disp.EnableDetach(klog, st) // a receiver that cannot keep up reads the topics on its own
		// All stream clients read through one transport: they share the
		// metadata connection and reuse each other's idle fetch connections.
		shared := klog.Shared(source.ReaderConfig{Streams: slices.Clone(kcfg.Topics)})
		defer shared.CloseIdleConnections() // after the API, and so every stream, has stopped
		streamCfg.Source, streamCfg.Topics = shared, kcfg.Topics
		replayCfg.Source = stream.Config{Source: klog, Topics: kcfg.Topics, Logger: logger}
	}
	if f.kinesis.streams != "" {
		ksrc, err := newKinesisSource(ctx, &f.kinesis, st, logger)
		if err != nil {
			return err
		}
		registry.MustRegister(kinesisLagCollector{ksrc})
		consumers = append(consumers, namedConsumer{"kinesis source", ksrc})
		kreader, err := newKinesisReader(ctx, &f.kinesis, logger)
		if err != nil {
			return err
		}
		defer kreader.Close()
		replayCfg.Kinesis = kreader
		replayCfg.KinesisStreams = splitList(f.kinesis.streams)
		streamCfg.Shards, streamCfg.KinesisStreams = kreader, replayCfg.KinesisStreams
	}
	if streamCfg.Source != nil || streamCfg.Shards != nil {
		// Resume tokens are signed with a key all replicas share, so any
		// replica continues any client's stream.
		key, err := st.ServerKey(ctx, "resume_token")
		if err != nil {
			return err
		}
		if streamCfg.Tokens, err = stream.NewTokens(key); err != nil {
			return err
		}
		if streams, err = newStreamSource(streamCfg, matcher, enricher); err != nil {
			return err
		}
	}
	if replayCfg.Source.Source != nil || replayCfg.Kinesis != nil {
		if replays, err = replay.New(replayCfg); err != nil {
			return err
		}
	}
	registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "outflow_retry_queue_depth", Help: "Webhook deliveries waiting in the retry queue.",
	}, func() float64 {
		qctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		n, err := st.RetryQueueDepth(qctx)
		if err != nil {
			return -1
		}
		return float64(n)
	}))

	ready := func() error {
		select {
		case <-matcher.Ready():
		default:
			return errors.New("subscriptions not loaded yet")
		}
		for _, c := range consumers {
			if !c.src.Ready() {
				return fmt.Errorf("the %s is not reading yet", c.name)
			}
		}
		return nil
	}
	api, err := server.New(ctx, server.Params{Config: f.api, Store: st, Logger: logger, Registry: registry,
		Sender: sender, Ready: ready, Streams: streams, Replays: replays != nil})
	if err != nil {
		return err
	}
	var lc net.ListenConfig
	grpcLis, err := lc.Listen(ctx, "tcp", f.grpcAddr)
	if err != nil {
		return fmt.Errorf("listening for gRPC: %w", err)
	}
	httpLis, err := lc.Listen(ctx, "tcp", f.httpAddr)
	if err != nil {
		_ = grpcLis.Close()
		return fmt.Errorf("listening for HTTP: %w", err)
	}

	// runCtx ends on a signal or on the first component failure. The
	// matcher outlives the consumer (deliveries in flight read it), so it has
	// its own context, cancelled last.
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	matcherCtx, stopMatcher := context.WithCancel(context.WithoutCancel(ctx))
	defer stopMatcher()
	var wg sync.WaitGroup
	errs := make(chan error, 5+len(consumers)) // one per component at most
	run := func(name string, fn func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(); err != nil && !errors.Is(err, context.Canceled) {
				errs <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	run("matcher", func() error { return matcher.Run(matcherCtx) })
	run("api", func() error { return api.Serve(runCtx, grpcLis, httpLis) })

	select {
	case <-matcher.Ready():
	case <-runCtx.Done():
	}
	if err := disp.ResumeDetached(runCtx); err != nil {
		return fmt.Errorf("resuming detached subscriptions: %w", err)
	}
	var consumer sync.WaitGroup
	for _, c := range consumers {
		if runCtx.Err() != nil {
			break
		}
		consumer.Go(func() {
			if err := c.src.Run(runCtx, disp.Handle); err != nil && !errors.Is(err, context.Canceled) {
				errs <- fmt.Errorf("%s: %w", c.name, err)
			}
		})
	}
	if replays != nil {
		// Like the consumer, the replay worker hands events to the
		// dispatcher, so it stops before the dispatcher does.
		consumer.Go(func() {
			if err := replays.Run(runCtx); err != nil && !errors.Is(err, context.Canceled) {
				errs <- fmt.Errorf("replays: %w", err)
			}
		})
	}
	run("retries", func() error { return disp.RunRetries(runCtx) })
	logger.InfoContext(ctx, "gateway running", slog.Int("sources", len(consumers)),
		slog.Bool("tecton", backends.Tecton != nil), slog.Bool("feast", backends.Feast != nil))

	var firstErr error
	select {
	case <-runCtx.Done():
	case firstErr = <-errs:
		logger.ErrorContext(ctx, "stopping after a failure", slog.Any("error", firstErr))
	}
	stopRun()
	consumer.Wait() // the source drains, then commits what is safe; replays hand over
	disp.Stop()     // park whatever is still in flight
	stopMatcher()
	wg.Wait()
	logger.Info("gateway stopped")
	return firstErr
}

// newBackends builds one Enricher per configured feature store. A backend
// without a URL is left nil: its subscriptions' events wait in the retry
// queue (enrich.ErrNoBackend, never spending their retry policy) until the
// gateway is configured for it.
func newBackends(ctx context.Context, f *serveFlags, metrics *dispatcher.Metrics, logger *slog.Logger) (*enrich.Backends, error) {
	var b enrich.Backends
	if f.tectonURL != "" {
		client, err := tecton.NewClient(tecton.Config{BaseURL: f.tectonURL, APIKey: f.tectonKey,
			TransportRetries: httpretry.DefaultRetryMax, Logger: logger})
		if err != nil {
			return nil, fmt.Errorf("--tecton-url/--tecton-api-key: %w", err)
		}
		if b.Tecton, err = enrich.New(enrich.Config{Store: client, Observer: metrics, Logger: logger}); err != nil {
			return nil, err
		}
	} else {
		logger.WarnContext(ctx, "no --tecton-url: deliveries of subscriptions with Tecton enrichment will wait in the retry queue")
	}
	if f.feastURL != "" {
		client, err := feast.NewClient(feast.Config{BaseURL: f.feastURL, Token: f.feastToken,
			TransportRetries: httpretry.DefaultRetryMax, Logger: logger})
		if err != nil {
			return nil, fmt.Errorf("--feast-url/--feast-token: %w", err)
		}
		if b.Feast, err = enrich.New(enrich.Config{Store: client, Observer: metrics, Logger: logger}); err != nil {
			return nil, err
		}
	}
	return &b, nil
}

func kafkaConfig(f *serveFlags, logger *slog.Logger) kafka.Config {
	cfg := kafka.Config{
		Brokers:     splitList(f.kafkaBrokers),
		Topics:      splitList(f.kafkaTopics),
		GroupID:     f.kafkaGroup,
		ClientID:    "outflow/" + buildVersion(),
		StartOffset: kafka.StartOffset(f.kafkaStart),
		SASL:        kafka.SASL{Mechanism: f.kafkaSASL, Username: f.kafkaUser, Password: f.kafkaPassword},
		Logger:      logger,
	}
	if f.kafkaTLS {
		cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return cfg
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// lagCollector exports the consumer's lag per partition.
type lagCollector struct{ src *kafka.Source }

var lagDesc = prometheus.NewDesc("outflow_consumer_lag",
	"Records between the committed position and the partition's end, per topic and partition.",
	[]string{"topic", "partition"}, nil)

func (c lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- lagDesc }

func (c lagCollector) Collect(ch chan<- prometheus.Metric) {
	for topic, parts := range c.src.Lag() {
		for p, lag := range parts {
			ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, float64(lag), topic, fmt.Sprint(p))
		}
	}
}

func parseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, part := range splitList(s) {
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return nil, fmt.Errorf("--allow-cidrs: %q is not a CIDR", part)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// connect opens a single connection, for commands that run a few statements.
func connect(ctx context.Context, url string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parsing the database URL: invalid connection string")
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to the database: %w", err)
	}
	return conn, nil
}

func migrateUp(ctx context.Context, url string, opts migrations.Options) error {
	conn, err := connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := migrations.Up(ctx, conn, opts); err != nil {
		return fmt.Errorf("applying migrations: %w", err)
	}
	return nil
}
