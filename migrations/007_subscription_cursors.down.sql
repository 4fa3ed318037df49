DROP TABLE subscription_cursors;
