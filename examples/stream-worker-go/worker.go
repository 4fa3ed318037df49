package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
)

// Errors that stop the worker because reconnecting cannot help; Run wraps
// them with what to do.
var (
	// ErrResumeTokenTooOld: the saved token points at data the source no
	// longer retains (OUT_OF_RANGE).
	ErrResumeTokenTooOld = errors.New("resume token older than the source's retention")
	// ErrRequestRefused: the server refused the request as invalid
	// (INVALID_ARGUMENT): a token of another subscription or an edited one,
	// or a bad shard.
	ErrRequestRefused = errors.New("stream request refused")
	// ErrNotAllowed: the key, the subscription or its delivery kind is wrong
	// (UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND, FAILED_PRECONDITION,
	// UNIMPLEMENTED).
	ErrNotAllowed = errors.New("stream not allowed")
)

// Defaults of [Config].
const (
	DefaultMinBackoff = 250 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
)

// maxTokenBytes bounds the token file read back; tokens are far smaller.
const maxTokenBytes = 64 << 10

// Config configures a [Worker].
type Config struct {
	// Client calls the gateway. Required.
	Client outflowv1.EventServiceClient
	// SubscriptionID is a subscription with a stream target. Required.
	SubscriptionID string
	// APIKey is sent as "authorization: Bearer <key>". Required.
	APIKey string
	// ShardIndex and ShardCount select one share of the subscription's
	// events (an entity always lands on the same shard); a count of 0 means
	// all of them.
	ShardIndex, ShardCount int
	// TokenFile holds the resume token of the last processed event; it is
	// read on every (re)connect and replaced atomically after each event.
	// Give each shard its own file. Required.
	TokenFile string
	// Handle processes one event. The event's token is saved only after
	// Handle returns nil; an error reconnects (with backoff) from the last
	// saved token, so the event comes again: handle or park events you can
	// never process yourself, or the worker retries them forever. Required.
	Handle func(context.Context, *outflowv1.Event) error
	// MinBackoff and MaxBackoff bound the jittered exponential wait between
	// reconnects: the n-th consecutive failure waits between half and all of
	// min(MinBackoff·2ⁿ⁻¹, MaxBackoff). Default 250ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// Worker consumes a stream subscription at least once: it resumes from its
// saved token after any disconnect, so an event is processed again only
// when the worker stopped between processing it and saving its token.
type Worker struct {
	cfg Config
	log *slog.Logger
}

// NewWorker checks cfg and applies its defaults.
func NewWorker(cfg Config) (*Worker, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("config: Client is required")
	case cfg.SubscriptionID == "":
		return nil, errors.New("config: a subscription id is required")
	case cfg.APIKey == "":
		return nil, errors.New("config: an API key is required")
	case cfg.TokenFile == "":
		return nil, errors.New("config: a token file is required")
	case cfg.Handle == nil:
		return nil, errors.New("config: Handle is required")
	case cfg.ShardCount < 0 || cfg.ShardCount > 0 && (cfg.ShardIndex < 0 || cfg.ShardIndex >= cfg.ShardCount):
		return nil, fmt.Errorf("config: shard index %d is not between 0 and shard count-1 (%d)", cfg.ShardIndex, cfg.ShardCount-1)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Worker{cfg: cfg, log: logger}, nil
}

// Run streams and processes events until ctx ends (it then returns nil) or
// an error that reconnecting cannot fix (it returns it, saying what to do).
// Stream ends it recovers from by reconnecting from the saved token:
// UNAVAILABLE (a replica went away), RESOURCE_EXHAUSTED (this worker fell
// behind), a clean end of stream (server shutdown), and any other
// transient code.
func (w *Worker) Run(ctx context.Context) error {
	failures := 0
	for {
		token, err := LoadToken(w.cfg.TokenFile)
		if err != nil {
			return err
		}
		received, err := w.stream(ctx, token)
		if ctx.Err() != nil {
			return nil
		}
		if stop := w.terminal(err, token); stop != nil {
			return stop
		}
		if received > 0 {
			failures = 0 // the connection worked: start the backoff over
		}
		failures++
		delay := w.backoff(failures)
		w.log.WarnContext(ctx, "stream ended; reconnecting from the saved token",
			slog.String("code", status.Code(err).String()), slog.Any("error", err),
			slog.Duration("after", delay), slog.Bool("has_token", token != ""))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// errHandle marks a Handle failure, after which the worker reconnects.
type errHandle struct{ err error }

func (e errHandle) Error() string { return "processing an event: " + e.err.Error() }
func (e errHandle) Unwrap() error { return e.err }

// stream runs one StreamEvents call from token and returns how many
// messages it received and the error that ended it (io.EOF for a clean
// end).
func (w *Worker) stream(ctx context.Context, token string) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the call whatever the reason for leaving
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+w.cfg.APIKey)
	req := &outflowv1.StreamEventsRequest{SubscriptionId: w.cfg.SubscriptionID, ResumeToken: token}
	if w.cfg.ShardCount > 0 {
		req.Shard = &outflowv1.Shard{Index: int32(w.cfg.ShardIndex), Count: int32(w.cfg.ShardCount)}
	}
	st, err := w.cfg.Client.StreamEvents(ctx, req)
	if err != nil {
		return 0, err
	}
	w.log.InfoContext(ctx, "stream open", slog.String("subscription_id", w.cfg.SubscriptionID), slog.Bool("resuming", token != ""))
	for n := 0; ; n++ {
		msg, err := st.Recv()
		if err != nil {
			return n, err
		}
		ev := msg.GetEvent()
		if ev == nil {
			continue // a heartbeat: the stream is idle but alive
		}
		if err := w.cfg.Handle(ctx, ev); err != nil {
			return n + 1, errHandle{err}
		}
		if t := ev.GetResumeToken(); t != "" {
			if err := SaveToken(w.cfg.TokenFile, t); err != nil {
				return n + 1, err
			}
		}
	}
}

// terminal returns nil when err is worth reconnecting after, or the error
// Run should stop with, explaining what to do.
func (w *Worker) terminal(err error, token string) error {
	if errors.Is(err, io.EOF) {
		return nil // the server ended the stream cleanly, e.g. on shutdown
	}
	if _, ok := errors.AsType[errHandle](err); ok {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		// Not from gRPC: saving the token failed. Stop rather than process
		// events whose progress cannot be recorded.
		return err
	}
	file := w.cfg.TokenFile
	switch st.Code() {
	case codes.OutOfRange:
		return fmt.Errorf("%w: the events after the token saved in %s are gone from the source (server: %s). "+
			"Delete %s (or run with -reset) to continue from the live tail, accepting the gap",
			ErrResumeTokenTooOld, file, st.Message(), file)
	case codes.InvalidArgument:
		hint := "check the -shard-index and -shard-count flags"
		if token != "" {
			hint = fmt.Sprintf("if it is about resume_token, %s holds a token that subscription %s did not issue "+
				"(another subscription's or another deployment's file, or edited): point -token-file at this "+
				"subscription's own file, or delete it (or run with -reset) to start at the live tail", file, w.cfg.SubscriptionID)
		}
		return fmt.Errorf("%w: %s; %s", ErrRequestRefused, st.Message(), hint)
	case codes.Unauthenticated, codes.PermissionDenied:
		return fmt.Errorf("%w: %s: check OUTFLOW_API_KEY (a key of the subscription's tenant, not revoked)", ErrNotAllowed, st.Message())
	case codes.NotFound, codes.FailedPrecondition, codes.Unimplemented:
		return fmt.Errorf("%w: %s: check -subscription (it must exist in this key's tenant and have a stream target)", ErrNotAllowed, st.Message())
	}
	return nil // UNAVAILABLE, RESOURCE_EXHAUSTED, INTERNAL, …: reconnect
}

// backoff returns the wait before reconnecting after the n-th consecutive
// failure: between half and all of min(MinBackoff·2ⁿ⁻¹, MaxBackoff). The
// jitter stays under the cap and spreads a pool of workers that lost the
// same replica.
func (w *Worker) backoff(n int) time.Duration {
	d := w.cfg.MinBackoff
	for i := 1; i < n && d < w.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, w.cfg.MaxBackoff)
	return d/2 + rand.N(d/2+1)
}

// LoadToken returns the token saved in path, or "" when there is none yet
// (the stream then starts at the live tail).
func LoadToken(path string) (string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading the resume token: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenBytes+1))
	if err != nil {
		return "", fmt.Errorf("reading the resume token: %w", err)
	}
	if len(b) > maxTokenBytes {
		return "", fmt.Errorf("%s is larger than %d bytes: not a resume token file", path, maxTokenBytes)
	}
	return strings.TrimSpace(string(b)), nil
}

// SaveToken replaces path's content with token atomically: it writes a
// temporary file in the same directory, flushes it to disk and renames it
// over path, so a crash leaves either the old token or the new one, never a
// torn file. The rename is made durable by syncing the directory.
//
// One fsync per event caps a worker at a few hundred events a second on
// most disks; a busier worker saves every N events or every second instead,
// and reprocesses at most that many after a crash.
func SaveToken(path, token string) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("saving the resume token: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err := io.WriteString(tmp, token+"\n"); err != nil {
		return fmt.Errorf("saving the resume token: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("saving the resume token: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("saving the resume token: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("saving the resume token: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // best effort: not every file system syncs directories
		_ = d.Close()
	}
	return nil
}
