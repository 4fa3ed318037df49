DROP TABLE kinesis_shards;
