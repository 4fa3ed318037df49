package dispatcher

import (
	"sync"
	"time"
)

// BreakerConfig tunes the per-subscription circuit breaker. Its state is
// per replica: each replica learns on its own that a receiver is failing.
type BreakerConfig struct {
	// Threshold is how many consecutive failures open the circuit. Defaults
	// to 5.
	Threshold int
	// Cooldown is how long an open circuit parks new events before the next
	// one probes the receiver. Defaults to 30s.
	Cooldown time.Duration
	// DisableAfter disables the subscription once it has failed without a
	// single success for this long. Defaults to 72h; negative never.
	DisableAfter time.Duration
}

// WithDefaults returns c with its zero fields set to their defaults.
func (c BreakerConfig) WithDefaults() BreakerConfig {
	if c.Threshold <= 0 {
		c.Threshold = 5
	}
	if c.Cooldown <= 0 {
		c.Cooldown = 30 * time.Second
	}
	if c.DisableAfter == 0 {
		c.DisableAfter = 72 * time.Hour
	}
	return c
}

// breaker is a consecutive-failure circuit breaker: closed until Threshold
// failures in a row, then open for Cooldown; the first event after that is a
// probe (half-open), and one more failure reopens it.
type breaker struct {
	cfg          BreakerConfig
	mu           sync.Mutex
	failures     int
	firstFailure time.Time
	openUntil    time.Time
}

func newBreaker(cfg BreakerConfig) breaker { return breaker{cfg: cfg} }

// open reports whether the circuit is open at now, and until when.
func (b *breaker) open(now time.Time) (time.Time, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.openUntil, now.Before(b.openUntil)
}

func (b *breaker) success() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures, b.firstFailure, b.openUntil = 0, time.Time{}, time.Time{}
}

// failure records a failed attempt and reports whether the failure window
// has grown past DisableAfter.
func (b *breaker) failure(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	if b.firstFailure.IsZero() {
		b.firstFailure = now
	}
	if b.failures >= b.cfg.Threshold {
		b.openUntil = now.Add(b.cfg.Cooldown)
	}
	return b.cfg.DisableAfter > 0 && now.Sub(b.firstFailure) >= b.cfg.DisableAfter
}
