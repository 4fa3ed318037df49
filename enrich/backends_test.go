package enrich

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/feast"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/tecton"
)

// TestEnrichStoreErrorsOfBothBackends: the loop reads the typed errors of either backend the
// same way — 5xx retried (honouring Retry-After), 404 failed at once — and a 401/403, the
// gateway's own credentials refused, comes back at once as a retriable operator fault rather
// than a failure that dead-letters the subscriber's event (SPEC §4).
func TestEnrichStoreErrorsOfBothBackends(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		err           error
		wantCalls     int
		wantRetriable bool
		wantOperator  bool
		wantSleep     time.Duration // the first retry's wait, when one is made
	}{
		{"tecton 401", &tecton.APIError{StatusCode: http.StatusUnauthorized}, 1, true, true, 0},
		{"tecton 403", &tecton.APIError{StatusCode: http.StatusForbidden}, 1, true, true, 0},
		{"feast 401", &feast.APIError{StatusCode: http.StatusUnauthorized}, 1, true, true, 0},
		{"feast 403", &feast.APIError{StatusCode: http.StatusForbidden}, 1, true, true, 0},
		{"feast 404", &feast.APIError{StatusCode: http.StatusNotFound, Class: "FeatureServiceNotFoundException"}, 1, false, false, 0},
		{"feast parse", &feast.ParseError{Err: errors.New("bad")}, 1, false, false, 0},
		{"feast 503 then fresh", &feast.APIError{StatusCode: http.StatusServiceUnavailable, Retriable: true, RetryAfter: 2 * time.Second}, 2, false, false, 2 * time.Second},
		{"feast transport then fresh", &feast.TransportError{Err: errors.New("connection refused"), Retriable: true}, 2, false, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			store := &fakeStore{respond: failing(1, tt.err)}
			e, clock := newTestEnricher(t, store, Config{})
			res, err := e.Enrich(t.Context(), testRecord(), testEnrichment(outflowv1.Enrichment_STRICT, 10*time.Second))
			if got := len(store.snapshot()); got != tt.wantCalls {
				t.Errorf("%d calls, want %d", got, tt.wantCalls)
			}
			if tt.wantCalls == 2 {
				if err != nil || res.Attempts != 2 {
					t.Fatalf("Enrich = %+v, %v; want the fresh vector after one retry", res, err)
				}
				if tt.wantSleep > 0 {
					if log := clock.sleepLog(); len(log) != 1 || log[0] != tt.wantSleep {
						t.Errorf("waits %v, want the Retry-After %s", log, tt.wantSleep)
					}
				}
				return
			}
			sErr, ok := errors.AsType[*StoreError](err)
			if !ok {
				t.Fatalf("error %v (%T), want *StoreError", err, err)
			}
			if sErr.Retriable != tt.wantRetriable || IsRetriable(err) != tt.wantRetriable || sErr.OperatorFault != tt.wantOperator {
				t.Errorf("StoreError %+v: want Retriable %v, OperatorFault %v", sErr, tt.wantRetriable, tt.wantOperator)
			}
			if !errors.Is(err, tt.err) {
				t.Errorf("error %v does not keep the store's error", err)
			}
		})
	}
}

func TestBackendsRoute(t *testing.T) {
	t.Parallel()
	tectonStore := &fakeStore{respond: caughtUpFrom(1)}
	feastStore := &fakeStore{respond: caughtUpFrom(1)}
	tectonEnricher, _ := newTestEnricher(t, tectonStore, Config{})
	feastEnricher, _ := newTestEnricher(t, feastStore, Config{})
	both := &Backends{Tecton: tectonEnricher, Feast: feastEnricher}
	onlyTecton := &Backends{Tecton: tectonEnricher}

	feastCfg := testEnrichment(outflowv1.Enrichment_STRICT, time.Second)
	feastCfg.Backend = outflowv1.Enrichment_FEAST
	feastCfg.WorkspaceName = "" // optional for Feast
	tectonCfg := testEnrichment(outflowv1.Enrichment_STRICT, time.Second)
	tectonCfg.Backend = outflowv1.Enrichment_TECTON
	defaultCfg := testEnrichment(outflowv1.Enrichment_STRICT, time.Second)
	futureCfg := testEnrichment(outflowv1.Enrichment_STRICT, time.Second)
	futureCfg.Backend = outflowv1.Enrichment_Backend(42)

	tests := []struct {
		name                  string
		backends              *Backends
		cfg                   *outflowv1.Enrichment
		wantTecton, wantFeast int
		wantNoBackendOperator bool
	}{
		{"feast", both, feastCfg, 0, 1, false},
		{"tecton", both, tectonCfg, 1, 0, false},
		{"unset means tecton", both, defaultCfg, 1, 0, false},
		{"feast not configured", onlyTecton, feastCfg, 0, 0, true},
		{"unknown backend", both, futureCfg, 0, 0, true},
	}
	for _, tt := range tests {
		// Not parallel: the cases share the stores and count their calls.
		t0, f0 := len(tectonStore.snapshot()), len(feastStore.snapshot())
		res, err := tt.backends.Enrich(t.Context(), testRecord(), tt.cfg)
		if dt, df := len(tectonStore.snapshot())-t0, len(feastStore.snapshot())-f0; dt != tt.wantTecton || df != tt.wantFeast {
			t.Errorf("%s: %d Tecton and %d Feast calls, want %d and %d", tt.name, dt, df, tt.wantTecton, tt.wantFeast)
		}
		if tt.wantNoBackendOperator {
			sErr, ok := errors.AsType[*StoreError](err)
			if !ok || !errors.Is(err, ErrNoBackend) || !sErr.Retriable || !sErr.OperatorFault {
				t.Errorf("%s: error %v, want a retriable operator-fault StoreError wrapping ErrNoBackend", tt.name, err)
			}
			continue
		}
		if err != nil || res == nil || res.Consistent == nil || !*res.Consistent {
			t.Errorf("%s: Enrich = %+v, %v", tt.name, res, err)
		}
	}
}

func TestFeastClientIsAFeatureStore(t *testing.T) {
	t.Parallel()
	c, err := feast.NewClient(feast.Config{BaseURL: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	if _, err := New(Config{Store: c}); err != nil {
		t.Errorf("New with a *feast.Client: %v", err)
	}
}
