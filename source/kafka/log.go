package kafka

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/outflow-dev/outflow/source"
)

// defaultMetadataTTL is kafka-go's own metadata cache lifetime (it
// randomises below it), used when ReaderConfig.Refresh is zero.
const defaultMetadataTTL = 6 * time.Second

// Log reads the cluster's topics from any offset, outside the consumer
// group (source.Log): streams and replays use it, so that any replica can
// read any partition. It holds no connections; each reader it makes has its
// own. Create it with NewLog.
type Log struct {
	cfg Config
}

var (
	_ source.Log            = (*Log)(nil)
	_ source.PositionReader = (*reader)(nil)
	_ source.Consumer       = (*Source)(nil)
)

// NewLog returns a Log on the cluster of cfg, after Config.WithDefaults.
// Only the connection settings are used and checked (Brokers, ClientID, TLS,
// SASL); Topics and GroupID may be empty.
func NewLog(cfg Config) (*Log, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validateConnection(); err != nil {
		return nil, err
	}
	cfg.Brokers = slices.Clone(cfg.Brokers)
	return &Log{cfg: cfg}, nil
}

// NewReader returns a reader with its own connections, restricted to the
// metadata of rc.Streams (topics).
func (l *Log) NewReader(rc source.ReaderConfig) source.PositionReader {
	t, _ := l.cfg.transport() // NewLog checked the SASL settings
	t.MetadataTopics = slices.Clone(rc.Streams)
	t.MetadataTTL = defaultMetadataTTL
	if rc.Refresh > 0 {
		t.MetadataTTL = min(rc.Refresh, defaultMetadataTTL)
	}
	return &reader{
		transport: t,
		client:    &kafkago.Client{Addr: kafkago.TCP(l.cfg.Brokers...), Transport: t, Timeout: requestTimeout},
	}
}

// reader is a source.PositionReader on kafka-go's Client.
type reader struct {
	transport *kafkago.Transport
	client    *kafkago.Client
}

// Close closes the reader's idle connections.
func (r *reader) Close() { r.transport.CloseIdleConnections() }

// classify wraps err with the source sentinel that matches its Kafka error
// code, keeping kafka-go's error in the chain.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, kafkago.UnknownTopicOrPartition):
		return fmt.Errorf("%w: %w", source.ErrNotFound, err)
	case errors.Is(err, kafkago.OffsetOutOfRange):
		return fmt.Errorf("%w: %w", source.ErrOutOfRange, err)
	case IsFatal(err):
		return fmt.Errorf("%w: %w", source.ErrFatal, err)
	}
	return err
}

// Partitions lists the partitions of topics, failing when one is missing.
func (r *reader) Partitions(ctx context.Context, topics []string) (map[string][]int32, error) {
	md, err := r.client.Metadata(ctx, &kafkago.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, fmt.Errorf("kafka: reading topic metadata: %w", classify(err))
	}
	layout := make(map[string][]int32, len(topics))
	for _, t := range md.Topics {
		if !slices.Contains(topics, t.Name) {
			continue
		}
		if t.Error != nil {
			return nil, fmt.Errorf("kafka: reading metadata of topic %q: %w", t.Name, classify(t.Error))
		}
		ids := make([]int32, 0, len(t.Partitions))
		for _, p := range t.Partitions {
			ids = append(ids, int32(p.ID))
		}
		slices.Sort(ids)
		layout[t.Name] = ids
	}
	for _, topic := range topics {
		if len(layout[topic]) == 0 {
			return nil, fmt.Errorf("kafka: topic %q: %w", topic, classify(kafkago.UnknownTopicOrPartition))
		}
	}
	return layout, nil
}

// Bounds asks the partitions' leaders for their earliest offset and high
// watermark.
func (r *reader) Bounds(ctx context.Context, layout map[string][]int32) (map[source.Partition]source.Bounds, error) {
	req := &kafkago.ListOffsetsRequest{Topics: make(map[string][]kafkago.OffsetRequest, len(layout))}
	for topic, ids := range layout {
		for _, id := range ids {
			req.Topics[topic] = append(req.Topics[topic], kafkago.FirstOffsetOf(int(id)), kafkago.LastOffsetOf(int(id)))
		}
	}
	resp, err := r.client.ListOffsets(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("kafka: listing offsets: %w", classify(err))
	}
	out := make(map[source.Partition]source.Bounds)
	for topic, offsets := range resp.Topics {
		for _, o := range offsets {
			tp := source.Partition{Stream: topic, ID: int32(o.Partition)}
			switch {
			case o.Error != nil:
				return nil, fmt.Errorf("kafka: listing offsets of %s/%d: %w", topic, o.Partition, classify(o.Error))
			case o.FirstOffset < 0 || o.LastOffset < o.FirstOffset:
				return nil, fmt.Errorf("kafka: listing offsets of %s/%d: got first %d, last %d", topic, o.Partition, o.FirstOffset, o.LastOffset)
			}
			out[tp] = source.Bounds{First: o.FirstOffset, End: o.LastOffset}
		}
	}
	for topic, ids := range layout {
		for _, id := range ids {
			if _, ok := out[source.Partition{Stream: topic, ID: id}]; !ok {
				return nil, fmt.Errorf("kafka: listing offsets of %s/%d: no answer", topic, id)
			}
		}
	}
	return out, nil
}

// OffsetsAt asks, by the brokers' time index (ListOffsets by timestamp), for
// the first offset at or after t of each partition; a partition is absent
// when it has no such record. "Time" is the record timestamp (CreateTime, or
// LogAppendTime if the topic is configured so).
func (r *reader) OffsetsAt(ctx context.Context, layout map[string][]int32, t time.Time) (map[source.Partition]int64, error) {
	req := &kafkago.ListOffsetsRequest{Topics: make(map[string][]kafkago.OffsetRequest, len(layout))}
	for topic, ids := range layout {
		for _, id := range ids {
			req.Topics[topic] = append(req.Topics[topic], kafkago.TimeOffsetOf(int(id), t))
		}
	}
	resp, err := r.client.ListOffsets(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("kafka: listing offsets at %s: %w", t.Format(time.RFC3339Nano), classify(err))
	}
	out := make(map[source.Partition]int64)
	for topic, offsets := range resp.Topics {
		for _, o := range offsets {
			if o.Error != nil {
				return nil, fmt.Errorf("kafka: listing offsets of %s/%d at %s: %w", topic, o.Partition, t.Format(time.RFC3339Nano), classify(o.Error))
			}
			// kafka-go files an answer under the timestamp the broker
			// returns: the found record's, or -1 (which it reads as
			// LastOffset) with offset -1 when no record is that late.
			for off := range o.Offsets {
				if off >= 0 {
					out[source.Partition{Stream: topic, ID: int32(o.Partition)}] = off
				}
			}
		}
	}
	return out, nil
}

// Fetch makes one fetch, the one fetch loop of the package's readers: it
// returns the records at or after req.Offset (a batch may start before it)
// and where to fetch next. When records came back, all below the offset
// asked for, the batch holding it lost its later records to compaction: the
// broker always returns the batch holding the offset asked for, whole, so no
// record exists there, and Next steps past it rather than asking again.
//
// The call is bounded by ctx; kafka-go would otherwise finish an abandoned
// request on a goroutine of its own, so callers that must leave connections
// idle (Close) pass a context that outlives their own cancellation.
func (r *reader) Fetch(ctx context.Context, req source.FetchRequest) (*source.Batch, error) {
	resp, err := r.client.Fetch(ctx, &kafkago.FetchRequest{
		Topic:     req.Partition.Stream,
		Partition: int(req.Partition.ID),
		Offset:    req.Offset,
		MinBytes:  1,
		MaxBytes:  int64(req.MaxBytes),
		MaxWait:   req.MaxWait,
	})
	if err != nil {
		return nil, fmt.Errorf("fetching at offset %d: %w", req.Offset, classify(err))
	}
	if c, ok := resp.Records.(io.Closer); ok {
		defer c.Close()
	}
	if resp.Error != nil {
		return nil, fmt.Errorf("fetching at offset %d: %w", req.Offset, classify(resp.Error))
	}
	b := &source.Batch{Next: req.Offset, End: resp.HighWatermark}
	stale := false
	for {
		rec, err := resp.Records.ReadRecord()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading the records fetched at offset %d: %w", req.Offset, err)
		}
		if rec.Offset < req.Offset {
			release(rec)
			stale = true
			continue
		}
		headers := copyHeaders(rec.Headers) // before release: the fetch buffer is reused
		key, kerr := kafkago.ReadAll(rec.Key)
		value, verr := kafkago.ReadAll(rec.Value)
		release(rec)
		if err := errors.Join(kerr, verr); err != nil {
			return nil, fmt.Errorf("reading the record at offset %d: %w", rec.Offset, err)
		}
		b.Records = append(b.Records, source.Record{Offset: rec.Offset, Key: key, Value: value, Time: rec.Time, Headers: headers})
		b.Next = rec.Offset + 1
	}
	if stale && len(b.Records) == 0 {
		b.Next = req.Offset + 1
	}
	return b, nil
}

// release hands a fetched record's buffers back to kafka-go's page pool
// (the value has been copied, or is not wanted).
// copyHeaders returns a record's headers as source headers, values copied;
// nil when there are none, so a record without headers costs nothing.
func copyHeaders(hs []kafkago.Header) []source.Header {
	if len(hs) == 0 {
		return nil
	}
	out := make([]source.Header, len(hs))
	for i, h := range hs {
		out[i] = source.Header{Key: h.Key, Value: bytes.Clone(h.Value)}
	}
	return out
}

func release(r *kafkago.Record) {
	if r.Key != nil {
		_ = r.Key.Close()
	}
	if r.Value != nil {
		_ = r.Value.Close()
	}
}

// Ready reports whether the Source has joined its group (Joined): the
// source.Consumer readiness signal.
func (s *Source) Ready() bool { return s.Joined() }

// SharedLog is a Log whose readers share one transport: connections one
// reader leaves idle serve the next, and all share the metadata connection,
// so a server with many streams keeps about one broker connection per
// partition being fetched. A reader's Close leaves the connections open for
// the others; the owner calls CloseIdleConnections when no reader is left.
type SharedLog struct {
	transport *kafkago.Transport
	client    *kafkago.Client
}

var _ source.Log = (*SharedLog)(nil)

// Shared returns a SharedLog on l's cluster whose transport keeps the
// metadata of rc.Streams, refreshed as rc.Refresh says (see NewReader);
// every reader it makes must read only those streams.
func (l *Log) Shared(rc source.ReaderConfig) *SharedLog {
	r := l.NewReader(rc).(*reader)
	return &SharedLog{transport: r.transport, client: r.client}
}

// NewReader returns a reader on the shared transport; rc is ignored (the
// transport was configured by Shared).
func (l *SharedLog) NewReader(source.ReaderConfig) source.PositionReader {
	return sharedReader{&reader{transport: l.transport, client: l.client}}
}

// CloseIdleConnections closes the shared transport's idle connections.
func (l *SharedLog) CloseIdleConnections() { l.transport.CloseIdleConnections() }

// sharedReader is a reader whose Close leaves the shared connections open.
type sharedReader struct{ *reader }

// Close does nothing: the SharedLog's owner closes the connections.
func (sharedReader) Close() {}
