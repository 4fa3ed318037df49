package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/outflow-dev/outflow/source/kafka"
)

// PartitionRange is the part of one partition that a time range covers:
// the records at offsets [Start, End).
type PartitionRange struct {
	Topic     string
	Partition int32
	Start     int64
	End       int64
}

// Ranges finds where the time range [from, to) lies in each partition of
// cfg.Topics (only Brokers, Topics and Dialer are used), by the brokers' time
// index: Kafka's ListOffsets by timestamp, so "time" is the record timestamp
// (CreateTime, or LogAppendTime if the topic is configured so). Start is the
// first offset whose timestamp is at or after from, End the first at or after
// to; either is the partition's end (high watermark) when there is no such
// record. A range reaching back beyond the retention starts at the earliest
// retained offset: what the source no longer holds cannot be read again.
//
// Kafka finds the first offset whose timestamp is at or after a time; with
// producer timestamps that are not monotonic a few records in [Start, End)
// may carry timestamps outside the range, so readers that must be exact also
// check each record's timestamp.
func Ranges(ctx context.Context, cfg Config, from, to time.Time) ([]PartitionRange, error) {
	if len(cfg.Brokers) == 0 || len(cfg.Topics) == 0 {
		return nil, fmt.Errorf("%w: brokers and topics are required", ErrInvalidConfig)
	}
	if !from.Before(to) {
		return nil, fmt.Errorf("stream: the range [%s, %s) is empty", from.Format(time.RFC3339Nano), to.Format(time.RFC3339Nano))
	}
	return ranges(ctx, cfg, from, &to)
}

// ranges is Ranges; a nil to ends every range at its partition's end.
func ranges(ctx context.Context, cfg Config, from time.Time, to *time.Time) ([]PartitionRange, error) {
	cfg = cfg.WithDefaults()
	transport := cfg.transport()
	defer transport.CloseIdleConnections()
	client := &kafkago.Client{Addr: kafkago.TCP(cfg.Brokers...), Transport: transport, Timeout: requestTimeout}

	layout, err := partitions(ctx, client, cfg.Topics)
	if err != nil {
		return nil, err
	}
	// The bounds first: an offset found by time is then never beyond the
	// end they report, so the range read is one that existed when asked.
	bounds, err := listOffsets(ctx, client, layout)
	if err != nil {
		return nil, err
	}
	starts, err := offsetsAt(ctx, client, layout, from)
	if err != nil {
		return nil, err
	}
	var ends map[topicPartition]int64 // none found: every range ends at the end
	if to != nil {
		if ends, err = offsetsAt(ctx, client, layout, *to); err != nil {
			return nil, err
		}
	}
	var out []PartitionRange
	for _, topic := range slices.Sorted(maps.Keys(layout)) {
		for _, id := range layout[topic] {
			tp := topicPartition{topic, id}
			b := bounds[tp]
			clamp := func(o int64, found bool) int64 {
				if !found || o > b.last {
					return b.last
				}
				return max(o, b.first)
			}
			s, okS := starts[tp]
			e, okE := ends[tp]
			r := PartitionRange{Topic: topic, Partition: id, Start: clamp(s, okS), End: clamp(e, okE)}
			r.End = max(r.End, r.Start)
			out = append(out, r)
		}
	}
	return out, nil
}

// PositionAt returns the position of the first records at or after t in
// each partition of cfg.Topics (see Ranges), for a resume token that starts
// a stream there.
func PositionAt(ctx context.Context, cfg Config, t time.Time) (Position, error) {
	if len(cfg.Brokers) == 0 || len(cfg.Topics) == 0 {
		return nil, fmt.Errorf("%w: brokers and topics are required", ErrInvalidConfig)
	}
	found, err := ranges(ctx, cfg, t, nil)
	if err != nil {
		return nil, err
	}
	pos := make(Position)
	for _, r := range found {
		if pos[r.Topic] == nil {
			pos[r.Topic] = map[int32]int64{}
		}
		pos[r.Topic][r.Partition] = r.Start
	}
	return pos, nil
}

// offsetsAt asks for the first offset at or after t of each partition; a
// partition is missing from the answer when it has no such record.
func offsetsAt(ctx context.Context, client *kafkago.Client, layout map[string][]int32, t time.Time) (map[topicPartition]int64, error) {
	req := &kafkago.ListOffsetsRequest{Topics: make(map[string][]kafkago.OffsetRequest, len(layout))}
	for topic, ids := range layout {
		for _, id := range ids {
			req.Topics[topic] = append(req.Topics[topic], kafkago.TimeOffsetOf(int(id), t))
		}
	}
	resp, err := client.ListOffsets(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("stream: listing offsets at %s: %w", t.Format(time.RFC3339Nano), err)
	}
	out := make(map[topicPartition]int64)
	for topic, offsets := range resp.Topics {
		for _, o := range offsets {
			if o.Error != nil {
				return nil, fmt.Errorf("stream: listing offsets of %s/%d at %s: %w", topic, o.Partition, t.Format(time.RFC3339Nano), o.Error)
			}
			// kafka-go files an answer under the timestamp the broker
			// returns: the found record's, or -1 (which it reads as
			// LastOffset) with offset -1 when no record is that late.
			for off := range o.Offsets {
				if off >= 0 {
					out[topicPartition{topic, int32(o.Partition)}] = off
				}
			}
		}
	}
	return out, nil
}

// RangeRecord is one record read by ReadRange.
type RangeRecord struct {
	Offset int64
	Key    []byte
	Value  []byte
	// Time is the record's Kafka timestamp.
	Time time.Time
}

// ReadRange reads the records of r in offset order, handing them to fn one
// fetch at a time (so fn's return marks a point to checkpoint). Transient
// broker errors are retried with backoff while ctx lasts; it returns nil once
// End is reached, fn's error, ctx's error, or a fatal broker error (the range
// deleted by retention meanwhile comes back as kafkago.OffsetOutOfRange).
func ReadRange(ctx context.Context, cfg Config, r PartitionRange, fn func([]RangeRecord) error) error {
	if len(cfg.Brokers) == 0 {
		return fmt.Errorf("%w: brokers are required", ErrInvalidConfig)
	}
	cfg = cfg.WithDefaults()
	cfg.Topics = []string{r.Topic}
	transport := cfg.transport()
	defer transport.CloseIdleConnections()
	client := &kafkago.Client{Addr: kafkago.TCP(cfg.Brokers...), Transport: transport, Timeout: requestTimeout}
	rng := newRand()
	offset, failures := r.Start, 0
	for offset < r.End {
		batch, next, err := fetchRange(ctx, client, cfg, r, offset)
		if err == nil && len(batch) > 0 {
			err = fn(batch)
			if err != nil {
				return err
			}
		}
		switch {
		case err == nil:
			offset, failures = next, 0
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case kafka.IsFatal(err), errors.Is(err, kafkago.OffsetOutOfRange), errors.Is(err, kafkago.UnknownTopicOrPartition):
			return fmt.Errorf("stream: reading %s/%d: %w", r.Topic, r.Partition, err)
		}
		failures++
		cfg.Logger.WarnContext(ctx, "stream: fetching a range failed; retrying", slog.String("topic", r.Topic),
			slog.Int("partition", int(r.Partition)), slog.Int64("offset", offset), slog.Any("error", err))
		timer := time.NewTimer(jitter(rng, backoff(fetchBackoffMin, fetchBackoffMax, failures)))
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
	return nil
}

// fetchRange makes one fetch of r at offset and returns its records below
// r.End and the offset to fetch next.
func fetchRange(ctx context.Context, client *kafkago.Client, cfg Config, r PartitionRange, offset int64) ([]RangeRecord, int64, error) {
	fctx, cancel := context.WithTimeout(ctx, cfg.MaxWait+requestTimeout)
	defer cancel()
	resp, err := client.Fetch(fctx, &kafkago.FetchRequest{
		Topic: r.Topic, Partition: int(r.Partition), Offset: offset,
		MinBytes: 1, MaxBytes: int64(cfg.FetchMaxBytes), MaxWait: cfg.MaxWait,
	})
	if err != nil {
		return nil, offset, fmt.Errorf("fetching at offset %d: %w", offset, err)
	}
	if c, ok := resp.Records.(io.Closer); ok {
		defer c.Close()
	}
	if resp.Error != nil {
		return nil, offset, fmt.Errorf("fetching at offset %d: %w", offset, resp.Error)
	}
	var out []RangeRecord
	next, sawAny, sawBeyond := offset, false, false
	for {
		rec, err := resp.Records.ReadRecord()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, offset, fmt.Errorf("reading the records fetched at offset %d: %w", offset, err)
		}
		sawAny = true
		sawBeyond = sawBeyond || rec.Offset >= r.End
		if rec.Offset < offset || rec.Offset >= r.End {
			release(rec)
			continue
		}
		key, kerr := kafkago.ReadAll(rec.Key)
		value, verr := kafkago.ReadAll(rec.Value)
		release(rec)
		if err := errors.Join(kerr, verr); err != nil {
			return nil, offset, fmt.Errorf("reading the record at offset %d: %w", rec.Offset, err)
		}
		out = append(out, RangeRecord{Offset: rec.Offset, Key: key, Value: value, Time: rec.Time})
		next = rec.Offset + 1
	}
	switch {
	case len(out) == 0 && sawBeyond:
		// Compaction removed the rest of the range.
		next = r.End
	case len(out) == 0 && sawAny:
		// Only records below the offset came back: the batch holding it lost
		// its later records to compaction; step on (see Stream.fetch).
		next = offset + 1
	}
	if len(out) == 0 && !sawAny && resp.HighWatermark <= offset {
		// Nothing more exists: the partition ends before r.End (the log was
		// truncated); the range is done.
		next = r.End
	}
	return out, next, nil
}
