package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outflow-dev/outflow/dispatcher"
	"github.com/outflow-dev/outflow/feast"
	outflowgw "github.com/outflow-dev/outflow/gateway" // the tests name their serve process "gateway"
	"github.com/outflow-dev/outflow/internal/httpretry"
	"github.com/outflow-dev/outflow/server"
	"github.com/outflow-dev/outflow/source/kafka"
	"github.com/outflow-dev/outflow/store"
	"github.com/outflow-dev/outflow/tecton"
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

	// otel exports OpenTelemetry traces (see tracingWanted).
	otel bool
	// pprofAddr, when set, serves Go's runtime profiles on a loopback address (startPprof).
	pprofAddr string
	gc        gcFlags
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

	fs.IntVar(&f.dispatch.LaneQueue, "lane-queue", 256, "events a subscription's delivery lanes may hold in all, shared among its max_in_flight lanes; when an event's lane is full the consumer waits (see --lane-wait)")
	fs.IntVar(&f.dispatch.ReadAhead, "read-ahead", 4, "how many of an enriched delivery lane's next events have their feature vectors read while the lane's current event is sent (negative: none)")
	fs.IntVar(&f.dispatch.Senders, "senders", 512, "webhook attempts under way at once across all subscriptions (the sender pool); as many idle connections are kept per receiver, so subscriptions sharing one never re-dial while busy")
	fs.DurationVar(&f.dispatch.LaneWait, "lane-wait", 500*time.Millisecond, "longest the consumer waits for room in one subscription's lane before that subscription is detached onto its own cursor (or, with --detach=false, its events go to the retry queue until its lane drains)")
	fs.BoolFunc("detach", "detach a subscription that cannot keep up (lane full past --lane-wait, circuit open) onto its own cursor in PostgreSQL, read from Kafka at its receiver's pace until it rejoins, instead of parking its events in the retry queue (default true)", func(v string) error {
		on, err := strconv.ParseBool(v)
		f.dispatch.Detach.Disabled = !on
		return err
	})
	fs.DurationVar(&f.dispatch.DrainTimeout, "drain-timeout", 10*time.Second, "on SIGTERM, how long in-flight deliveries get before they are parked in the retry queue")
	fs.DurationVar(&f.dispatch.Breaker.Cooldown, "breaker-cooldown", 30*time.Second, "how long an open circuit holds a failing receiver's events back (on its cursor when detached, else in the retry queue) before one event probes it")
	fs.DurationVar(&f.dispatch.Detach.HoldFailing, "detach-hold-failing", 15*time.Minute, "how long a detached subscription whose circuit stays open keeps its events in Kafka behind its cursor before it parks them in the retry queue, so the topic's retention cannot take them; keep it well below the retention (negative: park at once)")
	fs.DurationVar(&f.dispatch.Breaker.DisableAfter, "disable-after", 72*time.Hour, "disable a subscription whose receiver has failed without a success for this long")
	fs.DurationVar(&f.dispatch.Retry.Poll, "retry-poll", time.Second, "how often the retry queue is polled when idle")
	fs.DurationVar(&f.replayPoll, "replay-poll", time.Second, "how often an idle replica looks for a replay to run")
	fs.BoolVar(&f.otel, "otel", false, "export OpenTelemetry traces by OTLP/HTTP, configured by the standard OTEL_* variables (default endpoint http://localhost:4318); on by itself when OTEL_EXPORTER_OTLP_ENDPOINT is set")
	fs.StringVar(&f.pprofAddr, "pprof-addr", "", pprofUsage)
	f.gc.register(fs)

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
	gc, err := f.gc.policy(fs, env.getenv)
	if err != nil {
		return err
	}
	logger, err := f.logs.logger(env.stderr)
	if err != nil {
		return err
	}
	gc.apply(logger, env.getenv)
	f.otel = tracingWanted(f.otel, env.getenv)
	return serve(ctx, &f, logger)
}

// serve maps the flags to a gateway.Config and runs the gateway until ctx
// is done (see package gateway for what runs and the shutdown order).
func serve(ctx context.Context, f *serveFlags, logger *slog.Logger) error {
	cfg, err := f.gatewayConfig(ctx, logger)
	if err != nil {
		return err
	}
	if f.otel {
		tp, shutdown, err := newTracerProvider(ctx)
		if err != nil {
			return err
		}
		defer shutdown() // after Run: the last spans are flushed
		cfg.TracerProvider = tp
	}
	gw, err := outflowgw.New(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	waitPprof, err := startPprof(ctx, f.pprofAddr, logger)
	if err != nil {
		return err
	}
	defer waitPprof()
	defer cancel() // before waitPprof: it ends the listener
	return gw.Run(ctx)
}

// gatewayConfig maps the flags to the gateway's configuration.
func (f *serveFlags) gatewayConfig(ctx context.Context, logger *slog.Logger) (outflowgw.Config, error) {
	cfg := outflowgw.Config{
		DatabaseURL: f.databaseURL,
		Migrate:     f.migrate,
		SecretKeys:  f.secretKeys,
		GRPCAddr:    f.grpcAddr,
		HTTPAddr:    f.httpAddr,
		API:         f.api,
		Dispatch:    f.dispatch,
		ReplayPoll:  f.replayPoll,
		Version:     buildVersion(),
		Logger:      logger,
	}
	if f.kafkaBrokers != "" {
		cfg.Kafka = kafkaConfig(f, logger)
	}
	if f.kinesis.streams != "" {
		var err error
		if cfg.Kinesis, err = f.kinesis.config(ctx); err != nil {
			return outflowgw.Config{}, err
		}
	}
	if f.tectonURL != "" {
		cfg.Tecton = tecton.Config{BaseURL: f.tectonURL, APIKey: f.tectonKey,
			TransportRetries: httpretry.DefaultRetryMax, Logger: logger}
	}
	if f.feastURL != "" {
		cfg.Feast = feast.Config{BaseURL: f.feastURL, Token: f.feastToken,
			TransportRetries: httpretry.DefaultRetryMax, Logger: logger}
	}
	return cfg, nil
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
