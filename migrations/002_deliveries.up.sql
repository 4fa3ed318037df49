-- The durable side of delivery (SPEC §2, §5): poison records, and webhook
-- deliveries that left the hot path (retry queue and dead letters). The happy
-- path writes nothing here: Kafka is the log.

CREATE TABLE poison_records (
    id              bigserial   PRIMARY KEY,
    -- source.Position.Key(): "kafka/<topic>/<partition>/<offset>" or
    -- "kinesis/<stream>/<shard>/<sequence>". Unique, so re-reading a record
    -- after a crash does not keep it twice.
    position_key    text        NOT NULL UNIQUE,
    source_kind     text        NOT NULL,
    topic           text        NOT NULL DEFAULT '',
    kafka_partition integer,
    kafka_offset    bigint,
    stream          text        NOT NULL DEFAULT '',
    shard           text        NOT NULL DEFAULT '',
    sequence_number text        NOT NULL DEFAULT '',
    reason          text        NOT NULL,
    error           text        NOT NULL,
    -- The first bytes of the record (truncated to a configured limit) and
    -- its whole size.
    raw             bytea       NOT NULL,
    raw_size        integer     NOT NULL,
    create_time     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX poison_records_create_time ON poison_records (create_time);

CREATE TABLE deliveries (
    id                 text        PRIMARY KEY,
    subscription_id    text        NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    tenant_id          text        NOT NULL,
    event_id           text        NOT NULL,
    status             text        NOT NULL CHECK (status IN ('RETRYING', 'DEAD', 'DELIVERED')),
    -- The event envelope exactly as first sent; retries resend these bytes.
    event              bytea       NOT NULL,
    attempts           integer     NOT NULL,
    -- When the next attempt is due (RETRYING); a worker claiming the row
    -- pushes it out by a lease, so a crashed worker's claim comes back.
    next_attempt_time  timestamptz,
    first_attempt_time timestamptz NOT NULL,
    last_error         text        NOT NULL DEFAULT '',
    last_status_code   integer     NOT NULL DEFAULT 0,
    create_time        timestamptz NOT NULL DEFAULT now(),
    update_time        timestamptz NOT NULL DEFAULT now(),
    -- One delivery per (subscription, event): enqueueing again after a crash
    -- and re-read is a no-op.
    UNIQUE (subscription_id, event_id)
);
-- The retry workers' claim query.
CREATE INDEX deliveries_due ON deliveries (next_attempt_time) WHERE status = 'RETRYING';
-- ListDeliveries pages.
CREATE INDEX deliveries_subscription_status ON deliveries (subscription_id, status, create_time, id);
