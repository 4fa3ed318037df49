// Command stream-worker-go consumes a `stream` subscription over gRPC
// (outflow.v1.EventService/StreamEvents) the way a production worker should:
//
//   - it saves the resume token of each event after processing it, to a file
//     replaced atomically (temporary file, fsync, rename), and reconnects
//     from the saved token after any disconnect: UNAVAILABLE (a replica went
//     away; any replica serves any client), RESOURCE_EXHAUSTED (the worker
//     fell behind and its buffer filled), a clean end of stream (server
//     shutdown) — with jittered exponential backoff. Delivery is at least
//     once: an event processed but not yet saved when the worker stops comes
//     again, so make processing idempotent (the event id is stable);
//   - it stops, saying what to do, when reconnecting cannot help: a token
//     older than the source's retention (OUT_OF_RANGE), a token the
//     subscription did not issue (INVALID_ARGUMENT), a bad key or
//     subscription;
//   - with -shard-index/-shard-count, several workers split one
//     subscription, each entity always on the same worker; give each shard
//     its own -token-file.
//
// Usage:
//
//	OUTFLOW_API_KEY=… go run ./examples/stream-worker-go -addr 127.0.0.1:9090 \
//	  -subscription sub_… -token-file ./sub_….token [-shard-index 0 -shard-count 2]
//
// Without a saved token the stream starts at the live tail.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
)

// apiKeyEnv names the environment variable holding the API key. It is not
// a flag, so it does not show in `ps`.
const apiKeyEnv = "OUTFLOW_API_KEY"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "stream-worker:", err)
		os.Exit(1)
	}
}

// run parses the flags, then streams until ctx ends or a terminal error.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("stream-worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:9090", "gateway gRPC address")
	useTLS := fs.Bool("tls", false, "connect with TLS (system roots); plaintext otherwise, for local use")
	sub := fs.String("subscription", "", "subscription id (required; it must have a stream target)")
	tokenFile := fs.String("token-file", "outflow-resume-token", "file holding the last processed event's resume token")
	reset := fs.Bool("reset", false, "delete the token file first: start at the live tail")
	shardIndex := fs.Int("shard-index", 0, "this worker's shard, 0 to shard-count-1")
	shardCount := fs.Int("shard-count", 0, "number of workers sharing the subscription; 0 for no sharding")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *sub == "" {
		return errors.New("-subscription is required")
	}
	key := getenv(apiKeyEnv)
	if key == "" {
		return fmt.Errorf("set %s to an API key (outflow apikey create --tenant …)", apiKeyEnv)
	}
	if *reset {
		if err := os.Remove(*tokenFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("-reset: %w", err)
		}
	}

	creds := insecure.NewCredentials()
	if *useTLS {
		creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	}
	conn, err := grpc.NewClient(*addr,
		grpc.WithTransportCredentials(creds),
		// Ping an idle connection so a dead replica is noticed within
		// seconds; the gateway accepts pings every 10s or more.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", *addr, err)
	}
	defer conn.Close()

	w, err := NewWorker(Config{
		Client:         outflowv1.NewEventServiceClient(conn),
		SubscriptionID: *sub,
		APIKey:         key,
		ShardIndex:     *shardIndex,
		ShardCount:     *shardCount,
		TokenFile:      *tokenFile,
		Handle:         printEvent(stdout),
		Logger:         slog.New(slog.NewJSONHandler(stderr, nil)),
	})
	if err != nil {
		return err
	}
	return w.Run(ctx)
}

// printEvent is the example's processing: one line per event. Real work
// goes here; keep it idempotent, since an event can come twice.
func printEvent(w io.Writer) func(context.Context, *outflowv1.Event) error {
	return func(_ context.Context, ev *outflowv1.Event) error {
		rec := ev.GetRecord().GetFields()
		keys, _ := json.Marshal(rec["entity_keys"].AsInterface())
		consistent := "n/a"
		if fv := ev.GetFeatureVector(); fv != nil && fv.Consistent != nil {
			consistent = fmt.Sprint(fv.GetConsistent())
		}
		src := ev.GetSource()
		_, err := fmt.Fprintf(w, "%s %s feature_view=%s entity_keys=%s consistent=%s source=%s/%d@%d\n",
			ev.GetId(), ev.GetType(), rec["feature_view_name"].GetStringValue(), keys, consistent,
			src.GetTopic(), src.GetPartition(), src.GetOffset())
		return err
	}
}
