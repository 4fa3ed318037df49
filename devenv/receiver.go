package devenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// devReceiverPath is where the demo receiver takes webhooks.
const devReceiverPath = "/hooks/cart"

// devReceiverMaxBody bounds a webhook body the receiver reads: the
// gateway's events are a few KiB, records are at most 1 MiB.
const devReceiverMaxBody = 2 << 20

// devSecretsFunc returns the signing secrets of a subscription that are
// active now, current first.
type devSecretsFunc func(ctx context.Context, subscriptionID string) ([]string, error)

// devReceiverConfig configures the demo webhook receiver.
type devReceiverConfig struct {
	// Addr is the loopback address to listen on; port 0 picks a free port.
	Addr string
	// Secrets looks up a subscription's signing secrets. A real receiver is
	// configured with the secret its create call returned; the demo receiver
	// runs inside `outflow dev`, which owns the database, and reads them
	// from there, so it verifies the events of any subscription of the dev
	// tenant, including ones created after it started and rotated secrets.
	Secrets devSecretsFunc
	// Out receives one line per request; it must be safe for concurrent
	// use.
	Out io.Writer
	// Logger receives failures to look secrets up.
	Logger *slog.Logger
}

// devReceiver is a webhook endpoint that verifies each request's Standard
// Webhooks signature with the reference library, as a user's receiver
// would, and prints a one-line summary of each verified event.
type devReceiver struct {
	cfg devReceiverConfig
	lis net.Listener

	mu      sync.Mutex
	secrets map[string][]string // by subscription id, refreshed on a mismatch
}

// newDevReceiver listens on cfg.Addr; Serve serves.
func newDevReceiver(ctx context.Context, cfg devReceiverConfig) (*devReceiver, error) {
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listening for the demo receiver: %w", err)
	}
	return &devReceiver{cfg: cfg, lis: lis, secrets: map[string][]string{}}, nil
}

// URL is the webhook URL to subscribe.
func (r *devReceiver) URL() string { return "http://" + r.lis.Addr().String() + devReceiverPath }

// Serve answers webhooks until ctx ends, then shuts down within a second.
func (r *devReceiver) Serve(ctx context.Context) error {
	hs := &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(r.cfg.Logger.Handler(), slog.LevelDebug)}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(r.lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("demo receiver: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		_ = hs.Close()
	}
	<-errc
	return nil
}

func (r *devReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		http.Error(w, "POST webhooks here", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, devReceiverMaxBody+1))
	if err != nil || len(body) > devReceiverMaxBody {
		r.reject(w, req, http.StatusRequestEntityTooLarge, "body unreadable or over 2 MiB")
		return
	}
	var peek struct {
		SubscriptionID string `json:"subscription_id"`
	}
	if err := json.Unmarshal(body, &peek); err != nil || peek.SubscriptionID == "" {
		r.reject(w, req, http.StatusBadRequest, "not an Outflow event (no subscription_id)")
		return
	}
	// The subscription id is read before the signature is checked, only to
	// pick the secret: a forged id finds no secret that verifies.
	if err := r.verify(req.Context(), peek.SubscriptionID, body, req.Header); err != nil {
		r.reject(w, req, http.StatusUnauthorized, err.Error())
		return
	}
	fmt.Fprintln(r.cfg.Out, "receiver: verified "+summarizeEvent(body))
	w.WriteHeader(http.StatusNoContent)
}

// verify checks the signature against the subscription's cached secrets,
// and against freshly read ones when those fail (a new subscription, a
// rotation).
func (r *devReceiver) verify(ctx context.Context, subID string, body []byte, h http.Header) error {
	r.mu.Lock()
	cached, ok := r.secrets[subID]
	r.mu.Unlock()
	if ok && verifyAny(cached, body, h) == nil {
		return nil
	}
	fresh, err := r.cfg.Secrets(ctx, subID)
	if err != nil {
		r.cfg.Logger.WarnContext(ctx, "demo receiver: looking up the subscription's secret failed",
			slog.String("subscription_id", subID), slog.Any("error", err))
		return errors.New("unknown subscription " + subID)
	}
	r.mu.Lock()
	r.secrets[subID] = fresh
	r.mu.Unlock()
	return verifyAny(fresh, body, h)
}

// verifyAny verifies the request with the Standard Webhooks reference
// library and each secret in turn.
func verifyAny(secrets []string, body []byte, h http.Header) error {
	err := errors.New("the subscription has no secret")
	for _, s := range secrets {
		wh, werr := standardwebhooks.NewWebhook(s)
		if werr != nil {
			err = werr
			continue
		}
		if err = wh.Verify(body, h); err == nil {
			return nil
		}
	}
	return fmt.Errorf("signature check failed: %w", err)
}

func (r *devReceiver) reject(w http.ResponseWriter, req *http.Request, status int, why string) {
	fmt.Fprintf(r.cfg.Out, "receiver: REJECTED %s: %s\n", printable(req.Header.Get("webhook-id"), 64), printable(why, 200))
	http.Error(w, why, status)
}

// summarizeEvent renders a webhook body (an event envelope, SPEC §5) as one
// line: event id, subscription, feature view, entity keys, feature values
// and the feature vector's consistency and values. Whatever the input, the
// line is printable (control characters replaced) and bounded.
func summarizeEvent(body []byte) string {
	var ev struct {
		ID             string `json:"id"`
		SubscriptionID string `json:"subscription_id"`
		Record         struct {
			FeatureViewName string            `json:"feature_view_name"`
			EntityKeys      map[string]string `json:"entity_keys"`
			FeatureValues   map[string]string `json:"feature_values"`
		} `json:"record"`
		FeatureVector *struct {
			Features   map[string]any `json:"features"`
			Consistent *bool          `json:"consistent"`
			Attempts   int            `json:"attempts"`
		} `json:"feature_vector"`
	}
	if err := json.Unmarshal(body, &ev); err != nil {
		return "(unparsable event: " + printable(err.Error(), 100) + ")"
	}
	var b strings.Builder
	b.WriteString(printable(ev.ID, 64))
	b.WriteString(" sub=" + printable(ev.SubscriptionID, 64))
	b.WriteString(" fv=" + printable(ev.Record.FeatureViewName, 100))
	writePairs(&b, ev.Record.EntityKeys)
	writePairs(&b, ev.Record.FeatureValues)
	fv := ev.FeatureVector
	switch {
	case fv == nil:
		b.WriteString(" | feature_vector=none")
	case fv.Consistent == nil:
		b.WriteString(" | feature_vector=unchecked")
	case *fv.Consistent:
		b.WriteString(" | feature_vector=consistent")
	default:
		b.WriteString(" | feature_vector=inconsistent")
	}
	if fv != nil {
		b.WriteString(" attempts=" + strconv.Itoa(fv.Attempts))
		features := make(map[string]string, len(fv.Features))
		for k, v := range fv.Features {
			j, _ := json.Marshal(v)
			features[k] = strings.Trim(string(j), `"`)
		}
		writePairs(&b, features)
	}
	return printable(b.String(), 1000)
}

// writePairs appends " k=v" for each pair in key order, at most 16.
func writePairs(b *strings.Builder, m map[string]string) {
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i == 16 {
			b.WriteString(" …")
			return
		}
		b.WriteString(" " + printable(k, 64) + "=" + printable(m[k], 64))
	}
}

// printable returns s with every non-printable rune (newlines, escape
// sequences) replaced by '?' and cut to at most limit runes, so that outside
// input cannot forge or garble terminal lines.
func printable(s string, limit int) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		if n == limit {
			b.WriteString("…")
			break
		}
		if !unicode.IsPrint(r) {
			r = '?'
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}
