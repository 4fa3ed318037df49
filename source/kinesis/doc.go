// Package kinesis is the Kinesis source of the gateway (SPEC §2): it reads
// feature output streams written by Tecton's KinesisOutputStream and hands
// every record to a source.Handler, checkpointing so that each record is
// delivered at least once across crashes, restarts and resharding (SPEC §5),
// while any number of replicas share the shards (SPEC §8).
//
// # Leases and checkpoints
//
// Kinesis has no consumer groups; the Kinesis Client Library keeps leases and
// checkpoints in DynamoDB. This package keeps them in PostgreSQL instead
// (store.BalanceKinesisLeases and friends; table kinesis_shards): every
// replica lists the shards, records new ones with their parents, and every
// RenewInterval renews its leases and takes its share (free or expired
// shards first, then, to balance, one shard from the replica holding the
// most). A replica that dies stops renewing; once its leases expire
// (LeaseDuration) the others take its shards over from their checkpoints.
// There is no leader: each replica decides for itself in one transaction,
// and FOR UPDATE SKIP LOCKED keeps two from taking the same shard.
//
// # Commit rule
//
// Each shard read keeps the sequence numbers handed to the handler in order,
// and its checkpoint is the sequence number of the newest record that, with
// every record before it, is Done. Checkpoints are written every
// CommitInterval (only when they moved) and at shutdown, and only while the
// lease is held: a replica that lost a shard can never move the new owner's
// checkpoint. Reading resumes AFTER_SEQUENCE_NUMBER the checkpoint, so a
// crash re-reads exactly the records not known to be handled.
//
// # Resharding
//
// A split or merge closes shards and opens children. A shard is read only
// once every parent is finished: closed (GetRecords returned no next
// iterator), every record of it Done, and that checkpointed. So the records
// of one partition key (one entity) are handed out in order across a split
// or a merge.
//
// # Flow control and throttling
//
// Reading a shard pauses while MaxInFlightPerShard of its records are not
// Done. GetRecords is called at most once per IdleWait on a shard with
// nothing new; a ProvisionedThroughputExceededException (or the SDK's own
// throttling retries giving up) backs off exponentially with jitter.
package kinesis
