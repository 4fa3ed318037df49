package enrich

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestBackoffBounds(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name       string
		initial    time.Duration
		max        time.Duration
		multiplier float64
	}{
		{"defaults", DefaultInitialBackoff, DefaultMaxBackoff, DefaultMultiplier},
		{"cap equals initial", 100 * time.Millisecond, 100 * time.Millisecond, 2},
		{"multiplier 1 stays flat", 10 * time.Millisecond, time.Second, 1},
		{"steep", time.Millisecond, 30 * time.Second, 10},
		{"nanoseconds", time.Nanosecond, 3 * time.Nanosecond, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for seed := range uint64(20) {
				b := &backoff{initial: tt.initial, max: tt.max, multiplier: tt.multiplier, rng: rand.New(rand.NewPCG(seed, seed))}
				for n := range 200 { // far past the cap, and past float64 overflow of multiplier^n
					base := tt.max
					if f := float64(tt.initial) * pow(tt.multiplier, n); f < float64(tt.max) {
						base = time.Duration(f)
					}
					d := b.delay(n)
					if d > tt.max {
						t.Fatalf("seed %d: delay(%d) = %s exceeds MaxBackoff %s", seed, n, d, tt.max)
					}
					if d < base/2 || d > base {
						t.Fatalf("seed %d: delay(%d) = %s, want within [%s, %s]", seed, n, d, base/2, base)
					}
				}
				if d := b.delay(0); d < tt.initial/2 || d > tt.initial {
					t.Fatalf("first delay %s, want near InitialBackoff %s", d, tt.initial)
				}
			}
		})
	}
}

func pow(x float64, n int) float64 {
	r := 1.0
	for range n {
		r *= x
	}
	return r
}

// Jitter spreads retries: many draws of one delay are not all the same.
func TestBackoffJitterSpreads(t *testing.T) {
	t.Parallel()
	b := &backoff{initial: DefaultInitialBackoff, max: DefaultMaxBackoff, multiplier: 2, rng: rand.New(rand.NewPCG(7, 7))}
	seen := map[time.Duration]bool{}
	for range 100 {
		seen[b.delay(10)] = true // capped
	}
	if len(seen) < 50 {
		t.Errorf("100 capped delays took only %d distinct values", len(seen))
	}
}
