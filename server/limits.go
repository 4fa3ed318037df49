package server

import (
	"container/list"
	"context"
	"math"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// retryAfterHeader carries a refusal's wait in whole seconds: gRPC response
// metadata, which the gateway turns into the HTTP Retry-After header.
const retryAfterHeader = "retry-after"

// limiters holds a token bucket and an in-flight count per key (a tenant,
// a subscription), at most max of them: the least recently used idle one
// is forgotten to make room, so a flood of keys cannot grow the map without
// bound. A forgotten key starts again with a full bucket, which only the
// least active keys can profit from.
type limiters struct {
	max int

	mu    sync.Mutex
	order *list.List // of *limiterEntry, most recently used first
	byKey map[string]*list.Element
	// last is the latest time take was given: callers read the clock
	// before they get the lock, so times can arrive out of order, and a
	// token bucket shown an earlier time than it last saw admits too much.
	last time.Time
}

type limiterEntry struct {
	key      string
	bucket   *rate.Limiter
	inFlight int
}

func newLimiters(maxKeys int) *limiters {
	return &limiters{max: maxKeys, order: list.New(), byKey: make(map[string]*list.Element)}
}

// admission is a refused call's answer: how long to wait before retrying.
type admission struct {
	retryAfter time.Duration
	what       string
}

// take admits one call for key under a bucket of limit per second and burst
// (rate.Inf admits every call), and at most maxInFlight calls at once (0:
// no bound). On success it returns the func that ends the call; otherwise
// why not and for how long. A bucket whose limit or burst differs from the
// arguments (the subscription's rate_limit changed) is adjusted first.
func (l *limiters) take(key string, limit rate.Limit, burst, maxInFlight int, now time.Time) (func(), *admission) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Before(l.last) {
		now = l.last
	}
	l.last = now
	e := l.entry(key, limit, burst, now)
	if maxInFlight > 0 && e.inFlight >= maxInFlight {
		return nil, &admission{retryAfter: time.Second, what: "calls in flight"}
	}
	if r := e.bucket.ReserveN(now, 1); !r.OK() {
		return nil, &admission{retryAfter: time.Second, what: "rate"}
	} else if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return nil, &admission{retryAfter: d, what: "rate"}
	}
	e.inFlight++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			e.inFlight--
			l.mu.Unlock()
		})
	}, nil
}

func (l *limiters) entry(key string, limit rate.Limit, burst int, now time.Time) *limiterEntry {
	if el, ok := l.byKey[key]; ok {
		l.order.MoveToFront(el)
		e := el.Value.(*limiterEntry)
		if e.bucket.Limit() != limit {
			e.bucket.SetLimitAt(now, limit)
		}
		if e.bucket.Burst() != burst {
			e.bucket.SetBurstAt(now, burst)
		}
		return e
	}
	for el := l.order.Back(); len(l.byKey) >= l.max && el != nil; {
		prev := el.Prev()
		if e := el.Value.(*limiterEntry); e.inFlight == 0 {
			l.order.Remove(el)
			delete(l.byKey, e.key)
		}
		el = prev
	}
	e := &limiterEntry{key: key, bucket: rate.NewLimiter(limit, burst)}
	l.byKey[key] = l.order.PushFront(e)
	return e
}

// len is the number of keys remembered, for tests of the bound.
func (l *limiters) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.byKey)
}

// exhausted is the RESOURCE_EXHAUSTED answer to a refused call: the wait
// goes in a google.rpc.RetryInfo detail and in the retry-after header
// (HTTP Retry-After through the gateway), rounded up to whole seconds.
func exhausted(ctx context.Context, a *admission, format string, args ...any) error {
	secs := int64(math.Ceil(a.retryAfter.Seconds()))
	if secs < 1 {
		secs = 1
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs(retryAfterHeader, strconv.FormatInt(secs, 10)))
	st := status.Newf(codes.ResourceExhausted, format, args...)
	if withInfo, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Duration(secs) * time.Second)}); err == nil {
		st = withInfo
	}
	return st.Err()
}

// perSecond turns a configured rate into a limit: negative means none.
func perSecond(r float64) rate.Limit {
	if r < 0 {
		return rate.Inf
	}
	return rate.Limit(r)
}
