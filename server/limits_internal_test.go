package server

import (
	"fmt"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// TestLimitersStayBounded: however many keys come, the map holds at most
// max of them, forgetting the least recently used idle one; a key with
// calls in flight is never forgotten (its in-flight bound would reset).
func TestLimitersStayBounded(t *testing.T) {
	t.Parallel()
	const maxKeys = 100
	l := newLimiters(maxKeys)
	now := time.Now()
	busy, refused := l.take("busy", 1, 1, 1, now)
	if refused != nil {
		t.Fatal(refused)
	}
	for i := range 10 * maxKeys {
		done, refused := l.take(fmt.Sprint("k", i), rate.Inf, 1, 0, now)
		if refused != nil {
			t.Fatalf("key %d refused: %+v", i, refused)
		}
		done()
	}
	if n := l.len(); n > maxKeys {
		t.Errorf("%d keys remembered, want at most %d", n, maxKeys)
	}
	if _, refused := l.take("busy", 100, 100, 1, now); refused == nil || refused.what != "calls in flight" {
		t.Errorf("second call of a key at max in flight: %+v, want refused for calls in flight", refused)
	}
	busy()
	busy() // idempotent
	if done, refused := l.take("busy", 100, 100, 1, now.Add(time.Second)); refused != nil {
		t.Errorf("after release: %+v", refused)
	} else {
		done()
	}
}

// TestLimitersRate: a bucket of 2 per second and burst 3 admits 3 at once,
// then refuses with the wait until the next token; a lower limit set later
// applies at once.
func TestLimitersRate(t *testing.T) {
	t.Parallel()
	l := newLimiters(10)
	now := time.Now()
	for i := range 3 {
		done, refused := l.take("k", 2, 3, 0, now)
		if refused != nil {
			t.Fatalf("call %d refused: %+v", i, refused)
		}
		done()
	}
	_, refused := l.take("k", 2, 3, 0, now)
	if refused == nil || refused.what != "rate" || refused.retryAfter <= 0 || refused.retryAfter > 500*time.Millisecond {
		t.Fatalf("fourth call: %+v, want refused by rate for ≤ 500ms", refused)
	}
	if done, refused := l.take("k", 2, 3, 0, now.Add(500*time.Millisecond)); refused != nil {
		t.Errorf("after 500ms: %+v", refused)
	} else {
		done()
	}
	// The token earned at the old rate by then is spent; the next waits for
	// the new one.
	if done, refused := l.take("k", 0.1, 1, 0, now.Add(time.Second)); refused != nil {
		t.Errorf("after 1s: %+v", refused)
	} else {
		done()
	}
	if _, refused := l.take("k", 0.1, 1, 0, now.Add(time.Second)); refused == nil || refused.retryAfter < 5*time.Second {
		t.Errorf("after lowering to 0.1/s: %+v, want a wait of seconds", refused)
	}
}
