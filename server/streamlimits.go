package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outflow-dev/outflow/store"
)

// streamRetryAfter is the delay a client refused for too many streams is
// told to wait: streams end when clients leave, so nothing better is known.
const streamRetryAfter = 5 * time.Second

// streamSlots counts a replica's open streams per subscription and per
// tenant, so that one client (or tenant) cannot open thousands of streams,
// each with its own broker connections, readers and buffer.
type streamSlots struct {
	perSubscription, perTenant int

	mu       sync.Mutex
	bySub    map[string]int
	byTenant map[string]int
}

func newStreamSlots(perSubscription, perTenant int) *streamSlots {
	return &streamSlots{perSubscription: perSubscription, perTenant: perTenant,
		bySub: make(map[string]int), byTenant: make(map[string]int)}
}

// acquire takes a slot for a stream of subscription subID of tenant, or
// fails with RESOURCE_EXHAUSTED (with a google.rpc.RetryInfo detail, which
// the HTTP edge answers as Retry-After). release gives the slot back.
func (l *streamSlots) acquire(tenant, subID string) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.bySub[subID] >= l.perSubscription:
		return nil, resourceExhausted(streamRetryAfter,
			"subscription %q already has %d open streams on this server, the limit; close one (or shard fewer clients) and retry", subID, l.perSubscription)
	case l.byTenant[tenant] >= l.perTenant:
		return nil, resourceExhausted(streamRetryAfter,
			"this tenant already has %d open streams on this server, the limit; close one and retry", l.perTenant)
	}
	l.bySub[subID]++
	l.byTenant[tenant]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.bySub[subID]--; l.bySub[subID] == 0 {
				delete(l.bySub, subID)
			}
			if l.byTenant[tenant]--; l.byTenant[tenant] == 0 {
				delete(l.byTenant, tenant)
			}
		})
	}, nil
}

// resourceExhausted is a RESOURCE_EXHAUSTED status telling the client how
// long to wait, as a google.rpc.RetryInfo detail.
func resourceExhausted(retryAfter time.Duration, format string, args ...any) error {
	st := status.New(codes.ResourceExhausted, fmt.Sprintf(format, args...))
	withInfo, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(retryAfter)})
	if err != nil {
		return st.Err()
	}
	return withInfo.Err()
}

// retryDelay returns the google.rpc.RetryInfo delay of st, if it has one.
func retryDelay(st *status.Status) (time.Duration, bool) {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.RetryInfo); ok && info.GetRetryDelay() != nil {
			return info.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}

// errKeyRevoked is the cause with which a stream's context ends when its API
// key is no longer valid.
var errKeyRevoked = errors.New("API key revoked")

// keyWatch ends open streams whose API key has been revoked (or deleted
// with its tenant). A stream's key is checked when it opens, like every
// call's, but streams stay open for hours: every interval, one query checks
// the keys of all open streams of the replica at once.
type keyWatch struct {
	store    *store.Store
	interval time.Duration
	logger   *slog.Logger

	mu      sync.Mutex
	watched map[*watchedStream]struct{}
}

type watchedStream struct {
	keyID  string
	cancel context.CancelCauseFunc
}

func newKeyWatch(st *store.Store, interval time.Duration, logger *slog.Logger) *keyWatch {
	return &keyWatch{store: st, interval: interval, logger: logger, watched: make(map[*watchedStream]struct{})}
}

// watch has cancel called with errKeyRevoked once the key that
// authenticated ctx is revoked; the returned func stops watching.
func (w *keyWatch) watch(ctx context.Context, cancel context.CancelCauseFunc) func() {
	keyID, _ := ctx.Value(keyIDKey{}).(string)
	if keyID == "" {
		return func() {}
	}
	ws := &watchedStream{keyID: keyID, cancel: cancel}
	w.mu.Lock()
	w.watched[ws] = struct{}{}
	w.mu.Unlock()
	return func() {
		w.mu.Lock()
		delete(w.watched, ws)
		w.mu.Unlock()
	}
}

// run checks the watched keys every interval until ctx ends.
func (w *keyWatch) run(ctx context.Context) {
	ticker := time.NewTicker(w.interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		w.check(ctx)
	}
}

// check ends the streams whose key is no longer valid. A failed query keeps
// every stream open (a database outage must not cut all clients off) and is
// retried at the next tick.
func (w *keyWatch) check(ctx context.Context) {
	w.mu.Lock()
	ids := make(map[string]struct{}, len(w.watched))
	for ws := range w.watched {
		ids[ws.keyID] = struct{}{}
	}
	w.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	list := make([]string, 0, len(ids))
	for id := range ids {
		list = append(list, id)
	}
	qctx, cancel := context.WithTimeout(ctx, w.interval)
	defer cancel()
	valid, err := w.store.ValidAPIKeys(qctx, list)
	if err != nil {
		if ctx.Err() == nil {
			w.logger.WarnContext(ctx, "checking the API keys of open streams", slog.Any("error", err))
		}
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for ws := range w.watched {
		if _, ok := valid[ws.keyID]; !ok {
			ws.cancel(errKeyRevoked)
			delete(w.watched, ws)
		}
	}
}
