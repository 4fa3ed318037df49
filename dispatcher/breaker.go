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
	// Cooldown is how long an open circuit holds a failing receiver's new
	// events back (a detached subscription's reader waits, the shared path
	// detaches or parks them) before one event probes the receiver.
	// Defaults to 30s.
	Cooldown time.Duration
	// ProbeTimeout bounds how long the one probe of a half-open circuit
	// keeps the others waiting for its result: a probe that never reports
	// (the gateway stopping, the event parked on its way) frees the slot
	// after it, so the breaker is never wedged. It is longer than an
	// attempt can take (a webhook timeout is at most 60s, plus the
	// enrichment), so a slow probe is not overtaken by a second one.
	// Defaults to 2m.
	ProbeTimeout time.Duration
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
	if c.ProbeTimeout <= 0 {
		c.ProbeTimeout = 2 * time.Minute
	}
	if c.DisableAfter == 0 {
		c.DisableAfter = 72 * time.Hour
	}
	return c
}

// breaker is a consecutive-failure circuit breaker: closed until Threshold
// failures in a row, then open for Cooldown; then half-open: one event (the
// probe) is let through and the others wait for its result, a success
// closes the circuit and a failure opens it for another Cooldown. The probe
// slot lapses after ProbeTimeout, or when the probe is released (it was
// never attempted).
type breaker struct {
	cfg          BreakerConfig
	mu           sync.Mutex
	failures     int
	firstFailure time.Time
	openUntil    time.Time
	// probeUntil is when the probe under way, if any, lapses (zero: none).
	probeUntil time.Time
	// changed is closed (and replaced) when the circuit closes, opens again
	// or its probe slot is freed: waiters look again.
	changed chan struct{}
}

func newBreaker(cfg BreakerConfig) breaker { return breaker{cfg: cfg, changed: make(chan struct{})} }

// notify wakes the waiters; callers hold mu.
func (b *breaker) notify() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// open reports whether the circuit holds events back at now (open, or
// half-open with its probe under way), and until when at the latest. It
// does not take the probe slot (see admit).
func (b *breaker) open(now time.Time) (time.Time, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.Before(b.openUntil) {
		return b.openUntil, true
	}
	if now.Before(b.probeUntil) {
		return b.probeUntil, true
	}
	return time.Time{}, false
}

// admit reports whether an event may be attempted at now: always while the
// circuit is closed; while it is half-open, only the first event asking
// (probe is then true, and the event must report its attempt with success
// or failure, or release the slot when it is not attempted). When it is
// not admitted, until is when to ask again at the latest.
func (b *breaker) admit(now time.Time) (until time.Time, ok, probe bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failures < b.cfg.Threshold {
		return time.Time{}, true, false
	}
	if now.Before(b.openUntil) {
		return b.openUntil, false, false
	}
	if now.Before(b.probeUntil) {
		return b.probeUntil, false, false
	}
	b.probeUntil = now.Add(b.cfg.ProbeTimeout)
	return time.Time{}, true, true
}

// tripped reports whether the circuit is not closed: open, or half-open.
func (b *breaker) tripped() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failures >= b.cfg.Threshold
}

// wait returns a channel closed at the breaker's next change of state.
func (b *breaker) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.changed
}

// release frees the probe slot taken by an event that was not attempted.
func (b *breaker) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.probeUntil.IsZero() {
		b.probeUntil = time.Time{}
		b.notify()
	}
}

// endCooldown lets the next event probe at once (the subscription changed:
// its receiver may be another one).
func (b *breaker) endCooldown() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.openUntil.IsZero() {
		b.openUntil = time.Time{}
		b.notify()
	}
}

func (b *breaker) success() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failures == 0 && b.openUntil.IsZero() && b.probeUntil.IsZero() {
		return // closed already: the hot path's case, no allocation
	}
	b.failures, b.firstFailure, b.openUntil, b.probeUntil = 0, time.Time{}, time.Time{}, time.Time{}
	b.notify()
}

// failure records a failed attempt and reports whether the failure window
// has grown past DisableAfter. A failure while the circuit is tripped (the
// probe's, or a retry's) opens it for another Cooldown.
func (b *breaker) failure(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	if b.firstFailure.IsZero() {
		b.firstFailure = now
	}
	if b.failures >= b.cfg.Threshold {
		b.openUntil = now.Add(b.cfg.Cooldown)
		b.probeUntil = time.Time{}
		b.notify()
	}
	return b.cfg.DisableAfter > 0 && now.Sub(b.firstFailure) >= b.cfg.DisableAfter
}
