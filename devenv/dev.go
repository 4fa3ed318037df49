package devenv

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
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outflow-dev/outflow/dispatcher"
	"github.com/outflow-dev/outflow/featureserver"
	"github.com/outflow-dev/outflow/gateway"
	"github.com/outflow-dev/outflow/internal/httpretry"
	"github.com/outflow-dev/outflow/server"
	"github.com/outflow-dev/outflow/source/kafka"
	"github.com/outflow-dev/outflow/source/kinesis"
	"github.com/outflow-dev/outflow/store"
	"github.com/outflow-dev/outflow/tecton"
)

// Config is what `outflow dev` runs with; the CLI maps its flags to it and
// reads the environment (DATABASE_URL), this package reads none. The flag
// each field comes from is named in its doc; error messages name the flags.
type Config struct {
	// HTTPAddr and GRPCAddr are the gateway's REST and gRPC addresses
	// (--http-addr, default 127.0.0.1:8080; --grpc-addr, default
	// 127.0.0.1:9090); port 0 picks a free port.
	HTTPAddr, GRPCAddr string
	// KafkaAddr is the in-process broker's address (--kafka-addr, default
	// 127.0.0.1:0).
	KafkaAddr string
	// Source is "kafka" (the in-process broker, the default) or "kinesis"
	// (a local Kinesis) (--source).
	Source string
	// KinesisEndpoint, with Source "kinesis", is a running local Kinesis
	// used instead of starting kinesalite from KinesaliteDir
	// (--kinesis-endpoint, --kinesalite-dir).
	KinesisEndpoint, KinesaliteDir string
	// FeatureServerAddr is the reference feature server's address
	// (--featureserver-addr, default 127.0.0.1:0).
	FeatureServerAddr string
	// Receiver also runs the demo webhook receiver, on ReceiverAddr
	// (--receiver, default false; --receiver-addr, default 127.0.0.1:0).
	Receiver     bool
	ReceiverAddr string
	// DatabaseURL is a PostgreSQL to use instead of a throwaway cluster
	// (--database-url or DATABASE_URL); it is migrated and gets a tenant
	// "dev".
	DatabaseURL string
	// PostgresBinDir holds initdb and postgres (--postgres-bin-dir; default:
	// PATH, the newest /usr/lib/postgresql/*/bin, else a download);
	// PostgresDownload always uses the downloaded build
	// (--postgres-download, default false).
	PostgresBinDir   string
	PostgresDownload bool
	// Rate is the demo producer's mean records per second (--rate, default
	// 2; 0: no producer), over Users returning users (--users, default 20)
	// and a share NewUsers (0 to 1) of first-time shoppers (--new-users,
	// default DefaultDemoNewUsers).
	Rate     float64
	Users    int
	NewUsers float64
	// Lag and LagJitter are the feature server's materialisation lag and
	// its random extra, uniform from 0 to LagJitter (--lag, default 500ms;
	// --lag-jitter, default 1s).
	Lag, LagJitter time.Duration
	// SecretKeys encrypt webhook secrets at rest (--secret-keys; default: a
	// new random key each run).
	SecretKeys string
	// Version names the build in the gateway's User-Agent. Default "dev".
	Version string
	// Instructions returns the block printed on Stdout once everything is
	// ready (the CLI formats it). Default: nothing is printed.
	Instructions func(Info) string
	// Stdout receives the instructions and the demo receiver's lines;
	// Stderr the download progress and messages of kinesalite and of the
	// stop. Default: discarded.
	Stdout, Stderr io.Writer
	// Logger receives the components' logs. Default: discard.
	Logger *slog.Logger
}

// validate checks the Config, naming the flags of `outflow dev`.
func (f *Config) validate() error {
	if _, err := store.ParseSecretKeys(f.SecretKeys); err != nil {
		return fmt.Errorf("--secret-keys: %w", err)
	}
	switch {
	case f.Source != "kafka" && f.Source != "kinesis":
		return fmt.Errorf("--source %q: want kafka or kinesis", f.Source)
	case f.Rate < 0:
		return fmt.Errorf("--rate %v: must not be negative", f.Rate)
	case f.Users < 1:
		return fmt.Errorf("--users %d: want at least 1", f.Users)
	case !(f.NewUsers >= 0 && f.NewUsers <= 1):
		return fmt.Errorf("--new-users %v: want a share from 0 to 1", f.NewUsers)
	case f.Lag < 0 || f.LagJitter < 0:
		return errors.New("--lag and --lag-jitter must not be negative")
	case f.PostgresDownload && f.PostgresBinDir != "":
		return errors.New("--postgres-download and --postgres-bin-dir exclude each other")
	}
	return nil
}

// devReadyTimeout bounds the start of everything, PostgreSQL's initdb
// included; it normally takes two to four seconds.
const devReadyTimeout = 60 * time.Second

// FeatureCacheTTL is the age limit of the reference feature server's serving
// cache in dev: a read that does not bypass the cache (the first call for
// each record) may see values up to a minute old, as Tecton's feature
// serving cache allows, so the consistency retries' read_from_cache=false
// is what gets an event its fresh values.
const FeatureCacheTTL = time.Minute

// Names `outflow dev` gives what it creates.
const (
	devTenant        = "dev"
	devConsumerGroup = "outflow-dev"
	DemoPartitions   = 3
)

// WithDefaults returns c with its zero fields set to the defaults of the
// flags of `outflow dev`, where zero is not itself a setting: Rate,
// NewUsers, Lag and LagJitter are used as they are (0: no producer, no
// first-time shoppers, no lag), and Users must be set (the flag's default
// is 20).
func (c Config) WithDefaults() Config {
	if c.HTTPAddr == "" {
		c.HTTPAddr = "127.0.0.1:8080"
	}
	if c.GRPCAddr == "" {
		c.GRPCAddr = "127.0.0.1:9090"
	}
	for _, a := range []*string{&c.KafkaAddr, &c.FeatureServerAddr, &c.ReceiverAddr} {
		if *a == "" {
			*a = "127.0.0.1:0"
		}
	}
	if c.Source == "" {
		c.Source = "kafka"
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.Stdout == nil {
		c.Stdout = io.Discard
	}
	if c.Stderr == nil {
		c.Stderr = io.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// New checks cfg and returns an Env that has not started. Without
// SecretKeys it generates a key for this run.
func New(cfg Config) (*Env, error) {
	cfg = cfg.WithDefaults()
	if cfg.SecretKeys == "" {
		var err error
		if cfg.SecretKeys, err = store.GenerateSecretKey("dev"); err != nil {
			return nil, err
		}
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Env{f: cfg, logger: cfg.Logger, out: &syncWriter{w: cfg.Stdout}}, nil
}

// Env is one run of `outflow dev`: the throwaway PostgreSQL (or a given
// database), the in-process Kafka broker (or a local Kinesis), the
// reference feature server, the demo producer and receiver, and a Gateway
// on them. Run starts it; Kill is the forced exit of a second Ctrl-C.
type Env struct {
	f       Config
	logger  *slog.Logger
	out     io.Writer
	started time.Time

	// mu guards what the forced exit of a second Ctrl-C cleans up.
	mu  sync.Mutex
	tmp string
	pg  *Postgres
}

// Info is what the printed instructions need.
type Info struct {
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

// Run starts everything, prints the instructions, waits for ctx, then
// stops everything in the reverse order and removes what it created. It
// returns nil when ctx ends, even while starting.
func (d *Env) Run(ctx context.Context) error {
	d.started = time.Now()
	if err := d.run(ctx); err != nil && ctx.Err() == nil {
		return err
	}
	return nil // stopped by the user, possibly while starting
}

func (d *Env) run(ctx context.Context) (err error) {
	f := &d.f

	// Fail fast, before PostgreSQL is initialised, when a fixed port is taken.
	httpListen, httpShown, err := resolveAddr(ctx, f.HTTPAddr, "--http-addr")
	if err != nil {
		return err
	}
	grpcListen, grpcShown, err := resolveAddr(ctx, f.GRPCAddr, "--grpc-addr")
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
		pg  *Postgres
		err error
	}
	pgc := make(chan pgResult, 1)
	if f.DatabaseURL == "" {
		// Without the binaries there is nothing to wait for: say so first,
		// or download them, with progress on stderr.
		fetch := FetchConfig{Progress: d.f.Stderr, Terminal: IsTerminal(d.f.Stderr), Logger: d.logger}
		if f.PostgresDownload {
			f.PostgresBinDir, err = FetchPostgres(ctx, fetch)
		} else {
			f.PostgresBinDir, err = PostgresBin(ctx, f.PostgresBinDir, fetch)
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
			pg, err := StartPostgres(pgCtx, PostgresConfig{BinDir: f.PostgresBinDir, Dir: pgDir, Logger: d.logger})
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
	if f.Source == "kinesis" {
		if kin, err = startDevKinesis(ctx, f.KinesisEndpoint, f.KinesaliteDir, d.f.Stderr); err != nil {
			return err
		}
		defer kin.Close()
	} else {
		if broker, err = startDevBroker(ctx, devBrokerConfig{Addr: f.KafkaAddr, Topic: DemoTopic, Partitions: DemoPartitions, Logger: d.logger}); err != nil {
			return err
		}
		defer broker.Close()
	}

	featureKey := "dev-" + randomHex(16)
	features, err := featureserver.New(featureserver.Config{Lag: f.Lag, LagJitter: f.LagJitter, CacheTTL: FeatureCacheTTL, APIKey: featureKey, Logger: d.logger})
	if err != nil {
		return err
	}
	var lc net.ListenConfig
	featureLis, err := lc.Listen(ctx, "tcp", f.FeatureServerAddr)
	if err != nil {
		return fmt.Errorf("listening for the feature server (--featureserver-addr): %w", err)
	}
	featureURL := "http://" + featureLis.Addr().String()
	goRun(&auxWG, "feature server", func() error { return features.Serve(auxCtx, featureLis) })
	goRun(&auxWG, "feature server ingestion", func() error {
		if kin != nil {
			return kin.feed(auxCtx, features)
		}
		return features.Consume(auxCtx, []string{broker.Addr()}, []string{DemoTopic}, devConsumerGroup+"-featureserver")
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
	info := Info{HTTPAddr: httpShown, GRPCAddr: grpcShown, Tenant: devTenant,
		FeatureURL: featureURL, DatabaseURL: f.DatabaseURL, Rate: f.Rate, Users: f.Users, NewUsers: f.NewUsers, Lag: f.Lag, LagJitter: f.LagJitter}
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

	if err := gateway.Migrate(ctx, info.DatabaseURL, d.logger); err != nil {
		return err
	}
	if pool, err = store.Open(ctx, info.DatabaseURL); err != nil {
		return err
	}
	keys, err := store.ParseSecretKeys(d.f.SecretKeys)
	if err != nil {
		return err
	}
	st := store.New(pool, store.WithSecretKeys(keys))
	key, plaintext, err := st.CreateAPIKey(ctx, devTenant, "outflow dev")
	if err != nil {
		return err
	}
	info.APIKey = plaintext

	if f.Receiver {
		recv, err := newDevReceiver(ctx, devReceiverConfig{Addr: f.ReceiverAddr, Out: d.out, Logger: d.logger,
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

	gw, err := gateway.New(d.gatewayConfig(info, featureKey, httpListen, grpcListen))
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
	if f.Rate > 0 {
		goRun(&prodWG, "demo producer", func() error {
			if kin != nil {
				return kin.produce(prodCtx, ProducerConfig{Rate: f.Rate, Users: f.Users, NewUsers: new(f.NewUsers), Logger: d.logger})
			}
			return Produce(prodCtx, ProducerConfig{Brokers: []string{broker.Addr()}, Rate: f.Rate, Users: f.Users, NewUsers: new(f.NewUsers), Logger: d.logger})
		})
	}
	info.StartedIn = time.Since(d.started)
	if d.f.Instructions != nil {
		fmt.Fprint(d.out, d.f.Instructions(info))
	}

	select {
	case <-ctx.Done():
		fmt.Fprintln(d.f.Stderr, "outflow dev: stopping (Ctrl-C again to force)")
		return nil
	case err := <-failed:
		return err
	}
}

// gatewayConfig is the gateway's configuration in dev: the local feature
// server, the in-process broker (or local Kinesis), http:// and loopback
// webhook URLs allowed so local receivers work, and short drains so Ctrl-C
// is quick.
func (d *Env) gatewayConfig(info Info, featureKey, httpAddr, grpcAddr string) gateway.Config {
	cfg := gateway.Config{
		DatabaseURL: info.DatabaseURL,
		Migrate:     true,
		SecretKeys:  d.f.SecretKeys,
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
		Version: d.f.Version,
		Logger:  d.logger,
	}
	if info.KinesisEndpoint != "" {
		cfg.Kinesis = kinesis.Config{Streams: []string{DemoTopic}, AWS: devAWS(), Endpoint: info.KinesisEndpoint,
			GroupID: devConsumerGroup, StartPosition: kinesis.StartTrimHorizon, LeaseDuration: 3 * time.Second,
			IdleWait: 100 * time.Millisecond}
	} else {
		cfg.Kafka = kafka.Config{Brokers: []string{info.KafkaAddr}, Topics: []string{DemoTopic},
			GroupID: devConsumerGroup, StartOffset: kafka.StartEarliest}
	}
	return cfg
}

// cleanup stops the PostgreSQL cluster and removes the temporary directory.
// It does not hold mu while it waits, so a second Ctrl-C can still force
// the exit.
func (d *Env) cleanup() {
	d.mu.Lock()
	pg, tmp := d.pg, d.tmp
	d.mu.Unlock()
	pg.Stop()
	if tmp != "" {
		if err := os.RemoveAll(tmp); err != nil {
			fmt.Fprintf(d.f.Stderr, "outflow dev: removing %s: %v\n", tmp, err)
		}
	}
}

// Kill is the forced exit of a second Ctrl-C: it kills the PostgreSQL
// cluster at once and removes the temporary directory, skipping the
// graceful stop Run is doing; the caller exits right after. It is safe to
// call from any goroutine while Run runs.
func (d *Env) Kill() {
	d.mu.Lock()
	pg, tmp := d.pg, d.tmp
	d.mu.Unlock()
	pg.Kill()
	if tmp != "" {
		_ = os.RemoveAll(tmp)
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
