// Command webhook-receiver-go receives Outflow webhooks the way a production
// receiver should, in one small file you can copy:
//
//   - every request is verified with the Standard Webhooks reference library
//     (HMAC-SHA256 over id, timestamp and body; a timestamp more than five
//     minutes from now is refused, so a captured request cannot be replayed
//     later); a bad or missing signature gets 401;
//   - bodies are bounded (413 above -max-body-bytes);
//   - events are de-duplicated by their webhook-id, which Outflow keeps the
//     same on every retry and redelivery of an event: a duplicate is answered
//     200 and not processed again;
//   - the answer is quick: Outflow counts anything but a 2xx within the
//     subscription's timeout (10 s by default) as a failure and retries.
//
// Usage:
//
//	OUTFLOW_WEBHOOK_SECRET=whsec_… go run ./examples/webhook-receiver-go -addr :8000
//
// then create a subscription whose webhook.url is http://<host>:8000/webhook.
//
// The de-duplication set lives in memory: it forgets everything on restart
// and holds at most -dedup-size ids for -dedup-ttl. That is enough for an
// example and for receivers whose processing is idempotent anyway. A
// production receiver that must act exactly once records the ids it has
// processed in a durable store (a unique key in the same database
// transaction as the side effect), keeping them at least as long as Outflow
// may redeliver: its retry schedule spans about a day, and a dead-lettered
// event can be redelivered by the API at any time.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// secretEnv names the environment variable holding the subscription's
// signing secret. It is not a flag, so it does not show in `ps`.
const secretEnv = "OUTFLOW_WEBHOOK_SECRET"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "webhook-receiver:", err)
		os.Exit(1)
	}
}

// run parses the flags, then serves until ctx ends and shuts down
// gracefully.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("webhook-receiver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", ":8000", "address to listen on")
	path := fs.String("path", "/webhook", "URL path that receives the webhooks")
	maxBody := fs.Int64("max-body-bytes", DefaultMaxBodyBytes, "largest accepted request body; larger ones get 413")
	dedupSize := fs.Int("dedup-size", DefaultDedupSize, "webhook ids remembered for de-duplication")
	dedupTTL := fs.Duration("dedup-ttl", DefaultDedupTTL, "how long a webhook id is remembered")
	if err := fs.Parse(args); err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(stderr, nil))
	h, err := NewHandler(Config{
		Secret:       getenv(secretEnv),
		MaxBodyBytes: *maxBody,
		DedupSize:    *dedupSize,
		DedupTTL:     *dedupTTL,
		Process:      printEvent(stdout),
		Logger:       logger,
	})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle(*path, h)

	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", *addr)
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	logger.InfoContext(ctx, "receiving webhooks", slog.String("addr", lis.Addr().String()), slog.String("path", *path))

	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	return nil
}

// Defaults of [Config].
const (
	// DefaultMaxBodyBytes leaves room for Outflow's largest event: a record
	// of up to 1 MiB plus its feature vector and envelope.
	DefaultMaxBodyBytes = 4 << 20
	// DefaultDedupSize bounds the de-duplication set's memory (ids are ~30
	// bytes: 100k ids take a few MiB).
	DefaultDedupSize = 100_000
	// DefaultDedupTTL covers Outflow's retry schedule (about a day) with
	// margin.
	DefaultDedupTTL = 48 * time.Hour
)

// Config configures a [Handler].
type Config struct {
	// Secret is the subscription's signing secret, "whsec_" + base64.
	// Required.
	Secret string
	// MaxBodyBytes bounds a request body; larger ones get 413. Defaults to
	// DefaultMaxBodyBytes (4 MiB).
	MaxBodyBytes int64
	// DedupSize is how many webhook ids the de-duplication set holds before
	// it forgets the least recently seen. Defaults to DefaultDedupSize
	// (100000).
	DedupSize int
	// DedupTTL is how long an id is remembered after it was last seen.
	// Defaults to DefaultDedupTTL (48h).
	DedupTTL time.Duration
	// Process handles one new, verified event. It runs before the answer is
	// sent, so keep it quick: hand the event to durable storage or a queue
	// and return. An error answers 500 and forgets the id, so Outflow's retry
	// is processed again. Required.
	Process func(context.Context, Event) error
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Now is the de-duplication set's clock; defaults to time.Now.
	Now func() time.Time
}

// Event is the part of Outflow's event envelope this receiver reads; see
// SPEC §5 for all of it. The raw body is kept for handlers that need more.
type Event struct {
	ID             string    `json:"id"`
	Type           string    `json:"type"`
	SubscriptionID string    `json:"subscription_id"`
	CreatedAt      time.Time `json:"created_at"`
	Record         struct {
		FeatureViewName  string            `json:"feature_view_name"`
		FeatureTimestamp string            `json:"feature_timestamp"`
		EntityKeys       map[string]string `json:"entity_keys"`
	} `json:"record"`
	FeatureVector *struct {
		FeatureServiceName string         `json:"feature_service_name"`
		Features           map[string]any `json:"features"`
		// Consistent is absent with consistency NONE.
		Consistent *bool `json:"consistent"`
	} `json:"feature_vector"`

	// Attempt is the outflow-attempt header: 1 for the first delivery.
	Attempt string `json:"-"`
	// Body is the request body exactly as signed.
	Body []byte `json:"-"`
}

// Handler verifies, de-duplicates and processes webhook requests.
type Handler struct {
	cfg  Config
	wh   *standardwebhooks.Webhook
	seen *seenSet
	log  *slog.Logger
}

// NewHandler checks cfg and builds a Handler.
func NewHandler(cfg Config) (*Handler, error) {
	// An empty secret would make the library compute HMACs with an empty
	// key, which anyone can forge: refuse it.
	if !strings.HasPrefix(cfg.Secret, "whsec_") || len(cfg.Secret) == len("whsec_") {
		return nil, fmt.Errorf("set %s to the subscription's signing secret (whsec_…)", secretEnv)
	}
	if cfg.Process == nil {
		return nil, errors.New("config: Process is required")
	}
	wh, err := standardwebhooks.NewWebhook(cfg.Secret)
	if err != nil {
		// The library's error never contains the secret, but say less anyway.
		return nil, fmt.Errorf("%s is not whsec_ followed by base64", secretEnv)
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.DedupSize <= 0 {
		cfg.DedupSize = DefaultDedupSize
	}
	if cfg.DedupTTL <= 0 {
		cfg.DedupTTL = DefaultDedupTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{cfg: cfg, wh: wh, seen: newSeenSet(cfg.DedupSize, cfg.DedupTTL, cfg.Now), log: logger}, nil
}

// ServeHTTP answers 200 for a new event once processed and for a duplicate;
// 401 for a bad signature, 413 for an oversize body, 405 for anything but
// POST, 400 for a signed body that is not an event, 500 when processing
// failed (Outflow retries).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.ContentLength > h.cfg.MaxBodyBytes {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "reading body failed", http.StatusBadRequest)
		return
	}
	// Verify before anything else, the de-duplication set included: an
	// unsigned request must not be able to mark an id as seen.
	if err := h.wh.Verify(body, r.Header); err != nil {
		h.log.WarnContext(ctx, "refused a webhook with a bad signature",
			slog.String("webhook_id", r.Header.Get(standardwebhooks.HeaderWebhookID)), slog.String("reason", err.Error()))
		http.Error(w, "invalid signature", http.StatusUnauthorized)
		return
	}
	var ev Event
	if err := json.Unmarshal(body, &ev); err != nil {
		http.Error(w, "body is not an event", http.StatusBadRequest)
		return
	}
	ev.Attempt, ev.Body = r.Header.Get("outflow-attempt"), body
	// The signed header id, not the body's, is the de-duplication key:
	// Outflow sets both to the event id.
	id := r.Header.Get(standardwebhooks.HeaderWebhookID)
	if !h.seen.Add(id) {
		h.log.InfoContext(ctx, "duplicate webhook acknowledged", slog.String("webhook_id", id), slog.String("attempt", ev.Attempt))
		w.WriteHeader(http.StatusOK)
		return
	}
	if err := h.cfg.Process(ctx, ev); err != nil {
		h.seen.Forget(id) // let the retry through
		h.log.ErrorContext(ctx, "processing failed; Outflow will retry", slog.String("webhook_id", id), slog.Any("error", err))
		http.Error(w, "processing failed", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// printEvent is the example's processing: one line per new event.
func printEvent(w io.Writer) func(context.Context, Event) error {
	return func(_ context.Context, ev Event) error {
		consistent := "n/a"
		if fv := ev.FeatureVector; fv != nil && fv.Consistent != nil {
			consistent = fmt.Sprint(*fv.Consistent)
		}
		keys, _ := json.Marshal(ev.Record.EntityKeys)
		_, err := fmt.Fprintf(w, "%s %s subscription=%s feature_view=%s entity_keys=%s consistent=%s attempt=%s\n",
			ev.ID, ev.Type, ev.SubscriptionID, ev.Record.FeatureViewName, keys, consistent, ev.Attempt)
		return err
	}
}
