// Package server is Outflow's API edge: the outflow.v1 gRPC services, the
// same API as REST/JSON through grpc-gateway, API-key authentication, and the
// operational HTTP endpoints (/openapi.json, /healthz, /readyz, /metrics).
//
// Domain errors become gRPC status codes in one place (toStatus); the gateway
// turns codes into HTTP statuses with its standard table (NOT_FOUND → 404,
// ABORTED and ALREADY_EXISTS → 409, INVALID_ARGUMENT → 400, …).
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/outflow-dev/outflow/deliverystats"
	"github.com/outflow-dev/outflow/filter"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/store"
	"github.com/outflow-dev/outflow/webhook"
)

// Config is the API server's configuration. The zero value, with defaults
// applied, is a working server that refuses insecure and private URLs.
type Config struct {
	// MaxRequestBytes bounds a request body (REST) or message (gRPC).
	// Larger REST bodies get 413. Defaults to 1 MiB.
	MaxRequestBytes int
	// MaxSubscriptionsPerTenant bounds a tenant's subscriptions. Defaults to
	// 1000.
	MaxSubscriptionsPerTenant int
	// SecretOverlap is how long a rotated-out webhook secret keeps signing.
	// Defaults to 24h.
	SecretOverlap time.Duration
	// AllowInsecureURLs accepts http:// webhook URLs. Defaults to false.
	AllowInsecureURLs bool
	// AllowCIDRs opens these otherwise blocked ranges (loopback, private,
	// link-local, …) to webhooks.
	AllowCIDRs []netip.Prefix
	// ShutdownTimeout bounds the graceful part of shutdown, after which open
	// calls and streams are cut. Defaults to 30s.
	ShutdownTimeout time.Duration

	// RequestsPerSecond bounds each tenant's API calls (gRPC and REST alike,
	// on this replica), with bursts of RequestBurst; a call over it gets
	// RESOURCE_EXHAUSTED / 429 with Retry-After. Defaults to 50 per second;
	// negative means no limit.
	RequestsPerSecond float64
	// RequestBurst is how many calls a tenant may make at once above the
	// steady rate. Defaults to 100.
	RequestBurst int
	// TestEventsPerSecond bounds the SendTestEvent calls of each
	// subscription (on this replica), with bursts of TestEventBurst; the
	// subscription's own webhook rate_limit applies too when it is lower,
	// and its max_in_flight bounds the test events sent at once. Test events
	// are for checking a receiver by hand, so the default is low: 1 per
	// second; negative means no limit of the server's own.
	TestEventsPerSecond float64
	// TestEventBurst is how many test events a subscription may send at
	// once above the steady rate. Defaults to 5.
	TestEventBurst int
	// MaxLimitedKeys bounds how many tenants, and separately how many
	// subscriptions, the rate limiters remember; the least recently seen
	// idle one is forgotten beyond it. Defaults to 100000 (a few MiB).
	MaxLimitedKeys int
	// MaxStreamsPerSubscription bounds the StreamEvents clients of one
	// subscription open at once on this server (each replica counts its
	// own); more are refused with RESOURCE_EXHAUSTED and Retry-After. Each
	// stream reads every partition itself, so streams cost broker
	// connections and memory. Defaults to 64, room for a worker pool of 64
	// shards.
	MaxStreamsPerSubscription int
	// MaxStreamsPerTenant bounds the StreamEvents clients of one tenant open
	// at once on this server, all subscriptions together. Defaults to 256.
	MaxStreamsPerTenant int
	// KeyCheckInterval is how often the API keys of open streams are checked
	// again, so that revoking a key ends its streams within about this long.
	// Defaults to 2s: one query per interval for all streams of the server.
	KeyCheckInterval time.Duration
}

// WithDefaults returns c with its zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.MaxRequestBytes <= 0 {
		c.MaxRequestBytes = 1 << 20
	}
	if c.MaxSubscriptionsPerTenant <= 0 {
		c.MaxSubscriptionsPerTenant = 1000
	}
	if c.SecretOverlap <= 0 {
		c.SecretOverlap = 24 * time.Hour
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.RequestsPerSecond == 0 {
		c.RequestsPerSecond = 50
	}
	if c.RequestBurst <= 0 {
		c.RequestBurst = 100
	}
	if c.TestEventsPerSecond == 0 {
		c.TestEventsPerSecond = 1
	}
	if c.TestEventBurst <= 0 {
		c.TestEventBurst = 5
	}
	if c.MaxLimitedKeys <= 0 {
		c.MaxLimitedKeys = 100_000
	}
	if c.MaxStreamsPerSubscription <= 0 {
		c.MaxStreamsPerSubscription = 64
	}
	if c.MaxStreamsPerTenant <= 0 {
		c.MaxStreamsPerTenant = 256
	}
	if c.KeyCheckInterval <= 0 {
		c.KeyCheckInterval = 2 * time.Second
	}
	return c
}

func (c Config) validate() error {
	if c.SecretOverlap > 30*24*time.Hour {
		return fmt.Errorf("secret overlap %s is longer than 30 days", c.SecretOverlap)
	}
	return nil
}

// Params are what New needs.
type Params struct {
	Config Config
	Store  *store.Store
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Registry receives the API's metrics and is served at /metrics; nil
	// makes a private one.
	Registry *prometheus.Registry
	// Sender delivers SendTestEvent's test events; nil answers
	// FAILED_PRECONDITION.
	Sender *webhook.Sender
	// Ready, when set, is asked by /readyz besides the database (for
	// example: has the consumer joined its group).
	Ready func() error
	// Streams serves StreamEvents; nil answers UNAVAILABLE.
	Streams Streams
	// Replays says a replay worker runs for webhook subscriptions although
	// Streams is nil (a gateway reading only Kinesis streams, which stream
	// clients cannot read yet). With Streams set, replays are always on.
	Replays bool
	// Stats are the per-subscription delivery statistics GetSubscriptionStats
	// serves (the dispatcher's Metrics.Stats); nil answers empty minutes.
	Stats *deliverystats.Recorder
}

// Server serves the API over gRPC and HTTP.
type Server struct {
	cfg        Config
	store      *store.Store
	logger     *slog.Logger
	registry   *prometheus.Registry
	validator  *validator
	pageTokens pageTokens
	metrics    metrics
	health     *health.Server
	grpc       *grpc.Server
	sender     *webhook.Sender
	ready      func() error
	streams    Streams
	// tenantCalls limits each tenant's API calls; testEvents each
	// subscription's test events.
	tenantCalls *limiters
	testEvents  *limiters
	// streamSlots bounds open streams; keyWatch ends those whose key is
	// revoked.
	streamSlots *streamSlots
	keyWatch    *keyWatch
	replays     bool
	stats       *deliverystats.Recorder
}

type metrics struct {
	requests *prometheus.CounterVec
	streams  prometheus.Gauge
}

// New builds a server. It reads the shared page-token key from the store.
func New(ctx context.Context, p Params) (*Server, error) {
	cfg := p.Config.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if p.Store == nil {
		return nil, errors.New("server: a store is required")
	}
	logger := p.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	registry := p.Registry
	if registry == nil {
		registry = prometheus.NewRegistry()
	}
	filters, err := filter.NewEnv()
	if err != nil {
		return nil, err
	}
	guard, err := webhook.NewGuard(webhook.GuardConfig{AllowCIDRs: cfg.AllowCIDRs, AllowInsecure: cfg.AllowInsecureURLs})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	key, err := p.Store.ServerKey(ctx, "page_token")
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:         cfg,
		store:       p.Store,
		logger:      logger,
		registry:    registry,
		validator:   &validator{filters: filters, guard: guard},
		pageTokens:  pageTokens{key: key},
		health:      health.NewServer(),
		sender:      p.Sender,
		ready:       p.Ready,
		streams:     p.Streams,
		tenantCalls: newLimiters(cfg.MaxLimitedKeys),
		testEvents:  newLimiters(cfg.MaxLimitedKeys),
		streamSlots: newStreamSlots(cfg.MaxStreamsPerSubscription, cfg.MaxStreamsPerTenant),
		keyWatch:    newKeyWatch(p.Store, cfg.KeyCheckInterval, logger),
		replays:     p.Replays || p.Streams != nil,
		stats:       p.Stats,
		metrics: metrics{requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outflow_api_requests_total",
			Help: "API calls by gRPC method and status code (REST calls included).",
		}, []string{"method", "code"}),
			streams: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "outflow_streams_connected",
				Help: "StreamEvents clients connected to this replica.",
			}),
		},
	}
	for _, c := range []prometheus.Collector{s.metrics.requests, s.metrics.streams} {
		if err := registry.Register(c); err != nil {
			return nil, fmt.Errorf("server: registering metrics: %w", err)
		}
	}

	s.grpc = grpc.NewServer(
		grpc.MaxRecvMsgSize(cfg.MaxRequestBytes),
		grpc.ChainUnaryInterceptor(s.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.streamInterceptor),
		// Streams stay open for hours: let clients ping, and ping idle ones.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	)
	outflowv1.RegisterSubscriptionServiceServer(s.grpc, &subscriptionService{Server: s})
	outflowv1.RegisterEventServiceServer(s.grpc, &eventService{Server: s})
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	return s, nil
}

// GRPCServer returns the gRPC server, for tests that list its services.
func (s *Server) GRPCServer() *grpc.Server { return s.grpc }

// Serve serves gRPC on grpcLis and HTTP on httpLis until ctx is done or
// either server fails, then shuts both down: health turns NOT_SERVING, new
// calls are refused, and open ones get Config.ShutdownTimeout to finish.
// It closes the listeners.
func (s *Server) Serve(ctx context.Context, grpcLis, httpLis net.Listener) error {
	handler, closeGateway, err := s.httpHandler(ctx, grpcLis.Addr().String())
	if err != nil {
		_ = grpcLis.Close()
		_ = httpLis.Close()
		return err
	}
	defer closeGateway()
	httpSrv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}

	errc := make(chan error, 2)
	var wg sync.WaitGroup
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	wg.Go(func() { s.keyWatch.run(watchCtx) })
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := s.grpc.Serve(grpcLis); err != nil {
			errc <- fmt.Errorf("serving gRPC: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := httpSrv.Serve(httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serving HTTP: %w", err)
		}
	}()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.logger.InfoContext(ctx, "API serving",
		slog.String("grpc_addr", grpcLis.Addr().String()), slog.String("http_addr", httpLis.Addr().String()))

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}

	s.health.Shutdown()
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := httpSrv.Shutdown(shutdownCtx); err != nil {
		_ = httpSrv.Close()
	}
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-shutdownCtx.Done():
		s.grpc.Stop()
		<-stopped
	}
	stopWatch()
	wg.Wait()
	s.logger.InfoContext(ctx, "API stopped")
	return serveErr
}
