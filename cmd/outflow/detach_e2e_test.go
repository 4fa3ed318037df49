package main

import (
	"context"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestSlowReceiverIsDetached runs the binary on the real broker with one
// receiver that takes 50 ms a request (one at a time) and one healthy
// receiver: the slow one is detached onto its own cursor, the healthy one
// receives everything long before it, both receive every event exactly
// once, and nothing of the merely slow receiver is written to the retry
// queue.
func TestSlowReceiverIsDetached(t *testing.T) {
	t.Parallel()
	env := newLoadEnv(t, "--lane-queue", "16", "--lane-wait", "200ms")
	healthy, slow, ids := slowAndHealthy(t, env, 50*time.Millisecond)

	const n = 1200 // 400 on fv_clicks: 20 s of the slow receiver's time
	base := time.Now().UTC()
	start := time.Now()
	env.produce(t, 0, n, base)
	clicks := clickSeqs(n, base)
	pollUntil(t, time.Minute, "the healthy receiver to get every click", hasAll(healthy, clicks))
	healthyTook := time.Since(start)
	pollUntil(t, 2*time.Minute, "the slow receiver to get every click", hasAll(slow, clicks))
	slowTook := time.Since(start)
	t.Logf("%d events: healthy receiver done in %s, slow one (50 ms a request) in %s",
		len(clicks), healthyTook.Round(time.Millisecond), slowTook.Round(time.Millisecond))
	if healthyTook*3 > slowTook {
		t.Errorf("the healthy receiver took %s, the slow one %s: want the healthy one far earlier (a third at most)", healthyTook, slowTook)
	}
	for _, r := range []*receiver{healthy, slow} {
		got, badSig, idMismatch := r.snapshot()
		if badSig > 0 || idMismatch > 0 {
			t.Errorf("%d bad signatures, %d changed ids", badSig, idMismatch)
		}
		dups := 0
		for _, c := range got {
			dups += c - 1
		}
		if dups != 0 || len(got) != len(clicks) {
			t.Errorf("got %d distinct events and %d duplicates, want %d and 0", len(got), dups, len(clicks))
		}
	}
	for _, status := range []string{"RETRYING", "DEAD", "DELIVERED"} {
		if rows := env.deliveries(t, ids[slow], status); len(rows) != 0 {
			t.Errorf("%d %s rows in the retry queue for a receiver that is merely slow; want 0", len(rows), status)
		}
	}
	m := regexp.MustCompile(`(?m)^outflow_subscriptions_detached_total (\d+)`).FindStringSubmatch(env.gateway.get(t, "/metrics"))
	if m == nil {
		t.Fatal("no outflow_subscriptions_detached_total in /metrics")
	}
	if v, _ := strconv.Atoi(m[1]); v < 1 {
		t.Errorf("outflow_subscriptions_detached_total = %d; want the slow subscription detached", v)
	}
}

// TestDetachedCursorsFollowTheirPartitions: a slow subscription is detached
// on one replica, then a second replica joins the group and takes half the
// partitions. The detached subscription's cursors go with their partitions:
// the first replica stops reading the ones it gave up and hands their
// cursors over, the second takes them up before its shared consumer reads,
// and each replica rejoins on its own partitions. Every event reaches the
// slow receiver, duplicated only if still in flight when a hand-over's
// drain runs out (its one lane: 16 queued + 1 under way, per hand-over; at
// 50 ms a request they settle within the rebalance's 2 s, so this is
// usually 0), and no cursor is left.
// Before, every replica read every cursor at start: the second one
// re-delivered the whole remaining backlog, and both kept reading
// partitions they did not own.
func TestDetachedCursorsFollowTheirPartitions(t *testing.T) {
	t.Parallel()
	env := newLoadEnvPartitions(t, 4, "--lane-queue", "16", "--lane-wait", "200ms")
	healthy, slow, _ := slowAndHealthy(t, env, 20*time.Millisecond)
	const n = 1500 // 500 clicks: 10 s of the slow receiver's time
	base := time.Now().UTC()
	env.produce(t, 0, n, base)
	clicks := clickSeqs(n, base)
	pollUntil(t, time.Minute, "the healthy receiver to get every click", hasAll(healthy, clicks))
	pollUntil(t, time.Minute, "the slow receiver to be under way", func() bool {
		got, _, _ := slow.snapshot()
		return len(got) >= 50
	})
	cursors := func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		db, err := pgx.Connect(ctx, env.databaseURL)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close(ctx)
		var k int
		if err := db.QueryRow(ctx, "SELECT count(*) FROM subscription_cursors").Scan(&k); err != nil {
			t.Fatal(err)
		}
		return k
	}
	if k := cursors(); k == 0 {
		t.Fatal("no cursor while the slow subscription is detached")
	}
	before, _, _ := slow.snapshot()
	second := startGateway(t, env.databaseURL, env.gateway.args...)
	pollUntil(t, 2*time.Minute, "the slow receiver to get every click", hasAll(slow, clicks))
	pollUntil(t, time.Minute, "both replicas to rejoin and delete their cursors", func() bool { return cursors() == 0 })

	got, badSig, idMismatch := slow.snapshot()
	if badSig > 0 || idMismatch > 0 {
		t.Errorf("%d bad signatures, %d changed ids", badSig, idMismatch)
	}
	dups := 0
	for _, c := range got {
		dups += c - 1
	}
	// Each replica's generation ends and starts again as the second joins
	// (and perhaps once more): at most two hand-overs of one lane's worth.
	const bound = 2 * (16 + 1)
	t.Logf("%d clicks; %d had arrived when the second replica joined; %d duplicates at the hand-over (bound %d)", len(clicks), len(before), dups, bound)
	if dups > bound {
		t.Errorf("%d duplicates; want at most %d (the events in flight at the hand-overs)", dups, bound)
	}
	if !strings.Contains(second.logs.String(), "taking up a detached subscription's cursor") {
		t.Error("the second replica never took up a cursor of the partitions it was given")
	}
}

// slowAndHealthy subscribes two receivers to fv_clicks: a healthy one (64
// in flight) and a slow one that takes delay a request, one at a time.
func slowAndHealthy(t *testing.T, env *loadEnv, delay time.Duration) (healthy, slow *receiver, ids map[*receiver]string) {
	t.Helper()
	healthy, slow = newReceiver(t), newReceiver(t)
	slow.status = func() int {
		time.Sleep(delay) // a slow receiver, not a synchronisation
		return http.StatusOK
	}
	ids = map[*receiver]string{}
	for name, r := range map[string]*receiver{"healthy": healthy, "slow": slow} {
		inFlight := 64
		if r == slow {
			inFlight = 1
		}
		created := env.gateway.api(t, env.key, "POST", "/v1/subscriptions", map[string]any{
			"name": name, "feature_view_names": []string{fvClicks},
			"webhook": map[string]any{"url": r.srv.URL, "max_in_flight": inFlight}}, 200)
		ids[r] = created["id"].(string)
		r.mu.Lock()
		r.secret = created["secret"].(string)
		r.mu.Unlock()
	}
	env.gateway.awaitSubscriptions(t, 2)
	return healthy, slow, ids
}

// clickSeqs returns the sequence numbers in [0, n) of fv_clicks records.
func clickSeqs(n int, base time.Time) []int {
	var clicks []int
	for seq := range n {
		if _, _, fv, _ := testRecord(seq, base); fv == fvClicks {
			clicks = append(clicks, seq)
		}
	}
	return clicks
}

// hasAll is a condition that holds once r has received every one of seqs.
func hasAll(r *receiver, seqs []int) func() bool {
	return func() bool {
		got, _, _ := r.snapshot()
		for _, seq := range seqs {
			if got[seq] == 0 {
				return false
			}
		}
		return true
	}
}
