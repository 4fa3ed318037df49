package enrich

import (
	"context"
	crand "crypto/rand"
	"math"
	"math/rand/v2"
	"sync"
	"time"
)

// newSeededSource returns a jitter source seeded from the operating system, so that replicas
// started at the same moment do not draw the same delays.
func newSeededSource() rand.Source {
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // crypto/rand.Read never fails (Go 1.24+)
	return rand.NewChaCha8(seed)
}

// backoff computes retry delays. It is safe for concurrent use.
type backoff struct {
	initial    time.Duration
	max        time.Duration
	multiplier float64

	mu  sync.Mutex
	rng *rand.Rand // guarded by mu: rand.Rand is not safe for concurrent use
}

// delay returns the wait before retry n (n = 0 for the first retry): a value drawn uniformly
// from [b/2, b] with b = min(initial × multiplier^n, max). Jitter only shortens the capped
// base, so the result never exceeds max.
func (b *backoff) delay(n int) time.Duration {
	base := b.max
	if f := float64(b.initial) * math.Pow(b.multiplier, float64(n)); f < float64(b.max) {
		base = time.Duration(f)
	}
	half := base / 2
	if half <= 0 {
		return base
	}
	b.mu.Lock()
	j := b.rng.Int64N(int64(base-half) + 1)
	b.mu.Unlock()
	return half + time.Duration(j)
}

// sleepContext waits for d or until ctx is done, whichever comes first, and returns ctx.Err()
// in the second case.
func sleepContext(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
