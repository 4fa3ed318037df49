package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/outflow-dev/outflow/source"
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
// cfg.Topics (only Source, Topics and Logger are used), by the source's time
// index (source.PositionReader.OffsetsAt; for Kafka, ListOffsets by
// timestamp, so "time" is the record timestamp: CreateTime, or LogAppendTime
// if the topic is configured so). Start is the
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
	if cfg.Source == nil || len(cfg.Topics) == 0 {
		return nil, fmt.Errorf("%w: a source and topics are required", ErrInvalidConfig)
	}
	if !from.Before(to) {
		return nil, fmt.Errorf("stream: the range [%s, %s) is empty", from.Format(time.RFC3339Nano), to.Format(time.RFC3339Nano))
	}
	return ranges(ctx, cfg, from, &to)
}

// ranges is Ranges; a nil to ends every range at its partition's end.
func ranges(ctx context.Context, cfg Config, from time.Time, to *time.Time) ([]PartitionRange, error) {
	cfg = cfg.WithDefaults()
	reader := cfg.Source.NewReader(cfg.readerConfig())
	defer reader.Close()

	layout, err := reader.Partitions(ctx, cfg.Topics)
	if err != nil {
		return nil, fmt.Errorf("stream: %w", err)
	}
	// The bounds first: an offset found by time is then never beyond the
	// end they report, so the range read is one that existed when asked.
	bounds, err := reader.Bounds(ctx, layout)
	if err != nil {
		return nil, fmt.Errorf("stream: %w", err)
	}
	starts, err := reader.OffsetsAt(ctx, layout, from)
	if err != nil {
		return nil, fmt.Errorf("stream: %w", err)
	}
	var ends map[source.Partition]int64 // none found: every range ends at the end
	if to != nil {
		if ends, err = reader.OffsetsAt(ctx, layout, *to); err != nil {
			return nil, fmt.Errorf("stream: %w", err)
		}
	}
	var out []PartitionRange
	for _, topic := range slices.Sorted(maps.Keys(layout)) {
		for _, id := range layout[topic] {
			tp := source.Partition{Stream: topic, ID: id}
			b := bounds[tp]
			clamp := func(o int64, found bool) int64 {
				if !found || o > b.End {
					return b.End
				}
				return max(o, b.First)
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
	if cfg.Source == nil || len(cfg.Topics) == 0 {
		return nil, fmt.Errorf("%w: a source and topics are required", ErrInvalidConfig)
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

// RangeRecord is one record read by ReadRange.
type RangeRecord = source.Record

// ReadRange reads the records of r in offset order, handing them to fn one
// fetch at a time (so fn's return marks a point to checkpoint). Transient
// source errors are retried with backoff while ctx lasts; it returns nil once
// End is reached, fn's error, ctx's error, or a fatal source error (the range
// deleted by retention meanwhile comes back as source.ErrOutOfRange).
func ReadRange(ctx context.Context, cfg Config, r PartitionRange, fn func([]RangeRecord) error) error {
	if cfg.Source == nil {
		return fmt.Errorf("%w: a source is required", ErrInvalidConfig)
	}
	cfg = cfg.WithDefaults()
	cfg.Topics = []string{r.Topic}
	reader := cfg.Source.NewReader(cfg.readerConfig())
	defer reader.Close()
	rng := newRand()
	offset, failures := r.Start, 0
	for offset < r.End {
		batch, next, err := fetchRange(ctx, reader, cfg, r, offset)
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
		case errors.Is(err, source.ErrFatal), errors.Is(err, source.ErrOutOfRange), errors.Is(err, source.ErrNotFound):
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
func fetchRange(ctx context.Context, reader source.PositionReader, cfg Config, r PartitionRange, offset int64) ([]RangeRecord, int64, error) {
	fctx, cancel := context.WithTimeout(ctx, cfg.MaxWait+requestTimeout)
	defer cancel()
	b, err := reader.Fetch(fctx, source.FetchRequest{
		Partition: source.Partition{Stream: r.Topic, ID: r.Partition},
		Offset:    offset, MaxBytes: cfg.FetchMaxBytes, MaxWait: cfg.MaxWait,
	})
	if err != nil {
		return nil, offset, err
	}
	out := b.Records
	for i, rec := range b.Records {
		if rec.Offset >= r.End {
			out = b.Records[:i]
			break
		}
	}
	next := b.Next
	switch {
	case len(out) > 0:
		next = out[len(out)-1].Offset + 1
	case len(b.Records) > 0:
		// Compaction removed the rest of the range.
		next = r.End
	case b.End >= 0 && b.End <= offset && next == offset:
		// Nothing more exists: the partition ends before r.End (the log was
		// truncated); the range is done.
		next = r.End
	}
	return out, next, nil
}
