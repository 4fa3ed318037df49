package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Delivery statuses, as stored and as named by the API.
const (
	StatusRetrying  = "RETRYING"
	StatusDead      = "DEAD"
	StatusDelivered = "DELIVERED"
)

// Delivery is a webhook event that left the hot path: queued for retry,
// dead-lettered, or delivered by a retry.
type Delivery struct {
	ID             string
	SubscriptionID string
	TenantID       string
	EventID        string
	Status         string
	// Event is the envelope exactly as first sent.
	Event            []byte
	Attempts         int
	NextAttemptTime  time.Time // zero unless RETRYING
	FirstAttemptTime time.Time
	LastError        string
	LastStatusCode   int
	CreateTime       time.Time
	UpdateTime       time.Time
}

const deliveryColumns = `id, subscription_id, tenant_id, event_id, status, event, attempts,
	next_attempt_time, first_attempt_time, last_error, last_status_code, create_time, update_time`

// EnqueueDelivery stores d (its ID, subscription, tenant, event, status,
// attempts, times and last error set by the caller). It reports false,
// without error, when the subscription already has a delivery of that event:
// a record re-read after a crash is queued once.
func (s *Store) EnqueueDelivery(ctx context.Context, d *Delivery) (bool, error) {
	return s.insertDelivery(ctx, d, "queueing delivery", `DO NOTHING`)
}

// RequeueDelivery is EnqueueDelivery for a replayed event: when the
// subscription already has a delivery of the event that is DEAD or
// DELIVERED, the replay asked for the event anew, so that row takes d's
// status, attempts, times, error and event bytes. A RETRYING row is left
// alone (it will be sent anyway). It reports whether a row was written.
func (s *Store) RequeueDelivery(ctx context.Context, d *Delivery) (bool, error) {
	return s.insertDelivery(ctx, d, "queueing replayed delivery", `DO UPDATE
		SET status = excluded.status, event = excluded.event, attempts = excluded.attempts,
		    next_attempt_time = excluded.next_attempt_time, first_attempt_time = excluded.first_attempt_time,
		    last_error = excluded.last_error, last_status_code = excluded.last_status_code, update_time = now()
		WHERE deliveries.status <> 'RETRYING'`)
}

// Delivery conflict clauses of insertDelivery and InsertDeliveries.
const (
	onConflictKeep    = `DO NOTHING`
	onConflictRequeue = `DO UPDATE
		SET status = excluded.status, event = excluded.event, attempts = excluded.attempts,
		    next_attempt_time = excluded.next_attempt_time, first_attempt_time = excluded.first_attempt_time,
		    last_error = excluded.last_error, last_status_code = excluded.last_status_code, update_time = now()
		WHERE deliveries.status <> 'RETRYING'`
	insertDeliverySQL = `
		INSERT INTO deliveries (id, subscription_id, tenant_id, event_id, status, event, attempts,
			next_attempt_time, first_attempt_time, last_error, last_status_code)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT (subscription_id, event_id) `
)

// InsertDeliveries stores several deliveries in one round trip and one
// transaction: each like EnqueueDelivery, or like RequeueDelivery where
// requeue[i] is true. Either all are stored or none is. The dispatcher's
// writers use it so that a burst of failed or shed deliveries costs a few
// round trips, not one each.
func (s *Store) InsertDeliveries(ctx context.Context, ds []*Delivery, requeue []bool) error {
	var b pgx.Batch
	for i, d := range ds {
		clause := onConflictKeep
		if i < len(requeue) && requeue[i] {
			clause = onConflictRequeue
		}
		b.Queue(insertDeliverySQL+clause, d.ID, d.SubscriptionID, d.TenantID, d.EventID, d.Status, d.Event,
			d.Attempts, nullTime(d.NextAttemptTime), d.FirstAttemptTime, d.LastError, d.LastStatusCode)
	}
	if err := s.pool.SendBatch(ctx, &b).Close(); err != nil {
		return fmt.Errorf("queueing %d deliveries: %w", len(ds), interpretError(err))
	}
	return nil
}

// insertDelivery inserts d, resolving a delivery of the same event with
// onConflict (the rest of an ON CONFLICT (subscription_id, event_id)
// clause); it reports whether a row was written.
func (s *Store) insertDelivery(ctx context.Context, d *Delivery, what, onConflict string) (bool, error) {
	tag, err := s.pool.Exec(ctx, `
		INSERT INTO deliveries (id, subscription_id, tenant_id, event_id, status, event, attempts,
			next_attempt_time, first_attempt_time, last_error, last_status_code)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT (subscription_id, event_id) `+onConflict,
		d.ID, d.SubscriptionID, d.TenantID, d.EventID, d.Status, d.Event, d.Attempts,
		nullTime(d.NextAttemptTime), d.FirstAttemptTime, d.LastError, d.LastStatusCode)
	if err != nil {
		return false, fmt.Errorf("%s of %s to %s: %w", what, d.EventID, d.SubscriptionID, interpretError(err))
	}
	return tag.RowsAffected() == 1, nil
}

// ClaimDueDeliveries claims up to limit RETRYING deliveries whose next
// attempt is due, oldest first, by pushing their next attempt out by lease.
// Deliveries of PAUSED or DISABLED subscriptions wait where they are: they
// become due again when the subscription is ACTIVE.
// Rows another replica is claiming are skipped (FOR UPDATE SKIP LOCKED), so
// replicas never claim the same row at once; a claimant that dies before
// FinishAttempt loses its claim when the lease runs out.
func (s *Store) ClaimDueDeliveries(ctx context.Context, limit int, lease time.Duration) ([]*Delivery, error) {
	rows, err := s.pool.Query(ctx, `
		UPDATE deliveries SET next_attempt_time = now() + make_interval(secs => $2), update_time = now()
		WHERE id IN (
			SELECT d.id FROM deliveries d
			JOIN subscriptions s ON s.id = d.subscription_id AND s.state = 'ACTIVE'
			WHERE d.status = 'RETRYING' AND d.next_attempt_time <= now()
			ORDER BY d.next_attempt_time
			LIMIT $1
			FOR UPDATE OF d SKIP LOCKED)
		RETURNING `+deliveryColumns, limit, lease.Seconds())
	if err != nil {
		return nil, fmt.Errorf("claiming due deliveries: %w", interpretError(err))
	}
	return collectDeliveries(rows)
}

// ClaimParams says what one fair claim may take.
type ClaimParams struct {
	// Limit bounds the deliveries claimed in all.
	Limit int
	// Lease is how long the claimed deliveries are reserved.
	Lease time.Duration
	// PerSubscription bounds one subscription's deliveries in flight: those
	// claimed now plus its Busy count. Zero means Limit.
	PerSubscription int
	// Busy holds, by subscription id, how many of its deliveries the
	// caller is attempting already.
	Busy map[string]int
}

// ClaimFair claims due RETRYING deliveries of ACTIVE subscriptions like
// ClaimDueDeliveries, but fairly: subscriptions take turns (every
// subscription's oldest due delivery comes before any subscription's second)
// and none gets more than PerSubscription in flight, counting its Busy ones.
// One subscription with a deep queue of slow or failing retries therefore
// never takes every worker the others need.
//
// The walk goes over the subscriptions that have RETRYING deliveries (a skip
// scan of deliveries_retrying_by_subscription), so an idle queue costs one
// index probe however many subscriptions exist.
func (s *Store) ClaimFair(ctx context.Context, p ClaimParams) ([]*Delivery, error) {
	per := p.PerSubscription
	if per <= 0 || per > p.Limit {
		per = p.Limit
	}
	ids := make([]string, 0, len(p.Busy))
	busy := make([]int32, 0, len(p.Busy))
	for id, n := range p.Busy {
		if n > 0 {
			ids, busy = append(ids, id), append(busy, int32(n))
		}
	}
	rows, err := s.pool.Query(ctx, `
		WITH RECURSIVE subs(id) AS (
			(SELECT subscription_id FROM deliveries WHERE status = 'RETRYING'
			 ORDER BY subscription_id LIMIT 1)
			UNION ALL
			SELECT (SELECT d.subscription_id FROM deliveries d
			        WHERE d.status = 'RETRYING' AND d.subscription_id > subs.id
			        ORDER BY d.subscription_id LIMIT 1)
			FROM subs WHERE subs.id IS NOT NULL
		), picked AS (
			SELECT c.id, c.next_attempt_time,
			       row_number() OVER (PARTITION BY c.subscription_id ORDER BY c.next_attempt_time) AS rn,
			       COALESCE(b.n, 0) AS busy
			FROM subs
			JOIN subscriptions s ON s.id = subs.id AND s.state = 'ACTIVE'
			CROSS JOIN LATERAL (
				SELECT d.id, d.subscription_id, d.next_attempt_time FROM deliveries d
				WHERE d.subscription_id = subs.id AND d.status = 'RETRYING' AND d.next_attempt_time <= now()
				ORDER BY d.next_attempt_time
				LIMIT $3
				FOR UPDATE OF d SKIP LOCKED) c
			LEFT JOIN unnest($4::text[], $5::int[]) AS b(id, n) ON b.id = subs.id
		)
		UPDATE deliveries SET next_attempt_time = now() + make_interval(secs => $2), update_time = now()
		WHERE id IN (
			SELECT id FROM picked WHERE rn + busy <= $3
			ORDER BY rn, next_attempt_time
			LIMIT $1)
		RETURNING `+deliveryColumns, p.Limit, p.Lease.Seconds(), per, ids, busy)
	if err != nil {
		return nil, fmt.Errorf("claiming due deliveries fairly: %w", interpretError(err))
	}
	return collectDeliveries(rows)
}

// AttemptResult is what FinishAttempt records.
type AttemptResult struct {
	// Status is the delivery's new status.
	Status string
	// NextAttemptTime is when to try again (RETRYING only).
	NextAttemptTime time.Time
	LastError       string
	LastStatusCode  int
	// Uncounted leaves attempts as it was: the attempt failed for a reason that is the
	// operator's, not the subscription's (the feature store refused the gateway's
	// credentials), so it must not spend the retry policy.
	Uncounted bool
}

// FinishAttempt records one more attempt of delivery id and its outcome.
func (s *Store) FinishAttempt(ctx context.Context, id string, r AttemptResult) error {
	counted := 1
	if r.Uncounted {
		counted = 0
	}
	tag, err := s.pool.Exec(ctx, `
		UPDATE deliveries
		SET status = $2, attempts = attempts + $6, next_attempt_time = $3,
		    last_error = $4, last_status_code = $5, update_time = now()
		WHERE id = $1`, id, r.Status, nullTime(r.NextAttemptTime), r.LastError, r.LastStatusCode, counted)
	if err != nil {
		return fmt.Errorf("recording an attempt of delivery %s: %w", id, interpretError(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("recording an attempt of delivery %s: %w", id, ErrNotFound)
	}
	return nil
}

// DeliveryQuery selects a page of a subscription's deliveries, oldest first.
type DeliveryQuery struct {
	TenantID       string
	SubscriptionID string
	// Statuses keeps deliveries with one of these statuses.
	Statuses []string
	After    *Cursor
	Limit    int
}

// ListDeliveries returns a page of the tenant's deliveries for a
// subscription.
func (s *Store) ListDeliveries(ctx context.Context, q DeliveryQuery) ([]*Delivery, error) {
	var afterTime *time.Time
	var afterID string
	if q.After != nil {
		afterTime, afterID = &q.After.CreateTime, q.After.ID
	}
	rows, err := s.pool.Query(ctx, `
		SELECT `+deliveryColumns+` FROM deliveries
		WHERE tenant_id = $1 AND subscription_id = $2 AND status = ANY($3)
		  AND ($4::timestamptz IS NULL OR (create_time, id) > ($4, $5))
		ORDER BY create_time, id
		LIMIT $6`, q.TenantID, q.SubscriptionID, q.Statuses, afterTime, afterID, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("listing deliveries: %w", interpretError(err))
	}
	return collectDeliveries(rows)
}

// RetryDeliveryNow makes the tenant's delivery id of subscriptionID due at
// once (RETRYING, its attempt count kept), whether it was retrying or dead.
// A delivered one is left alone and returned as it is.
func (s *Store) RetryDeliveryNow(ctx context.Context, tenantID, subscriptionID, id string) (*Delivery, error) {
	row := s.pool.QueryRow(ctx, `
		UPDATE deliveries
		SET status = CASE WHEN status = 'DELIVERED' THEN status ELSE 'RETRYING' END,
		    next_attempt_time = CASE WHEN status = 'DELIVERED' THEN NULL ELSE now() END,
		    update_time = now()
		WHERE tenant_id = $1 AND subscription_id = $2 AND id = $3
		RETURNING `+deliveryColumns, tenantID, subscriptionID, id)
	d, err := scanDelivery(row)
	if err != nil {
		return nil, fmt.Errorf("scheduling delivery %s: %w", id, interpretError(err))
	}
	return d, nil
}

// RetryQueueDepth counts RETRYING deliveries, for the retry-queue metric.
func (s *Store) RetryQueueDepth(ctx context.Context) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM deliveries WHERE status = 'RETRYING'`).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting the retry queue: %w", interpretError(err))
	}
	return n, nil
}

// SetSubscriptionState changes a subscription's state on the server's
// behalf (a 410 Gone, the circuit breaker), with the reason users see.
func (s *Store) SetSubscriptionState(ctx context.Context, id, state, reason string) error {
	// Already in that state with that reason: no write, no notification.
	_, err := s.pool.Exec(ctx, `
		UPDATE subscriptions SET state = $2, state_reason = $3, revision = revision + 1, update_time = now()
		WHERE id = $1 AND (state <> $2 OR state_reason <> $3)`, id, state, reason)
	if err != nil {
		return fmt.Errorf("setting subscription %s %s: %w", id, state, interpretError(err))
	}
	return nil
}

// Poison is a record that could not be decoded, kept for inspection.
type Poison struct {
	PositionKey    string
	SourceKind     string
	Topic          string
	Partition      int32
	Offset         int64
	Stream         string
	Shard          string
	SequenceNumber string
	Reason         string
	Error          string
	Raw            []byte
	RawSize        int
}

// InsertPoison keeps a poison record; keeping the same position twice is a
// no-op.
func (s *Store) InsertPoison(ctx context.Context, p Poison) error {
	var partition *int32
	var offset *int64
	if p.SourceKind == "kafka" {
		partition, offset = &p.Partition, &p.Offset
	}
	_, err := s.pool.Exec(ctx, `
		INSERT INTO poison_records (position_key, source_kind, topic, kafka_partition, kafka_offset,
			stream, shard, sequence_number, reason, error, raw, raw_size)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
		ON CONFLICT (position_key) DO NOTHING`,
		p.PositionKey, p.SourceKind, p.Topic, partition, offset, p.Stream, p.Shard, p.SequenceNumber,
		p.Reason, p.Error, p.Raw, p.RawSize)
	if err != nil {
		return fmt.Errorf("keeping poison record %s: %w", p.PositionKey, interpretError(err))
	}
	return nil
}

func collectDeliveries(rows pgx.Rows) ([]*Delivery, error) {
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*Delivery, error) {
		return scanDelivery(row)
	})
	if err != nil {
		return nil, fmt.Errorf("reading deliveries: %w", interpretError(err))
	}
	return out, nil
}

func scanDelivery(row pgx.Row) (*Delivery, error) {
	var d Delivery
	var next *time.Time
	err := row.Scan(&d.ID, &d.SubscriptionID, &d.TenantID, &d.EventID, &d.Status, &d.Event, &d.Attempts,
		&next, &d.FirstAttemptTime, &d.LastError, &d.LastStatusCode, &d.CreateTime, &d.UpdateTime)
	if err != nil {
		return nil, err
	}
	if next != nil {
		d.NextAttemptTime = *next
	}
	return &d, nil
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
