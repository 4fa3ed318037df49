package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/outflow-dev/outflow/dispatcher"
	"github.com/outflow-dev/outflow/feast"
	"github.com/outflow-dev/outflow/server"
	"github.com/outflow-dev/outflow/source/kafka"
	"github.com/outflow-dev/outflow/source/kinesis"
	"github.com/outflow-dev/outflow/store"
	"github.com/outflow-dev/outflow/tecton"
)

// ErrInvalidConfig is wrapped by every error of Config validation.
var ErrInvalidConfig = errors.New("gateway: invalid config")

// Config is everything a Gateway runs with. It reads no environment and no
// flags: the CLI (`outflow serve`, `outflow dev`) maps those to it. The
// components' own configuration structs are used as they are, so a field
// added to one of them needs no change here; each is completed by
// WithDefaults and checked by its own package.
type Config struct {
	// DatabaseURL is the PostgreSQL connection URL. Required.
	DatabaseURL string
	// Migrate applies pending database migrations before anything starts.
	// Default false: a fleet is migrated once, by `outflow migrate`.
	Migrate bool
	// SecretKeys are the keys that encrypt webhook secrets at rest, in the
	// form store.ParseSecretKeys reads. Required; never logged.
	SecretKeys string

	// GRPCAddr is where the gRPC API listens. Default ":9090".
	GRPCAddr string
	// HTTPAddr is where the REST API, /openapi.json, /metrics, /healthz and
	// /readyz listen. Default ":8080".
	HTTPAddr string
	// GRPCListener and HTTPListener, when set, are served instead of
	// listening on GRPCAddr and HTTPAddr (tests and `outflow dev` bind port
	// 0 first to learn the port). The Gateway closes them.
	GRPCListener, HTTPListener net.Listener
	// API is the API server's configuration (limits, the webhook URL guard
	// and ShutdownTimeout: how long open calls get once the gateway stops,
	// default 30s). See server.Config for each default.
	API server.Config

	// Kafka is the Kafka source, read as a consumer group, by stream
	// clients and by replays. Used when Kafka.Brokers is not empty; the
	// Logger defaults to Config.Logger and the ClientID to
	// "outflow/<Version>". Default: no Kafka.
	Kafka kafka.Config
	// Kinesis is the Kinesis source, with shard leases and checkpoints in
	// PostgreSQL (Leases is set by the Gateway). Used when Kinesis.Streams
	// is not empty; AWS must then hold the credentials and region (the CLI
	// loads them through the AWS standard chain). Default: no Kinesis.
	// Without any source the gateway serves the API and retries only.
	Kinesis kinesis.Config

	// Tecton is the client of Tecton's GetFeatures API (or of `outflow
	// featureserver`), used when Tecton.BaseURL is set. Without it the
	// deliveries of subscriptions with Tecton enrichment wait in the retry
	// queue (never spending their retry policy).
	Tecton tecton.Config
	// Feast is the client of a Feast feature server, used when Feast.BaseURL
	// is set, for subscriptions with enrichment backend FEAST; they wait in
	// the retry queue without it.
	Feast feast.Config

	// Dispatch tunes delivery: lanes, senders, the retry worker, the breaker
	// and DrainTimeout (how long in-flight deliveries get at shutdown before
	// they are parked in the retry queue, default 10s). UserAgent defaults to
	// "outflow/<Version>". See dispatcher.Config for each default.
	Dispatch dispatcher.Config
	// ReplayPoll is how often an idle replica looks for a replay to run.
	// Default 1s.
	ReplayPoll time.Duration

	// Version names this build in the webhook User-Agent and the Kafka
	// client id. Default "dev".
	Version string
	// Registry receives the gateway's metrics, served at /metrics. Default:
	// a new registry with the Go runtime and process collectors.
	Registry *prometheus.Registry
	// Logger receives the components' logs. Default: discard.
	Logger *slog.Logger
	// TracerProvider receives the dispatcher's spans (one per record, its
	// decode, match, enrichment and delivery attempts). Default: nil, no
	// tracing and no cost on the hot path.
	TracerProvider trace.TracerProvider
}

// WithDefaults returns c with its zero fields set to their defaults. The
// components' own configurations get theirs when they are built.
func (c Config) WithDefaults() Config {
	if c.GRPCAddr == "" {
		c.GRPCAddr = ":9090"
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = ":8080"
	}
	if c.ReplayPoll <= 0 {
		c.ReplayPoll = time.Second
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Dispatch.UserAgent == "" {
		c.Dispatch.UserAgent = "outflow/" + c.Version
	}
	if len(c.Kafka.Brokers) > 0 {
		if c.Kafka.ClientID == "" {
			c.Kafka.ClientID = "outflow/" + c.Version
		}
		if c.Kafka.Logger == nil {
			c.Kafka.Logger = c.Logger
		}
	}
	if len(c.Kinesis.Streams) > 0 && c.Kinesis.Logger == nil {
		c.Kinesis.Logger = c.Logger
	}
	if c.Tecton.BaseURL != "" && c.Tecton.Logger == nil {
		c.Tecton.Logger = c.Logger
	}
	if c.Feast.BaseURL != "" && c.Feast.Logger == nil {
		c.Feast.Logger = c.Logger
	}
	return c
}

// validate checks what the Gateway itself needs; the components check
// their own configurations when they are built.
func (c Config) validate() error {
	if c.DatabaseURL == "" {
		return fmt.Errorf("%w: DatabaseURL is required", ErrInvalidConfig)
	}
	if c.SecretKeys == "" {
		return fmt.Errorf("%w: SecretKeys is required", ErrInvalidConfig)
	}
	if _, err := store.ParseSecretKeys(c.SecretKeys); err != nil {
		return fmt.Errorf("%w: SecretKeys: %w", ErrInvalidConfig, err)
	}
	if len(c.Kafka.Brokers) > 0 && len(c.Kafka.Topics) == 0 {
		return fmt.Errorf("%w: Kafka.Brokers without Kafka.Topics", ErrInvalidConfig)
	}
	return nil
}
