-- The retry workers claim fairly across subscriptions (store.ClaimFair): they
-- walk the subscriptions that have RETRYING rows and take each one's oldest
-- due rows. This index serves both the walk and the per-subscription probe,
-- so a claim costs what the subscriptions in retry cost, not the whole queue.
CREATE INDEX deliveries_retrying_by_subscription
    ON deliveries (subscription_id, next_attempt_time) WHERE status = 'RETRYING';
