// Package featureserver is a reference feature server: a local stand-in for Tecton's
// GetFeatures HTTP API, for development (`outflow featureserver`, `outflow dev`) and tests. It
// is NOT Tecton, talks to no Tecton service, and computes no features of its own.
//
// Outflow enriches each output-stream record with a feature vector from Tecton and waits until
// that vector is consistent with the record (SPEC §4). Tecton is a SaaS that cannot run on a
// laptop or in CI, so this package serves the same API from memory, fed by the same records,
// and makes them visible only after a configurable materialisation lag: a client that reads
// too early sees the old effective time, exactly the situation the consistency rule exists for.
//
// It is meant to be as unkind as the real service, so that `outflow dev` and the tests meet
// the hard shapes: a key it has never materialised (the first record of a new entity) answers
// null with status MISSING_DATA and no effective time at all; aggregate feature views report
// effective times aligned to their interval, so a record may never look caught up and only a
// consistency timeout ends the wait; and with a cache configured, default reads are answered
// with stale values until read_from_cache=false bypasses it.
//
// What it implements:
//
//   - The endpoints POST /api/v1/feature-service/get-features, get-features-batch (at most
//     MaxBatchSize rows) and metadata, with request bodies in snake_case or lowerCamelCase as
//     protobuf JSON allows, responses in the shapes Tecton returns (positional result.features,
//     int64 as JSON strings, metadata entries with name, effectiveTime, dataType and status
//     as requested by metadata_options) and errors as {"error", "message", "code"} with the
//     gRPC code behind the HTTP status.
//     The body Outflow's own client sends (snake_case, string join keys) is read by a
//     one-pass parser that declines anything else to the general one, so the server costs
//     less CPU on a machine it shares with the gateway without accepting anything more.
//     Answers are written without reflection, byte for byte what encoding/json writes (a
//     fuzz test compares the two).
//   - `Authorization: Tecton-key <key>` when Config.APIKey is set.
//   - An in-memory online store keyed by (feature view, join key values). [Server.Apply] (and
//     [Server.Consume], which reads records from Kafka) schedules a record's feature values to
//     become visible Config.Lag (plus up to Config.LagJitter) later, with the record's
//     feature_timestamp as their effective time. Visibility is decided lazily at read time
//     against the injectable clock Config.Now, so tests are deterministic and no goroutine runs.
//   - A simulated feature serving cache (Config.CacheTTL) honouring request_options
//     read_from_cache and write_to_cache, so tests can prove that consistency retries bypass it:
//     a cached never-written key answers CACHED_MISSING_DATA, again without an effective time.
//   - On-demand features, which echo a request_context_map value and carry no effective time;
//     aggregate feature views whose effective times are aligned to their aggregation interval;
//     and synthetic batch feature views that answer every key with deterministic values.
//   - Fault injection ([Faults]): error bursts, an error rate, latency, Retry-After.
//
// What it does not implement: feature computation of any kind (values are copied from records'
// feature_values; aggregations are not computed), feature_service_id lookups, feature
// descriptions and tags, partial results, persistence (the store is rebuilt from the stream on
// each start) and Tecton's real latency, limits and SLOs. Its data types are int64, float64,
// string and bool; arrays, maps and structs are not supported.
package featureserver
