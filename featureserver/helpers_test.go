package featureserver

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/tecton"
)

// testAPIKey looks like a real key so that a leak is easy to spot in any output.
const testAPIKey = "tk_5ecret0123456789abcdef"

// t0 is the fake clock's start; records in tests are stamped around it.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeClock is an injectable Config.Now that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// bundle is what setup returns.
type bundle struct {
	srv    *Server
	clock  *fakeClock
	url    string
	client *tecton.Client
}

// setup starts a Server (demo catalog, fake clock, no lag unless modify says otherwise) behind
// an httptest server, and a tecton.Client for it.
func setup(t *testing.T, modify ...func(*Config)) *bundle {
	t.Helper()
	clock := &fakeClock{now: t0}
	cfg := Config{Now: clock.Now, APIKey: testAPIKey}
	for _, m := range modify {
		m(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return &bundle{srv: srv, clock: clock, url: ts.URL, client: newClient(t, ts.URL, testAPIKey)}
}

func newClient(t *testing.T, url, key string, modify ...func(*tecton.Config)) *tecton.Client {
	t.Helper()
	transport := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(transport.CloseIdleConnections)
	cfg := tecton.Config{BaseURL: url, APIKey: key, HTTPClient: &http.Client{Transport: transport}}
	for _, m := range modify {
		m(&cfg)
	}
	c, err := tecton.NewClient(cfg)
	if err != nil {
		t.Fatalf("tecton.NewClient: %v", err)
	}
	return c
}

// post sends a raw body with the test key and returns status and body.
func (b *bundle) post(t *testing.T, path, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, b.url+path, bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Tecton-key "+testAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, data
}

// cartRecord builds a user_items_added_to_cart record.
func cartRecord(t testing.TB, user string, ts time.Time, values map[string]string) *record.Record {
	t.Helper()
	raw, err := json.Marshal(map[string]any{
		"version":           "1",
		"producer":          "tecton",
		"job_type":          "stream",
		"feature_view_name": "user_items_added_to_cart",
		"feature_timestamp": ts.Format(time.RFC3339Nano),
		"entity_keys":       map[string]string{"user_id": user},
		"feature_values":    values,
	})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := record.Decode(raw, record.DecodeOptions{})
	if err != nil {
		t.Fatalf("record.Decode: %v", err)
	}
	return rec
}

func promoRequest(user string) tecton.Request {
	return tecton.Request{Workspace: "prod", FeatureService: "promo_fs", JoinKeys: map[string]string{"user_id": user}}
}

// mustFeature returns the named feature of v.
func mustFeature(t *testing.T, v *tecton.Vector, name string) tecton.Feature {
	t.Helper()
	f, ok := v.Lookup(name)
	if !ok {
		t.Fatalf("vector has no feature %q: %+v", name, v.Features)
	}
	return f
}

// errorOf decodes a Tecton error body.
func errorOf(t *testing.T, body []byte) errorBody {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var e errorBody
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("error body %s is not {error, message, code}: %v", body, err)
	}
	if e.Error == "" || e.Message == "" || e.Code == 0 {
		t.Fatalf("error body %s lacks error, message or code", body)
	}
	return e
}
