package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// SubscriptionCursor is where a detached subscription's own reader of one Kafka
// partition resumes: the first offset the subscription has not settled.
type SubscriptionCursor struct {
	SubscriptionID string
	Topic          string
	Partition      int32
	Offset         int64
}

// SaveCursors upserts cursors in one round trip. A cursor never moves back:
// of two saves racing, the further offset wins (moving back would only
// re-deliver, but there is no reason to).
func (s *Store) SaveCursors(ctx context.Context, cs []SubscriptionCursor) error {
	if len(cs) == 0 {
		return nil
	}
	batch := &pgx.Batch{}
	for _, c := range cs {
		batch.Queue(`INSERT INTO subscription_cursors (subscription_id, topic, partition_id, next_offset)
			VALUES ($1, $2, $3, $4)
			ON CONFLICT (subscription_id, topic, partition_id) DO UPDATE
			SET next_offset = GREATEST(subscription_cursors.next_offset, EXCLUDED.next_offset), update_time = now()`,
			c.SubscriptionID, c.Topic, c.Partition, c.Offset)
	}
	if err := s.pool.SendBatch(ctx, batch).Close(); err != nil {
		return fmt.Errorf("saving subscription cursors: %w", interpretError(err))
	}
	return nil
}

// DeleteCursors removes the cursors of cs's (subscription, topic,
// partition), whatever their offsets: a detached subscription rejoined the
// shared consumer on those partitions. Its cursors of other partitions (read
// by the replicas that own them) stay.
func (s *Store) DeleteCursors(ctx context.Context, cs []SubscriptionCursor) error {
	if len(cs) == 0 {
		return nil
	}
	subs, topics, parts := make([]string, len(cs)), make([]string, len(cs)), make([]int32, len(cs))
	for i, c := range cs {
		subs[i], topics[i], parts[i] = c.SubscriptionID, c.Topic, c.Partition
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM subscription_cursors c
		USING unnest($1::text[], $2::text[], $3::int[]) AS d(subscription_id, topic, partition_id)
		WHERE c.subscription_id = d.subscription_id AND c.topic = d.topic AND c.partition_id = d.partition_id`,
		subs, topics, parts); err != nil {
		return fmt.Errorf("deleting subscription cursors: %w", interpretError(err))
	}
	return nil
}

// Cursors returns every stored cursor, so that the owner of a partition
// takes up the readers of the subscriptions detached on it.
func (s *Store) Cursors(ctx context.Context) ([]SubscriptionCursor, error) {
	rows, err := s.pool.Query(ctx, `SELECT subscription_id, topic, partition_id, next_offset FROM subscription_cursors
		ORDER BY subscription_id, topic, partition_id`)
	if err != nil {
		return nil, fmt.Errorf("reading subscription cursors: %w", interpretError(err))
	}
	cs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (SubscriptionCursor, error) {
		var c SubscriptionCursor
		err := r.Scan(&c.SubscriptionID, &c.Topic, &c.Partition, &c.Offset)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading subscription cursors: %w", interpretError(err))
	}
	return cs, nil
}
