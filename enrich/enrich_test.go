package enrich

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/tecton"
)

// recordTime is the feature_timestamp of the test record.
var recordTime = time.Date(2026, 11, 24, 9, 59, 59, 500_000_000, time.UTC)

func testRecord() *record.Record {
	return &record.Record{
		Version:          record.Version,
		FeatureViewName:  testView,
		FeatureTimestamp: recordTime,
		EntityKeys:       map[string]string{"user": "u1", "org": "acme"},
	}
}

func testEnrichment(mode outflowv1.Enrichment_Consistency, timeout time.Duration) *outflowv1.Enrichment {
	cfg := &outflowv1.Enrichment{
		WorkspaceName:      "prod",
		FeatureServiceName: "promo_fs",
		JoinKeys:           map[string]string{"user": "user_id"},
		Consistency:        mode,
	}
	if timeout > 0 {
		cfg.ConsistencyTimeout = durationpb.New(timeout)
	}
	return cfg
}

// Responders for the fake store.
var (
	// caughtUpFrom answers stale vectors until row n, then vectors that reflect the record.
	caughtUpFrom = func(n int) func(int, tecton.Request) (*tecton.Vector, error) {
		return func(i int, _ tecton.Request) (*tecton.Vector, error) {
			if i < n {
				return testVector(recordTime.Add(time.Duration(i-n)*time.Millisecond), "stale"), nil
			}
			return testVector(recordTime, "fresh"), nil
		}
	}
	// neverCaughtUp answers vectors that get fresher by 1 ms per call but stay an hour behind.
	neverCaughtUp = func(i int, _ tecton.Request) (*tecton.Vector, error) {
		return testVector(recordTime.Add(-time.Hour+time.Duration(i)*time.Millisecond), "stale"), nil
	}
	// failing answers err for the first n rows (all rows when n < 0), then fresh vectors.
	failing = func(n int, err error) func(int, tecton.Request) (*tecton.Vector, error) {
		return func(i int, _ tecton.Request) (*tecton.Vector, error) {
			if n < 0 || i <= n {
				return nil, err
			}
			return testVector(recordTime, "fresh"), nil
		}
	}
	// materialisedFrom answers a key the online store has not materialised (null,
	// MISSING_DATA, no effective time) until row n, then fresh vectors; never when n < 0.
	materialisedFrom = func(n int) func(int, tecton.Request) (*tecton.Vector, error) {
		return func(i int, _ tecton.Request) (*tecton.Vector, error) {
			if n < 0 || i < n {
				return missingVector(), nil
			}
			return testVector(recordTime, "fresh"), nil
		}
	}
	unavailable = &tecton.APIError{StatusCode: http.StatusServiceUnavailable, Retriable: true}
	notFound    = &tecton.APIError{StatusCode: http.StatusNotFound, Message: "feature service promo_fs not found"}
)

func TestEnrichConsistency(t *testing.T) {
	t.Parallel()

	type outcome struct {
		attempts   int
		consistent *bool // when the call succeeds; nil means "omitted"
		bypass     []bool
		value      string // JSON of user_stats.purchases in the result
	}
	tests := []struct {
		name     string
		mode     outflowv1.Enrichment_Consistency
		timeout  time.Duration
		cfg      Config
		respond  func(int, tecton.Request) (*tecton.Vector, error)
		want     *outcome                         // a successful result
		wantErr  func(t *testing.T, err error)    // or a failure
		check    func(t *testing.T, c *fakeClock) // extra checks of the waits
		wantRows int                              // calls made, when want is nil
	}{
		{
			name:    "consistent on the first call",
			mode:    outflowv1.Enrichment_STRICT,
			respond: caughtUpFrom(1),
			want:    &outcome{attempts: 1, consistent: new(true), bypass: []bool{false}, value: `"fresh"`},
		},
		{
			name:    "unspecified mode is STRICT",
			mode:    outflowv1.Enrichment_CONSISTENCY_UNSPECIFIED,
			respond: caughtUpFrom(2),
			want:    &outcome{attempts: 2, consistent: new(true), bypass: []bool{false, true}, value: `"fresh"`},
		},
		{
			name:    "caught up on the third call, retries bypass the cache",
			mode:    outflowv1.Enrichment_STRICT,
			respond: caughtUpFrom(3),
			want:    &outcome{attempts: 3, consistent: new(true), bypass: []bool{false, true, true}, value: `"fresh"`},
			check: func(t *testing.T, c *fakeClock) {
				sleeps := c.sleepLog()
				if len(sleeps) != 2 {
					t.Fatalf("sleeps = %v, want 2", sleeps)
				}
				inRange(t, "first retry delay", sleeps[0], DefaultInitialBackoff/2, DefaultInitialBackoff)
				inRange(t, "second retry delay", sleeps[1], DefaultInitialBackoff, 2*DefaultInitialBackoff)
			},
		},
		{
			name:    "ConfirmCatchUp: a catch-up is read once more, at once, and kept when it agrees",
			mode:    outflowv1.Enrichment_STRICT,
			cfg:     Config{ConfirmCatchUp: true},
			respond: caughtUpFrom(2),
			want:    &outcome{attempts: 3, consistent: new(true), bypass: []bool{false, true, true}, value: `"fresh"`},
			check: func(t *testing.T, c *fakeClock) {
				if sleeps := c.sleepLog(); len(sleeps) != 2 || sleeps[1] != 0 {
					t.Errorf("sleeps = %v, want the retry's backoff, then none before the confirming read", sleeps)
				}
			},
		},
		{
			name: "ConfirmCatchUp: a torn catch-up (new timestamp, stale value) is not delivered",
			mode: outflowv1.Enrichment_STRICT,
			cfg:  Config{ConfirmCatchUp: true},
			// Row 2 is a write half done: every feature under the record's time, one value
			// still the old one. Row 3 on is the finished write.
			respond: func(i int, _ tecton.Request) (*tecton.Vector, error) {
				switch {
				case i == 1:
					return testVector(recordTime.Add(-time.Hour), "stale"), nil
				case i == 2:
					return testVector(recordTime, "stale"), nil
				}
				return testVector(recordTime, "fresh"), nil
			},
			want: &outcome{attempts: 4, consistent: new(true), bypass: []bool{false, true, true, true}, value: `"fresh"`},
		},
		{
			name:    "ConfirmCatchUp: consistent on the first call needs no second read",
			mode:    outflowv1.Enrichment_STRICT,
			cfg:     Config{ConfirmCatchUp: true},
			respond: caughtUpFrom(1),
			want:    &outcome{attempts: 1, consistent: new(true), bypass: []bool{false}, value: `"fresh"`},
		},
		{
			name:    "BEST_EFFORT caught up is consistent",
			mode:    outflowv1.Enrichment_BEST_EFFORT,
			respond: caughtUpFrom(2),
			want:    &outcome{attempts: 2, consistent: new(true), bypass: []bool{false, true}, value: `"fresh"`},
		},
		{
			name:    "STRICT timeout is an InconsistentError",
			mode:    outflowv1.Enrichment_STRICT,
			timeout: 2 * time.Second,
			respond: neverCaughtUp,
			wantErr: func(t *testing.T, err error) {
				ie, ok := errors.AsType[*InconsistentError](err)
				if !ok {
					t.Fatalf("err = %v, want *InconsistentError", err)
				}
				if ie.Attempts < 3 || ie.Last == nil || ie.FeatureView != testView || !ie.FeatureTimestamp.Equal(recordTime) || ie.Timeout != 2*time.Second {
					t.Errorf("InconsistentError = %+v", ie)
				}
				// The freshest vector is the last one: an hour behind, less 1 ms per call.
				if wantLag := time.Hour - time.Duration(ie.Attempts)*time.Millisecond; ie.Lag != wantLag {
					t.Errorf("Lag = %s, want %s", ie.Lag, wantLag)
				}
				if !IsRetriable(err) {
					t.Error("IsRetriable(InconsistentError) = false")
				}
			},
			check: func(t *testing.T, c *fakeClock) {
				var total time.Duration
				for _, d := range c.sleepLog() {
					total += d
					if d > DefaultMaxBackoff {
						t.Errorf("delay %s exceeds MaxBackoff", d)
					}
				}
				if total >= 2*time.Second {
					t.Errorf("waited %s, beyond the 2s consistency timeout", total)
				}
			},
		},
		{
			name:    "BEST_EFFORT timeout returns the freshest vector, inconsistent",
			mode:    outflowv1.Enrichment_BEST_EFFORT,
			timeout: time.Second,
			respond: func(i int, _ tecton.Request) (*tecton.Vector, error) {
				// The second answer is the freshest; later ones (a lagging replica) are staler.
				if i == 2 {
					return testVector(recordTime.Add(-time.Millisecond), "freshest"), nil
				}
				return testVector(recordTime.Add(-time.Minute), "stale"), nil
			},
			want: &outcome{consistent: new(false), value: `"freshest"`},
		},
		{
			name:    "NONE makes one call and no check",
			mode:    outflowv1.Enrichment_NONE,
			respond: neverCaughtUp,
			want:    &outcome{attempts: 1, consistent: nil, bypass: []bool{false}, value: `"stale"`},
		},
		{
			name: "no feature of the record's view is consistent without retry",
			mode: outflowv1.Enrichment_STRICT,
			respond: func(int, tecton.Request) (*tecton.Vector, error) {
				v := testVector(recordTime.Add(-time.Hour), "x")
				v.Features = slices.DeleteFunc(v.Features, func(f tecton.Feature) bool { return f.FeatureView == testView })
				return v, nil
			},
			want: &outcome{attempts: 1, consistent: new(true), bypass: []bool{false}},
		},
		{
			name: "on-demand features are not compared",
			mode: outflowv1.Enrichment_STRICT,
			respond: func(int, tecton.Request) (*tecton.Vector, error) {
				// testVector already holds one; another on-demand view, no effective time.
				v := testVector(recordTime, "fresh")
				v.Features = append(v.Features, tecton.Feature{Name: "odfv2.score", FeatureView: "odfv2", Value: []byte(`1`)})
				return v, nil
			},
			want: &outcome{attempts: 1, consistent: new(true), bypass: []bool{false}, value: `"fresh"`},
		},
		{
			// The first record of a new entity: the record's own view answers null,
			// MISSING_DATA and no effective time until its values are materialised.
			name:    "a key not materialised yet is retried until it is",
			mode:    outflowv1.Enrichment_STRICT,
			respond: materialisedFrom(3),
			want:    &outcome{attempts: 3, consistent: new(true), bypass: []bool{false, true, true}, value: `"fresh"`},
		},
		{
			name:    "BEST_EFFORT waits for a key not materialised yet too",
			mode:    outflowv1.Enrichment_BEST_EFFORT,
			respond: materialisedFrom(2),
			want:    &outcome{attempts: 2, consistent: new(true), bypass: []bool{false, true}, value: `"fresh"`},
		},
		{
			name:    "STRICT timeout on a key never materialised counts the missing features",
			mode:    outflowv1.Enrichment_STRICT,
			timeout: time.Second,
			respond: materialisedFrom(-1),
			wantErr: func(t *testing.T, err error) {
				ie, ok := errors.AsType[*InconsistentError](err)
				if !ok {
					t.Fatalf("err = %v, want *InconsistentError", err)
				}
				if ie.Missing != 2 || ie.Lag != 0 || ie.Attempts < 2 {
					t.Errorf("InconsistentError = %+v, want Missing 2, Lag 0", ie)
				}
				if !strings.Contains(err.Error(), "2 features") || !strings.Contains(err.Error(), "without an effective time") {
					t.Errorf("Error() = %q does not say the features are not materialised", err)
				}
			},
		},
		{
			name:    "BEST_EFFORT timeout prefers a stale value to none",
			mode:    outflowv1.Enrichment_BEST_EFFORT,
			timeout: time.Second,
			respond: func(i int, _ tecton.Request) (*tecton.Vector, error) {
				// Only the second answer has values; the others (a replica that has not
				// materialised the key) have none and must not replace it.
				if i == 2 {
					return testVector(recordTime.Add(-time.Hour), "old"), nil
				}
				return missingVector(), nil
			},
			want: &outcome{consistent: new(false), value: `"old"`},
		},
		{
			name:    "BEST_EFFORT timeout with nothing materialised delivers the nulls, inconsistent",
			mode:    outflowv1.Enrichment_BEST_EFFORT,
			timeout: time.Second,
			respond: materialisedFrom(-1),
			want:    &outcome{consistent: new(false), value: `null`},
		},
		{
			name:    "503 twice then OK",
			mode:    outflowv1.Enrichment_STRICT,
			respond: failing(2, unavailable),
			want:    &outcome{attempts: 3, consistent: new(true), bypass: []bool{false, true, true}, value: `"fresh"`},
		},
		{
			name:    "NONE retries errors but never bypasses the cache",
			mode:    outflowv1.Enrichment_NONE,
			respond: failing(1, &tecton.TransportError{Err: context.DeadlineExceeded, Timeout: true, Retriable: true}),
			want:    &outcome{attempts: 2, consistent: nil, bypass: []bool{false, false}, value: `"fresh"`},
		},
		{
			name:     "404 fails at once, not retriable",
			mode:     outflowv1.Enrichment_STRICT,
			respond:  failing(-1, notFound),
			wantRows: 1,
			wantErr: func(t *testing.T, err error) {
				se, ok := errors.AsType[*StoreError](err)
				if !ok || se.Retriable || se.Attempts != 1 {
					t.Fatalf("err = %#v, want non-retriable *StoreError after 1 attempt", err)
				}
				if apiErr, ok := errors.AsType[*tecton.APIError](err); !ok || apiErr.StatusCode != http.StatusNotFound {
					t.Errorf("cause not kept: %v", err)
				}
				if IsRetriable(err) {
					t.Error("IsRetriable(404) = true")
				}
			},
		},
		{
			name:    "persistent 503 past the timeout is a retriable StoreError",
			mode:    outflowv1.Enrichment_STRICT,
			timeout: time.Second,
			cfg:     Config{MaxErrorRetries: 1000},
			respond: failing(-1, unavailable),
			wantErr: func(t *testing.T, err error) {
				se, ok := errors.AsType[*StoreError](err)
				if !ok || !se.Retriable || se.Attempts < 3 || !errors.Is(err, unavailable) {
					t.Fatalf("err = %v, want retriable *StoreError wrapping the 503", err)
				}
			},
		},
		{
			name:     "MaxErrorRetries bounds error retries",
			mode:     outflowv1.Enrichment_STRICT,
			cfg:      Config{MaxErrorRetries: 2},
			respond:  failing(-1, unavailable),
			wantRows: 3,
			wantErr: func(t *testing.T, err error) {
				if se, ok := errors.AsType[*StoreError](err); !ok || !se.Retriable || se.Attempts != 3 {
					t.Fatalf("err = %v, want retriable *StoreError after 3 attempts", err)
				}
			},
		},
		{
			name:     "negative MaxErrorRetries disables error retries",
			mode:     outflowv1.Enrichment_STRICT,
			cfg:      Config{MaxErrorRetries: -1},
			respond:  failing(-1, unavailable),
			wantRows: 1,
			wantErr: func(t *testing.T, err error) {
				if !IsRetriable(err) {
					t.Fatalf("err = %v, want retriable", err)
				}
			},
		},
		{
			name: "BEST_EFFORT delivers the vector it has when errors persist",
			mode: outflowv1.Enrichment_BEST_EFFORT,
			cfg:  Config{MaxErrorRetries: 1},
			respond: func(i int, _ tecton.Request) (*tecton.Vector, error) {
				if i == 1 {
					return testVector(recordTime.Add(-time.Second), "stale"), nil
				}
				return nil, unavailable
			},
			want: &outcome{attempts: 3, consistent: new(false), bypass: []bool{false, true, true}, value: `"stale"`},
		},
		{
			name: "Retry-After is honoured",
			mode: outflowv1.Enrichment_STRICT,
			respond: failing(1, &tecton.APIError{
				StatusCode: http.StatusTooManyRequests, Retriable: true, RetryAfter: 3 * time.Second,
			}),
			want: &outcome{attempts: 2, consistent: new(true), bypass: []bool{false, true}, value: `"fresh"`},
			check: func(t *testing.T, c *fakeClock) {
				if got := c.sleepLog(); !slices.Equal(got, []time.Duration{3 * time.Second}) {
					t.Errorf("sleeps = %v, want [3s]", got)
				}
			},
		},
		{
			name:    "Retry-After beyond the timeout ends at once",
			mode:    outflowv1.Enrichment_STRICT,
			timeout: 2 * time.Second,
			respond: failing(-1, &tecton.APIError{
				StatusCode: http.StatusServiceUnavailable, Retriable: true, RetryAfter: time.Minute,
			}),
			wantRows: 1,
			wantErr: func(t *testing.T, err error) {
				se, ok := errors.AsType[*StoreError](err)
				if !ok || !se.Retriable || se.RetryAfter != time.Minute || se.Attempts != 1 {
					t.Fatalf("err = %v, want retriable *StoreError with RetryAfter 1m", err)
				}
			},
			check: func(t *testing.T, c *fakeClock) {
				if got := c.sleepLog(); len(got) != 0 {
					t.Errorf("slept %v, want no wait", got)
				}
			},
		},
		{
			name:    "a non-retriable parse error fails at once",
			mode:    outflowv1.Enrichment_BEST_EFFORT,
			respond: failing(-1, &tecton.ParseError{Err: errors.New("values and metadata differ in length")}),
			wantErr: func(t *testing.T, err error) {
				if se, ok := errors.AsType[*StoreError](err); !ok || se.Retriable {
					t.Fatalf("err = %v, want non-retriable *StoreError", err)
				}
			},
			wantRows: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			store := &fakeStore{respond: tt.respond}
			e, clock := newTestEnricher(t, store, tt.cfg)

			res, err := e.Enrich(t.Context(), testRecord(), testEnrichment(tt.mode, tt.timeout))

			calls := store.snapshot()
			if tt.want == nil {
				if err == nil {
					t.Fatalf("Enrich = %+v, want an error", res)
				}
				tt.wantErr(t, err)
				if tt.wantRows > 0 && len(calls) != tt.wantRows {
					t.Errorf("store saw %d calls, want %d", len(calls), tt.wantRows)
				}
			} else {
				if err != nil {
					t.Fatalf("Enrich: %v", err)
				}
				checkResult(t, res, tt.want.consistent, tt.want.value)
				if tt.want.attempts != 0 && res.Attempts != tt.want.attempts {
					t.Errorf("Attempts = %d, want %d", res.Attempts, tt.want.attempts)
				}
				if res.Attempts != len(calls) {
					t.Errorf("Attempts = %d but the store saw %d calls", res.Attempts, len(calls))
				}
				if tt.want.bypass != nil && !slices.Equal(store.bypassFlags(), tt.want.bypass) {
					t.Errorf("BypassCache per call = %v, want %v", store.bypassFlags(), tt.want.bypass)
				}
			}
			for _, c := range calls {
				if c.op != opGetFeatures || len(c.reqs) != 1 {
					t.Fatalf("call %+v, want one get-features row", c)
				}
				req := c.reqs[0]
				if req.Workspace != "prod" || req.FeatureService != "promo_fs" ||
					!maps.Equal(req.JoinKeys, map[string]string{"user_id": "u1", "org": "acme"}) {
					t.Fatalf("request = %+v, want prod/promo_fs with renamed join keys", req)
				}
			}
			if tt.check != nil {
				tt.check(t, clock)
			}
		})
	}
}

func checkResult(t *testing.T, res *Result, consistent *bool, value string) {
	t.Helper()
	if res == nil || res.Vector == nil {
		t.Fatalf("result %+v has no vector", res)
	}
	switch {
	case consistent == nil && res.Consistent != nil:
		t.Errorf("Consistent = %v, want omitted", *res.Consistent)
	case consistent != nil && res.Consistent == nil:
		t.Errorf("Consistent omitted, want %v", *consistent)
	case consistent != nil && *consistent != *res.Consistent:
		t.Errorf("Consistent = %v, want %v", *res.Consistent, *consistent)
	}
	if value != "" {
		f, ok := res.Vector.Lookup(testView + ".purchases")
		if !ok || string(f.Value) != value {
			t.Errorf("purchases = %s, want %s", f.Value, value)
		}
	}
}

func inRange(t *testing.T, what string, got, lo, hi time.Duration) {
	t.Helper()
	if got < lo || got > hi {
		t.Errorf("%s = %s, want within [%s, %s]", what, got, lo, hi)
	}
}

func TestEnrichInvalidRequest(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name   string
		rec    func(*record.Record)
		cfg    func(*outflowv1.Enrichment)
		nilArg string
	}{
		{name: "no workspace", cfg: func(c *outflowv1.Enrichment) { c.WorkspaceName = "" }},
		{name: "no feature service", cfg: func(c *outflowv1.Enrichment) { c.FeatureServiceName = "" }},
		{name: "no entity keys", rec: func(r *record.Record) { r.EntityKeys = nil }},
		{name: "rename to empty", cfg: func(c *outflowv1.Enrichment) { c.JoinKeys = map[string]string{"user": ""} }},
		{name: "rename collision", cfg: func(c *outflowv1.Enrichment) { c.JoinKeys = map[string]string{"user": "org"} }},
		{name: "nil record", nilArg: "record"},
		{name: "nil settings", nilArg: "settings"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			store := &fakeStore{respond: caughtUpFrom(1)}
			e, _ := newTestEnricher(t, store, Config{})
			rec, cfg := testRecord(), testEnrichment(outflowv1.Enrichment_STRICT, 0)
			if tt.rec != nil {
				tt.rec(rec)
			}
			if tt.cfg != nil {
				tt.cfg(cfg)
			}
			switch tt.nilArg {
			case "record":
				rec = nil
			case "settings":
				cfg = nil
			}
			_, err := e.Enrich(t.Context(), rec, cfg)
			if !errors.Is(err, ErrInvalidRequest) || IsRetriable(err) {
				t.Errorf("err = %v, want non-retriable ErrInvalidRequest", err)
			}
			if n := len(store.snapshot()); n != 0 {
				t.Errorf("store saw %d calls, want 0", n)
			}
		})
	}
}

func TestEnrichContextCanceled(t *testing.T) {
	t.Parallel()

	t.Run("during backoff", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		store := &fakeStore{respond: func(int, tecton.Request) (*tecton.Vector, error) {
			cancel() // the dispatcher shuts down while the vector is stale
			return testVector(recordTime.Add(-time.Second), "stale"), nil
		}}
		e, _ := newTestEnricher(t, store, Config{})
		_, err := e.Enrich(ctx, testRecord(), testEnrichment(outflowv1.Enrichment_STRICT, 0))
		if !errors.Is(err, context.Canceled) || IsRetriable(err) {
			t.Fatalf("err = %v, want context.Canceled, not retriable", err)
		}
		if n := len(store.snapshot()); n != 1 {
			t.Errorf("store saw %d calls, want 1", n)
		}
	})

	t.Run("while a call is in flight", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(t.Context())
		store := &fakeStore{respond: caughtUpFrom(1), gate: make(chan struct{})}
		e, _ := newTestEnricher(t, store, Config{})
		errc := make(chan error, 1)
		go func() {
			_, err := e.Enrich(ctx, testRecord(), testEnrichment(outflowv1.Enrichment_STRICT, 0))
			errc <- err
		}()
		pollUntil(t, "the call is in flight", func() bool { return len(store.snapshot()) == 1 })
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		// The only waiter left, so the store call is cancelled too.
		pollUntil(t, "the store call is cancelled", func() bool { return store.canceledCalls() == 1 })
	})

	t.Run("already done", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		store := &fakeStore{respond: caughtUpFrom(1)}
		e, _ := newTestEnricher(t, store, Config{})
		if _, err := e.Enrich(ctx, testRecord(), testEnrichment(outflowv1.Enrichment_NONE, 0)); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if n := len(store.snapshot()); n != 0 {
			t.Errorf("store saw %d calls, want 0", n)
		}
	})
}

// A call still in flight when the consistency timeout ends is not waited for: STRICT with no
// vector at all is a retriable StoreError wrapping ErrTimeout, and BEST_EFFORT falls back to
// the vector it already has.
func TestEnrichTimeoutWhileCallInFlight(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name     string
		mode     outflowv1.Enrichment_Consistency
		holdFrom int // calls from this number on hang until the test ends
		// advance is how far the clock moves once the held call is in
		// flight: the consistency timeout (1s) by default.
		advance time.Duration
		check   func(t *testing.T, res *Result, err error)
	}{
		{
			// The first call is waited for past the consistency timeout, up
			// to firstCallWait; only then does "no answer" time out.
			name:     "no answer at all",
			mode:     outflowv1.Enrichment_STRICT,
			holdFrom: 1,
			advance:  firstCallWait,
			check: func(t *testing.T, _ *Result, err error) {
				se, ok := errors.AsType[*StoreError](err)
				if !ok || !se.Retriable || !errors.Is(err, ErrTimeout) || se.Attempts != 1 {
					t.Fatalf("err = %v, want retriable *StoreError wrapping ErrTimeout", err)
				}
			},
		},
		{
			name:     "BEST_EFFORT keeps what it has",
			mode:     outflowv1.Enrichment_BEST_EFFORT,
			holdFrom: 2,
			check: func(t *testing.T, res *Result, err error) {
				if err != nil {
					t.Fatalf("Enrich: %v", err)
				}
				checkResult(t, res, new(false), `"stale"`)
				if res.Attempts != 2 {
					t.Errorf("Attempts = %d, want 2", res.Attempts)
				}
			},
		},
		{
			name:     "STRICT with a stale vector",
			mode:     outflowv1.Enrichment_STRICT,
			holdFrom: 2,
			check: func(t *testing.T, _ *Result, err error) {
				if ie, ok := errors.AsType[*InconsistentError](err); !ok || ie.Attempts != 2 {
					t.Fatalf("err = %v, want *InconsistentError after 2 attempts", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			release := make(chan struct{})
			defer close(release)
			var calls atomic.Int32
			store := &blockingStore{release: release, holdFrom: tt.holdFrom, calls: &calls}
			e, clock := newTestEnricher(t, store, Config{})
			type out struct {
				res *Result
				err error
			}
			done := make(chan out, 1)
			go func() {
				res, err := e.Enrich(t.Context(), testRecord(), testEnrichment(tt.mode, time.Second))
				done <- out{res, err}
			}()
			pollUntil(t, "the held call is in flight", func() bool { return int(calls.Load()) == tt.holdFrom })
			advance := tt.advance
			if advance == 0 {
				advance = time.Second
			}
			clock.Advance(advance)
			o := <-done
			tt.check(t, o.res, o.err)
		})
	}
}

// blockingStore answers stale vectors, except that calls from number holdFrom on hang until
// release is closed or their context ends.
type blockingStore struct {
	release  chan struct{}
	holdFrom int
	calls    *atomic.Int32
}

func (s *blockingStore) GetFeatures(ctx context.Context, _ tecton.Request) (*tecton.Vector, error) {
	if int(s.calls.Add(1)) >= s.holdFrom {
		select {
		case <-s.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return testVector(recordTime.Add(-time.Second), "stale"), nil
}

func (s *blockingStore) GetFeaturesBatch(context.Context, []tecton.Request) ([]*tecton.Vector, error) {
	return nil, errors.New("not used")
}

func TestEnrichConsistencyTimeoutDefaults(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name    string
		timeout *durationpb.Duration
		want    time.Duration
	}{
		{"unset", nil, DefaultConsistencyTimeout},
		{"zero", durationpb.New(0), DefaultConsistencyTimeout},
		{"negative", durationpb.New(-time.Second), DefaultConsistencyTimeout},
		{"set", durationpb.New(3 * time.Second), 3 * time.Second},
		{"above the maximum", durationpb.New(time.Hour), MaxConsistencyTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := testEnrichment(outflowv1.Enrichment_STRICT, 0)
			cfg.ConsistencyTimeout = tt.timeout
			p, err := newPlan(testRecord(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if p.timeout != tt.want {
				t.Errorf("timeout = %s, want %s", p.timeout, tt.want)
			}
		})
	}
}

type countingObserver struct {
	calls, retries atomic.Int32
	errs           atomic.Int32
}

func (o *countingObserver) ObserveCall(op string, d time.Duration, err error) {
	o.calls.Add(1)
	if err != nil {
		o.errs.Add(1)
	}
}
func (o *countingObserver) ObserveConsistencyRetry() { o.retries.Add(1) }

func TestEnrichObserver(t *testing.T) {
	t.Parallel()
	obs := &countingObserver{}
	store := &fakeStore{respond: func(i int, req tecton.Request) (*tecton.Vector, error) {
		if i == 1 {
			return nil, unavailable
		}
		return caughtUpFrom(4)(i, req)
	}}
	e, _ := newTestEnricher(t, store, Config{Observer: obs})
	res, err := e.Enrich(t.Context(), testRecord(), testEnrichment(outflowv1.Enrichment_STRICT, 0))
	if err != nil {
		t.Fatal(err)
	}
	if res.Attempts != 4 || obs.calls.Load() != 4 || obs.errs.Load() != 1 || obs.retries.Load() != 2 {
		t.Errorf("attempts %d, observed calls %d, errors %d, consistency retries %d; want 4, 4, 1, 2",
			res.Attempts, obs.calls.Load(), obs.errs.Load(), obs.retries.Load())
	}
}

// BenchmarkEnrichConsistent measures the per-record overhead of Enrich around a store that
// answers at once with a consistent vector: request building, the coalescing table, the
// goroutine of the call and the consistency check.
func BenchmarkEnrichConsistent(b *testing.B) {
	vec := testVector(recordTime, "fresh")
	store := &instantStore{vec: vec}
	e, err := New(Config{Store: store, BatchWindow: NoBatching})
	if err != nil {
		b.Fatal(err)
	}
	rec, cfg := testRecord(), testEnrichment(outflowv1.Enrichment_STRICT, 0)
	b.ReportAllocs()
	for b.Loop() {
		res, err := e.Enrich(context.Background(), rec, cfg)
		if err != nil || res.Attempts != 1 {
			b.Fatalf("Enrich = %+v, %v", res, err)
		}
	}
}

type instantStore struct{ vec *tecton.Vector }

func (s *instantStore) GetFeatures(context.Context, tecton.Request) (*tecton.Vector, error) {
	return s.vec, nil
}

func (s *instantStore) GetFeaturesBatch(_ context.Context, reqs []tecton.Request) ([]*tecton.Vector, error) {
	out := make([]*tecton.Vector, len(reqs))
	for i := range out {
		out[i] = s.vec
	}
	return out, nil
}
