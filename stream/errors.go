package stream

import (
	"errors"
	"fmt"

	"github.com/outflow-dev/outflow/source"
)

// ErrInvalidConfig is wrapped by every error Open and NewTokens return for a
// bad Config or key: a deployment problem, not the client's.
var ErrInvalidConfig = errors.New("stream: invalid config")

// ErrInvalidRequest is wrapped by the error Open returns for a bad Request:
// no subscription, a subscription whose filter does not compile, or a shard
// out of range. The server maps it to INVALID_ARGUMENT.
var ErrInvalidRequest = errors.New("stream: invalid request")

// ErrSlowClient is returned by Next once the stream has ended because its
// client stopped taking events: the buffer was full and Next took nothing for
// Config.SlowClientGrace. Events still buffered are dropped; none of them is
// covered by a resume token the client has seen, so the client loses nothing
// by resuming from its last token. The server maps it to RESOURCE_EXHAUSTED
// (SPEC §5).
var ErrSlowClient = errors.New("stream: client too slow, buffer full; resume from the last token")

// ErrClosed is returned by Next after Close.
var ErrClosed = errors.New("stream: closed")

// TokenTooOldError reports that a resume position points at records the
// topic no longer retains, so the stream cannot continue without a gap. Open
// returns it when the token is already too old; Next returns it when
// retention deletes records the stream had not read yet (a stream catching up
// from an old token close to the retention limit). The server maps it to
// OUT_OF_RANGE, telling the client to reconnect without a token to start at
// the live tail.
type TokenTooOldError struct {
	// Topic and Partition name the first partition found out of range.
	Topic     string
	Partition int32
	// Wanted is the offset the stream needed to read next.
	Wanted int64
	// Earliest is the partition's oldest retained offset, above Wanted.
	Earliest int64
	// Shard, for a Kinesis stream (named by Topic), is the shard the source
	// no longer has; Partition, Wanted and Earliest are then unused.
	Shard string
}

// Error says which records are gone and what the client should do.
func (e *TokenTooOldError) Error() string {
	if e.Shard != "" {
		return fmt.Sprintf("stream: resume position is older than the retained data: shard %s/%s is gone; reconnect without a token to start at the live tail",
			e.Topic, e.Shard)
	}
	return fmt.Sprintf("stream: resume position is older than the retained data: %s/%d needs offset %d but the earliest retained is %d; reconnect without a token to start at the live tail",
		e.Topic, e.Partition, e.Wanted, e.Earliest)
}

// EnrichError ends a stream when Request.Enrich fails with an error that a
// retry cannot fix (enrich.IsRetriable false: the feature service does not
// exist, the key is refused, the request cannot be formed). Retriable
// failures are retried in place instead, holding back that partition's later
// events so that order is kept. The server maps it to FAILED_PRECONDITION: the
// subscription's enrichment settings or the feature store need attention, and
// reconnecting with the last token retries the same event.
type EnrichError struct {
	// Position is the record that could not be enriched.
	Position source.Position
	// Err is Enrich's error.
	Err error
}

// Error names the record's position and the cause.
func (e *EnrichError) Error() string {
	return "stream: enriching the record at " + e.Position.Key() + ": " + e.Err.Error()
}

// Unwrap returns Enrich's error.
func (e *EnrichError) Unwrap() error { return e.Err }
