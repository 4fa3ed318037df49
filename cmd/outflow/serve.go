package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/outflow-dev/outflow/migrations"
	"github.com/outflow-dev/outflow/server"
	"github.com/outflow-dev/outflow/store"
)

func runServe(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "serve")
	var (
		logs        logFlags
		databaseURL = fs.String("database-url", "", "PostgreSQL connection URL (required)")
		grpcAddr    = fs.String("grpc-addr", ":9090", "address of the gRPC API")
		httpAddr    = fs.String("http-addr", ":8080", "address of the REST API, /openapi.json, /metrics, /healthz and /readyz")
		migrate     = fs.Bool("migrate", false, "apply pending database migrations before serving")
		cidrs       = fs.String("allow-cidrs", "", "comma-separated CIDRs webhooks may reach although private (e.g. 10.0.0.0/8,127.0.0.0/8)")
		cfg         server.Config
	)
	logs.register(fs)
	fs.IntVar(&cfg.MaxRequestBytes, "max-request-bytes", 1<<20, "largest accepted request body or message, in bytes")
	fs.IntVar(&cfg.MaxSubscriptionsPerTenant, "max-subscriptions-per-tenant", 1000, "most subscriptions one tenant may have")
	fs.DurationVar(&cfg.SecretOverlap, "secret-overlap", 24*time.Hour, "how long a rotated-out webhook secret keeps signing")
	fs.BoolVar(&cfg.AllowInsecureURLs, "allow-insecure-urls", false, "accept http:// webhook URLs")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long open calls get to finish on SIGTERM")
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
	if cfg.AllowCIDRs, err = parseCIDRs(*cidrs); err != nil {
		return err
	}
	logger, err := logs.logger(env.stderr)
	if err != nil {
		return err
	}

	if *migrate {
		if err := migrateUp(ctx, *databaseURL, migrations.Options{Logger: logger}); err != nil {
			return err
		}
	}
	pool, err := store.Open(ctx, *databaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()

	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv, err := server.New(ctx, server.Params{Config: cfg, Store: store.New(pool), Logger: logger, Registry: registry})
	if err != nil {
		return err
	}
	var lc net.ListenConfig
	grpcLis, err := lc.Listen(ctx, "tcp", *grpcAddr)
	if err != nil {
		return fmt.Errorf("listening for gRPC: %w", err)
	}
	httpLis, err := lc.Listen(ctx, "tcp", *httpAddr)
	if err != nil {
		_ = grpcLis.Close()
		return fmt.Errorf("listening for HTTP: %w", err)
	}
	return srv.Serve(ctx, grpcLis, httpLis)
}

func parseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
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
