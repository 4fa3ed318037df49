-- Replays (SPEC §6 ReplaySubscription): a subscription's events of a time
-- range, re-read from the source and re-delivered with their original ids.
-- A replica claims a RUNNING replay with a lease (FOR UPDATE SKIP LOCKED) and
-- checkpoints its progress here, so a replay survives the replica that ran it.

CREATE TABLE replays (
    id               text        PRIMARY KEY,
    subscription_id  text        NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    tenant_id        text        NOT NULL,
    start_time       timestamptz NOT NULL,
    end_time         timestamptz NOT NULL CHECK (end_time > start_time),
    state            text        NOT NULL CHECK (state IN ('RUNNING', 'SUCCEEDED', 'FAILED')),
    -- Per partition: the offsets the range resolved to and the next offset to
    -- read, as [{"topic":…,"partition":…,"next":…,"end":…}]; NULL until the
    -- first claimant resolves the offsets.
    plan             jsonb,
    records_total    bigint      NOT NULL DEFAULT 0,
    records_read     bigint      NOT NULL DEFAULT 0,
    events_delivered bigint      NOT NULL DEFAULT 0,
    error            text        NOT NULL DEFAULT '',
    -- Stream subscriptions: the resume token at start_time.
    resume_token     text        NOT NULL DEFAULT '',
    -- A claimant owns the replay until lease_until; then another may take it.
    lease_until      timestamptz,
    create_time      timestamptz NOT NULL DEFAULT now(),
    update_time      timestamptz NOT NULL DEFAULT now()
);
-- One running replay per subscription.
CREATE UNIQUE INDEX replays_one_running ON replays (subscription_id) WHERE state = 'RUNNING';
-- ListReplays, newest first.
CREATE INDEX replays_subscription_create_time ON replays (subscription_id, create_time DESC);
