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
// consistency_timeout; the others (400, 404, an unparseable answer) fail at once. A 401 or 403
// is the gateway's own credentials refused: it ends the call at once as a retriable
// StoreError with OperatorFault set, so the dispatcher retries the event without spending the
// subscription's retry policy on the operator's mistake.
//
// Identical calls in flight at the same time are made once and shared (coalescing), and distinct
// calls for the same feature service that arrive within a short window are sent together to the
// batch endpoint (batching). Both happen below the consistency loop, so each waiter still checks
// the shared vector against its own record.
//
// The feature store is behind the [FeatureStore] interface, which *tecton.Client and
// *feast.Client satisfy. The Feast client translates its answer into a tecton.Vector
// ("<view>__<feature>" becomes "<view>.<feature>", event timestamps become effective times,
// Precision one second), so the consistency rule and the envelope treat both alike; its errors
// are feast's own typed errors, read alongside tecton's. [Backends] holds one Enricher per
// backend and routes each call by the subscription's Enrichment.backend.
//
// Retries are layered: the clients' HTTP transport (go-retryablehttp) retries connection
// failures and 429/5xx a few times within one call; this package's loop retries until the
// online store reflects the record or consistency_timeout ends; the dispatcher's durable retry
// queue retries the event. Webhook delivery does not use go-retryablehttp: it has its own
// sender and durable queue.
package enrich
