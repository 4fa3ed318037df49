package webhook

import (
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"
)

// MaxBackoff is the longest delay [Backoff] returns, jitter included.
const MaxBackoff = 10 * time.Hour

// MaxRetryAfter bounds how long a receiver's Retry-After header can delay the
// next attempt. A receiver asking for a day would otherwise push an event
// past the retry policy's max_age (28 h by default) on one answer; an hour is
// long enough for any planned restart and short enough that the schedule
// stays in charge.
const MaxRetryAfter = time.Hour

// BackoffJitter is the relative jitter applied to every step of the
// schedule: each delay is drawn uniformly from ±20% around its step.
const BackoffJitter = 0.2

// schedule is SPEC §5's default: the delay before attempt i+1, counted from
// the end of attempt i. Attempts past the end repeat the last step.
var schedule = [...]time.Duration{
	0,
	5 * time.Second,
	5 * time.Minute,
	30 * time.Minute,
	2 * time.Hour,
	5 * time.Hour,
	10 * time.Hour,
	10 * time.Hour,
}

// Backoff returns how long to wait before attempt number attempt (1-based),
// counted from the end of the previous one, on SPEC §5's default schedule:
// attempt 1 at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, and 10 h for
// attempt 8 and every later one; eight attempts span about 27.6 hours,
// inside the default max_age of 28 h.
//
// Every delay but the first carries ±20% jitter drawn from rnd, so events
// that failed together (a receiver outage) do not return together. The
// jitter is drawn inside the cap rather than clamped after it: the 10 h steps
// fall uniformly in [8 h, 10 h], so no delay exceeds [MaxBackoff] and capped
// retries do not pile up at exactly 10 h. A nil rnd gives the step without
// jitter. attempt values below 2 return 0.
func Backoff(attempt int, rnd *rand.Rand) time.Duration {
	if attempt < 2 {
		return 0
	}
	base := schedule[min(attempt, len(schedule))-1]
	delta := time.Duration(float64(base) * BackoffJitter)
	lo, hi := base-delta, min(base+delta, MaxBackoff)
	if rnd == nil || hi <= lo {
		return min(base, MaxBackoff)
	}
	return lo + time.Duration(rnd.Int64N(int64(hi-lo)+1))
}

// RetryAfterOrBackoff returns the delay before attempt number attempt: the
// [Backoff] delay, or the receiver's Retry-After (as in [Result.RetryAfter])
// when that is longer. retryAfter is first bounded to [0, MaxRetryAfter], so
// the result never exceeds max(MaxBackoff, MaxRetryAfter).
func RetryAfterOrBackoff(attempt int, retryAfter time.Duration, rnd *rand.Rand) time.Duration {
	retryAfter = min(max(retryAfter, 0), MaxRetryAfter)
	return max(Backoff(attempt, rnd), retryAfter)
}

// ParseRetryAfter reads a Retry-After header value (RFC 9110 §10.2.3): a
// number of seconds, or an HTTP date, which is measured from now. It returns
// ok false, and 0, for an empty or malformed value (a negative or fractional
// number, an unknown date format). A date in the past gives 0 and ok true.
// Values are not bounded to [MaxRetryAfter] here, only kept from overflowing:
// anything beyond about 292 years saturates at the largest Duration.
func ParseRetryAfter(value string, now time.Time) (d time.Duration, ok bool) {
	v := strings.TrimSpace(value)
	if v == "" {
		return 0, false
	}
	if isDigits(v) {
		var secs int64
		for i := 0; i < len(v); i++ {
			if secs > (math.MaxInt64/int64(time.Second)-9)/10 {
				return math.MaxInt64, true
			}
			secs = secs*10 + int64(v[i]-'0')
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	// Sub saturates at the Duration bounds instead of overflowing.
	return max(t.Sub(now), 0), true
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
