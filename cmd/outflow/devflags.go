package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/outflow-dev/outflow/devenv"
)

func runDev(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "dev")
	var (
		f    devenv.Config
		logs logFlags
	)
	fs.StringVar(&logs.level, "log-level", "warn", "log level of the components' logs on stderr: debug, info, warn or error")
	fs.StringVar(&logs.format, "log-format", "text", "log format: json or text")
	fs.StringVar(&f.HTTPAddr, "http-addr", "127.0.0.1:8080", "address of the gateway's REST API, /openapi.json and /metrics (port 0: any free port)")
	fs.StringVar(&f.GRPCAddr, "grpc-addr", "127.0.0.1:9090", "address of the gateway's gRPC API (port 0: any free port)")
	fs.StringVar(&f.KafkaAddr, "kafka-addr", "127.0.0.1:0", "address of the in-process Kafka broker (port 0: any free port)")
	fs.StringVar(&f.Source, "source", "kafka", "the output stream to run on: kafka (an in-process broker) or kinesis (a local Kinesis, kinesalite; needs node)")
	fs.StringVar(&f.KinesisEndpoint, "kinesis-endpoint", "", "with --source kinesis: the URL of a running local Kinesis to use instead of starting kinesalite")
	fs.StringVar(&f.KinesaliteDir, "kinesalite-dir", defaultKinesaliteDir(), "with --source kinesis: where scripts/kinesalite-deps.sh installed kinesalite")
	fs.StringVar(&f.FeatureServerAddr, "featureserver-addr", "127.0.0.1:0", "address of the reference feature server's GetFeatures API (port 0: any free port)")
	fs.BoolVar(&f.Receiver, "receiver", false, "also run a demo webhook receiver that verifies each event's signature and prints it")
	fs.StringVar(&f.ReceiverAddr, "receiver-addr", "127.0.0.1:0", "address of the demo webhook receiver (port 0: any free port)")
	fs.StringVar(&f.DatabaseURL, "database-url", "", "PostgreSQL URL to use instead of a throwaway cluster (also read from DATABASE_URL); it is migrated and gets a tenant \"dev\"")
	fs.StringVar(&f.PostgresBinDir, "postgres-bin-dir", "", "directory of the PostgreSQL server binaries initdb and postgres (default: PATH, then the newest /usr/lib/postgresql/*/bin, else PostgreSQL "+devenv.PostgresVersion+" downloaded from Maven Central into the user cache directory)")
	fs.BoolVar(&f.PostgresDownload, "postgres-download", false, "run PostgreSQL "+devenv.PostgresVersion+" downloaded from Maven Central (once, into the user cache directory) even where server binaries are installed")
	fs.Float64Var(&f.Rate, "rate", 2, "mean add_item_to_cart records per second of the demo producer (0: no producer)")
	fs.IntVar(&f.Users, "users", 20, "number of returning demo users (user_id u1..uN)")
	fs.Float64Var(&f.NewUsers, "new-users", devenv.DefaultDemoNewUsers, "share of demo events from first-time shoppers (user_id new1, new2, ...), whose first record the feature store has never seen (0 to 1)")
	fs.DurationVar(&f.Lag, "lag", 500*time.Millisecond, "the feature server's materialisation lag: a record's values become visible this long after it is read")
	fs.DurationVar(&f.LagJitter, "lag-jitter", time.Second, "random extra materialisation lag per record, uniform from 0 to this")
	fs.StringVar(&f.SecretKeys, "secret-keys", "", "keys that encrypt webhook secrets at rest, as for serve (default: a new random key each run; set it to keep subscriptions of a --database-url readable across runs)")
	if err := parseFlags(env, fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if f.DatabaseURL == "" {
		f.DatabaseURL = env.getenv("DATABASE_URL")
	}
	logger, err := logs.logger(env.stderr)
	if err != nil {
		return err
	}
	f.Version, f.Logger, f.Stdout, f.Stderr = buildVersion(), logger, env.stdout, env.stderr
	f.Instructions = devInstructions
	d, err := devenv.New(f)
	if err != nil {
		return err
	}
	stopSignals := forceExitOnSecondSignal(env.stderr, d)
	defer stopSignals()
	// A closed stdout or stderr (outflow dev | head) must not kill the
	// process before it has cleaned up: writes fail instead.
	signal.Ignore(syscall.SIGPIPE)
	return d.Run(ctx)
}

// forceExitOnSecondSignal makes a second SIGINT or SIGTERM (the first one
// cancels the context and starts the graceful stop) kill the PostgreSQL
// cluster, remove the temporary directory and exit at once with status 130.
// The returned func stops watching.
func forceExitOnSecondSignal(stderr io.Writer, d *devenv.Env) (stop func()) {
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
			fmt.Fprintln(stderr, "outflow dev: forced exit")
			d.Kill()
			os.Exit(130) // deliberately past the deferred graceful stop: the user asked twice
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(done)
	}
}

// defaultKinesaliteDir is where scripts/kinesalite-deps.sh installs
// kinesalite, relative to the repository.
func defaultKinesaliteDir() string {
	if dir := os.Getenv("OUTFLOW_KINESALITE_DIR"); dir != "" {
		return dir
	}
	return ".cache/kinesalite"
}
