package feast_test

import (
	"errors"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/feast"
	"github.com/outflow-dev/outflow/internal/testenv"
	"github.com/outflow-dev/outflow/tecton"
)

// These tests talk to the real `feast serve` (feast 0.67.0, SQLite online store) that
// scripts/testenv.sh starts, with the feature repo it writes.

func newClient(t *testing.T) (*feast.Client, string) {
	t.Helper()
	url := testenv.FeastURL(t)
	c, err := feast.NewClient(feast.Config{BaseURL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c, url
}

func request(user string) tecton.Request {
	return tecton.Request{FeatureService: testenv.FeastFeatureService, JoinKeys: map[string]string{testenv.FeastJoinKey: user}}
}

// TestFeastServeConsistency follows one record through the real server: a key never written
// comes back null, NOT_FOUND, without an effective time (the rule treats that as "not caught
// up" for the record's own view); an older value is behind the record; after a push at the
// record's time (which Feast keeps in whole seconds) the vector is consistent; a record a
// second later is not caught up by it.
func TestFeastServeConsistency(t *testing.T) {
	t.Parallel()
	c, url := newClient(t)
	user := testenv.FeastUserID("client_")
	record := time.Now().UTC().Truncate(time.Second).Add(500 * time.Millisecond) // mid-second

	v, err := c.GetFeatures(t.Context(), request(user))
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Features) != 2 {
		t.Fatalf("never written: %d features, want 2 (the join key column dropped): %+v", len(v.Features), v.Features)
	}
	for _, f := range v.Features {
		if f.Status != feast.StatusNotFound || f.HasEffectiveTime || string(f.Value) != "null" || f.FeatureView != testenv.FeastFeatureView {
			t.Errorf("never written: %+v, want null, NOT_FOUND, no effective time", f)
		}
	}
	// A key the store has never seen has not caught up with any record of its view: the
	// first record of a new entity must wait (issue 9), not pass for consistent.
	if ok, _ := v.Consistent(testenv.FeastFeatureView, record); ok {
		t.Errorf("never written: Consistent = true, want false: %+v", v.Features)
	}

	testenv.FeastPush(t, url, testenv.FeastRow{UserID: user, CartCount: 1, LifetimeValue: 1, EventTimestamp: record.Add(-time.Minute)})
	v, err = c.GetFeatures(t.Context(), request(user))
	if err != nil {
		t.Fatal(err)
	}
	if ok, n := v.Consistent(testenv.FeastFeatureView, record); ok || n != 2 {
		t.Errorf("an older value: Consistent = %v over %d features, want false over 2: %+v", ok, n, v.Features)
	}

	testenv.FeastPush(t, url, testenv.FeastRow{UserID: user, CartCount: 3, LifetimeValue: 12.5, EventTimestamp: record})
	v, err = c.GetFeatures(t.Context(), request(user))
	if err != nil {
		t.Fatal(err)
	}
	if ok, n := v.Consistent(testenv.FeastFeatureView, record); !ok || n != 2 {
		t.Errorf("after the push: Consistent = %v over %d features, want true over 2: %+v", ok, n, v.Features)
	}
	if ok, _ := v.Consistent(testenv.FeastFeatureView, record.Add(time.Second)); ok {
		t.Error("a record a second later is caught up by an older value")
	}
	want := map[string]string{"user_stats.cart_count": "3", "user_stats.lifetime_value": "12.5"}
	for name, value := range want {
		f, ok := v.Lookup(name)
		if !ok || string(f.Value) != value || f.Status != feast.StatusPresent || !f.EffectiveTime.Equal(record.Truncate(time.Second)) {
			t.Errorf("%s = %+v, want %s PRESENT effective at %s", name, f, value, record.Truncate(time.Second))
		}
	}
}

func TestFeastServeBatch(t *testing.T) {
	t.Parallel()
	c, url := newClient(t)
	written, never := testenv.FeastUserID("batch_"), testenv.FeastUserID("batch_never_")
	at := time.Now().UTC().Truncate(time.Second)
	testenv.FeastPush(t, url, testenv.FeastRow{UserID: written, CartCount: 9, LifetimeValue: 1, EventTimestamp: at})
	vs, err := c.GetFeaturesBatch(t.Context(), []tecton.Request{request(never), request(written)})
	if err != nil {
		t.Fatal(err)
	}
	if f, _ := vs[0].Lookup("user_stats.cart_count"); f.HasEffectiveTime {
		t.Errorf("row 0 (never written) has an effective time: %+v", f)
	}
	if f, _ := vs[1].Lookup("user_stats.cart_count"); string(f.Value) != "9" || !f.EffectiveTime.Equal(at) {
		t.Errorf("row 1 = %+v, want 9 at %s", f, at)
	}
}

func TestFeastServeErrors(t *testing.T) {
	t.Parallel()
	c, _ := newClient(t)
	_, err := c.GetFeatures(t.Context(), tecton.Request{FeatureService: "no_such_service", JoinKeys: map[string]string{"user_id": "u"}})
	apiErr, ok := errors.AsType[*feast.APIError](err)
	if !ok || apiErr.StatusCode != 404 || apiErr.Class != "FeatureServiceNotFoundException" || feast.IsRetriable(err) {
		t.Errorf("unknown service: %v, want a non-retriable 404 FeatureServiceNotFoundException", err)
	}
}
