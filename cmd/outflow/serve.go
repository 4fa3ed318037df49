package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/outflow-dev/outflow/dispatcher"
	"github.com/outflow-dev/outflow/enrich"
	"github.com/outflow-dev/outflow/match"
	"github.com/outflow-dev/outflow/migrations"
	"github.com/outflow-dev/outflow/replay"
	"github.com/outflow-dev/outflow/server"
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

	tectonURL string
	tectonKey string

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

	fs.StringVar(&f.kafkaBrokers, "kafka-brokers", "", "comma-separated Kafka bootstrap brokers; without them the gateway serves the API and retries only")
	fs.StringVar(&f.kafkaTopics, "kafka-topics", "fv-output", "comma-separated output-stream topics to consume")
	fs.StringVar(&f.kafkaGroup, "kafka-group", "outflow", "Kafka consumer group shared by the replicas")
	fs.StringVar(&f.kafkaStart, "kafka-start-offset", "earliest", "where a new consumer group starts: earliest or latest")
	fs.StringVar(&f.kafkaSASL, "kafka-sasl-mechanism", "", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (none when empty)")
	fs.StringVar(&f.kafkaUser, "kafka-username", "", "SASL username")
	fs.StringVar(&f.kafkaPassword, "kafka-password", "", "SASL password (prefer the environment variable)")
	fs.BoolVar(&f.kafkaTLS, "kafka-tls", false, "connect to the brokers over TLS (system roots)")

	fs.StringVar(&f.tectonURL, "tecton-url", "", "base URL of the GetFeatures API (Tecton, or `outflow featureserver`); enrichment fails without it")
	fs.StringVar(&f.tectonKey, "tecton-api-key", "", "Tecton API key, required with --tecton-url (prefer the environment variable)")

	fs.IntVar(&f.dispatch.LaneQueue, "lane-queue", 256, "events one delivery lane may hold before further events spill to the retry queue")
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
	if err := requireFlags(fs, "database-url"); err != nil {
		return err
	}
	var err error
	if f.api.AllowCIDRs, err = parseCIDRs(f.cidrs); err != nil {
		return err
	}
	logger, err := f.logs.logger(env.stderr)
	if err != nil {
		return err
	}
	return serve(ctx, &f, logger)
}

// serve runs the API, the matcher, the retry worker and (with Kafka
// configured) the consumer until ctx is done, then shuts down in the order
// that keeps the at-least-once promise: stop fetching and let the consumer
// drain and commit, park what is still in flight, then stop the rest.
func serve(ctx context.Context, f *serveFlags, logger *slog.Logger) error {
	if f.migrate {
		if err := migrateUp(ctx, f.databaseURL, migrations.Options{Logger: logger}); err != nil {
			return err
		}
	}
	pool, err := store.Open(ctx, f.databaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	st := store.New(pool)

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

	var enricher dispatcher.Enricher
	if f.tectonURL != "" {
		client, err := tecton.NewClient(tecton.Config{BaseURL: f.tectonURL, APIKey: f.tectonKey, Logger: logger})
		if err != nil {
			return err
		}
		e, err := enrich.New(enrich.Config{Store: client, Observer: metrics, Logger: logger})
		if err != nil {
			return err
		}
		enricher = e
	} else {
		logger.WarnContext(ctx, "no --tecton-url: deliveries of subscriptions with enrichment will wait in the retry queue")
	}

	matcher, err := match.New(match.Config{Store: st, Logger: logger})
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

	var src *kafka.Source
	var streams server.Streams
	var replays *replay.Worker
	if f.kafkaBrokers != "" {
		kcfg := kafkaConfig(f, logger)
		if src, err = kafka.New(kcfg); err != nil {
			return err
		}
		registry.MustRegister(lagCollector{src})
		// Stream clients read the topics directly, so any replica serves any
		// client; their resume tokens are signed with a key all replicas share.
		dialer, err := kcfg.Dialer()
		if err != nil {
			return err
		}
		key, err := st.ServerKey(ctx, "resume_token")
		if err != nil {
			return err
		}
		tokens, err := stream.NewTokens(key)
		if err != nil {
			return err
		}
		if streams, err = newStreamSource(stream.Config{Brokers: kcfg.Brokers, Topics: kcfg.Topics, Tokens: tokens,
			Dialer: dialer, Logger: logger}, matcher, enricher); err != nil {
			return err
		}
		if replays, err = replay.New(replay.Config{Store: st, Subscriptions: matcher, Deliverer: disp,
			Kafka: stream.Config{Brokers: kcfg.Brokers, Topics: kcfg.Topics, Dialer: dialer, Logger: logger},
			Poll:  f.replayPoll, Logger: logger}); err != nil {
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
		if src != nil && !src.Joined() {
			return errors.New("the Kafka consumer has not joined its group")
		}
		return nil
	}
	api, err := server.New(ctx, server.Params{Config: f.api, Store: st, Logger: logger, Registry: registry,
		Sender: sender, Ready: ready, Streams: streams, Stats: metrics.Stats()})
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
	errs := make(chan error, 5) // one per component at most
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
	var consumer sync.WaitGroup
	if src != nil && runCtx.Err() == nil {
		consumer.Add(1)
		go func() {
			defer consumer.Done()
			if err := src.Run(runCtx, disp.Handle); err != nil && !errors.Is(err, context.Canceled) {
				errs <- fmt.Errorf("kafka source: %w", err)
			}
		}()
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
	logger.InfoContext(ctx, "gateway running", slog.Bool("consuming", src != nil), slog.Bool("enriching", enricher != nil))

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
