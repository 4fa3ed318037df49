DROP INDEX IF EXISTS deliveries_retrying_by_subscription;
