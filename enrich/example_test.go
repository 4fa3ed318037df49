package enrich_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outflow-dev/outflow/enrich"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/tecton"
)

// laggingStore is a feature store whose online store reflects a record only from the third
// call on, as when materialisation lags the output stream.
type laggingStore struct {
	recordTime time.Time
	calls      int
}

func (s *laggingStore) GetFeatures(_ context.Context, req tecton.Request) (*tecton.Vector, error) {
	s.calls++
	eff := s.recordTime.Add(-time.Second)
	if s.calls >= 3 {
		eff = s.recordTime
	}
	return &tecton.Vector{Features: []tecton.Feature{{
		Name: "user_stats.purchases", FeatureView: "user_stats",
		Value: json.RawMessage(`"1234"`), EffectiveTime: eff, HasEffectiveTime: true,
		Status: tecton.StatusPresent,
	}}}, nil
}

func (s *laggingStore) GetFeaturesBatch(context.Context, []tecton.Request) ([]*tecton.Vector, error) {
	return nil, errors.New("not used")
}

// Enrich calls the feature store until the vector reflects the record, then Proto builds the
// event's feature_vector.
func ExampleEnricher_Enrich() {
	ts := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	e, err := enrich.New(enrich.Config{
		Store:          &laggingStore{recordTime: ts},
		InitialBackoff: time.Millisecond,
		BatchWindow:    enrich.NoBatching,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	rec := &record.Record{
		FeatureViewName:  "user_stats",
		FeatureTimestamp: ts,
		EntityKeys:       map[string]string{"user": "u1"},
	}
	cfg := &outflowv1.Enrichment{
		WorkspaceName:      "prod",
		FeatureServiceName: "promo_fs",
		JoinKeys:           map[string]string{"user": "user_id"},
		Consistency:        outflowv1.Enrichment_STRICT,
		ConsistencyTimeout: durationpb.New(10 * time.Second),
	}
	res, err := e.Enrich(context.Background(), rec, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	fv := res.Proto(cfg.GetWorkspaceName(), cfg.GetFeatureServiceName())
	fmt.Println("consistent:", fv.GetConsistent(), "attempts:", fv.GetAttempts())
	fmt.Println("purchases:", fv.GetFeatures().GetFields()["user_stats.purchases"].GetStringValue())
	// Output:
	// consistent: true attempts: 3
	// purchases: 1234
}

// The dispatcher decides what to do with a failed Enrich by its type.
func ExampleIsRetriable() {
	for _, err := range []error{
		&enrich.InconsistentError{Attempts: 12},                     // STRICT timeout: retry queue
		&enrich.StoreError{Err: errors.New("503"), Retriable: true}, // store down: retry queue
		&enrich.StoreError{Err: errors.New("404")},                  // bad service: fail at once
		fmt.Errorf("enriching: %w", context.Canceled),               // shutting down
	} {
		fmt.Println(enrich.IsRetriable(err))
	}
	// Output:
	// true
	// true
	// false
	// false
}
