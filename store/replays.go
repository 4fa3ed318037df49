package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Replay states, as stored and as named by the API.
const (
	ReplayRunning   = "RUNNING"
	ReplaySucceeded = "SUCCEEDED"
	ReplayFailed    = "FAILED"
)

// ErrReplayRunning means the subscription already has a RUNNING replay.
var ErrReplayRunning = errors.New("a replay of this subscription is already running")

// Replay is a re-delivery of a subscription's events of a time range.
type Replay struct {
	ID              string
	SubscriptionID  string
	TenantID        string
	StartTime       time.Time
	EndTime         time.Time
	State           string
	Plan            []ReplayPartition // nil until resolved
	RecordsTotal    int64
	RecordsRead     int64
	EventsDelivered int64
	Error           string
	ResumeToken     string
	CreateTime      time.Time
	UpdateTime      time.Time
}

// ReplayPartition is one partition of a replay's range. For a Kafka
// partition (Kind empty) its records are the offsets [Next, End) still to
// read. For a Kinesis shard (Kind "kinesis") they are those of the replay's
// time range after the sequence number After ("": from the range's start),
// until Done.
type ReplayPartition struct {
	Topic     string `json:"topic,omitempty"`
	Partition int32  `json:"partition"`
	Next      int64  `json:"next"`
	End       int64  `json:"end"`

	Kind   string `json:"kind,omitempty"`
	Stream string `json:"stream,omitempty"`
	Shard  string `json:"shard,omitempty"`
	After  string `json:"after,omitempty"`
	Done   bool   `json:"done,omitempty"`
}

const replayColumns = `id, subscription_id, tenant_id, start_time, end_time, state, plan,
	records_total, records_read, events_delivered, error, resume_token, create_time, update_time`

// CreateReplay stores r (ID, subscription, tenant, times, state and, for a
// finished replay, its token set by the caller) and returns it as stored. It
// fails with ErrReplayRunning when the subscription has a RUNNING replay,
// and ErrNotFound when the subscription is gone.
func (s *Store) CreateReplay(ctx context.Context, r *Replay) (*Replay, error) {
	row := s.pool.QueryRow(ctx, `
		INSERT INTO replays (id, subscription_id, tenant_id, start_time, end_time, state, resume_token)
		SELECT $1, id, tenant_id, $4, $5, $6, $7 FROM subscriptions WHERE id = $2 AND tenant_id = $3
		RETURNING `+replayColumns,
		r.ID, r.SubscriptionID, r.TenantID, r.StartTime, r.EndTime, r.State, r.ResumeToken)
	out, err := scanReplay(row)
	if err != nil {
		err = interpretError(err)
		if errors.Is(err, ErrAlreadyExists) {
			err = ErrReplayRunning
		}
		return nil, fmt.Errorf("creating a replay of %s: %w", r.SubscriptionID, err)
	}
	return out, nil
}

// GetReplay returns the tenant's replay id of subscriptionID.
func (s *Store) GetReplay(ctx context.Context, tenantID, subscriptionID, id string) (*Replay, error) {
	row := s.pool.QueryRow(ctx, `SELECT `+replayColumns+` FROM replays
		WHERE tenant_id = $1 AND subscription_id = $2 AND id = $3`, tenantID, subscriptionID, id)
	r, err := scanReplay(row)
	if err != nil {
		return nil, fmt.Errorf("reading replay %s: %w", id, interpretError(err))
	}
	return r, nil
}

// ListReplays returns the tenant's newest limit replays of subscriptionID,
// newest first.
func (s *Store) ListReplays(ctx context.Context, tenantID, subscriptionID string, limit int) ([]*Replay, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+replayColumns+` FROM replays
		WHERE tenant_id = $1 AND subscription_id = $2
		ORDER BY create_time DESC, id DESC LIMIT $3`, tenantID, subscriptionID, limit)
	if err != nil {
		return nil, fmt.Errorf("listing replays: %w", interpretError(err))
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*Replay, error) { return scanReplay(row) })
	if err != nil {
		return nil, fmt.Errorf("listing replays: %w", interpretError(err))
	}
	return out, nil
}

// ClaimReplay claims the oldest RUNNING replay that nobody holds (never
// claimed, or its lease ran out) by setting its lease to now + lease, and
// returns it; nil when there is none. Rows another replica is claiming are
// skipped (FOR UPDATE SKIP LOCKED), so two replicas never run one replay.
func (s *Store) ClaimReplay(ctx context.Context, lease time.Duration) (*Replay, error) {
	row := s.pool.QueryRow(ctx, `
		UPDATE replays SET lease_until = now() + make_interval(secs => $1), update_time = now()
		WHERE id = (
			SELECT id FROM replays
			WHERE state = 'RUNNING' AND (lease_until IS NULL OR lease_until < now())
			ORDER BY create_time
			LIMIT 1
			FOR UPDATE SKIP LOCKED)
		RETURNING `+replayColumns, lease.Seconds())
	r, err := scanReplay(row)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("claiming a replay: %w", interpretError(err))
	}
	return r, nil
}

// ReplayProgress is a checkpoint of a claimed replay.
type ReplayProgress struct {
	Plan            []ReplayPartition
	RecordsTotal    int64
	RecordsRead     int64
	EventsDelivered int64
	// State, when not RUNNING, finishes the replay (with Error for FAILED)
	// and releases its lease.
	State string
	Error string
	// Lease extends the claim from now.
	Lease time.Duration
}

// UpdateReplay checkpoints the RUNNING replay id. It fails with ErrNotFound
// when the replay is no longer running (its subscription was deleted, or it
// was finished elsewhere): the claimant should stop.
func (s *Store) UpdateReplay(ctx context.Context, id string, p ReplayProgress) error {
	plan, err := json.Marshal(p.Plan)
	if err != nil {
		return fmt.Errorf("encoding the plan of replay %s: %w", id, err)
	}
	state := p.State
	if state == "" {
		state = ReplayRunning
	}
	tag, err := s.pool.Exec(ctx, `
		UPDATE replays
		SET plan = $2, records_total = $3, records_read = $4, events_delivered = $5, state = $6, error = $7,
		    lease_until = CASE WHEN $6 = 'RUNNING' THEN now() + make_interval(secs => $8) END,
		    update_time = now()
		WHERE id = $1 AND state = 'RUNNING'`,
		id, plan, p.RecordsTotal, p.RecordsRead, p.EventsDelivered, state, p.Error, p.Lease.Seconds())
	if err != nil {
		return fmt.Errorf("recording progress of replay %s: %w", id, interpretError(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("recording progress of replay %s: %w", id, ErrNotFound)
	}
	return nil
}

func scanReplay(row pgx.Row) (*Replay, error) {
	var r Replay
	var plan []byte
	err := row.Scan(&r.ID, &r.SubscriptionID, &r.TenantID, &r.StartTime, &r.EndTime, &r.State, &plan,
		&r.RecordsTotal, &r.RecordsRead, &r.EventsDelivered, &r.Error, &r.ResumeToken, &r.CreateTime, &r.UpdateTime)
	if err != nil {
		return nil, err
	}
	if plan != nil {
		if err := json.Unmarshal(plan, &r.Plan); err != nil {
			return nil, fmt.Errorf("decoding the plan of replay %s: %w", r.ID, err)
		}
	}
	return &r, nil
}
