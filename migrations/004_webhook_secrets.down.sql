-- Back to one previous secret: the newest is kept. Secrets encrypted by the
-- gateway stay encrypted, and a gateway from before 004 cannot read them:
-- rotate every subscription's secret after downgrading.

ALTER TABLE subscriptions ADD COLUMN previous_secret text,
    ADD COLUMN previous_secret_expire_time timestamptz;

UPDATE subscriptions
SET previous_secret = previous_secrets -> 0 ->> 'secret',
    previous_secret_expire_time = (previous_secrets -> 0 ->> 'expire_time')::timestamptz
WHERE jsonb_array_length(previous_secrets) > 0;

ALTER TABLE subscriptions DROP COLUMN previous_secrets;
