-- Tenants, their API keys, and subscriptions (SPEC §3, §7).

CREATE TABLE tenants (
    id          text        PRIMARY KEY,
    name        text        NOT NULL UNIQUE CHECK (name <> ''),
    create_time timestamptz NOT NULL DEFAULT now()
);

-- API keys are stored as SHA-256 hashes: they are 256-bit random values, so a
-- slow password hash would add latency to every request without adding
-- security. The plaintext is shown once, by `outflow apikey create`.
CREATE TABLE api_keys (
    id          text        PRIMARY KEY,
    tenant_id   text        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text        NOT NULL DEFAULT '',
    key_hash    bytea       NOT NULL UNIQUE,
    create_time timestamptz NOT NULL DEFAULT now(),
    revoke_time timestamptz
);

CREATE TABLE subscriptions (
    id                 text        PRIMARY KEY,
    tenant_id          text        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name               text        NOT NULL,
    feature_view_names text[]      NOT NULL CHECK (cardinality(feature_view_names) > 0),
    -- The subscription's configuration as protobuf JSON (outflow.v1.Subscription
    -- without its output-only fields), so new optional fields need no migration.
    spec               jsonb       NOT NULL,
    state              text        NOT NULL CHECK (state IN ('ACTIVE', 'PAUSED', 'DISABLED')),
    state_reason       text        NOT NULL DEFAULT '',
    secret             text        NOT NULL,
    -- The secret replaced by the last rotation keeps signing until it expires.
    previous_secret             text,
    previous_secret_expire_time timestamptz,
    revision           bigint      NOT NULL DEFAULT 1,
    create_time        timestamptz NOT NULL DEFAULT now(),
    update_time        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

-- Keyset pagination (oldest first) within a tenant.
CREATE INDEX subscriptions_tenant_create_time_id ON subscriptions (tenant_id, create_time, id);
-- "Which subscriptions list this feature view".
CREATE INDEX subscriptions_feature_view_names ON subscriptions USING gin (feature_view_names);

-- Keys the servers share (page-token and resume-token MACs), created on first
-- use so every replica signs and checks with the same key.
CREATE TABLE server_keys (
    name        text        PRIMARY KEY,
    key         bytea       NOT NULL CHECK (length(key) >= 32),
    create_time timestamptz NOT NULL DEFAULT now()
);

-- Every change to a subscription, whoever makes it (API, circuit breaker,
-- operator SQL), is announced to the dispatchers at commit.
CREATE FUNCTION outflow_notify_subscription_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outflow_subscriptions',
        json_build_object('op', lower(TG_OP), 'id', COALESCE(NEW.id, OLD.id))::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER subscriptions_notify
    AFTER INSERT OR UPDATE OR DELETE ON subscriptions
    FOR EACH ROW EXECUTE FUNCTION outflow_notify_subscription_change();
