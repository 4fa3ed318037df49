// Package deliverystats keeps per-subscription delivery statistics of the
// last hour in memory: per minute, the webhook deliveries made, the attempts
// that failed, and a histogram of end-to-end latency. The console draws its
// per-subscription chart from them (GetSubscriptionStats).
//
// Prometheus has the same counts without the subscription, on purpose: a
// subscription label would make one series per subscription per outcome,
// which a Prometheus server should not be asked to keep. Here a subscription
// costs a fixed ring of 60 minutes (about 10 KiB) while it has events, and
// nothing an hour after its last one.
//
// The counts are of one replica, the one that made the deliveries, and are
// lost when it restarts: they are for watching, not for accounting.
package deliverystats

import (
	"sync"
	"time"
)

// Window is how far back a Recorder remembers: 60 one-minute buckets.
const Window = time.Hour

const minutes = int(Window / time.Minute)

// latencyBounds are the upper bounds, in seconds, of the latency
// histogram's buckets: those of outflow_end_to_end_latency_seconds (5 ms
// doubling to 41 s; a test holds them equal), so a quantile read here and
// one from Prometheus agree. A last, unbounded bucket holds anything slower.
// Read-only.
var latencyBounds = [14]float64{0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96}

// Outcome is what became of one delivery attempt, as the dispatcher's
// outflow_deliveries_total labels it.
type Outcome string

// The outcomes the Recorder counts; the dispatcher's other labels are
// ignored.
const (
	// Delivered: the receiver answered 2xx.
	Delivered Outcome = "delivered"
	// RetryQueued: the attempt failed and another one is scheduled.
	RetryQueued Outcome = "retry_queued"
	// Dead: the attempt failed and the event is dead-lettered.
	Dead Outcome = "dead"
	// Gone: the receiver answered 410 Gone (the subscription is disabled).
	Gone Outcome = "gone"
	// Parked: not attempted (paused, circuit open, lane full): queued.
	Parked Outcome = "parked"
)

// Minute is one minute of a subscription's statistics.
type Minute struct {
	// Start is the minute's first instant, UTC.
	Start time.Time
	// Delivered counts 2xx answers: first attempts, retries and replays.
	Delivered int64
	// Failed counts failed attempts (retry_queued, dead, gone) and events
	// dead-lettered without one.
	Failed int64
	// Dead counts events dead-lettered: a subset of Failed.
	Dead int64
	// Parked counts events queued without an attempt.
	Parked int64
	// Latency is the end-to-end latency of hot-path deliveries (source
	// append time to the receiver's 2xx): retries and replays are not in it.
	Latency Latency
}

// Latency summarises the latencies observed in one minute.
type Latency struct {
	// Count is how many were observed; the rest is zero when it is 0.
	Count int64
	// P50 and P95 are estimated from the histogram by linear interpolation
	// within a bucket, as Prometheus's histogram_quantile does; at most the
	// bucket's width off.
	P50, P95 time.Duration
	// Max is exact.
	Max time.Duration
}

// Recorder counts deliveries per subscription and minute. The zero value is
// not usable: call NewRecorder. Its methods are safe for concurrent use; a
// nil *Recorder records nothing.
type Recorder struct {
	mu    sync.RWMutex
	rings map[string]*ring
	// pruned is the unix minute of the last sweep of idle rings.
	pruned int64
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{rings: make(map[string]*ring)}
}

// ring is one subscription's last hour; slot i holds the minute m with
// m mod 60 == i, valid when its minute field equals m.
type ring struct {
	mu    sync.Mutex
	last  int64 // unix minute of the newest write
	slots [minutes]slot
}

type slot struct {
	minute                          int64
	delivered, failed, dead, parked int64
	buckets                         [len(latencyBounds) + 1]int64
	latencyMax                      time.Duration
}

// Add counts one outcome for a subscription at now.
func (r *Recorder) Add(subscriptionID string, o Outcome, now time.Time) {
	if r == nil {
		return
	}
	r.update(subscriptionID, now, func(s *slot) {
		switch o {
		case Delivered:
			s.delivered++
		case RetryQueued, Gone:
			s.failed++
		case Dead:
			s.failed++
			s.dead++
		case Parked:
			s.parked++
		}
	})
}

// ObserveLatency records one end-to-end latency for a subscription at now.
func (r *Recorder) ObserveLatency(subscriptionID string, latency time.Duration, now time.Time) {
	if r == nil {
		return
	}
	secs := latency.Seconds()
	i := 0
	for i < len(latencyBounds) && secs > latencyBounds[i] {
		i++
	}
	r.update(subscriptionID, now, func(s *slot) {
		s.buckets[i]++
		s.latencyMax = max(s.latencyMax, latency)
	})
}

// update applies fn to the subscription's slot of now's minute, creating
// the ring and resetting a stale slot as needed.
func (r *Recorder) update(id string, now time.Time, fn func(*slot)) {
	m := now.Unix() / 60
	r.mu.RLock()
	rg := r.rings[id]
	r.mu.RUnlock()
	if rg == nil {
		r.mu.Lock()
		if rg = r.rings[id]; rg == nil {
			rg = &ring{}
			r.rings[id] = rg
		}
		r.pruneLocked(m)
		r.mu.Unlock()
	}
	rg.mu.Lock()
	defer rg.mu.Unlock()
	s := &rg.slots[m%int64(minutes)]
	if s.minute != m {
		*s = slot{minute: m}
	}
	fn(s)
	rg.last = max(rg.last, m)
}

// pruneLocked drops, at most once a minute, the rings of subscriptions with
// no event in the window (deleted, paused or quiet ones). r.mu is held.
func (r *Recorder) pruneLocked(m int64) {
	if m == r.pruned {
		return
	}
	r.pruned = m
	for id, rg := range r.rings {
		rg.mu.Lock()
		idle := rg.last != 0 && rg.last <= m-int64(minutes)
		rg.mu.Unlock()
		if idle {
			delete(r.rings, id)
		}
	}
}

// Snapshot returns the subscription's last hour at now: 60 minutes, oldest
// first, the last one being now's (still filling). A subscription with no
// events gets 60 empty minutes.
func (r *Recorder) Snapshot(subscriptionID string, now time.Time) []Minute {
	m := now.Unix() / 60
	out := make([]Minute, minutes)
	for i := range out {
		out[i].Start = time.Unix((m-int64(minutes)+1+int64(i))*60, 0).UTC()
	}
	if r == nil {
		return out
	}
	r.mu.RLock()
	rg := r.rings[subscriptionID]
	r.mu.RUnlock()
	if rg == nil {
		return out
	}
	rg.mu.Lock()
	defer rg.mu.Unlock()
	for i := range out {
		want := m - int64(minutes) + 1 + int64(i)
		s := &rg.slots[want%int64(minutes)]
		if s.minute != want {
			continue
		}
		out[i].Delivered, out[i].Failed, out[i].Dead, out[i].Parked = s.delivered, s.failed, s.dead, s.parked
		out[i].Latency = summarise(&s.buckets, s.latencyMax)
	}
	return out
}

func summarise(buckets *[len(latencyBounds) + 1]int64, maxLatency time.Duration) Latency {
	var n int64
	for _, c := range buckets {
		n += c
	}
	if n == 0 {
		return Latency{}
	}
	return Latency{Count: n, P50: quantile(0.5, buckets, n, maxLatency), P95: quantile(0.95, buckets, n, maxLatency), Max: maxLatency}
}

// quantile interpolates the q-quantile linearly within its bucket; the
// unbounded last bucket, and any bucket above the exact maximum, ends at
// the maximum.
func quantile(q float64, buckets *[len(latencyBounds) + 1]int64, n int64, maxLatency time.Duration) time.Duration {
	rank := q * float64(n)
	var seen float64
	for i, c := range buckets {
		if c == 0 {
			continue
		}
		if seen+float64(c) < rank {
			seen += float64(c)
			continue
		}
		lo := 0.0
		if i > 0 {
			lo = latencyBounds[i-1]
		}
		hi := maxLatency.Seconds()
		if i < len(latencyBounds) {
			hi = min(latencyBounds[i], hi)
		}
		lo = min(lo, hi)
		v := lo + (hi-lo)*(rank-seen)/float64(c)
		return time.Duration(v * float64(time.Second))
	}
	return maxLatency
}
