package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outflow-dev/outflow/devenv"
	"github.com/outflow-dev/outflow/dispatcher"
	"github.com/outflow-dev/outflow/featureserver"
	outflowgw "github.com/outflow-dev/outflow/gateway"
	"github.com/outflow-dev/outflow/internal/httpretry"
	"github.com/outflow-dev/outflow/server"
	"github.com/outflow-dev/outflow/source/kafka"
	"github.com/outflow-dev/outflow/source/kinesis"
	"github.com/outflow-dev/outflow/store"
	"github.com/outflow-dev/outflow/tecton"
)

// devFlags are the flags of `outflow dev`.
type devFlags struct {
	logs         logFlags
	httpAddr     string
	grpcAddr     string
	kafkaAddr    string
	source       string
	kinesisURL   string
	kinesaliteAt string
	featureAddr  string
	receiver     bool
	receiverAddr string
	databaseURL  string
	pgBinDir     string
	pgDownload   bool
	rate         float64
	users        int
	newUsers     float64
	lag          time.Duration
	lagJitter    time.Duration
	secretKeys   string
}

// devReadyTimeout bounds the start of everything, PostgreSQL's initdb
// included; it normally takes two to four seconds.
const devReadyTimeout = 60 * time.Second

// devCacheTTL is the age limit of the reference feature server's serving
// cache in dev: a read that does not bypass the cache (the first call for
// each record) may see values up to a minute old, as Tecton's feature
// serving cache allows, so the consistency retries' read_from_cache=false
// is what gets an event its fresh values.
const devCacheTTL = time.Minute

// Names `outflow dev` gives what it creates.
const (
	devTenant        = "dev"
	devConsumerGroup = "outflow-dev"
	devPartitions    = 3
)

func runDev(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "dev")
	var f devFlags
	fs.StringVar(&f.logs.level, "log-level", "warn", "log level of the components' logs on stderr: debug, info, warn or error")
	fs.StringVar(&f.logs.format, "log-format", "text", "log format: json or text")
	fs.StringVar(&f.httpAddr, "http-addr", "127.0.0.1:8080", "address of the gateway's REST API, /openapi.json and /metrics (port 0: any free port)")
	fs.StringVar(&f.grpcAddr, "grpc-addr", "127.0.0.1:9090", "address of the gateway's gRPC API (port 0: any free port)")
	fs.StringVar(&f.kafkaAddr, "kafka-addr", "127.0.0.1:0", "address of the in-process Kafka broker (port 0: any free port)")
	fs.StringVar(&f.source, "source", "kafka", "the output stream to run on: kafka (an in-process broker) or kinesis (a local Kinesis, kinesalite; needs node)")
	fs.StringVar(&f.kinesisURL, "kinesis-endpoint", "", "with --source kinesis: the URL of a running local Kinesis to use instead of starting kinesalite")
	fs.StringVar(&f.kinesaliteAt, "kinesalite-dir", defaultKinesaliteDir(), "with --source kinesis: where scripts/kinesalite-deps.sh installed kinesalite")
	fs.StringVar(&f.featureAddr, "featureserver-addr", "127.0.0.1:0", "address of the reference feature server's GetFeatures API (port 0: any free port)")
	fs.BoolVar(&f.receiver, "receiver", false, "also run a demo webhook receiver that verifies each event's signature and prints it")
	fs.StringVar(&f.receiverAddr, "receiver-addr", "127.0.0.1:0", "address of the demo webhook receiver (port 0: any free port)")
	fs.StringVar(&f.databaseURL, "database-url", "", "PostgreSQL URL to use instead of a throwaway cluster (also read from DATABASE_URL); it is migrated and gets a tenant \"dev\"")
	fs.StringVar(&f.pgBinDir, "postgres-bin-dir", "", "directory of the PostgreSQL server binaries initdb and postgres (default: PATH, then the newest /usr/lib/postgresql/*/bin, else PostgreSQL "+devenv.PostgresVersion+" downloaded from Maven Central into the user cache directory)")
	fs.BoolVar(&f.pgDownload, "postgres-download", false, "run PostgreSQL "+devenv.PostgresVersion+" downloaded from Maven Central (once, into the user cache directory) even where server binaries are installed")
	fs.Float64Var(&f.rate, "rate", 2, "mean add_item_to_cart records per second of the demo producer (0: no producer)")
	fs.IntVar(&f.users, "users", 20, "number of returning demo users (user_id u1..uN)")
	fs.Float64Var(&f.newUsers, "new-users", DefaultDemoNewUsers, "share of demo events from first-time shoppers (user_id new1, new2, ...), whose first record the feature store has never seen (0 to 1)")
	fs.DurationVar(&f.lag, "lag", 500*time.Millisecond, "the feature server's materialisation lag: a record's values become visible this long after it is read")
	fs.DurationVar(&f.lagJitter, "lag-jitter", time.Second, "random extra materialisation lag per record, uniform from 0 to this")
	fs.StringVar(&f.secretKeys, "secret-keys", "", "keys that encrypt webhook secrets at rest, as for serve (default: a new random key each run; set it to keep subscriptions of a --database-url readable across runs)")
	if err := parseFlags(env, fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	var err error
	if f.databaseURL == "" {
		f.databaseURL = env.getenv("DATABASE_URL")
	}
	if f.secretKeys == "" {
		if f.secretKeys, err = store.GenerateSecretKey("dev"); err != nil {
			return err
		}
	}
	if _, err := store.ParseSecretKeys(f.secretKeys); err != nil {
		return fmt.Errorf("--secret-keys: %w", err)
	}
	switch {
	case f.source != "kafka" && f.source != "kinesis":
		return fmt.Errorf("--source %q: want kafka or kinesis", f.source)
	case f.rate < 0:
		return fmt.Errorf("--rate %v: must not be negative", f.rate)
	case f.users < 1:
		return fmt.Errorf("--users %d: want at least 1", f.users)
	case !(f.newUsers >= 0 && f.newUsers <= 1):
		return fmt.Errorf("--new-users %v: want a share from 0 to 1", f.newUsers)
	case f.lag < 0 || f.lagJitter < 0:
		return errors.New("--lag and --lag-jitter must not be negative")
	case f.pgDownload && f.pgBinDir != "":
		return errors.New("--postgres-download and --postgres-bin-dir exclude each other")
	}
	logger, err := f.logs.logger(env.stderr)
	if err != nil {
		return err
	}
	d := &devRun{f: f, env: env, logger: logger, out: &syncWriter{w: env.stdout}, started: time.Now()}
	if err := d.run(ctx); err != nil && ctx.Err() == nil {
		return err
	}
	return nil // stopped by the user, possibly while starting
}

// devRun is one run of `outflow dev`: what it started, to stop in order.
type devRun struct {
	f       devFlags
	env     *environment
	logger  *slog.Logger
	out     io.Writer
	started time.Time

	// mu guards what the forced exit of a second Ctrl-C cleans up.
	mu  sync.Mutex
	tmp string
	pg  *devenv.Postgres
}

// devInfo is what the printed instructions need.
type devInfo struct {
	StartedIn time.Duration
	HTTPAddr  string
	GRPCAddr  string
	APIKey    string
	Tenant    string
	KafkaAddr string // empty with --source kinesis
	// KinesisEndpoint is the local Kinesis with --source kinesis.
	KinesisEndpoint string
	FeatureURL      string
	DatabaseURL     string
	PostgresDir     string // empty with --database-url
	ReceiverURL     string // empty without --receiver
	Rate            float64
	Users           int
	NewUsers        float64
	Lag, LagJitter  time.Duration
	NameSuffix      string // keeps subscription names unique in a reused database
}

// run starts everything, prints the instructions, waits for ctx, then
// stops everything in the reverse order and removes what it created.
func (d *devRun) run(ctx context.Context) (err error) {
	f := &d.f
	stopSignals := d.forceExitOnSecondSignal()
	defer stopSignals()
	// A closed stdout or stderr (outflow dev | head) must not kill the
	// process before it has cleaned up: writes fail instead.
	signal.Ignore(syscall.SIGPIPE)

	// Fail fast, before PostgreSQL is initialised, when a fixed port is taken.
	httpListen, httpShown, err := resolveAddr(ctx, f.httpAddr, "--http-addr")
	if err != nil {
		return err
	}
	grpcListen, grpcShown, err := resolveAddr(ctx, f.grpcAddr, "--grpc-addr")
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "outflow-dev-")
	if err != nil {
		return fmt.Errorf("creating a temporary directory: %w", err)
	}
	d.mu.Lock()
	d.tmp = tmp
	d.mu.Unlock()
	defer d.cleanup()

	// The throwaway PostgreSQL cluster starts (initdb is the slow part)
	// while the broker and the feature server come up.
	type pgResult struct {
		pg  *devenv.Postgres
		err error
	}
	pgc := make(chan pgResult, 1)
	if f.databaseURL == "" {
		// Without the binaries there is nothing to wait for: say so first,
		// or download them, with progress on stderr.
		fetch := devenv.FetchConfig{Progress: d.env.stderr, Terminal: devenv.IsTerminal(d.env.stderr), Logger: d.logger}
		if f.pgDownload {
			f.pgBinDir, err = devenv.FetchPostgres(ctx, fetch)
		} else {
			f.pgBinDir, err = devenv.PostgresBin(ctx, f.pgBinDir, fetch)
		}
		if err != nil {
			return err
		}
		pgDir := filepath.Join(tmp, "pg")
		if err := os.Mkdir(pgDir, 0o700); err != nil {
			return fmt.Errorf("creating the PostgreSQL directory: %w", err)
		}
		if os.Geteuid() == 0 {
			// The unprivileged user must be able to reach its directory.
			if err := os.Chmod(tmp, 0o755); err != nil {
				return fmt.Errorf("opening the temporary directory to the postgres user: %w", err)
			}
		}
		// Registered as soon as it runs, so that cleanup and the forced exit
		// stop it; an early return cancels a start still under way and waits
		// for it (StartPostgres stops what it launched when it fails).
		pgCtx, cancelPG := context.WithCancel(ctx)
		pgDone := make(chan struct{})
		go func() {
			defer close(pgDone)
			pg, err := devenv.StartPostgres(pgCtx, devenv.PostgresConfig{BinDir: f.pgBinDir, Dir: pgDir, Logger: d.logger})
			if pg != nil {
				d.mu.Lock()
				d.pg = pg
				d.mu.Unlock()
			}
			pgc <- pgResult{pg, err}
		}()
		defer func() {
			cancelPG()
			<-pgDone
		}()
	} else {
		pgc <- pgResult{}
	}

	// Components stop in this order: the producer, the gateway, then what
	// the gateway uses (feature server, receiver), then the broker and the
	// database. Each group has its own context, cancelled in turn.
	prodCtx, stopProducer := context.WithCancel(context.WithoutCancel(ctx))
	defer stopProducer()
	gwCtx, stopGateway := context.WithCancel(context.WithoutCancel(ctx))
	defer stopGateway()
	auxCtx, stopAux := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAux()
	failed := make(chan error, 8)
	var prodWG, gwWG, auxWG sync.WaitGroup
	goRun := func(wg *sync.WaitGroup, name string, fn func() error) {
		wg.Go(func() {
			if err := fn(); err != nil && !errors.Is(err, context.Canceled) {
				failed <- fmt.Errorf("%s: %w", name, err)
			}
		})
	}

	var broker *devBroker
	var kin *devKinesis
	if f.source == "kinesis" {
		if kin, err = startDevKinesis(ctx, f.kinesisURL, f.kinesaliteAt, d.env.stderr); err != nil {
			return err
		}
		defer kin.Close()
	} else {
		if broker, err = startDevBroker(ctx, devBrokerConfig{Addr: f.kafkaAddr, Topic: demoTopic, Partitions: devPartitions, Logger: d.logger}); err != nil {
			return err
		}
		defer broker.Close()
	}

	featureKey := "dev-" + randomHex(16)
	features, err := featureserver.New(featureserver.Config{Lag: f.lag, LagJitter: f.lagJitter, CacheTTL: devCacheTTL, APIKey: featureKey, Logger: d.logger})
	if err != nil {
		return err
	}
	var lc net.ListenConfig
	featureLis, err := lc.Listen(ctx, "tcp", f.featureAddr)
	if err != nil {
		return fmt.Errorf("listening for the feature server (--featureserver-addr): %w", err)
	}
	featureURL := "http://" + featureLis.Addr().String()
	goRun(&auxWG, "feature server", func() error { return features.Serve(auxCtx, featureLis) })
	goRun(&auxWG, "feature server ingestion", func() error {
		if kin != nil {
			return kin.feed(auxCtx, features)
		}
		return features.Consume(auxCtx, []string{broker.Addr()}, []string{demoTopic}, devConsumerGroup+"-featureserver")
	})
	// Whatever happens from here, stop the helpers in order, then close the
	// pool they use, before the broker and the database go.
	var pool *pgxpool.Pool
	defer func() {
		stopProducer()
		prodWG.Wait()
		stopGateway()
		gwWG.Wait()
		stopAux()
		auxWG.Wait()
		if pool != nil {
			pool.Close()
		}
	}()

	res := <-pgc
	if res.err != nil {
		return res.err
	}
	info := devInfo{HTTPAddr: httpShown, GRPCAddr: grpcShown, Tenant: devTenant,
		FeatureURL: featureURL, DatabaseURL: f.databaseURL, Rate: f.rate, Users: f.users, NewUsers: f.newUsers, Lag: f.lag, LagJitter: f.lagJitter}
	if kin != nil {
		info.KinesisEndpoint = kin.endpoint
	} else {
		info.KafkaAddr = broker.Addr()
	}
	if res.pg != nil {
		info.DatabaseURL, info.PostgresDir = res.pg.URL(), res.pg.Dir()
	} else {
		info.NameSuffix = " " + time.Now().Format("150405")
	}

	if err := outflowgw.Migrate(ctx, info.DatabaseURL, d.logger); err != nil {
		return err
	}
	if pool, err = store.Open(ctx, info.DatabaseURL); err != nil {
		return err
	}
	keys, err := store.ParseSecretKeys(d.f.secretKeys)
	if err != nil {
		return err
	}
	st := store.New(pool, store.WithSecretKeys(keys))
	key, plaintext, err := st.CreateAPIKey(ctx, devTenant, "outflow dev")
	if err != nil {
		return err
	}
	info.APIKey = plaintext

	if f.receiver {
		recv, err := newDevReceiver(ctx, devReceiverConfig{Addr: f.receiverAddr, Out: d.out, Logger: d.logger,
			Secrets: func(ctx context.Context, id string) ([]string, error) {
				sub, err := st.GetSubscription(ctx, key.TenantID, id)
				if err != nil {
					return nil, err
				}
				return sub.Secrets.Active(time.Now()), nil
			}})
		if err != nil {
			return err
		}
		info.ReceiverURL = recv.URL()
		goRun(&auxWG, "demo receiver", func() error { return recv.Serve(auxCtx) })
	}

	gw, err := outflowgw.New(d.gatewayConfig(info, featureKey, httpListen, grpcListen))
	if err != nil {
		return err
	}
	served := make(chan struct{})
	goRun(&gwWG, "gateway", func() error {
		defer close(served)
		return gw.Run(gwCtx)
	})
	if err := awaitReady(ctx, "http://"+httpShown+"/readyz", served, failed); err != nil {
		return err
	}
	if f.rate > 0 {
		goRun(&prodWG, "demo producer", func() error {
			if kin != nil {
				return kin.produce(prodCtx, demoProducerConfig{Rate: f.rate, Users: f.users, NewUsers: new(f.newUsers), Logger: d.logger})
			}
			return produceDemo(prodCtx, demoProducerConfig{Brokers: []string{broker.Addr()}, Rate: f.rate, Users: f.users, NewUsers: new(f.newUsers), Logger: d.logger})
		})
	}
	info.StartedIn = time.Since(d.started)
	fmt.Fprint(d.out, devInstructions(info))

	select {
	case <-ctx.Done():
		fmt.Fprintln(d.env.stderr, "outflow dev: stopping (Ctrl-C again to force)")
		return nil
	case err := <-failed:
		return err
	}
}

// gatewayConfig is the gateway's configuration in dev: the local feature
// server, the in-process broker (or local Kinesis), http:// and loopback
// webhook URLs allowed so local receivers work, and short drains so Ctrl-C
// is quick.
func (d *devRun) gatewayConfig(info devInfo, featureKey, httpAddr, grpcAddr string) outflowgw.Config {
	cfg := outflowgw.Config{
		DatabaseURL: info.DatabaseURL,
		Migrate:     true,
		SecretKeys:  d.f.secretKeys,
		GRPCAddr:    grpcAddr,
		HTTPAddr:    httpAddr,
		API: server.Config{
			AllowInsecureURLs: true,
			AllowCIDRs:        []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
			ShutdownTimeout:   2 * time.Second,
		},
		Tecton: tecton.Config{BaseURL: info.FeatureURL, APIKey: featureKey, TransportRetries: httpretry.DefaultRetryMax},
		Dispatch: dispatcher.Config{
			DrainTimeout: 2 * time.Second,
			Breaker:      dispatcher.BreakerConfig{Cooldown: 5 * time.Second, DisableAfter: 72 * time.Hour},
			Retry:        dispatcher.RetryConfig{Poll: 500 * time.Millisecond},
		},
		Version: buildVersion(),
		Logger:  d.logger,
	}
	if info.KinesisEndpoint != "" {
		cfg.Kinesis = kinesis.Config{Streams: []string{demoTopic}, AWS: devAWS(), Endpoint: info.KinesisEndpoint,
			GroupID: devConsumerGroup, StartPosition: kinesis.StartTrimHorizon, LeaseDuration: 3 * time.Second,
			IdleWait: 100 * time.Millisecond}
	} else {
		cfg.Kafka = kafka.Config{Brokers: []string{info.KafkaAddr}, Topics: []string{demoTopic},
			GroupID: devConsumerGroup, StartOffset: kafka.StartEarliest}
	}
	return cfg
}

// cleanup stops the PostgreSQL cluster and removes the temporary directory.
// It does not hold mu while it waits, so a second Ctrl-C can still force
// the exit.
func (d *devRun) cleanup() {
	d.mu.Lock()
	pg, tmp := d.pg, d.tmp
	d.mu.Unlock()
	pg.Stop()
	if tmp != "" {
		if err := os.RemoveAll(tmp); err != nil {
			fmt.Fprintf(d.env.stderr, "outflow dev: removing %s: %v\n", tmp, err)
		}
	}
}

// forceExitOnSecondSignal makes a second SIGINT or SIGTERM (the first one
// cancels the context and starts the graceful stop) kill the PostgreSQL
// cluster, remove the temporary directory and exit at once with status 130.
// The returned func stops watching.
func (d *devRun) forceExitOnSecondSignal() (stop func()) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		seen := 0
		for {
			select {
			case <-done:
				return
			case <-sigs:
			}
			if seen++; seen < 2 {
				continue
			}
			fmt.Fprintln(d.env.stderr, "outflow dev: forced exit")
			d.mu.Lock()
			pg, tmp := d.pg, d.tmp
			d.mu.Unlock()
			pg.Kill()
			if tmp != "" {
				_ = os.RemoveAll(tmp)
			}
			os.Exit(130) // deliberately past the deferred graceful stop: the user asked twice
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(done)
	}
}

// awaitReady polls the gateway's /readyz until it answers 200, the gateway
// stops, a component fails or devReadyTimeout passes.
func awaitReady(ctx context.Context, url string, served <-chan struct{}, failed <-chan error) error {
	ctx, cancel := context.WithTimeout(ctx, devReadyTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("checking readiness: %w", err)
		}
		if resp, err := client.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-failed:
			return err
		case <-served:
			select {
			case err := <-failed:
				return err
			default:
				return errors.New("the gateway stopped while starting")
			}
		case <-ctx.Done():
			return fmt.Errorf("the gateway was not ready within %s: %w", devReadyTimeout, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// resolveAddr checks that addr can be listened on and, for port 0, picks
// the free port, so the printed commands name real ports. It returns the
// address to listen on and the one to show in commands (loopback when addr
// listens on every interface). The port is free again when this returns;
// the gateway binds it a few seconds later.
func resolveAddr(ctx context.Context, addr, flagName string) (listen, shown string, err error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", "", fmt.Errorf("%s %q: %w", flagName, addr, err)
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return "", "", fmt.Errorf("%s %s: %w (choose another address with %s)", flagName, addr, err, flagName)
	}
	defer l.Close()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	listen = net.JoinHostPort(host, port)
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return listen, net.JoinHostPort(host, port), nil
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// syncWriter serialises writes, so the receiver's lines and the
// instructions never interleave mid-line.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
