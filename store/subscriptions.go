package store

import (
	"context"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
)

var base32NoPad = base32.StdEncoding.WithPadding(base32.NoPadding)

// Subscription is a stored subscription: its API form plus what the API never
// shows whole (the tenant, the revision behind the etag, the signing secrets).
type Subscription struct {
	// Proto is the subscription as the API shows it, with id, state, times
	// filled in; Secret and Etag are left empty (the server decides when to
	// show them).
	Proto *outflowv1.Subscription
	// TenantID owns the subscription.
	TenantID string
	// Revision increases by one on every change; etags are made from it.
	Revision int64
	// Secrets sign the webhook requests, decrypted.
	Secrets Secrets
}

// MaxPreviousSecrets bounds the rotated-out secrets that still sign, so that
// a burst of rotations cannot grow every request's signature header without
// bound: a rotation beyond it fails with ErrLimitExceeded until the oldest
// overlap ends, rather than cutting a secret's overlap short.
const MaxPreviousSecrets = 10

// Secrets are a subscription's webhook signing secrets ("whsec_…").
type Secrets struct {
	// Current signs every request.
	Current string
	// Previous are the secrets replaced by rotations, newest first, each
	// signing requests until its ExpireTime so that receivers can roll over
	// (SPEC §5); every secret rotated out keeps its whole overlap, however
	// many rotations follow it.
	Previous []PreviousSecret
}

// PreviousSecret is a rotated-out secret and the end of its overlap.
type PreviousSecret struct {
	Secret     string    `json:"secret"`
	ExpireTime time.Time `json:"expire_time"`
}

// Signs reports whether p still signs a request sent at now: its overlap
// lasts.
func (p PreviousSecret) Signs(now time.Time) bool {
	return p.Secret != "" && now.Before(p.ExpireTime)
}

// Active returns the secrets that sign a request sent at now: the current
// one, then the previous ones whose overlap lasts.
func (s Secrets) Active(now time.Time) []string {
	out := []string{s.Current}
	for _, p := range s.Previous {
		if p.Signs(now) {
			out = append(out, p.Secret)
		}
	}
	return out
}

// Equal reports whether s and o hold the same secrets and expiry times.
func (s Secrets) Equal(o Secrets) bool {
	return s.Current == o.Current && slices.EqualFunc(s.Previous, o.Previous, func(a, b PreviousSecret) bool {
		return a.Secret == b.Secret && a.ExpireTime.Equal(b.ExpireTime)
	})
}

// ListQuery selects a page of a tenant's subscriptions, oldest first.
type ListQuery struct {
	// FeatureViewName keeps only subscriptions that list it; empty keeps all.
	FeatureViewName string
	// After continues after this position; nil starts at the beginning.
	After *Cursor
	// Limit is the most rows returned; it must be positive.
	Limit int
}

// Cursor is a position in the (create_time, id) order of a tenant's
// subscriptions.
type Cursor struct {
	CreateTime time.Time
	ID         string
}

const subscriptionColumns = `id, tenant_id, name, feature_view_names, spec, state, state_reason,
	secret, previous_secrets, revision, create_time, update_time`

var (
	specMarshal   = protojson.MarshalOptions{UseProtoNames: true}
	specUnmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}
)

// CreateSubscription stores sub (its id must be set) for the tenant with
// secret as its signing secret. It fails with ErrAlreadyExists when the
// tenant has a subscription of that name, and ErrLimitExceeded when the
// tenant already has maxPerTenant subscriptions.
func (s *Store) CreateSubscription(ctx context.Context, tenantID string, sub *outflowv1.Subscription, secret string, maxPerTenant int) (*Subscription, error) {
	spec, err := marshalSpec(sub)
	if err != nil {
		return nil, err
	}
	sealed, err := s.keys.seal(sub.GetId(), secret)
	if err != nil {
		return nil, err
	}
	var out *Subscription
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Serialise the tenant's creates on its row so the count stays true
		// until commit. The count must be a statement of its own: under READ
		// COMMITTED a statement that waited for the lock still reads with the
		// snapshot it took before waiting, so it would miss the rows the
		// creates it waited for committed. NO KEY UPDATE leaves the foreign
		// keys' KEY SHARE locks (API keys, subscriptions) unblocked.
		var n int
		if err := tx.QueryRow(ctx, `SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE`, tenantID).Scan(&n); err != nil {
			return interpretError(err) // no such tenant: ErrNotFound
		}
		err := tx.QueryRow(ctx, `SELECT count(*) FROM subscriptions WHERE tenant_id = $1`, tenantID).Scan(&n)
		if err != nil {
			return interpretError(err)
		}
		if n >= maxPerTenant {
			return fmt.Errorf("%w: a tenant may have %d subscriptions", ErrLimitExceeded, maxPerTenant)
		}
		row := tx.QueryRow(ctx, `
			INSERT INTO subscriptions (id, tenant_id, name, feature_view_names, spec, state, state_reason, secret)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
			RETURNING `+subscriptionColumns,
			sub.GetId(), tenantID, sub.GetName(), sub.GetFeatureViewNames(), spec,
			sub.GetState().String(), sub.GetStateReason(), sealed)
		out, err = s.scanSubscription(row)
		return interpretError(err)
	})
	if err != nil {
		return nil, fmt.Errorf("creating subscription %q: %w", sub.GetName(), err)
	}
	return out, nil
}

// GetSubscription returns the tenant's subscription with the given id, or
// ErrNotFound (also when another tenant owns it).
func (s *Store) GetSubscription(ctx context.Context, tenantID, id string) (*Subscription, error) {
	row := s.pool.QueryRow(ctx,
		`SELECT `+subscriptionColumns+` FROM subscriptions WHERE tenant_id = $1 AND id = $2`, tenantID, id)
	sub, err := s.scanSubscription(row)
	if err != nil {
		return nil, fmt.Errorf("reading subscription %s: %w", id, interpretError(err))
	}
	return sub, nil
}

// ListSubscriptions returns up to q.Limit of the tenant's subscriptions in
// (create_time, id) order after q.After.
func (s *Store) ListSubscriptions(ctx context.Context, tenantID string, q ListQuery) ([]*Subscription, error) {
	var afterTime *time.Time
	var afterID string
	if q.After != nil {
		afterTime, afterID = &q.After.CreateTime, q.After.ID
	}
	rows, err := s.pool.Query(ctx, `
		SELECT `+subscriptionColumns+` FROM subscriptions
		WHERE tenant_id = $1
		  AND ($2 = '' OR feature_view_names @> ARRAY[$2])
		  AND ($3::timestamptz IS NULL OR (create_time, id) > ($3, $4))
		ORDER BY create_time, id
		LIMIT $5`, tenantID, q.FeatureViewName, afterTime, afterID, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("listing subscriptions: %w", interpretError(err))
	}
	subs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*Subscription, error) {
		return s.scanSubscription(row)
	})
	if err != nil {
		return nil, fmt.Errorf("listing subscriptions: %w", interpretError(err))
	}
	return subs, nil
}

// UpdateSubscription replaces the configuration and state of the tenant's
// subscription sub.Id, provided its revision is still expectedRevision. It
// fails with ErrNotFound when there is no such subscription, ErrConflict when
// the revision moved on, and ErrAlreadyExists when the new name is taken.
func (s *Store) UpdateSubscription(ctx context.Context, tenantID string, sub *outflowv1.Subscription, expectedRevision int64) (*Subscription, error) {
	spec, err := marshalSpec(sub)
	if err != nil {
		return nil, err
	}
	row := s.pool.QueryRow(ctx, `
		UPDATE subscriptions
		SET name = $4, feature_view_names = $5, spec = $6, state = $7, state_reason = $8,
		    revision = revision + 1, update_time = now()
		WHERE tenant_id = $1 AND id = $2 AND revision = $3
		RETURNING `+subscriptionColumns,
		tenantID, sub.GetId(), expectedRevision, sub.GetName(), sub.GetFeatureViewNames(), spec,
		sub.GetState().String(), sub.GetStateReason())
	out, err := s.scanSubscription(row)
	if err != nil {
		return nil, fmt.Errorf("updating subscription %s: %w", sub.GetId(), s.missingOrConflict(ctx, tenantID, sub.GetId(), interpretError(err)))
	}
	return out, nil
}

// DeleteSubscription deletes the tenant's subscription id; with a positive
// expectedRevision, only while the revision still matches (ErrConflict
// otherwise).
func (s *Store) DeleteSubscription(ctx context.Context, tenantID, id string, expectedRevision int64) error {
	tag, err := s.pool.Exec(ctx, `
		DELETE FROM subscriptions
		WHERE tenant_id = $1 AND id = $2 AND ($3 <= 0 OR revision = $3)`, tenantID, id, expectedRevision)
	if err != nil {
		return fmt.Errorf("deleting subscription %s: %w", id, interpretError(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("deleting subscription %s: %w", id, s.missingOrConflict(ctx, tenantID, id, ErrNotFound))
	}
	return nil
}

// RotateSecret makes secret the subscription's signing secret. The one it
// replaces keeps signing for overlap, and so does every secret rotated out
// earlier whose overlap has not ended; a rotation that would leave more than
// MaxPreviousSecrets of them fails with ErrLimitExceeded.
func (s *Store) RotateSecret(ctx context.Context, tenantID, id, secret string, overlap time.Duration) (*Subscription, error) {
	sealed, err := s.keys.seal(id, secret)
	if err != nil {
		return nil, err
	}
	var out *Subscription
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var (
			current string
			raw     []byte
			now     time.Time
		)
		err := tx.QueryRow(ctx, `
			SELECT secret, previous_secrets, now() FROM subscriptions
			WHERE tenant_id = $1 AND id = $2 FOR UPDATE`, tenantID, id).Scan(&current, &raw, &now)
		if err != nil {
			return interpretError(err)
		}
		var previous []PreviousSecret
		if err := json.Unmarshal(raw, &previous); err != nil {
			return fmt.Errorf("decoding the previous secrets: %w", err)
		}
		// Stored forms move as they are: they stay encrypted, bound to id.
		kept := []PreviousSecret{{Secret: current, ExpireTime: now.Add(overlap)}}
		for _, p := range previous {
			if now.Before(p.ExpireTime) {
				kept = append(kept, p)
			}
		}
		if len(kept) > MaxPreviousSecrets {
			return fmt.Errorf("%w: at most %d rotated-out secrets may overlap; the oldest expires at %s",
				ErrLimitExceeded, MaxPreviousSecrets, kept[len(kept)-1].ExpireTime.UTC().Format(time.RFC3339))
		}
		enc, err := json.Marshal(kept)
		if err != nil {
			return fmt.Errorf("encoding the previous secrets: %w", err)
		}
		row := tx.QueryRow(ctx, `
			UPDATE subscriptions
			SET previous_secrets = $3, secret = $4, revision = revision + 1, update_time = now()
			WHERE tenant_id = $1 AND id = $2
			RETURNING `+subscriptionColumns, tenantID, id, enc, sealed)
		out, err = s.scanSubscription(row)
		return interpretError(err)
	})
	if err != nil {
		return nil, fmt.Errorf("rotating the secret of subscription %s: %w", id, err)
	}
	return out, nil
}

// missingOrConflict tells a write that matched no row because the row is gone
// (ErrNotFound) from one that lost a race (ErrConflict).
func (s *Store) missingOrConflict(ctx context.Context, tenantID, id string, err error) error {
	if err != ErrNotFound {
		return err
	}
	var exists bool
	if qerr := s.pool.QueryRow(ctx,
		`SELECT EXISTS (SELECT 1 FROM subscriptions WHERE tenant_id = $1 AND id = $2)`,
		tenantID, id).Scan(&exists); qerr != nil {
		return interpretError(qerr)
	}
	if exists {
		return ErrConflict
	}
	return ErrNotFound
}

// marshalSpec renders the configuration part of sub: the fields kept in
// their own columns, and the output-only ones, are left out.
func marshalSpec(sub *outflowv1.Subscription) ([]byte, error) {
	spec := proto.CloneOf(sub)
	spec.Id, spec.Name, spec.FeatureViewNames = "", "", nil
	spec.State, spec.StateReason, spec.Secret, spec.Etag = 0, "", "", ""
	spec.CreateTime, spec.UpdateTime = nil, nil
	b, err := specMarshal.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("encoding the subscription: %w", err)
	}
	return b, nil
}

func (s *Store) scanSubscription(row pgx.Row) (*Subscription, error) {
	var (
		out                     Subscription
		id, name, state, reason string
		fvs                     []string
		spec, previous          []byte
		secret                  string
		createTime, updateTime  time.Time
	)
	err := row.Scan(&id, &out.TenantID, &name, &fvs, &spec, &state, &reason,
		&secret, &previous, &out.Revision, &createTime, &updateTime)
	if err != nil {
		return nil, err
	}
	sub := &outflowv1.Subscription{}
	if err := specUnmarshal.Unmarshal(spec, sub); err != nil {
		return nil, fmt.Errorf("decoding stored subscription %s: %w", id, err)
	}
	sub.Id, sub.Name, sub.FeatureViewNames = id, name, fvs
	sub.State = outflowv1.Subscription_State(outflowv1.Subscription_State_value[state])
	sub.StateReason = reason
	sub.CreateTime, sub.UpdateTime = timestamppb.New(createTime), timestamppb.New(updateTime)
	out.Proto = sub
	if out.Secrets.Current, err = s.keys.open(id, secret); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(previous, &out.Secrets.Previous); err != nil {
		return nil, fmt.Errorf("decoding stored subscription %s's previous secrets: %w", id, err)
	}
	for i := range out.Secrets.Previous {
		p := &out.Secrets.Previous[i]
		if p.Secret, err = s.keys.open(id, p.Secret); err != nil {
			return nil, err
		}
	}
	return &out, nil
}

// AllSubscriptions returns every tenant's subscriptions, in no particular
// order. The dispatcher loads its matcher with it; it is not for the API,
// which must always scope by tenant.
func (s *Store) AllSubscriptions(ctx context.Context) ([]*Subscription, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+subscriptionColumns+` FROM subscriptions`)
	if err != nil {
		return nil, fmt.Errorf("loading subscriptions: %w", interpretError(err))
	}
	subs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*Subscription, error) {
		return s.scanSubscription(row)
	})
	if err != nil {
		return nil, fmt.Errorf("loading subscriptions: %w", interpretError(err))
	}
	return subs, nil
}

// SubscriptionByID returns the subscription id whatever its tenant, or
// ErrNotFound. Like AllSubscriptions it is for the dispatcher, which follows
// change notifications that carry only ids.
func (s *Store) SubscriptionByID(ctx context.Context, id string) (*Subscription, error) {
	row := s.pool.QueryRow(ctx, `SELECT `+subscriptionColumns+` FROM subscriptions WHERE id = $1`, id)
	sub, err := s.scanSubscription(row)
	if err != nil {
		return nil, fmt.Errorf("reading subscription %s: %w", id, interpretError(err))
	}
	return sub, nil
}
