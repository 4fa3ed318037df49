DROP TRIGGER IF EXISTS subscriptions_notify ON subscriptions;
DROP FUNCTION IF EXISTS outflow_notify_subscription_change();
DROP TABLE IF EXISTS server_keys;
DROP TABLE IF EXISTS subscriptions;
DROP TABLE IF EXISTS api_keys;
DROP TABLE IF EXISTS tenants;
