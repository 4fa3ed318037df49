// Package feast is a client for Feast's Python feature server (`feast serve`), Outflow's second
// feature-store backend (SPEC §4). It sits behind the same interface as package tecton
// (enrich.FeatureStore): it takes a [tecton.Request] and answers a [tecton.Vector], so the
// consistency rule, the enrich loop and the event envelope treat both backends alike.
//
// # The call
//
// [Client.GetFeatures] and [Client.GetFeaturesBatch] send POST {BaseURL}/get-online-features
// with Content-Type: application/json (Feast refuses the body without it) and
//
//	{"feature_service": "<service>", "entities": {"<join key>": ["<v1>", "<v2>", ...]}, "full_feature_names": true}
//
// Feast takes many entity rows in one call, so a batch is one request whose entity columns hold
// one value per row. Join key values are sent as JSON strings, as records carry them; a feature
// service keyed by an INT64 entity is not supported yet. Request.Workspace is not sent: one
// `feast serve` serves one project, so workspace_name is optional for Feast subscriptions and,
// when set, only labels the envelope. Request.BypassCache has no meaning (Feast has no serving
// cache) and is ignored.
//
// # The answer
//
// Feast answers column by column: metadata.feature_names, and per name a result with values,
// statuses and event_timestamps, one per entity row. [ParseResponse] turns the columns into
// one Vector per row:
//
//   - The join key columns echoed back (their names are the request's join keys) are dropped.
//   - Full feature names "<view>__<feature>" become Feature.Name "<view>.<feature>" and
//     Feature.FeatureView "<view>", Tecton's spelling, so a record of feature view "<view>" is
//     compared with them. The name is split at the first "__".
//   - A feature has an effective time only when its status is PRESENT and its event timestamp
//     is not the Unix epoch: Feast answers a key it never stored with a null value, status
//     NOT_FOUND and event timestamp 1970-01-01T00:00:00Z, and NULL_VALUE and OUTSIDE_MAX_AGE
//     likewise mean "no usable value". The consistency rule treats a feature of the record's
//     own view without an effective time as not caught up.
//   - Vector.Precision is one second: Feast's online stores (SQLite here) keep event
//     timestamps in whole seconds, so a value written for a record at 12:00:40.5 comes back
//     effective at 12:00:40, and the rule compares the record's time truncated to the second.
//   - Values are kept as raw JSON, as Feast encoded them.
//
// # Errors and retries
//
// Errors are typed as in package tecton: *[APIError] (non-2xx; Retriable for 429 and 5xx),
// *[TransportError] (no complete answer), *[ParseError] (a 2xx body this package does not
// understand), read by [IsRetriable]. The HTTP transport is hashicorp/go-retryablehttp through
// internal/httpretry, with the same bounded policy as the Tecton client
// (Config.TransportRetries; `outflow serve` sets 2); the consistency loop stays in package
// enrich. Feast answers a request whose join keys do not match the feature
// service with a 500, which is therefore retried like any 5xx; its message says what was wrong.
//
// The optional Config.Token is sent as "Authorization: Bearer <token>" (Feast's OIDC and
// Kubernetes auth) and never appears in errors, logs or the printed Config or Client.
package feast
