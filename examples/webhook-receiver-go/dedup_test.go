package main

import (
	"fmt"
	"testing"
	"time"
)

func TestSeenSet(t *testing.T) {
	t.Parallel()
	clock := time.Unix(1_700_000_000, 0)
	s := newSeenSet(3, time.Minute, func() time.Time { return clock })
	add := func(id string, want bool) {
		t.Helper()
		if got := s.Add(id); got != want {
			t.Fatalf("Add(%q) = %v, want %v", id, got, want)
		}
	}

	add("a", true)
	add("a", false)
	add("b", true)
	add("c", true)
	add("a", false) // a becomes the most recently seen
	add("d", true)  // evicts b, the least recently seen
	if s.Len() != 3 {
		t.Fatalf("Len = %d, want 3 (bounded)", s.Len())
	}
	add("b", true)
	add("a", false)

	s.Forget("a")
	add("a", true)

	clock = clock.Add(time.Minute)
	add("a", true) // expired
	if s.Len() != 1 {
		t.Fatalf("Len = %d after expiry, want 1", s.Len())
	}
}

func TestSeenSetBounded(t *testing.T) {
	t.Parallel()
	s := newSeenSet(100, time.Hour, time.Now)
	for i := range 10_000 {
		s.Add(fmt.Sprint("evt_", i))
	}
	if s.Len() != 100 || len(s.byID) != 100 {
		t.Fatalf("Len = %d, map %d, want 100", s.Len(), len(s.byID))
	}
}
