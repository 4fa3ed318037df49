// Package enrich fetches the feature vector a subscription asks for and applies the
// consistency rule of SPEC §4 before the dispatcher delivers a record.
//
// [Enricher.Enrich] turns a record's entity keys into join keys (renamed by the
// subscription's join_keys), calls the feature store, and checks the answer with the one
// definition of the rule, [tecton.Check]: every feature of the record's feature view must have
// an effective time at or after the record's feature_timestamp, and a feature of that view
// without an effective time (a key the online store has not materialised, such as the first
// record of a new entity) has not caught up. While the online store lags the record it calls
// again with jittered exponential backoff, bypassing the feature server's cache
// (read_from_cache=false), until the subscription's consistency_timeout:
//
//   - STRICT returns an *[InconsistentError] on timeout, which the dispatcher records as a failed
//     delivery attempt, so the event joins the retry queue.
//   - BEST_EFFORT returns the freshest vector seen, marked inconsistent: the one with the fewest
//     features lacking an effective time, then the latest effective times.
//   - NONE returns the first vector and makes no check.
//
// Feature-store errors are typed: an *[StoreError] keeps the cause and says whether a later
// attempt can help. Retriable errors (5xx, 429, timeouts) are retried within the same
// consistency_timeout; the others (400, 401, 403, 404) fail at once.
//
// Identical calls in flight at the same time are made once and shared (coalescing), and distinct
// calls for the same feature service that arrive within a short window are sent together to the
// batch endpoint (batching). Both happen below the consistency loop, so each waiter still checks
// the shared vector against its own record.
//
// The feature store is behind the [FeatureStore] interface, which *tecton.Client satisfies. A
// second backend (Feast's feature server, whose /get-online-features returns per-feature
// event_timestamps) can sit behind the same interface by translating its answer into a
// tecton.Vector — event_timestamps become EffectiveTime — and its failures into *tecton.APIError
// or *tecton.TransportError, so that retriability is read the same way.
package enrich
