package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
)

const replayUsage = `Usage: outflow replay <start|get|list> [flags]

  start --subscription ID --from TIME [--to TIME] [--wait]
        re-deliver the subscription's events of [from, to) (RFC 3339 times;
        --to defaults to now). A webhook subscription's replay runs in the
        gateway; --wait follows its progress until it ends. A stream
        subscription's replay prints a resume token to stream from.
  get   --subscription ID --id REPLAY_ID [--wait]
        show a replay's progress
  list  --subscription ID
        list the subscription's newest replays

Each talks to a running gateway's gRPC API and takes --grpc-addr, --api-key
(env OUTFLOW_API_KEY) and --tls. Run 'outflow replay <command> --help' for
the flags.`

// replayFlags are the flags of the replay subcommands.
type replayFlags struct {
	addr, apiKey   string
	tls            bool
	subscription   string
	id, from, to   string
	wait           bool
	pollInterval   time.Duration
	requestTimeout time.Duration
}

func runReplay(ctx context.Context, env *environment, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(env.stdout, replayUsage)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	sub, args := args[0], args[1:]
	fs := newFlagSet(env, "replay "+sub)
	var f replayFlags
	fs.StringVar(&f.addr, "grpc-addr", "127.0.0.1:9090", "address of the gateway's gRPC API")
	fs.StringVar(&f.apiKey, "api-key", "", "API key of the subscription's tenant (required; prefer the environment variable)")
	fs.BoolVar(&f.tls, "tls", false, "connect over TLS (system roots)")
	fs.StringVar(&f.subscription, "subscription", "", "subscription id, sub_… (required)")
	fs.DurationVar(&f.requestTimeout, "timeout", 30*time.Second, "deadline of each API call")
	required := []string{"api-key", "subscription"}
	switch sub {
	case "start":
		fs.StringVar(&f.from, "from", "", "start of the range, inclusive, RFC 3339 (required)")
		fs.StringVar(&f.to, "to", "", "end of the range, exclusive, RFC 3339 (default: now)")
		fs.BoolVar(&f.wait, "wait", false, "follow the replay until it ends; exit 1 if it fails")
		fs.DurationVar(&f.pollInterval, "poll-interval", time.Second, "how often --wait asks for progress")
		required = append(required, "from")
	case "get":
		fs.StringVar(&f.id, "id", "", "replay id, rpl_… (required)")
		fs.BoolVar(&f.wait, "wait", false, "follow the replay until it ends; exit 1 if it fails")
		fs.DurationVar(&f.pollInterval, "poll-interval", time.Second, "how often --wait asks for progress")
		required = append(required, "id")
	case "list":
	default:
		return fmt.Errorf("unknown subcommand %q: use start, get or list", sub)
	}
	if err := parseFlags(env, fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if err := requireFlags(fs, required...); err != nil {
		return err
	}
	var from, to *timestamppb.Timestamp
	var err error
	if sub == "start" {
		if from, err = parseRFC3339("from", f.from); err != nil {
			return err
		}
		if f.to != "" {
			if to, err = parseRFC3339("to", f.to); err != nil {
				return err
			}
		}
	}

	creds := insecure.NewCredentials()
	if f.tls {
		creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	}
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("--grpc-addr %q: %w", f.addr, err)
	}
	defer conn.Close()
	client := outflowv1.NewSubscriptionServiceClient(conn)
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+f.apiKey)
	call := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, f.requestTimeout) }

	switch sub {
	case "start":
		cctx, cancel := call()
		r, err := client.ReplaySubscription(cctx, &outflowv1.ReplaySubscriptionRequest{Id: f.subscription, StartTime: from, EndTime: to})
		cancel()
		if err != nil {
			return fmt.Errorf("starting the replay: %w", err)
		}
		printReplay(env.stdout, r)
		if r.GetResumeToken() != "" {
			fmt.Fprintf(env.stdout, "stream the range with this resume token (StreamEvents resume_token):\n%s\n", r.GetResumeToken())
		}
		if f.wait {
			return followReplay(ctx, env.stdout, client, r, f)
		}
	case "get":
		cctx, cancel := call()
		r, err := client.GetReplay(cctx, &outflowv1.GetReplayRequest{SubscriptionId: f.subscription, ReplayId: f.id})
		cancel()
		if err != nil {
			return fmt.Errorf("reading the replay: %w", err)
		}
		printReplay(env.stdout, r)
		if f.wait {
			return followReplay(ctx, env.stdout, client, r, f)
		}
		return replayOutcome(r)
	case "list":
		cctx, cancel := call()
		resp, err := client.ListReplays(cctx, &outflowv1.ListReplaysRequest{SubscriptionId: f.subscription})
		cancel()
		if err != nil {
			return fmt.Errorf("listing replays: %w", err)
		}
		tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSTATE\tFROM\tTO\tRECORDS\tEVENTS\tCREATED")
		for _, r := range resp.GetReplays() {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%d\t%s\n", r.GetId(), r.GetState(), rfc3339(r.GetStartTime()), rfc3339(r.GetEndTime()),
				r.GetRecordsRead(), r.GetRecordsTotal(), r.GetEventsDelivered(), rfc3339(r.GetCreateTime()))
		}
		return tw.Flush()
	}
	return nil
}

// followReplay prints a replay's progress until it ends.
func followReplay(ctx context.Context, w io.Writer, client outflowv1.SubscriptionServiceClient, r *outflowv1.Replay, f replayFlags) error {
	ticker := time.NewTicker(f.pollInterval)
	defer ticker.Stop()
	for r.GetState() == outflowv1.Replay_RUNNING {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
		cctx, cancel := context.WithTimeout(ctx, f.requestTimeout)
		next, err := client.GetReplay(cctx, &outflowv1.GetReplayRequest{SubscriptionId: r.GetSubscriptionId(), ReplayId: r.GetId()})
		cancel()
		if err != nil {
			return fmt.Errorf("reading the replay: %w", err)
		}
		if next.GetRecordsRead() != r.GetRecordsRead() || next.GetState() != r.GetState() {
			printReplay(w, next)
		}
		r = next
	}
	return replayOutcome(r)
}

// replayOutcome is an error for a FAILED replay, so the exit status tells.
func replayOutcome(r *outflowv1.Replay) error {
	if r.GetState() == outflowv1.Replay_FAILED {
		return errors.New("the replay failed: " + r.GetError())
	}
	return nil
}

func printReplay(w io.Writer, r *outflowv1.Replay) {
	fmt.Fprintf(w, "%s %s [%s, %s): %d of %d records read, %d events delivered", r.GetId(), r.GetState(),
		rfc3339(r.GetStartTime()), rfc3339(r.GetEndTime()), r.GetRecordsRead(), r.GetRecordsTotal(), r.GetEventsDelivered())
	if r.GetError() != "" {
		fmt.Fprintf(w, "; error: %s", r.GetError())
	}
	fmt.Fprintln(w)
}

func rfc3339(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

// parseRFC3339 parses a time flag.
func parseRFC3339(name, s string) (*timestamppb.Timestamp, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return nil, fmt.Errorf("--%s %q: want an RFC 3339 time such as 2026-11-24T09:00:00Z", name, s)
	}
	return timestamppb.New(t), nil
}
