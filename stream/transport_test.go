package stream

import (
	"testing"
)

// TestSharedTransport: streams reading through one kafka.SharedLog each
// deliver every record; closing one leaves the other reading; the owner's
// CloseIdleConnections then leaves nothing behind (goleak in TestMain).
func TestSharedTransport(t *testing.T) {
	t.Parallel()
	e := setup(t, 3)
	p := newProducer(t, e, 100)
	cfg := e.config(t)
	shared := testLog(t, e.brokers).Shared(cfg.WithDefaults().readerConfig())
	cfg.Source = shared
	t.Cleanup(shared.CloseIdleConnections) // after the streams' cleanups
	sub := testSubscription(t, "sub_x", "")
	a := open(t, cfg, Request{Subscription: sub})
	b := open(t, cfg, Request{Subscription: sub})

	recs := matching(0, 300, 10)
	p.mustProduce(t, recs)
	ca, cb := newCollector(t, sub.ID), newCollector(t, sub.ID)
	readAll(t, a, ca, wanted(recs))
	readAll(t, b, cb, wanted(recs))

	a.Close()
	more := matching(300, 100, 10)
	p.mustProduce(t, more)
	readAll(t, b, cb, wanted(more))
	if ca.dups+cb.dups != 0 {
		t.Errorf("%d and %d duplicates", ca.dups, cb.dups)
	}
}
