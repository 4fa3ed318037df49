-- Cursors of detached subscriptions (dispatcher package doc, "Detach and
-- rejoin"): a webhook subscription whose receiver cannot keep up is read on
-- its own from here, so the shared consumer may commit past its events.
-- Written in batches by the subscription's catch-up reader, never per event;
-- deleted when the subscription rejoins the shared pace.

CREATE TABLE subscription_cursors (
    subscription_id text        NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    topic           text        NOT NULL,
    partition_id    integer     NOT NULL,
    -- The first offset of the partition the subscription has not settled
    -- (delivered, dead-lettered or durably queued for retry).
    next_offset     bigint      NOT NULL,
    update_time     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription_id, topic, partition_id)
);
