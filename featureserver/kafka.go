package featureserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/outflow-dev/outflow/record"
)

// fetchMaxWait is the Kafka reader's MaxWait: the broker holds an idle fetch for 250 ms
// (short enough that Consume stops quickly: kafka-go's connections take no context, so
// stopping waits for the fetch in flight) and the answer then has 1 s to arrive. With
// MaxWait 250 ms, as before, the answer had only 62 ms, and a busy machine (outflow dev
// starting PostgreSQL next to the broker) turned idle fetches into "i/o timeout" warnings
// and reconnections.
const fetchMaxWait = 250*time.Millisecond + time.Second

// Consume reads output-stream records from topics with a consumer group and Applies them,
// until ctx is done; then it returns nil. Messages that record.Decode rejects are skipped and
// counted in Stats.RecordsPoison; they never stop consumption.
//
// The online store lives in memory, so Consume never commits offsets: a group with no
// committed offsets starts from the oldest retained message, and every start rebuilds the
// store from the stream, as a backfill would. Because group members share the partitions,
// each server process needs its own groupID to see every record.
//
// It fails at once, with an error wrapping ErrInvalidConfig, for empty brokers, topics or
// groupID, and returns a wrapped error when reading fails for good.
func (s *Server) Consume(ctx context.Context, brokers, topics []string, groupID string) error {
	cfg := kafkago.ReaderConfig{
		Brokers:     brokers,
		GroupID:     groupID,
		GroupTopics: topics,
		StartOffset: kafkago.FirstOffset,
		// A fetch returns as soon as there is one byte. MaxWait is the reader's socket
		// deadline, not the broker's wait: kafka-go asks the broker to wait MaxWait less
		// a round-trip allowance of 1 s (only MaxWait/4 below 1 s), so see fetchMaxWait.
		MinBytes: 1,
		MaxBytes: 16 << 20, // above record.DefaultMaxBytes, so an oversized record is read and counted, not stuck
		MaxWait:  fetchMaxWait,
		ErrorLogger: kafkago.LoggerFunc(func(msg string, args ...any) {
			s.logger.Warn("kafka reader", slog.String("detail", fmt.Sprintf(msg, args...)))
		}),
	}
	if len(brokers) == 0 || len(topics) == 0 || groupID == "" {
		return fmt.Errorf("%w: Consume needs brokers, topics and a group id", ErrInvalidConfig)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: kafka reader: %w", ErrInvalidConfig, err)
	}
	reader := kafkago.NewReader(cfg)
	defer func() {
		if err := reader.Close(); err != nil {
			s.logger.Warn("closing kafka reader", slog.Any("error", err))
		}
	}()
	s.logger.Info("consuming output-stream records",
		slog.Any("brokers", brokers), slog.Any("topics", topics), slog.String("group_id", groupID))
	for {
		msg, err := reader.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("featureserver: reading records from kafka: %w", err)
		}
		rec, err := record.Decode(msg.Value, record.DecodeOptions{})
		if err != nil {
			s.poison.Add(1)
			attrs := []slog.Attr{
				slog.String("topic", msg.Topic), slog.Int("partition", msg.Partition), slog.Int64("offset", msg.Offset),
			}
			if perr, ok := errors.AsType[*record.PoisonError](err); ok {
				attrs = append(attrs, slog.String("reason", string(perr.Reason)), slog.String("field", perr.Field))
			}
			s.logger.LogAttrs(ctx, slog.LevelDebug, "poison record skipped", attrs...)
			continue
		}
		s.Apply(rec)
	}
}
