-- Kinesis shards (SPEC §8): checkpoints and leases, so that the replicas of a
-- gateway split a stream's shards without a leader, and a replica that dies
-- has its shards taken over once its leases expire (what the Kinesis Client
-- Library keeps in DynamoDB, kept here instead).

CREATE TABLE kinesis_shards (
    -- The lease group: every replica reading the same streams uses the same
    -- one, as with a Kafka consumer group.
    group_id      text        NOT NULL,
    stream        text        NOT NULL,
    shard_id      text        NOT NULL,
    -- The shards this one was split or merged from; it is read only once
    -- they are finished, so per-entity order survives resharding.
    parent_ids    text[]      NOT NULL DEFAULT '{}',
    -- The sequence number of the last record that, with every record before
    -- it in the shard, was handled (SPEC §5 commit rule); reading resumes
    -- after it. NULL: nothing handled yet.
    checkpoint    text,
    -- Set once the shard is closed (split or merged) and every record of it
    -- was handled: its children may be read.
    finished      boolean     NOT NULL DEFAULT false,
    -- The replica holding the lease, until lease_until; NULL when free.
    owner         text,
    lease_until   timestamptz,
    update_time   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, stream, shard_id)
);
