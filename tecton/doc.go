// Package tecton is a client for Tecton's GetFeatures HTTP API, the feature store that Outflow
// asks for a feature vector before it delivers an output-stream record (SPEC §4).
//
// The package does three things and nothing else:
//
//   - [Client.GetFeatures] and [Client.GetFeaturesBatch] make one logical call each. Their HTTP
//     transport is hashicorp/go-retryablehttp (through internal/httpretry, shared with package
//     feast): a connection failure or a 429/500/502/503/504 answer is retried a bounded number
//     of times (Config.TransportRetries; `outflow serve` sets 2), 25–250 ms apart or after a Retry-After of at most
//     1 s, all inside the call's Timeout. That is the transport's job and nothing more. The
//     consistency loop — calling again until the online store reflects a record — belongs to
//     package enrich, and the event retry queue to the dispatcher; webhook delivery keeps its
//     own sender and durable queue. So after the transport gives up, every error still says
//     whether a later retry can help, as a typed field ([APIError.Retriable],
//     [TransportError.Retriable], [ParseError.Retriable]) read by [IsRetriable], and an
//     [APIError] keeps a longer Retry-After for the caller to honour.
//   - [ParseResponse] and [ParseBatchResponse] turn Tecton's protobuf-JSON answers into a
//     [Vector]: values matched positionally with their metadata, kept as raw JSON so that
//     int64-as-string, nulls, arrays and structs survive untouched, and effective times parsed
//     from every spelling the feature server emits. A batch answer in the shape Tecton's
//     servers send is read by a one-pass decoder without reflection (a tenth of the
//     encoding/json cost, which a STRICT backlog pays once per MaxBatchSize events); any
//     other body, and every error, goes through encoding/json, and a differential fuzz test
//     holds the two to the same result.
//   - [Check] is the consistency rule of SPEC §4, written once as a pure function ([Vector.Check]
//     and [Vector.Consistent] apply it to a Vector): every feature of the record's feature view
//     must have an effective time at or after the record's feature_timestamp, and one without
//     an effective time (a key not materialised yet) has not caught up. Every backend
//     translates its answer into a Vector, so the dispatcher, its tests and the reference
//     feature server of `outflow dev` agree on one definition.
//
// The API key is a secret: it is sent only in the Authorization header and never appears in
// errors, logs or the printed form of [Config] or [Client].
package tecton
