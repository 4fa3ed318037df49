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

// TestLimitersTimeOutOfOrder: callers read the clock before the lock, so a
// bucket may be asked at an earlier time than it last was; that must not
// admit more than the rate (it did, by a token or two in 10,000 calls).
func TestLimitersTimeOutOfOrder(t *testing.T) {
	t.Parallel()
	l := newLimiters(10)
	start := time.Now()
	admitted := 0
	for i := range 10_000 {
		// Every other call comes 40ms "late", with an earlier time.
		now := start.Add(time.Duration(i) * time.Millisecond)
		if i%2 == 1 {
			now = now.Add(-40 * time.Millisecond)
		}
		if done, refused := l.take("k", 20, 10, 0, now); refused == nil {
			admitted++
			done()
		}
	}
	if most := 10 + 20*10; admitted > most {
		t.Errorf("%d admitted over 10s at 20/s with a burst of 10, more than %d", admitted, most)
	}
}
