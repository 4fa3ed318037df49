package store

import (
	"context"
	"encoding/json"
	"fmt"
)

// SubscriptionChannel is the PostgreSQL notification channel on which every
// insert, update and delete of a subscription is announced at commit (a
// trigger does it, so changes made outside the API are announced too).
const SubscriptionChannel = "outflow_subscriptions"

// SubscriptionChange is the payload of a notification on
// SubscriptionChannel.
type SubscriptionChange struct {
	// Op is "insert", "update" or "delete".
	Op string `json:"op"`
	// ID is the subscription's id.
	ID string `json:"id"`
}

// ListenSubscriptions holds a connection that listens on
// SubscriptionChannel and calls fn for each change until ctx is done or the
// connection fails; its error says which. Notifications sent while no
// listener is connected are lost, so callers also resync periodically.
// ready, when not nil, is called once the LISTEN is in place.
func (s *Store) ListenSubscriptions(ctx context.Context, ready func(), fn func(SubscriptionChange)) error {
	pooled, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("listening for subscription changes: %w", err)
	}
	// The connection will carry a LISTEN: take it out of the pool for good.
	conn := pooled.Hijack()
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+SubscriptionChannel); err != nil {
		return fmt.Errorf("listening for subscription changes: %w", err)
	}
	if ready != nil {
		ready()
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return fmt.Errorf("waiting for subscription changes: %w", err)
		}
		var change SubscriptionChange
		if err := json.Unmarshal([]byte(n.Payload), &change); err != nil {
			continue // not ours; the periodic resync covers anything missed
		}
		fn(change)
	}
}
