// Package kafka is the Kafka source of the gateway (SPEC §2): it consumes
// feature output streams as one member of a consumer group and hands every
// record to a source.Handler, committing offsets so that each record is
// delivered at least once across crashes, restarts and rebalances (SPEC §5),
// while any number of replicas share the partitions (SPEC §8).
//
// # Commit rule
//
// Each partition keeps a tracker of the offsets handed to the handler and of
// which are Done. The offset committed for a partition is its safe offset:
// the oldest handed-out message not yet Done, or the offset after the newest
// when all are Done. Kafka resumes a group at the committed offset, so a
// crash re-reads exactly the messages not known to be handled and never
// skips one; messages Done after a not-Done one are read again too (the
// price of at-least-once on a single committed offset). Safe offsets are
// committed every CommitInterval, when a generation ends and at shutdown,
// and only when they moved.
//
// # Rebalances
//
// The group is driven through kafka-go's ConsumerGroup and Generation API
// with kafka-go's eager balancers (range, then round-robin): a rebalance
// revokes every partition of every member. When this member's generation
// ends it stops reading, waits up to RebalanceDrainTimeout for in-flight
// messages, commits the safe offsets with that generation's id (the
// coordinator accepts commits from the ending generation until the new one
// forms, and rejects them afterwards, so a late commit can never overwrite
// the new owner's), and then revokes the trackers: a message of that
// generation that becomes Done later moves no commit, and is redelivered by
// the partition's next owner — possibly this member again, which then hands
// it out a second time. Receivers de-duplicate by event id.
//
// # Flow control
//
// Reading a partition pauses, without polling, while MaxInFlightPerPartition
// of its messages are not Done, or MaxUncommittedPerPartition were read
// since its oldest not-Done message. The handler is called from one
// goroutine per partition, in offset order.
//
// # Limitations
//
// kafka-go does not filter records of aborted transactions, nor hide
// transaction control records; feature output streams are not written
// transactionally, and such a record would be reported by the dispatcher as
// poison rather than stop the consumer.
package kafka
