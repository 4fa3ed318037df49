package main

import (
	"container/list"
	"sync"
	"time"
)

// seenSet remembers webhook ids: at most max of them, each for ttl after it
// was last seen. It is a least-recently-seen list, so the oldest entry is
// both the first to expire and the first to evict. In memory only: see the
// package comment for what production receivers use instead.
type seenSet struct {
	mu    sync.Mutex
	max   int
	ttl   time.Duration
	now   func() time.Time
	order *list.List               // of *seenEntry, most recently seen first
	byID  map[string]*list.Element // id → its element in order
}

type seenEntry struct {
	id   string
	seen time.Time
}

func newSeenSet(max int, ttl time.Duration, now func() time.Time) *seenSet {
	return &seenSet{max: max, ttl: ttl, now: now, order: list.New(), byID: make(map[string]*list.Element)}
}

// Add records id and reports whether it is new: false when id was seen less
// than ttl ago. Either way id becomes the most recently seen.
func (s *seenSet) Add(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.expire(now)
	if e, ok := s.byID[id]; ok {
		e.Value.(*seenEntry).seen = now
		s.order.MoveToFront(e)
		return false
	}
	for s.order.Len() >= s.max {
		s.remove(s.order.Back())
	}
	s.byID[id] = s.order.PushFront(&seenEntry{id: id, seen: now})
	return true
}

// Forget removes id, so its next delivery is processed.
func (s *seenSet) Forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.byID[id]; ok {
		s.remove(e)
	}
}

// Len returns how many ids are remembered.
func (s *seenSet) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.order.Len()
}

// expire drops the entries last seen ttl or more before now; they sit at
// the back.
func (s *seenSet) expire(now time.Time) {
	for e := s.order.Back(); e != nil && now.Sub(e.Value.(*seenEntry).seen) >= s.ttl; e = s.order.Back() {
		s.remove(e)
	}
}

func (s *seenSet) remove(e *list.Element) {
	delete(s.byID, e.Value.(*seenEntry).id)
	s.order.Remove(e)
}
