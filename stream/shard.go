package stream

import (
	"fmt"

	"github.com/outflow-dev/outflow/record"
)

// MaxShardCount is the largest Shard.Count accepted (outflow.v1.Shard).
const MaxShardCount = 1024

// Shard selects a share of a subscription's events, so that a pool of
// workers can split one subscription and each entity always lands on the
// same worker (SPEC §5).
type Shard struct {
	// Index is this client's shard, 0 to Count-1.
	Index int32
	// Count is the number of shards, 1 to MaxShardCount.
	Count int32
}

// Validate reports whether the shard is in range; its error wraps
// ErrInvalidRequest.
func (s Shard) Validate() error {
	if s.Count < 1 || s.Count > MaxShardCount {
		return fmt.Errorf("%w: shard count %d out of range 1..%d", ErrInvalidRequest, s.Count, MaxShardCount)
	}
	if s.Index < 0 || s.Index >= s.Count {
		return fmt.Errorf("%w: shard index %d out of range 0..%d", ErrInvalidRequest, s.Index, s.Count-1)
	}
	return nil
}

// InShard reports whether rec belongs to shard s:
//
//	rec.EntityHash() % uint64(s.Count) == uint64(s.Index)
//
// EntityHash is FNV-1a 64 over the entity keys sorted by name, finalised
// with MurmurHash3's fmix64 (see record.Record.EntityHash, which spells out
// the formula); it is documented and never changes, so a
// client can compute which worker an entity goes to, and the split is the
// same on every gateway replica and across releases. Only the entity keys
// count: every feature view of one entity lands on the same shard. InShard
// returns false for a shard that fails Validate.
func InShard(rec *record.Record, s Shard) bool {
	if s.Validate() != nil {
		return false
	}
	return rec.EntityHash()%uint64(s.Count) == uint64(s.Index)
}
