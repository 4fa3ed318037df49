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
func (p Position) Key() string {
	if p.Kind == "kinesis" {
		return "kinesis/" + p.Stream + "/" + p.Shard + "/" + p.Sequence
	}
	return "kafka/" + p.Topic + "/" + strconv.FormatInt(int64(p.Partition), 10) + "/" + strconv.FormatInt(p.Offset, 10)
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
