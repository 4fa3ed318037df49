package devenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"go.uber.org/goleak"

	"github.com/outflow-dev/outflow/featureserver"
	"github.com/outflow-dev/outflow/record"
)

// TestDemoRecords: the demo producer's records are SPEC §2 records of the
// demo feature view that package record accepts, with realistic, per-user
// consistent cart values that the reference feature server can serve; the
// first-time shoppers new1, new2, ... come in order, each once, with a cart
// of their first one or two items, in about the share asked for.
func TestDemoRecords(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		users    int
		newShare float64
		seed     uint64
		n        int
		step     time.Duration
	}{
		{"one user, same instant", 1, 0, 1, 50, 0},
		{"twenty users at 2/s", 20, 0, 7, 200, 500 * time.Millisecond},
		{"many users, fast", 1000, 0, 42, 500, time.Microsecond},
		{"twenty users and a quarter newcomers", 20, DefaultDemoNewUsers, 5, 2000, 500 * time.Millisecond},
		{"only newcomers", 3, 1, 11, 100, time.Millisecond},
	}
	userRE := regexp.MustCompile(`^(u|new)([1-9][0-9]*)$`)
	valueRE := regexp.MustCompile(`^[0-9]+\.[0-9]{2}$`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			carts := newDemoCarts(tt.users, tt.newShare, tt.seed)
			newcomers := 0
			fs, err := featureserver.New(featureserver.Config{})
			if err != nil {
				t.Fatal(err)
			}
			type state struct {
				count int64
				ts    time.Time
			}
			last := map[string]state{}
			now := time.Date(2026, 11, 24, 10, 0, 0, 123456789, time.UTC)
			for i := range tt.n {
				key, value := carts.next(now)
				rec, err := record.Decode(value, record.DecodeOptions{})
				if err != nil {
					t.Fatalf("record %d %s does not decode: %v", i, value, err)
				}
				var fields map[string]json.RawMessage
				if err := json.Unmarshal(value, &fields); err != nil || len(fields) != 8 {
					t.Errorf("record %d has fields %v (%v), want exactly the 8 of SPEC §2", i, fields, err)
				}
				user := rec.EntityKeys["user_id"]
				m := userRE.FindStringSubmatch(user)
				switch {
				case rec.Producer != "tecton", rec.JobType != "stream", rec.FeatureViewName != DemoFeatureView, rec.FeatureViewID != demoFeatureViewID:
					t.Errorf("record %d: wrong header fields: %s", i, value)
				case len(rec.EntityKeys) != 1 || m == nil || string(key) != user:
					t.Errorf("record %d: entity keys %v, Kafka key %q", i, rec.EntityKeys, key)
				case len(rec.FeatureValues) != 2 || !valueRE.MatchString(rec.FeatureValues["cart_value"]):
					t.Errorf("record %d: feature values %v", i, rec.FeatureValues)
				}
				count, err := strconv.ParseInt(rec.FeatureValues["cart_count"], 10, 64)
				if err != nil || count < 1 {
					t.Errorf("record %d: cart_count %q", i, rec.FeatureValues["cart_count"])
				}
				if m == nil {
					continue
				}
				n, _ := strconv.Atoi(m[2])
				switch {
				case m[1] == "u" && n > tt.users:
					t.Errorf("record %d: user %s beyond u%d", i, user, tt.users)
				case m[1] == "new":
					if newcomers++; n != newcomers {
						t.Errorf("record %d: first-time shopper %s, want new%d", i, user, newcomers)
					}
					if count > 2 {
						t.Errorf("record %d: first-time shopper %s has %d items already", i, user, count)
					}
				}
				prev, seen := last[user]
				if seen && !rec.FeatureTimestamp.After(prev.ts) {
					t.Errorf("record %d: user %s's feature_timestamp %s does not move past %s", i, user, rec.FeatureTimestamp, prev.ts)
				}
				if seen && count <= prev.count && count > 2 {
					t.Errorf("record %d: user %s's cart went from %d to %d items without a checkout", i, user, prev.count, count)
				}
				if d := rec.FeatureTimestamp.Sub(now); d <= -time.Microsecond || (tt.step > 0 && d > time.Microsecond) {
					t.Errorf("record %d: feature_timestamp %s for an event at %s", i, rec.FeatureTimestamp, now)
				}
				last[user] = state{count, rec.FeatureTimestamp}
				fs.Apply(rec)
				now = now.Add(tt.step)
			}
			if st := fs.Stats(); st.RecordsApplied != int64(tt.n) || st.ValueErrors != 0 || st.RecordsIgnored != 0 {
				t.Errorf("the reference feature server's stats after the records: %+v", st)
			}
			// The share of first-time shoppers is binomial: within five standard deviations.
			mean := tt.newShare * float64(tt.n)
			if sd := math.Sqrt(mean * (1 - tt.newShare)); math.Abs(float64(newcomers)-mean) > 5*sd+0.5 {
				t.Errorf("%d first-time shoppers in %d records, want about %.0f", newcomers, tt.n, mean)
			}
		})
	}
}

// TestDemoPause: the gaps between events average 1/rate and stay below
// five means.
func TestDemoPause(t *testing.T) {
	t.Parallel()
	for _, rate := range []float64{0.5, 2, 100} {
		carts := newDemoCarts(3, DefaultDemoNewUsers, 9)
		mean := time.Duration(float64(time.Second) / rate)
		var sum time.Duration
		const n = 5000
		for range n {
			d := carts.pause(rate)
			if d < 0 || d > 5*mean {
				t.Fatalf("rate %v: pause %s outside [0, %s]", rate, d, 5*mean)
			}
			sum += d
		}
		if avg := sum / n; avg < mean*9/10 || avg > mean*11/10 {
			t.Errorf("rate %v: mean pause %s, want about %s", rate, avg, mean)
		}
	}
}

func TestDemoProducerConfig(t *testing.T) {
	t.Parallel()
	ok := ProducerConfig{Brokers: []string{"k:9092"}, Rate: 2}
	tests := []struct {
		name string
		edit func(*ProducerConfig)
		want string // error substring; empty: valid
	}{
		{"defaults", func(*ProducerConfig) {}, ""},
		{"no brokers", func(c *ProducerConfig) { c.Brokers = nil }, "--kafka-brokers"},
		{"zero rate", func(c *ProducerConfig) { c.Rate = 0 }, "--rate"},
		{"NaN rate", func(c *ProducerConfig) { c.Rate = nanFloat() }, "--rate"},
		{"huge rate", func(c *ProducerConfig) { c.Rate = 1e6 }, "--rate"},
		{"negative users", func(c *ProducerConfig) { c.Users = -1 }, "--users"},
		{"negative count", func(c *ProducerConfig) { c.Count = -1 }, "--count"},
		{"no first-time shoppers", func(c *ProducerConfig) { c.NewUsers = new(0.0) }, ""},
		{"only first-time shoppers", func(c *ProducerConfig) { c.NewUsers = new(1.0) }, ""},
		{"negative new-users share", func(c *ProducerConfig) { c.NewUsers = new(-0.1) }, "--new-users"},
		{"new-users share above 1", func(c *ProducerConfig) { c.NewUsers = new(1.5) }, "--new-users"},
		{"NaN new-users share", func(c *ProducerConfig) { c.NewUsers = new(nanFloat()) }, "--new-users"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := ok
			tt.edit(&c)
			err := c.withDefaults().validate()
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("validate() = %v, want %q", err, tt.want)
			}
		})
	}
	if c := ok.withDefaults(); c.Topic != DemoTopic || c.Users != 20 || c.NewUsers == nil || *c.NewUsers != DefaultDemoNewUsers || c.Seed == 0 || c.Logger == nil {
		t.Errorf("withDefaults = %+v", c)
	}
}

func nanFloat() float64 { zero := 0.0; return zero / zero }

// TestDemoProducerStopsOnCancel: the producer returns nil once its context
// ends, also while the broker cannot be reached.
func TestDemoProducerStopsOnCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := Produce(ctx, ProducerConfig{Brokers: []string{closedAddr(t)}, Rate: 100}); err != nil {
		t.Errorf("Produce = %v, want nil after cancellation", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Produce took %s to stop", took)
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestSummarizeEvent(t *testing.T) {
	t.Parallel()
	base := `"id":"evt_1","subscription_id":"sub_1","record":{"feature_view_name":"fv","entity_keys":{"user_id":"u1"},"feature_values":{"b":"2","a":"1"}}`
	tests := []struct {
		name, body, want string
	}{ // a want ending in "…" is a prefix
		{"consistent", `{` + base + `,"feature_vector":{"features":{"x.f":1.5,"x.g":"7"},"consistent":true,"attempts":3}}`,
			"evt_1 sub=sub_1 fv=fv user_id=u1 a=1 b=2 | feature_vector=consistent attempts=3 x.f=1.5 x.g=7"},
		{"inconsistent", `{` + base + `,"feature_vector":{"consistent":false,"attempts":9}}`,
			"evt_1 sub=sub_1 fv=fv user_id=u1 a=1 b=2 | feature_vector=inconsistent attempts=9"},
		{"unchecked", `{` + base + `,"feature_vector":{"attempts":1}}`,
			"evt_1 sub=sub_1 fv=fv user_id=u1 a=1 b=2 | feature_vector=unchecked attempts=1"},
		{"no enrichment", `{` + base + `}`, "evt_1 sub=sub_1 fv=fv user_id=u1 a=1 b=2 | feature_vector=none"},
		{"control characters", `{"id":"evt_\u001b[2J\n","subscription_id":"s","record":{"feature_view_name":"f\r"}}`,
			"evt_?[2J? sub=s fv=f? | feature_vector=none"},
		{"not JSON", `{"id":`, "(unparsable event: …"},
		{"wrong types", `{"id":5}`, "(unparsable event: …"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := summarizeEvent([]byte(tt.body))
			if prefix, ok := strings.CutSuffix(tt.want, "…"); ok && strings.HasPrefix(got, prefix) && strings.HasSuffix(got, ")") {
				return
			}
			if got != tt.want {
				t.Errorf("summarizeEvent =\n %q\nwant\n %q", got, tt.want)
			}
		})
	}
}

// FuzzSummarizeEvent checks, for any webhook body, that summarizeEvent
// returns one printable line (no control characters that could forge or
// garble terminal output) of bounded length.
func FuzzSummarizeEvent(f *testing.F) {
	f.Add([]byte(`{"id":"evt_1","subscription_id":"sub_1","record":{"feature_view_name":"fv","entity_keys":{"user_id":"u1"}},"feature_vector":{"features":{"a":[1,{"b":null}]},"consistent":true}}`))
	f.Add([]byte(`{"record":{"entity_keys":{"\u2028":"\u0000"}}}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, body []byte) {
		got := summarizeEvent(body)
		if n := len([]rune(got)); n > 1001 {
			t.Errorf("summary of %d runes", n)
		}
		for _, r := range got {
			if !unicode.IsPrint(r) {
				t.Fatalf("summary contains the non-printable %U: %q", r, got)
			}
		}
	})
}

func TestPrintable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in    string
		limit int
		want  string
	}{
		{"plain", 10, "plain"},
		{"a\nb\tc\x1b", 10, "a?b?c?"},
		{"abcdef", 3, "abc…"},
		{"é\u2028", 5, "é?"},
		{"\xff", 5, "�"},
		{"", 0, ""},
	}
	for _, tt := range tests {
		if got := printable(tt.in, tt.limit); got != tt.want {
			t.Errorf("printable(%q, %d) = %q, want %q", tt.in, tt.limit, got, tt.want)
		}
	}
}

func TestResolveAddr(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	tests := []struct {
		addr              string
		listenRE, shownRE string
		wantErr           string
	}{
		{"127.0.0.1:0", `^127\.0\.0\.1:[1-9][0-9]*$`, `^127\.0\.0\.1:[1-9][0-9]*$`, ""},
		{":0", `^:[1-9][0-9]*$`, `^127\.0\.0\.1:[1-9][0-9]*$`, ""},
		{"0.0.0.0:0", `^0\.0\.0\.0:[1-9][0-9]*$`, `^127\.0\.0\.1:[1-9][0-9]*$`, ""},
		{taken.Addr().String(), "", "", "--http-addr " + taken.Addr().String()},
		{"no-port", "", "", "--http-addr"},
	}
	for _, tt := range tests {
		listen, shown, err := resolveAddr(t.Context(), tt.addr, "--http-addr")
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("resolveAddr(%q) = %v, want an error with %q", tt.addr, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !regexp.MustCompile(tt.listenRE).MatchString(listen) || !regexp.MustCompile(tt.shownRE).MatchString(shown) {
			t.Errorf("resolveAddr(%q) = %q, %q, %v", tt.addr, listen, shown, err)
		}
	}
}

// TestDevReceiver: the demo receiver accepts exactly the requests signed
// with a secret of the subscription named in the body, follows rotations,
// and prints one line per request.
func TestDevReceiver(t *testing.T) {
	t.Parallel()
	first := "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	other := "whsec_" + "dGhpcyBpcyBhbm90aGVyIHNlY3JldCBrZXkhIQ=="
	var (
		mu      sync.Mutex
		secrets = map[string][]string{"sub_a": {first}}
		lookups int
		out     lockedBuffer
	)
	r := &devReceiver{cfg: devReceiverConfig{Out: &out, Logger: slog.New(slog.DiscardHandler),
		Secrets: func(_ context.Context, id string) ([]string, error) {
			mu.Lock()
			defer mu.Unlock()
			lookups++
			s, ok := secrets[id]
			if !ok {
				return nil, errors.New("not found")
			}
			return s, nil
		}}, secrets: map[string][]string{}}
	lookupCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return lookups
	}
	srv := httptest.NewServer(r)
	defer srv.Close()

	event := func(sub string) []byte {
		return []byte(`{"id":"evt_x","subscription_id":"` + sub + `","record":{"feature_view_name":"fv","entity_keys":{"user_id":"u1"}},"feature_vector":{"consistent":true,"attempts":2}}`)
	}
	post := func(body []byte, secret string, mutate func(http.Header)) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+devReceiverPath, bytes.NewReader(body))
		if secret != "" {
			wh, err := standardwebhooks.NewWebhook(secret)
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			sig, err := wh.Sign("evt_x", now, body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("webhook-id", "evt_x")
			req.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
			req.Header.Set("webhook-signature", sig)
		}
		if mutate != nil {
			mutate(req.Header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	tests := []struct {
		name   string
		body   []byte
		secret string
		mutate func(http.Header)
		status int
		line   string
	}{
		{"signed", event("sub_a"), first, nil, 204, "receiver: verified evt_x sub=sub_a fv=fv user_id=u1 | feature_vector=consistent attempts=2"},
		{"wrong secret", event("sub_a"), other, nil, 401, "receiver: REJECTED evt_x: signature check failed"},
		{"unsigned", event("sub_a"), "", nil, 401, "receiver: REJECTED : signature check failed"},
		{"old timestamp", event("sub_a"), first, func(h http.Header) {
			h.Set("webhook-timestamp", strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10))
		}, 401, "REJECTED evt_x"},
		{"unknown subscription", event("sub_zz"), other, nil, 401, "receiver: REJECTED evt_x: unknown subscription sub_zz"},
		{"not an event", []byte(`{"hello":1}`), other, nil, 400, "not an Outflow event"},
	}
	for _, tt := range tests { // in order: the cache matters
		out.mu.Lock()
		out.buf.Reset()
		out.mu.Unlock()
		if got := post(tt.body, tt.secret, tt.mutate); got != tt.status {
			t.Errorf("%s: status %d, want %d", tt.name, got, tt.status)
		}
		if line := out.String(); !strings.Contains(line, tt.line) || strings.Count(line, "\n") != 1 {
			t.Errorf("%s: printed %q, want one line with %q", tt.name, line, tt.line)
		}
	}

	// A rotation: the cached secret no longer verifies, the fresh one does.
	mu.Lock()
	secrets["sub_a"] = []string{other, first}
	mu.Unlock()
	before := lookupCount()
	if got := post(event("sub_a"), other, nil); got != 204 {
		t.Errorf("after a rotation: status %d, want 204", got)
	}
	if n := lookupCount() - before; n != 1 {
		t.Errorf("the rotation took %d lookups, want 1", n)
	}
	if got := post(event("sub_a"), other, nil); got != 204 || lookupCount() != before+1 {
		t.Errorf("the refreshed secret is not cached: status %d, %d lookups", got, lookupCount()-before)
	}

	req, _ := http.NewRequest(http.MethodGet, srv.URL+devReceiverPath, nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %v %v, want 405", resp, err)
	} else {
		resp.Body.Close()
	}
}

// TestDevPiecesStop: the broker, the demo producer and the demo receiver
// stop when their context ends (or Close is called) and leave no goroutine
// behind. Not parallel, so that no other test's goroutines come and go.
func TestDevPiecesStop(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	b, err := startDevBroker(ctx, devBrokerConfig{Addr: "127.0.0.1:0", Topic: DemoTopic, Partitions: 3, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	var out lockedBuffer
	r, err := newDevReceiver(ctx, devReceiverConfig{Addr: "127.0.0.1:0", Out: &out, Logger: logger,
		Secrets: func(context.Context, string) ([]string, error) { return nil, errors.New("none") }})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stopReceiver := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- r.Serve(rctx) }()
	resp, err := http.Post(r.URL(), "application/json", strings.NewReader(`{"subscription_id":"sub_x"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unknown subscription: status %d, want 401", resp.StatusCode)
	}

	pctx, stopProducer := context.WithCancel(ctx)
	produced := make(chan error, 1)
	written := &signalHandler{msg: "demo producer: record written", seen: make(chan struct{})}
	go func() {
		produced <- Produce(pctx, ProducerConfig{Brokers: []string{b.Addr()}, Rate: 1000, Seed: 3, Logger: slog.New(written)})
	}()
	select {
	case <-written.seen:
	case <-ctx.Done():
		t.Fatal("the demo producer wrote nothing")
	}
	stopProducer()
	if err := <-produced; err != nil {
		t.Errorf("Produce: %v", err)
	}
	stopReceiver()
	if err := <-served; err != nil {
		t.Errorf("receiver: %v", err)
	}
	b.Close()
	b.Close() // idempotent
}

// signalHandler is a slog.Handler that closes seen at the first record
// with message msg.
type signalHandler struct {
	msg  string
	seen chan struct{}
	once sync.Once
}

func (h *signalHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *signalHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *signalHandler) WithGroup(string) slog.Handler            { return h }
func (h *signalHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(func() { close(h.seen) })
	}
	return nil
}

// lockedBuffer collects what the receiver writes from its handlers'
// goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
