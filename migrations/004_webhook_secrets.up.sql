-- Webhook secrets (SPEC §5, §7):
-- * Every secret rotated out keeps signing until its own overlap ends, not
--   only the last one: previous_secrets holds them all, newest first, as
--   [{"secret": …, "expire_time": …}] (at most store.MaxPreviousSecrets).
-- * Secrets are encrypted at rest by the gateway (AES-256-GCM, the key id
--   stored in the value: "v1:<key id>:<ciphertext>"). Rows written before
--   hold plaintext ("whsec_…"), which the gateway still reads; `outflow
--   secrets rotate-key` encrypts them.

ALTER TABLE subscriptions ADD COLUMN previous_secrets jsonb NOT NULL DEFAULT '[]'
    CHECK (jsonb_typeof(previous_secrets) = 'array');

UPDATE subscriptions
SET previous_secrets = jsonb_build_array(jsonb_build_object(
        'secret', previous_secret, 'expire_time', previous_secret_expire_time))
WHERE previous_secret IS NOT NULL AND previous_secret_expire_time IS NOT NULL;

ALTER TABLE subscriptions DROP COLUMN previous_secret, DROP COLUMN previous_secret_expire_time;
