package webhook_test

import (
	"math"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/webhook"
)

func TestBackoffBounds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		attempt int
		lo, hi  time.Duration
	}{
		{-1, 0, 0},
		{0, 0, 0},
		{1, 0, 0},
		{2, 4 * time.Second, 6 * time.Second},
		{3, 4 * time.Minute, 6 * time.Minute},
		{4, 24 * time.Minute, 36 * time.Minute},
		{5, 96 * time.Minute, 144 * time.Minute},
		{6, 4 * time.Hour, 6 * time.Hour},
		{7, 8 * time.Hour, 10 * time.Hour},
		{8, 8 * time.Hour, 10 * time.Hour},
		{9, 8 * time.Hour, 10 * time.Hour},
		{1000, 8 * time.Hour, 10 * time.Hour},
		{math.MaxInt, 8 * time.Hour, 10 * time.Hour},
	}
	for _, tt := range tests {
		t.Run("", func(t *testing.T) {
			t.Parallel()
			rnd := rand.New(rand.NewPCG(uint64(tt.attempt), 42))
			seenLo, seenHi := time.Duration(math.MaxInt64), time.Duration(0)
			for range 2000 {
				d := webhook.Backoff(tt.attempt, rnd)
				if d < tt.lo || d > tt.hi || d > webhook.MaxBackoff {
					t.Fatalf("Backoff(%d) = %v, want in [%v, %v]", tt.attempt, d, tt.lo, tt.hi)
				}
				seenLo, seenHi = min(seenLo, d), max(seenHi, d)
			}
			// The jitter really spreads: draws cover most of the window.
			if span := tt.hi - tt.lo; span > 0 && seenHi-seenLo < span*9/10 {
				t.Fatalf("Backoff(%d) draws span [%v, %v], want most of [%v, %v]", tt.attempt, seenLo, seenHi, tt.lo, tt.hi)
			}
		})
	}
}

func TestBackoffWithoutJitter(t *testing.T) {
	t.Parallel()
	want := []time.Duration{0, 5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour, 10 * time.Hour}
	var total time.Duration
	for i, w := range want {
		if got := webhook.Backoff(i+1, nil); got != w {
			t.Errorf("Backoff(%d, nil) = %v, want %v", i+1, got, w)
		}
		if i < 8 {
			total += w
		}
	}
	// Eight attempts fit in the default retry policy max_age of 28 h.
	if total >= 28*time.Hour {
		t.Errorf("default schedule spans %v, want under 28h", total)
	}
}

func TestBackoffDeterministic(t *testing.T) {
	t.Parallel()
	a, b := rand.New(rand.NewPCG(7, 7)), rand.New(rand.NewPCG(7, 7))
	for attempt := range 12 {
		if x, y := webhook.Backoff(attempt, a), webhook.Backoff(attempt, b); x != y {
			t.Fatalf("Backoff(%d) with equal seeds = %v and %v", attempt, x, y)
		}
	}
}

func TestRetryAfterOrBackoff(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		attempt    int
		retryAfter time.Duration
		lo, hi     time.Duration
	}{
		{"no Retry-After", 2, 0, 4 * time.Second, 6 * time.Second},
		{"Retry-After longer than backoff", 2, time.Minute, time.Minute, time.Minute},
		{"Retry-After shorter than backoff", 7, time.Hour, 8 * time.Hour, 10 * time.Hour},
		{"Retry-After bounded", 2, 48 * time.Hour, webhook.MaxRetryAfter, webhook.MaxRetryAfter},
		{"negative Retry-After ignored", 2, -time.Hour, 4 * time.Second, 6 * time.Second},
		{"first attempt honours Retry-After", 1, 30 * time.Second, 30 * time.Second, 30 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rnd := rand.New(rand.NewPCG(1, 2))
			for range 200 {
				if d := webhook.RetryAfterOrBackoff(tt.attempt, tt.retryAfter, rnd); d < tt.lo || d > tt.hi {
					t.Fatalf("RetryAfterOrBackoff(%d, %v) = %v, want in [%v, %v]", tt.attempt, tt.retryAfter, d, tt.lo, tt.hi)
				}
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		value string
		want  time.Duration
		ok    bool
	}{
		{"seconds", "120", 2 * time.Minute, true},
		{"zero", "0", 0, true},
		{"leading zeros", "007", 7 * time.Second, true},
		{"spaces", " 30 ", 30 * time.Second, true},
		{"IMF-fixdate", now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{"RFC 850", "Tuesday, 24-Nov-26 10:05:00 GMT", 5 * time.Minute, true},
		{"asctime", "Tue Nov 24 10:00:10 2026", 10 * time.Second, true},
		{"date in the past", "Tue, 24 Nov 2026 09:00:00 GMT", 0, true},
		{"huge number saturates", "99999999999999999999999", math.MaxInt64, true},
		{"empty", "", 0, false},
		{"blank", "   ", 0, false},
		{"negative", "-1", 0, false},
		{"plus sign", "+1", 0, false},
		{"fraction", "1.5", 0, false},
		{"unit", "10s", 0, false},
		{"word", "soon", 0, false},
		{"ISO date", "2026-11-24T10:00:00Z", 0, false},
		{"inner space", "1 0", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := webhook.ParseRetryAfter(tt.value, now)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tt.value, got, ok, tt.want, tt.ok)
			}
		})
	}
}
