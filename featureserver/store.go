package featureserver

import (
	"cmp"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// store is the in-memory online store plus the simulated feature serving cache.
//
// Writes are not applied when they arrive: each one waits in its row's pending list until the
// clock reaches its visibleAt, and is applied by the first read or write of that row after
// that (lazy materialisation). Reads therefore see exactly what a store with that lag would
// hold, for any clock, without a background goroutine.
type store struct {
	mu    sync.Mutex
	rows  map[string]*row
	cache map[string]cacheEntry
	seq   uint64 // arrival order of writes, to break visibleAt ties
}

// row is one (feature view, join key values) entry.
type row struct {
	// written is true once a write has been applied; featureTime and values are valid then.
	written bool
	// featureTime is the feature_timestamp of the newest applied write.
	featureTime time.Time
	// values holds one typed value (int64, float64, string, bool) or nil per feature of the
	// view. It is replaced, never modified in place, so snapshots may share it.
	values []any
	// pending are the writes not yet visible.
	pending []pendingWrite
}

type pendingWrite struct {
	visibleAt   time.Time
	seq         uint64
	featureTime time.Time
	// values has one entry per feature; nil keeps the previous value.
	values []any
}

// snapshot is the visible state of a row at one instant.
type snapshot struct {
	present     bool
	featureTime time.Time
	values      []any // shared: read-only
}

type cacheEntry struct {
	snap     snapshot
	storedAt time.Time
}

func newStore() *store {
	return &store{rows: map[string]*row{}, cache: map[string]cacheEntry{}}
}

// write schedules w for key.
func (st *store) write(key string, w pendingWrite, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	r := st.rows[key]
	if r == nil {
		r = &row{}
		st.rows[key] = r
	}
	// Apply what is due first, so that a row written often but never read keeps a pending
	// list no longer than the writes of one lag period.
	r.materialize(now)
	st.seq++
	w.seq = st.seq
	r.pending = append(r.pending, w)
}

// readLocked returns the visible state of key at now; st.mu must be held.
func (st *store) readLocked(key string, now time.Time) snapshot {
	r := st.rows[key]
	if r == nil {
		return snapshot{}
	}
	r.materialize(now)
	if !r.written {
		return snapshot{}
	}
	return snapshot{present: true, featureTime: r.featureTime, values: r.values}
}

// readCached reads key through the cache: with ttl > 0, readFromCache serves an entry younger
// than ttl (cached reports true), and writeToCache stores what a store read returned. With
// ttl == 0 there is no cache at all.
func (st *store) readCached(key string, now time.Time, ttl time.Duration, readFromCache, writeToCache bool) (snap snapshot, cached bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if ttl <= 0 {
		return st.readLocked(key, now), false
	}
	if readFromCache {
		if e, ok := st.cache[key]; ok && now.Sub(e.storedAt) < ttl {
			return e.snap, true
		}
	}
	snap = st.readLocked(key, now)
	if writeToCache {
		st.cache[key] = cacheEntry{snap: snap, storedAt: now}
	}
	return snap, false
}

// materialize applies the pending writes that are visible at now, in visibleAt order. A write
// older than the row (by feature_timestamp) is dropped, as a conditional write to the online
// store would be, so out-of-order records never move a row back in time; a write's nil values
// keep the row's previous ones.
func (r *row) materialize(now time.Time) {
	if len(r.pending) == 0 {
		return
	}
	var due []pendingWrite
	kept := r.pending[:0]
	for _, w := range r.pending {
		if w.visibleAt.After(now) {
			kept = append(kept, w)
		} else {
			due = append(due, w)
		}
	}
	clear(r.pending[len(kept):])
	r.pending = kept
	slices.SortFunc(due, func(a, b pendingWrite) int {
		return cmp.Or(a.visibleAt.Compare(b.visibleAt), cmp.Compare(a.seq, b.seq))
	})
	for _, w := range due {
		if r.written && w.featureTime.Before(r.featureTime) {
			continue
		}
		values := slices.Clone(r.values)
		if values == nil {
			values = make([]any, len(w.values))
		}
		for i, v := range w.values {
			if v != nil {
				values[i] = v
			}
		}
		r.values = values
		r.featureTime = w.featureTime
		r.written = true
	}
}

// rowKey identifies a row: the view name and the join key values in the view's order, each
// length-prefixed so that no two different key tuples collide.
func rowKey(view string, values []string) string {
	var b strings.Builder
	n := len(view)
	for _, v := range values {
		n += len(v) + 22 // NUL, length digits, ':'
	}
	b.Grow(n)
	b.WriteString(view)
	for _, v := range values {
		b.WriteByte(0)
		b.WriteString(strconv.Itoa(len(v)))
		b.WriteByte(':')
		b.WriteString(v)
	}
	return b.String()
}

var errNotFinite = errors.New("not a finite number")

// convert parses a record's string value as t.
func convert(t DataType, s string) (any, error) {
	switch t {
	case Int64:
		return strconv.ParseInt(s, 10, 64)
	case Float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, err
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, errNotFinite
		}
		return f, nil
	case Bool:
		return strconv.ParseBool(s)
	default:
		return s, nil
	}
}

// normalizeJoinKey returns the canonical form of a join key value: int64 keys in plain
// decimal, so that "007", "+7" and "7" name the same row, as they would in Tecton.
func normalizeJoinKey(t DataType, s string) (string, error) {
	if t != Int64 {
		return s, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return "", err
	}
	return strconv.FormatInt(n, 10), nil
}

// wireValue encodes a typed value as Tecton does: int64 as a decimal string.
func wireValue(v any) any {
	if n, ok := v.(int64); ok {
		return strconv.FormatInt(n, 10)
	}
	return v
}

// synthetic returns the values a Synthetic view reports for a row it holds nothing for:
// stable for the same view, feature and join key values, and plausible for a demo (amounts
// with cents, small counts).
func synthetic(v *viewDef, joinValues []string, now time.Time) snapshot {
	values := make([]any, len(v.Features))
	for i, f := range v.Features {
		h := fnv64a(fnvOffset64, v.Name)
		h = fnv64a(h, "\x00")
		h = fnv64a(h, f.Name)
		for _, jv := range joinValues {
			h = fnv64a(h, "\x00")
			h = fnv64a(h, jv)
		}
		x := h
		switch f.Type {
		case Int64:
			values[i] = int64(x % 50)
		case Float64:
			values[i] = float64(x%500000) / 100
		case Bool:
			values[i] = x&1 == 1
		default:
			values[i] = f.Name + "_" + strconv.FormatUint(x%1000, 10)
		}
	}
	return snapshot{present: true, featureTime: now.Truncate(v.BatchSchedule), values: values}
}

// FNV-1a, 64 bits (hash/fnv's New64a), inline: synthetic runs for every read of a row a
// Synthetic view has not stored, and hash/fnv's interface value cost an allocation each.
const (
	fnvOffset64 uint64 = 14695981039346656037
	fnvPrime64  uint64 = 1099511628211
)

// fnv64a continues the FNV-1a hash h over s.
func fnv64a(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime64
	}
	return h
}
