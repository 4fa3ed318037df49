package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// ending is how one StreamEvents call of the fake ends: after sending
// `after` events it returns err (nil: a clean end of stream).
type ending struct {
	after int
	err   error
}

// fakeEvents is an in-process EventService over a fixed log of events
// evt_1…evt_n with tokens tok-1…tok-n; a token resumes after its event, no
// token starts at the beginning. Each call follows the next ending of its
// script; once the script is used up, a call sends the rest of the log and
// stays open until the client leaves.
type fakeEvents struct {
	outflowv1.UnimplementedEventServiceServer
	n      int
	script []ending

	mu    sync.Mutex
	calls []call
}

type call struct {
	token, auth  string
	index, count int32
}

func (f *fakeEvents) StreamEvents(req *outflowv1.StreamEventsRequest, stream grpc.ServerStreamingServer[outflowv1.StreamEventsResponse]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	f.mu.Lock()
	i := len(f.calls)
	f.calls = append(f.calls, call{token: req.GetResumeToken(), auth: strings.Join(md.Get("authorization"), ","),
		index: req.GetShard().GetIndex(), count: req.GetShard().GetCount()})
	f.mu.Unlock()

	start := 0
	if tok := req.GetResumeToken(); tok != "" {
		if _, err := fmt.Sscanf(tok, "tok-%d", &start); err != nil || start > f.n {
			return status.Error(codes.InvalidArgument, "not a resume token issued for this subscription")
		}
	}
	end := ending{after: -1}
	if i < len(f.script) {
		end = f.script[i]
	}
	// A heartbeat first: the worker must skip it.
	if err := stream.Send(&outflowv1.StreamEventsResponse{HeartbeatTime: timestamppb.Now()}); err != nil {
		return err
	}
	for sent, seq := 0, start+1; seq <= f.n; sent, seq = sent+1, seq+1 {
		if sent == end.after {
			return end.err
		}
		if err := stream.Send(&outflowv1.StreamEventsResponse{Event: testEvent(seq)}); err != nil {
			return err
		}
	}
	if end.after >= 0 {
		return end.err
	}
	<-stream.Context().Done()
	return nil
}

func (f *fakeEvents) recorded() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func testEvent(seq int) *outflowv1.Event {
	rec, err := structpb.NewStruct(map[string]any{
		"version": "1", "feature_view_name": "user_items_added_to_cart",
		"entity_keys": map[string]any{"user_id": fmt.Sprint("u", seq)},
	})
	if err != nil {
		panic(err)
	}
	return &outflowv1.Event{
		Id: fmt.Sprint("evt_", seq), Type: "feature_view.output", SubscriptionId: "sub_1", Record: rec,
		Source:      &outflowv1.SourcePosition{Kind: "kafka", Topic: "fv-output", Partition: 0, Offset: int64(seq)},
		ResumeToken: fmt.Sprint("tok-", seq),
	}
}

// startFake serves f on an in-memory listener and returns a client.
func startFake(t *testing.T, f *fakeEvents) outflowv1.EventServiceClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	outflowv1.RegisterEventServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
	})
	return outflowv1.NewEventServiceClient(conn)
}

func newTestWorker(t *testing.T, client outflowv1.EventServiceClient, tokenFile string, handle func(context.Context, *outflowv1.Event) error) *Worker {
	t.Helper()
	w, err := NewWorker(Config{
		Client: client, SubscriptionID: "sub_1", APIKey: "test-key", ShardIndex: 1, ShardCount: 4,
		TokenFile: tokenFile, Handle: handle, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// runWorker runs w until it returns, failing the test after 20s.
func runWorker(t *testing.T, ctx context.Context, w *Worker) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("the worker did not return")
		return nil
	}
}

// TestWorkerResumes ends the stream mid-way with RESOURCE_EXHAUSTED, then
// with UNAVAILABLE, then cleanly, and checks that the worker reconnects each
// time with the token of the last event it processed, processes every event
// once, saves each token only after processing its event, and that a
// concurrent reader never sees a torn token file.
func TestWorkerResumes(t *testing.T) {
	t.Parallel()
	const n = 8
	f := &fakeEvents{n: n, script: []ending{
		{after: 3, err: status.Error(codes.ResourceExhausted, "the stream fell behind")},
		{after: 2, err: status.Error(codes.Unavailable, "replica going away")},
		{after: 1, err: nil},
	}}
	client := startFake(t, f)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "sub_1.token")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	// A reader polls the token file the whole time: with temp+rename it sees
	// no file or a whole token, never an empty or partial one.
	valid := map[string]bool{}
	for i := 1; i <= n; i++ {
		valid[fmt.Sprint("tok-", i, "\n")] = true
	}
	var torn []string // the first few
	tornReads := 0
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for ctx.Err() == nil {
			b, err := os.ReadFile(tokenFile)
			if err == nil && !valid[string(b)] {
				tornReads++
				if len(torn) < 5 {
					torn = append(torn, string(b))
				}
			}
		}
	}()

	var handled []string
	var savedDuring []string // the token file's content while each event is processed
	w := newTestWorker(t, client, tokenFile, func(_ context.Context, ev *outflowv1.Event) error {
		tok, err := LoadToken(tokenFile)
		if err != nil {
			return err
		}
		handled, savedDuring = append(handled, ev.GetId()), append(savedDuring, tok)
		if ev.GetId() == fmt.Sprint("evt_", n) {
			cancel()
		}
		return nil
	})
	if err := runWorker(t, ctx, w); err != nil {
		t.Fatalf("Run: %v", err)
	}
	<-readerDone

	var wantHandled, wantSaved []string
	for i := 1; i <= n; i++ {
		wantHandled = append(wantHandled, fmt.Sprint("evt_", i))
		wantSaved = append(wantSaved, map[bool]string{true: "", false: fmt.Sprint("tok-", i-1)}[i == 1])
	}
	if !slices.Equal(handled, wantHandled) {
		t.Errorf("handled %v, want each of %v once, in order", handled, wantHandled)
	}
	if !slices.Equal(savedDuring, wantSaved) {
		t.Errorf("token file while processing = %q, want the previous event's token %q (saved after processing)", savedDuring, wantSaved)
	}
	calls := f.recorded()
	var tokens []string
	for _, c := range calls {
		tokens = append(tokens, c.token)
		if c.auth != "Bearer test-key" || c.index != 1 || c.count != 4 {
			t.Errorf("call %+v: want authorization \"Bearer test-key\" and shard 1 of 4", c)
		}
	}
	if want := []string{"", "tok-3", "tok-5", "tok-6"}; !slices.Equal(tokens, want) {
		t.Errorf("calls resumed from %q, want %q", tokens, want)
	}
	if tornReads > 0 {
		t.Errorf("a reader saw %d torn token files, such as %q", tornReads, torn)
	}
	if got, _ := LoadToken(tokenFile); got != fmt.Sprint("tok-", n) {
		t.Errorf("token file = %q, want tok-%d", got, n)
	}
	assertOnlyTokenFile(t, dir, tokenFile)
}

// TestWorkerRetriesFailedEvent: a Handle error reconnects from the last
// saved token, so the failed event comes again.
func TestWorkerRetriesFailedEvent(t *testing.T) {
	t.Parallel()
	f := &fakeEvents{n: 3}
	client := startFake(t, f)
	tokenFile := filepath.Join(t.TempDir(), "token")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var handled []string
	failed := false
	w := newTestWorker(t, client, tokenFile, func(_ context.Context, ev *outflowv1.Event) error {
		if ev.GetId() == "evt_2" && !failed {
			failed = true
			return errors.New("database down")
		}
		handled = append(handled, ev.GetId())
		if ev.GetId() == "evt_3" {
			cancel()
		}
		return nil
	})
	if err := runWorker(t, ctx, w); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if want := []string{"evt_1", "evt_2", "evt_3"}; !slices.Equal(handled, want) {
		t.Errorf("handled %v, want %v", handled, want)
	}
	var tokens []string
	for _, c := range f.recorded() {
		tokens = append(tokens, c.token)
	}
	if want := []string{"", "tok-1"}; !slices.Equal(tokens, want) {
		t.Errorf("calls resumed from %q, want %q", tokens, want)
	}
}

// TestWorkerStops: codes that reconnecting cannot fix stop the worker at
// once, with a message saying what to do.
func TestWorkerStops(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code     codes.Code
		wantErr  error
		wantText []string
	}{
		{codes.OutOfRange, ErrResumeTokenTooOld, []string{"are gone from the source", "Delete", "-reset"}},
		{codes.InvalidArgument, ErrRequestRefused, []string{"did not issue", "delete it", "-reset"}},
		{codes.Unauthenticated, ErrNotAllowed, []string{apiKeyEnv}},
		{codes.PermissionDenied, ErrNotAllowed, []string{apiKeyEnv}},
		{codes.NotFound, ErrNotAllowed, []string{"-subscription"}},
		{codes.FailedPrecondition, ErrNotAllowed, []string{"stream target"}},
	}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			t.Parallel()
			f := &fakeEvents{n: 5, script: []ending{{after: 0, err: status.Error(tt.code, "refused by the test")}}}
			client := startFake(t, f)
			tokenFile := filepath.Join(t.TempDir(), "token")
			if err := SaveToken(tokenFile, "tok-2"); err != nil {
				t.Fatal(err)
			}
			w := newTestWorker(t, client, tokenFile, func(context.Context, *outflowv1.Event) error { return nil })
			err := runWorker(t, t.Context(), w)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Run = %v, want %v", err, tt.wantErr)
			}
			for _, s := range append(tt.wantText, "refused by the test") {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
			if calls := f.recorded(); len(calls) != 1 || calls[0].token != "tok-2" {
				t.Errorf("calls = %+v, want one, from the saved token", calls)
			}
		})
	}
}

// TestWorkerStopsDuringBackoff: cancelling the context while the worker
// waits to reconnect returns at once.
func TestWorkerStopsDuringBackoff(t *testing.T) {
	t.Parallel()
	f := &fakeEvents{n: 1, script: []ending{{after: 0, err: status.Error(codes.Unavailable, "down")}}}
	client := startFake(t, f)
	w, err := NewWorker(Config{Client: client, SubscriptionID: "sub_1", APIKey: "k",
		TokenFile: filepath.Join(t.TempDir(), "token"), Handle: func(context.Context, *outflowv1.Event) error { return nil },
		MinBackoff: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		for len(f.recorded()) == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	if err := runWorker(t, ctx, w); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	w := &Worker{cfg: Config{MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}}
	for n, ceiling := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond,
		4: 800 * time.Millisecond, 5: time.Second, 1000: time.Second} {
		for range 100 {
			if d := w.backoff(n); d < ceiling/2 || d > ceiling {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, d, ceiling/2, ceiling)
			}
		}
	}
}

func TestTokenFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	if tok, err := LoadToken(path); err != nil || tok != "" {
		t.Fatalf("LoadToken of a missing file = %q, %v; want empty", tok, err)
	}
	for _, tok := range []string{"first", "second-and-longer", "3"} {
		if err := SaveToken(path, tok); err != nil {
			t.Fatal(err)
		}
		if got, err := LoadToken(path); err != nil || got != tok {
			t.Fatalf("LoadToken = %q, %v; want %q", got, err, tok)
		}
	}
	assertOnlyTokenFile(t, dir, path)
	if err := os.WriteFile(path, bytes.Repeat([]byte("x"), maxTokenBytes+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadToken(path); err == nil {
		t.Error("LoadToken accepted an oversize file")
	}
	// A failed save leaves nothing behind.
	if err := SaveToken(filepath.Join(dir, "missing-dir", "token"), "x"); err == nil {
		t.Error("SaveToken into a missing directory succeeded")
	}
	assertOnlyTokenFile(t, dir, path)
}

func assertOnlyTokenFile(t *testing.T, dir, path string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{filepath.Base(path)}) {
		t.Errorf("directory holds %q, want only %q (temporary files left behind?)", names, filepath.Base(path))
	}
}

func TestPrintEvent(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := printEvent(&out)(context.Background(), testEvent(7)); err != nil {
		t.Fatal(err)
	}
	want := `evt_7 feature_view.output feature_view=user_items_added_to_cart entity_keys={"user_id":"u7"} consistent=n/a source=fv-output/0@7` + "\n"
	if out.String() != want {
		t.Errorf("printed %q, want %q", out.String(), want)
	}
	out.Reset()
	if err := printEvent(&out)(context.Background(), &outflowv1.Event{Id: "evt_empty"}); err != nil {
		t.Fatal(err)
	}
}

func TestNewWorkerValidates(t *testing.T) {
	t.Parallel()
	ok := Config{Client: outflowv1.NewEventServiceClient(nil), SubscriptionID: "s", APIKey: "k", TokenFile: "f",
		Handle: func(context.Context, *outflowv1.Event) error { return nil }}
	for name, mutate := range map[string]func(*Config){
		"no client":       func(c *Config) { c.Client = nil },
		"no subscription": func(c *Config) { c.SubscriptionID = "" },
		"no key":          func(c *Config) { c.APIKey = "" },
		"no token file":   func(c *Config) { c.TokenFile = "" },
		"no handler":      func(c *Config) { c.Handle = nil },
		"shard too high":  func(c *Config) { c.ShardIndex, c.ShardCount = 2, 2 },
		"negative shard":  func(c *Config) { c.ShardIndex, c.ShardCount = -1, 2 },
	} {
		c := ok
		mutate(&c)
		if _, err := NewWorker(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewWorker(ok); err != nil {
		t.Errorf("valid config: %v", err)
	}
}

// cancelWriter cancels a context once it has received n lines.
type cancelWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	n      int
	cancel context.CancelFunc
}

func (w *cancelWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if bytes.Count(w.buf.Bytes(), []byte("\n")) >= w.n {
		w.cancel()
	}
	return len(p), nil
}

// TestRun drives the command's wiring (flags, key, dialing, token file)
// against a fake gateway on a loopback port.
func TestRun(t *testing.T) {
	t.Parallel()
	f := &fakeEvents{n: 2}
	var lc net.ListenConfig
	lis, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	outflowv1.RegisterEventServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := SaveToken(tokenFile, "stale"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := &cancelWriter{n: 2, cancel: cancel}
	getenv := func(k string) string { return map[string]string{apiKeyEnv: "k1"}[k] }
	args := []string{"-addr", lis.Addr().String(), "-subscription", "sub_1", "-token-file", tokenFile,
		"-reset", "-shard-index", "0", "-shard-count", "2"}
	if err := run(ctx, args, getenv, out, io.Discard); err != nil {
		t.Fatalf("run: %v", err)
	}
	out.mu.Lock()
	defer out.mu.Unlock()
	if got := strings.Count(out.buf.String(), "feature_view=user_items_added_to_cart"); got != 2 {
		t.Errorf("printed %q, want two events", out.buf.String())
	}
	calls := f.recorded()
	if len(calls) != 1 || calls[0].token != "" || calls[0].auth != "Bearer k1" || calls[0].count != 2 {
		t.Errorf("calls = %+v, want one from the live tail (-reset) with the key and shard 0 of 2", calls)
	}
	if tok, _ := LoadToken(tokenFile); tok != "tok-2" {
		t.Errorf("token file = %q, want tok-2", tok)
	}

	for name, args := range map[string][]string{
		"no subscription": {"-addr", lis.Addr().String()},
		"bad flag":        {"-no-such-flag"},
	} {
		if err := run(t.Context(), args, getenv, io.Discard, io.Discard); err == nil {
			t.Errorf("%s: run succeeded", name)
		}
	}
	noKey := func(string) string { return "" }
	if err := run(t.Context(), []string{"-subscription", "sub_1"}, noKey, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), apiKeyEnv) {
		t.Errorf("run without a key: %v", err)
	}
}
