package enrich

import (
	"context"
	"errors"
	"fmt"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/record"
)

// ErrNoBackend is wrapped by the *StoreError Backends.Enrich returns when the subscription's
// backend is not configured on this gateway (no --tecton-url or no --feast-url). The error is
// an operator fault: retriable, and not counted against the subscription's retry policy.
var ErrNoBackend = errors.New("enrich: feature-store backend not configured on this gateway")

// Backends sends each Enrich call to the Enricher of the subscription's backend
// (Enrichment.backend). Each backend has its own Enricher, so coalescing and batching never mix
// calls of two feature stores. A nil field means the gateway has no such backend.
type Backends struct {
	// Tecton serves TECTON and BACKEND_UNSPECIFIED (the default).
	Tecton *Enricher
	// Feast serves FEAST.
	Feast *Enricher
}

// Enrich calls Enricher.Enrich of cfg's backend; see there. A backend that is not configured,
// or one this gateway does not know (from a newer API version), fails with a retriable
// *StoreError wrapping ErrNoBackend, with OperatorFault set and no call made.
func (b *Backends) Enrich(ctx context.Context, rec *record.Record, cfg *outflowv1.Enrichment) (*Result, error) {
	var e *Enricher
	backend := cfg.GetBackend()
	switch backend {
	case outflowv1.Enrichment_BACKEND_UNSPECIFIED, outflowv1.Enrichment_TECTON:
		e, backend = b.Tecton, outflowv1.Enrichment_TECTON
	case outflowv1.Enrichment_FEAST:
		e = b.Feast
	}
	if e == nil {
		return nil, &StoreError{Err: fmt.Errorf("%w: %s", ErrNoBackend, backend), Retriable: true, OperatorFault: true}
	}
	return e.Enrich(ctx, rec, cfg)
}
