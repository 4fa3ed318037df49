package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrLeaseLost means a Kinesis shard lease is no longer held by the caller:
// it expired and another replica took the shard over, or it was taken to
// balance the shards. The caller must stop reading the shard.
var ErrLeaseLost = errors.New("shard lease lost")

// KinesisShard is one Kinesis shard's row: its lineage, checkpoint and lease.
type KinesisShard struct {
	Stream  string
	ShardID string
	// ParentIDs are the shards it was split or merged from.
	ParentIDs []string
	// Checkpoint is the sequence number reading resumes after; "" when
	// nothing was handled yet.
	Checkpoint string
	// Finished is set once the shard is closed and fully handled.
	Finished bool
	// Owner is the replica holding the lease ("" when free).
	Owner string
}

// RegisterKinesisShards records shards of a lease group not known yet, with
// their parents; known shards are left as they are.
func (s *Store) RegisterKinesisShards(ctx context.Context, group string, shards []KinesisShard) error {
	if len(shards) == 0 {
		return nil
	}
	batch := &pgx.Batch{}
	for _, sh := range shards {
		parents := sh.ParentIDs
		if parents == nil {
			parents = []string{}
		}
		batch.Queue(`INSERT INTO kinesis_shards (group_id, stream, shard_id, parent_ids) VALUES ($1, $2, $3, $4)
			ON CONFLICT DO NOTHING`, group, sh.Stream, sh.ShardID, parents)
	}
	if err := s.pool.SendBatch(ctx, batch).Close(); err != nil {
		return fmt.Errorf("registering kinesis shards: %w", interpretError(err))
	}
	return nil
}

// KinesisBalance asks BalanceKinesisLeases for one replica's share.
type KinesisBalance struct {
	Group   string
	Owner   string
	Streams []string
	// Lease is how long a lease lasts without renewal.
	Lease time.Duration
}

// eligibleShards selects the unfinished shards of the group's streams whose
// parents are all finished (or unknown: expired from the stream), the only
// ones that may be read, so that a parent is drained before its children.
const eligibleShards = `
	SELECT s.stream, s.shard_id, s.parent_ids, coalesce(s.checkpoint, ''), s.finished,
	       coalesce(s.owner, ''), coalesce(s.lease_until > now(), false)
	FROM kinesis_shards s
	WHERE s.group_id = $1 AND s.stream = ANY($2) AND NOT s.finished
	  AND NOT EXISTS (SELECT 1 FROM kinesis_shards p
	                  WHERE p.group_id = s.group_id AND p.stream = s.stream
	                    AND p.shard_id = ANY(s.parent_ids) AND NOT p.finished)`

// BalanceKinesisLeases renews the leases b.Owner holds and takes its share of
// the readable shards: with N replicas holding live leases (this one
// included) and S readable shards, each should hold about S/N. It first takes
// free or expired shards (FOR UPDATE SKIP LOCKED, so replicas balancing at
// once never take the same one) up to ceil(S/N); then, if the replica
// holding the most holds at least two more than b.Owner, it takes one shard
// from it (one per call, as the Kinesis Client Library does, so holdings
// converge to within one of each other without thrashing). Time is the
// database's, so replicas' clocks do not matter. It returns the shards
// b.Owner holds afterwards, with their checkpoints.
func (s *Store) BalanceKinesisLeases(ctx context.Context, b KinesisBalance) ([]KinesisShard, error) {
	lease := fmt.Sprintf("%d milliseconds", b.Lease.Milliseconds())
	var held []KinesisShard
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE kinesis_shards SET lease_until = now() + $3::interval, update_time = now()
			WHERE group_id = $1 AND owner = $2 AND NOT finished`, b.Group, b.Owner, lease); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, eligibleShards, b.Group, b.Streams)
		if err != nil {
			return err
		}
		type row struct {
			KinesisShard
			live bool
		}
		all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
			var x row
			err := r.Scan(&x.Stream, &x.ShardID, &x.ParentIDs, &x.Checkpoint, &x.Finished, &x.Owner, &x.live)
			return x, err
		})
		if err != nil {
			return err
		}
		counts := map[string]int{b.Owner: 0}
		free := 0
		for _, r := range all {
			if r.live && r.Owner != "" {
				counts[r.Owner]++
			} else {
				free++
			}
		}
		target := (len(all) + len(counts) - 1) / len(counts)
		mine := counts[b.Owner]
		if want := min(target-mine, free); want > 0 {
			tag, err := tx.Exec(ctx, `UPDATE kinesis_shards SET owner = $3, lease_until = now() + $4::interval, update_time = now()
				WHERE (group_id, stream, shard_id) IN (
					SELECT s.group_id, s.stream, s.shard_id FROM kinesis_shards s
					WHERE s.group_id = $1 AND s.stream = ANY($2) AND NOT s.finished
					  AND (s.owner IS NULL OR s.lease_until IS NULL OR s.lease_until <= now())
					  AND NOT EXISTS (SELECT 1 FROM kinesis_shards p
					                  WHERE p.group_id = s.group_id AND p.stream = s.stream
					                    AND p.shard_id = ANY(s.parent_ids) AND NOT p.finished)
					ORDER BY s.stream, s.shard_id LIMIT $5 FOR UPDATE OF s SKIP LOCKED)`,
				b.Group, b.Streams, b.Owner, lease, want)
			if err != nil {
				return err
			}
			mine += int(tag.RowsAffected())
		}
		// Level: take one from the replica holding the most when it holds at
		// least two more than this one, so holdings end within one of each
		// other and a steal never makes the victim the poorer one.
		victim, most := "", mine+1
		for owner, n := range counts {
			if owner != b.Owner && (n > most || (n == most && victim != "" && owner < victim)) {
				victim, most = owner, n
			}
		}
		if victim != "" {
			if _, err := tx.Exec(ctx, `UPDATE kinesis_shards SET owner = $3, lease_until = now() + $5::interval, update_time = now()
				WHERE (group_id, stream, shard_id) IN (
					SELECT group_id, stream, shard_id FROM kinesis_shards
					WHERE group_id = $1 AND stream = ANY($2) AND owner = $4 AND NOT finished AND lease_until > now()
					ORDER BY stream DESC, shard_id DESC LIMIT 1 FOR UPDATE SKIP LOCKED)`,
				b.Group, b.Streams, b.Owner, victim, lease); err != nil {
				return err
			}
		}
		rows, err = tx.Query(ctx, `SELECT stream, shard_id, parent_ids, coalesce(checkpoint, ''), finished, owner
			FROM kinesis_shards WHERE group_id = $1 AND owner = $2 AND NOT finished ORDER BY stream, shard_id`, b.Group, b.Owner)
		if err != nil {
			return err
		}
		held, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (KinesisShard, error) {
			var x KinesisShard
			err := r.Scan(&x.Stream, &x.ShardID, &x.ParentIDs, &x.Checkpoint, &x.Finished, &x.Owner)
			return x, err
		})
		held = slices.DeleteFunc(held, func(x KinesisShard) bool { return !slices.Contains(b.Streams, x.Stream) })
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("balancing kinesis shard leases: %w", interpretError(err))
	}
	return held, nil
}

// KinesisCheckpoint is a shard's progress to record.
type KinesisCheckpoint struct {
	Stream  string
	ShardID string
	// Sequence is the sequence number reading resumes after; "" keeps the
	// stored one.
	Sequence string
	// Finished marks the shard closed and fully handled, and frees its lease.
	Finished bool
	// Lease renews the lease for this long.
	Lease time.Duration
}

// CheckpointKinesisShard records a shard's progress and renews its lease,
// provided owner still holds it; otherwise it returns ErrLeaseLost and
// changes nothing, so a replica that lost a shard can never move the new
// owner's checkpoint.
func (s *Store) CheckpointKinesisShard(ctx context.Context, group, owner string, c KinesisCheckpoint) error {
	tag, err := s.pool.Exec(ctx, `UPDATE kinesis_shards SET
			checkpoint = coalesce(nullif($4, ''), checkpoint), finished = $5,
			owner = CASE WHEN $5 THEN NULL ELSE owner END,
			lease_until = CASE WHEN $5 THEN NULL ELSE now() + $6::interval END, update_time = now()
		WHERE group_id = $1 AND stream = $2 AND shard_id = $3 AND owner = $7`,
		group, c.Stream, c.ShardID, c.Sequence, c.Finished, fmt.Sprintf("%d milliseconds", c.Lease.Milliseconds()), owner)
	if err != nil {
		return fmt.Errorf("checkpointing kinesis shard %s/%s: %w", c.Stream, c.ShardID, interpretError(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("checkpointing kinesis shard %s/%s: %w", c.Stream, c.ShardID, ErrLeaseLost)
	}
	return nil
}

// ReleaseKinesisLeases frees every lease owner holds in group, so that at a
// clean shutdown the other replicas take the shards over at once rather than
// after the leases expire.
func (s *Store) ReleaseKinesisLeases(ctx context.Context, group, owner string) error {
	if _, err := s.pool.Exec(ctx, `UPDATE kinesis_shards SET owner = NULL, lease_until = NULL, update_time = now()
		WHERE group_id = $1 AND owner = $2`, group, owner); err != nil {
		return fmt.Errorf("releasing kinesis shard leases: %w", interpretError(err))
	}
	return nil
}
