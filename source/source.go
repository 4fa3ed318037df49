// Package source defines what every stream source (Kafka, Kinesis) hands the
// dispatcher: messages with their position, and a way to say a message is
// fully handled so the source may commit past it.
//
// The at-least-once guarantee (SPEC §5) rests on one rule sources keep: a
// position is committed only when it and every message before it in its
// partition (or shard) is Done. The dispatcher calls Done once every matching
// delivery of a message is delivered, dead-lettered or durably queued for
// retry, so a crash before then re-reads the message.
package source

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
)

// Position is where a message was read.
type Position struct {
	// Kind is "kafka" or "kinesis".
	Kind string
	// Topic and Partition name a Kafka partition; Offset is the message's.
	Topic     string
	Partition int32
	Offset    int64
	// Stream and Shard name a Kinesis shard; Sequence is the record's.
	Stream   string
	Shard    string
	Sequence string
}

// Key returns a compact identifier of the position, unique within the
// gateway's sources, for deriving event ids: "kafka/<topic>/<partition>/<offset>"
// or "kinesis/<stream>/<shard>/<sequence>".
func (p Position) Key() string { return string(p.AppendKey(nil)) }

// AppendKey appends Key's identifier to b.
func (p Position) AppendKey(b []byte) []byte {
	if p.Kind == "kinesis" {
		b = append(b, "kinesis/"...)
		b = append(b, p.Stream...)
		b = append(b, '/')
		b = append(b, p.Shard...)
		b = append(b, '/')
		return append(b, p.Sequence...)
	}
	b = append(b, "kafka/"...)
	b = append(b, p.Topic...)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(p.Partition), 10)
	b = append(b, '/')
	return strconv.AppendInt(b, p.Offset, 10)
}

// Proto returns the position as the event envelope's "source" field.
func (p Position) Proto() *outflowv1.SourcePosition {
	return &outflowv1.SourcePosition{
		Kind: p.Kind, Topic: p.Topic, Partition: p.Partition, Offset: p.Offset,
		Stream: p.Stream, Shard: p.Shard, SequenceNumber: p.Sequence,
	}
}

// Message is one record read from a source.
type Message struct {
	Position Position
	Key      []byte
	Value    []byte
	// AppendTime is when the broker appended the record (Kafka's log append
	// or create timestamp, Kinesis' approximate arrival); end-to-end latency
	// is measured from it.
	AppendTime time.Time
	// Headers are the record's headers (Kafka; Kinesis records have none),
	// read-only; nil without any. A W3C trace context in them is the parent
	// of the record's span.
	Headers []Header

	once sync.Once
	done func()
}

// NewMessage returns a message whose Done calls done (once). Sources use it.
func NewMessage(pos Position, key, value []byte, appendTime time.Time, done func()) *Message {
	return &Message{Position: pos, Key: key, Value: value, AppendTime: appendTime, done: done}
}

// Done marks the message fully handled. It is safe to call more than once
// and from any goroutine; only the first call counts.
func (m *Message) Done() {
	m.once.Do(func() {
		if m.done != nil {
			m.done()
		}
	})
}

// Handler receives the messages of a source. A source calls it from one
// goroutine per partition (or shard), in position order, so it must not
// block for long: it should hand the message on and call Done later. The
// source bounds how many messages may be in flight (not Done) per partition,
// and stops reading a partition while at that bound.
type Handler func(ctx context.Context, m *Message)

// Consumer is a source read as one member of a group of gateway replicas
// that share its partitions (Kafka's consumer group) or shards (Kinesis'
// leases): it hands the dispatcher every record under the commit rule above.
// source/kafka.Source and source/kinesis.Source implement it.
type Consumer interface {
	// Run reads until ctx ends, calling h from one goroutine per partition
	// (or shard) in position order, and commits only past Done messages. It
	// returns nil after a clean stop, or an error no retry can heal.
	Run(ctx context.Context, h Handler) error
	// Ready reports whether the consumer is reading its share: a readiness
	// signal for /readyz.
	Ready() bool
}

// Ownership is told which partitions a Consumer owns, so that what is kept
// per partition outside the group's committed offsets (the dispatcher's
// per-subscription cursors) is worked on by the partition's owner only.
// Assigned is called when a generation gives the consumer parts, before the
// first of their messages is handed on; the consumer reads none of them
// until it returns nil (it is called again, with backoff, after an error,
// until ctx ends). Revoked is called when the consumer gives parts up, after
// its last message of them was handed on and the drain ended, before it
// rejoins the group: what it saves then is in place before the next owner's
// Assigned. Revoked's ctx ends with what is left of the drain's budget: it
// bounds Revoked's own wait for work in flight on parts, not the save.
type Ownership interface {
	Assigned(ctx context.Context, parts []Assignment) error
	Revoked(ctx context.Context, parts []Partition)
}

// Assignment is a partition given to a consumer and the offset it reads it
// from (the group's committed offset, or the start offset without one): the
// consumer hands on nothing of the partition before Next. Next is -1 when
// it is not known yet (resolved later by the reader).
type Assignment struct {
	Partition
	Next int64
}

// Partition names one partition of a stream (a Kafka topic's partition).
type Partition struct {
	Stream string
	ID     int32
}

// Bounds are a partition's earliest retained position and its end: the
// position the next appended record will get.
type Bounds struct{ First, End int64 }

// Record is one record fetched by a PositionReader.
type Record struct {
	// Offset is the record's position in its partition.
	Offset int64
	Key    []byte
	Value  []byte
	// Time is the record's timestamp (Kafka's create or log-append time).
	Time time.Time
	// Headers are the record's Kafka headers, in order; nil without any.
	// Kinesis records have none.
	Headers []Header
}

// Header is one header of a record (Kafka record headers). The dispatcher
// reads a W3C trace context ("traceparent", "tracestate") from them.
type Header struct {
	Key   string
	Value []byte
}

// FetchRequest asks a PositionReader for the records of one partition from
// Offset on.
type FetchRequest struct {
	Partition Partition
	Offset    int64
	// MaxBytes bounds the response, in bytes (at least one record is always
	// returned when one exists).
	MaxBytes int
	// MaxWait is how long the source may hold the request open waiting for
	// records.
	MaxWait time.Duration
}

// Batch is the answer to one fetch.
type Batch struct {
	// Records are at or after the offset asked for, in offset order.
	Records []Record
	// Next is the offset to fetch next: after the last record, or past a
	// gap the source knows holds no record (compaction), or the offset
	// asked for when nothing came back.
	Next int64
	// End is the partition's end as the source reported it with this fetch
	// (-1: not reported).
	End int64
}

// PositionReader reads the partitions of a source from any position, outside
// any group: stream clients and replays use it so that any replica can read
// any partition. It also answers time → position lookups, for replays and
// stream replays. Each reader holds its own connections; Close releases them.
//
// Errors wrap ErrNotFound for a stream or partition the source does not
// have, ErrOutOfRange for a position outside the partition's bounds, and
// ErrFatal for a failure no retry fixes (credentials, permissions); those
// for which IsTemporary is true are worth retrying.
type PositionReader interface {
	// Partitions returns the sorted partition ids of each stream.
	Partitions(ctx context.Context, streams []string) (map[string][]int32, error)
	// Bounds returns the bounds of each partition of layout.
	Bounds(ctx context.Context, layout map[string][]int32) (map[Partition]Bounds, error)
	// OffsetsAt returns, for each partition of layout, the first offset
	// whose record time is at or after t; a partition without such a record
	// is absent.
	OffsetsAt(ctx context.Context, layout map[string][]int32, t time.Time) (map[Partition]int64, error)
	// Fetch makes one fetch.
	Fetch(ctx context.Context, req FetchRequest) (*Batch, error)
	// Close releases the reader's connections once no call is in flight.
	Close()
}

// Log opens PositionReaders on one source cluster. It is safe for concurrent
// use and holds no connections itself.
type Log interface {
	// NewReader returns a reader for cfg.
	NewReader(cfg ReaderConfig) PositionReader
}

// ReaderConfig configures one PositionReader.
type ReaderConfig struct {
	// Streams are the streams the reader reads; they bound the metadata it
	// keeps.
	Streams []string
	// Refresh is how stale the reader's view of a stream's partitions may
	// get; zero leaves the source's default (6 s for Kafka).
	Refresh time.Duration
}

// Sentinels wrapped by PositionReader errors, so callers need not know the
// client library.
var (
	// ErrNotFound: the stream or partition does not exist.
	ErrNotFound = errors.New("source: stream or partition not found")
	// ErrOutOfRange: the position is before the earliest retained record
	// or beyond the partition's end.
	ErrOutOfRange = errors.New("source: position out of range")
	// ErrFatal: the source refused this client (credentials, permissions,
	// settings); retrying will not help.
	ErrFatal = errors.New("source: refused")
)

// IsTemporary reports whether err says it is transient (an error in its
// chain has a Temporary method returning true), as a leader moving is.
func IsTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// Shard is one shard of a stream whose positions are sequence numbers
// (Kinesis), with the shards it was split or merged from.
type Shard struct {
	Stream  string
	ID      string
	Parents []string
}

// ShardRecord is one record read by a ShardReader.
type ShardRecord struct {
	// Sequence is the record's sequence number in its shard.
	Sequence string
	Key      []byte
	Value    []byte
	// Time is when the source received the record (Kinesis' approximate
	// arrival time): the time ranges of replays are in this time.
	Time time.Time
}

// ShardRangeRequest asks a ShardReader for a time range of one shard.
type ShardRangeRequest struct {
	Stream string
	Shard  string
	// After, when set, continues after this sequence number (a checkpoint);
	// otherwise reading starts at the first record at or after From.
	After string
	From  time.Time
	// To ends the range: reading stops before the first record at or after
	// it, or at the shard's end.
	To time.Time
}

// ShardReader reads time ranges of shards again, outside any lease, for
// replays of sources whose positions are sequence numbers (source/kinesis).
// Its errors wrap ErrNotFound for a stream or shard the source no longer
// has (expired), and ErrFatal for a refusal no retry fixes.
type ShardReader interface {
	// Shards returns every shard of stream, parents before children.
	Shards(ctx context.Context, stream string) ([]Shard, error)
	// ReadRange reads req in sequence order, handing fn one batch at a time
	// (so fn's return marks a point to checkpoint: the last record's
	// Sequence), and returns nil once the range is read, fn's error or
	// ctx's. Transient failures and throttling are retried with backoff.
	ReadRange(ctx context.Context, req ShardRangeRequest, fn func([]ShardRecord) error) error
}
