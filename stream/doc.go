// Package stream serves `stream` subscriptions (SPEC §5): it reads the
// feature output topics for one gRPC server-stream client and hands it the
// subscription's events, each with a resume token.
//
// Why it does not ride the consumer group: any gateway replica must serve
// any stream client, but each replica's consumer group member owns only some
// partitions. So each Stream reads every partition of the topics itself,
// without a group (kafka-go Client.Fetch, one goroutine per partition), from
// a resume position or from the live tail, and decodes, matches, shards and
// enriches records for its one subscription. Kafka is the log: nothing is
// stored per event, and any replica can continue any client's stream.
//
// Kinesis streams (Config.KinesisStreams) are read the same way, shard by
// shard through a source.ShardReader, a shard once its parents are drained
// (see shards.go), so that a split or merge keeps each entity's order.
//
// A resume token (Tokens) encodes, per topic and partition, the next offset
// to read (and per Kinesis shard, the sequence number to continue after), signed with HMAC-SHA256 and bound to the subscription. Every event
// carries the token that continues right after it, so reconnecting with the
// last token received continues without gaps or duplicates (at-least-once
// overall: events in flight when a connection drops are sent again) for as
// long as the topics retain the data; past retention, Open and Next report a
// *TokenTooOldError.
//
// Flow control: each Stream buffers at most Config.BufferSize events. A
// client that keeps taking events reads the log at its own pace however far
// behind it is; one that stops taking them while the buffer is full for
// Config.SlowClientGrace has its stream ended with ErrSlowClient and resumes
// from its last token. Either way the cost stays inside that Stream: other
// streams and the webhook pipeline have their own readers.
//
// The server maps the errors to gRPC codes: ErrInvalidToken and
// ErrInvalidRequest to INVALID_ARGUMENT, *TokenTooOldError to OUT_OF_RANGE,
// ErrSlowClient to RESOURCE_EXHAUSTED, *EnrichError to FAILED_PRECONDITION.
package stream
