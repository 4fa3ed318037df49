// Package webhook makes one signed webhook delivery attempt safely.
//
// It holds the four pieces every webhook attempt needs and nothing else:
//
//   - Signing with the Standard Webhooks scheme ([Secret], [ParseSecret],
//     [GenerateSecret], [Sign]), so receivers verify with any Standard
//     Webhooks library.
//   - An SSRF guard ([Guard]) that refuses loopback, private, link-local,
//     multicast and cloud-metadata addresses. [Guard.CheckURL] is a cheap,
//     DNS-free check for the API at subscription time; [Guard.DialContext] is
//     the enforcement, checking the address actually connected to after DNS
//     resolution so DNS rebinding cannot get around it.
//   - A [Sender] that makes exactly one POST and classifies the answer into an
//     [Outcome]. Retrying is not its job: failed events leave the hot path for
//     the durable retry queue, which schedules the next attempt with
//     [Backoff] or [RetryAfterOrBackoff].
//   - The default retry schedule ([Backoff]) and a Retry-After parser
//     ([ParseRetryAfter]).
//
// # Why net/http's transport and not go-retryablehttp
//
// go-retryablehttp is the project's chosen retrying HTTP client, and it was
// considered for the single attempt made here. It is not used, for reasons
// specific to this package:
//
//   - Its Client.Do calls HTTPClient.CloseIdleConnections after every failed
//     request. The Sender shares one connection pool across all receivers, so
//     one unreachable receiver would tear down the warm connections of every
//     healthy one.
//   - Its retry loop would be configured away (RetryMax 0), and its Retry-After
//     parsing is unexported, unbounded, and reads the wall clock from a package
//     variable; [ParseRetryAfter] is bounded, takes the clock as an argument and
//     is fuzzed.
//   - Its jittered backoffs seed a new math/rand source from the clock on every
//     call, which cannot be made deterministic in tests; [Backoff] takes the
//     random source as an argument.
//
// The retry queue elsewhere in Outflow owns retries; this package only answers
// "what happened on this attempt, and how long should we wait".
package webhook
