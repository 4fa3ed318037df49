package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/outflow-dev/outflow/deliverystats"
	"github.com/outflow-dev/outflow/internal/storetest"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/server"
	"github.com/outflow-dev/outflow/store"
	"github.com/outflow-dev/outflow/webhook"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// bundle is what a server test works with: a running server on loopback,
// clients for both protocols, and keys of two tenants.
type bundle struct {
	srv     *server.Server
	store   *store.Store
	db      *pgx.Conn
	conn    *grpc.ClientConn
	subs    outflowv1.SubscriptionServiceClient
	httpURL string
	grpcURL string
	keyA    string // tenant "tenant-a"
	keyB    string // tenant "tenant-b"
	logs    *syncBuffer
	stats   *deliverystats.Recorder // served by GetSubscriptionStats
}

// setup starts a server over a fresh, migrated database. cfg's zero fields
// get the server's defaults, except that loopback webhooks are allowed (the
// tests' receivers listen there) and the rate limits are off.
func setup(t *testing.T, cfg server.Config) *bundle {
	t.Helper()
	return setupStreams(t, cfg, nil)
}

// setupStreams is setup with streams serving StreamEvents.
func setupStreams(t *testing.T, cfg server.Config, streams server.Streams) *bundle {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tdb := storetest.New(t)
	db, st := tdb.Conn, tdb.Store
	_, keyA, err := st.CreateAPIKey(ctx, "tenant-a", "test")
	if err != nil {
		t.Fatal(err)
	}
	_, keyB, err := st.CreateAPIKey(ctx, "tenant-b", "test")
	if err != nil {
		t.Fatal(err)
	}

	// The API's rate limits are off unless a test is about them: tests that
	// race 50 writers would otherwise measure the limit, not their subject.
	if cfg.RequestsPerSecond == 0 {
		cfg.RequestsPerSecond = -1
	}
	if cfg.TestEventsPerSecond == 0 {
		cfg.TestEventsPerSecond = -1
	}
	logs := &syncBuffer{}
	stats := deliverystats.NewRecorder()
	// Test receivers listen on loopback over plain HTTP.
	guard, err := webhook.NewGuard(webhook.GuardConfig{AllowInsecure: true, AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	if err != nil {
		t.Fatal(err)
	}
	sender, err := webhook.NewSender(webhook.SenderConfig{Guard: guard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sender.CloseIdleConnections)
	srv, err := server.New(ctx, server.Params{
		Config:  cfg,
		Store:   st,
		Logger:  slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Sender:  sender,
		Streams: streams,
		Stats:   stats,
	})
	if err != nil {
		t.Fatal(err)
	}
	grpcLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(serveCtx, grpcLis, httpLis) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	conn, err := grpc.NewClient(grpcLis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &bundle{
		srv: srv, store: st, db: db, conn: conn,
		subs:    outflowv1.NewSubscriptionServiceClient(conn),
		httpURL: "http://" + httpLis.Addr().String(),
		grpcURL: grpcLis.Addr().String(),
		keyA:    keyA, keyB: keyB, logs: logs, stats: stats,
	}
}

// as returns a context that authenticates gRPC calls with key.
func as(key string) context.Context {
	ctx := context.Background()
	if key == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
}

// rest sends a REST request; body may be nil, a string (sent as is) or a
// value to encode as JSON. It returns the status and the response body.
func (b *bundle) rest(t *testing.T, method, path, key string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(v)
	case []byte:
		r = bytes.NewReader(v)
	default:
		enc, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(enc)
	}
	req, err := http.NewRequest(method, b.httpURL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if r != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, out
}

// restJSON is rest for answers that must be a JSON object with status want.
func (b *bundle) restJSON(t *testing.T, want int, method, path, key string, body any) map[string]any {
	t.Helper()
	code, raw := b.rest(t, method, path, key, body)
	if code != want {
		t.Fatalf("%s %s = %d %s, want %d", method, path, code, raw, want)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: answer is not a JSON object: %v: %s", method, path, err, raw)
	}
	return out
}

// countSubscriptions counts every stored subscription, of every tenant.
func (b *bundle) countSubscriptions(t *testing.T) int {
	t.Helper()
	var n int
	if err := b.db.QueryRow(context.Background(), "SELECT count(*) FROM subscriptions").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// webhookSub is a valid subscription body for REST.
func webhookSub(name string) map[string]any {
	return map[string]any{
		"name":               name,
		"feature_view_names": []string{"user_items_added_to_cart"},
		"webhook":            map[string]any{"url": "https://promo.example.com/hooks/cart"},
	}
}

// syncBuffer is a bytes.Buffer safe for the server's concurrent logging.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}
