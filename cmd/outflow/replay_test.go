package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
)

// TestReplay: three hours of records (by Kafka timestamp) are delivered
// live; replaying the middle hour re-delivers exactly that hour's matching
// events, with the ids they had, to the replayed subscription and to no
// other; progress is visible through the API; a stream subscription's
// replay answers with a token from which StreamEvents delivers the hour.
func TestReplay(t *testing.T) {
	t.Parallel()
	env := newLoadEnv(t)
	clicks, views := newReceiver(t), newReceiver(t)
	subs := []*e2eSubscription{
		{name: "clicks", recv: clicks, wants: func(fv, _ string) bool { return fv == fvClicks },
			body: map[string]any{"feature_view_names": []string{fvClicks}, "webhook": map[string]any{"url": clicks.srv.URL, "max_in_flight": 16}}},
		{name: "views", recv: views, wants: func(fv, _ string) bool { return fv == fvViews },
			body: map[string]any{"feature_view_names": []string{fvViews}, "webhook": map[string]any{"url": views.srv.URL}}},
	}
	for _, s := range subs {
		s.body["name"] = s.name
	}
	env.subscribe(t, subs)
	streamID := env.gateway.api(t, env.key, "POST", "/v1/subscriptions", map[string]any{
		"name": "carts stream", "feature_view_names": []string{fvCart}, "stream": map[string]any{}}, 200)["id"].(string)

	// Records 0-899, 300 an hour at 10s intervals: hour 0 before the
	// replayed hour, hour 1 the replayed one, hour 2 after it.
	const perHour, n = 300, 900
	hourStart := time.Now().Add(-3 * time.Hour).Truncate(time.Minute).Add(time.Hour)
	at := func(seq int) time.Time {
		return hourStart.Add(time.Duration(seq/perHour-1) * time.Hour).Add(time.Duration(seq%perHour) * 10 * time.Second)
	}
	base := time.Now().Add(-4 * time.Hour)
	msgs := make([]kafkago.Message, 0, n)
	for seq := range n {
		key, value, _, _ := testRecord(seq, base)
		msgs = append(msgs, kafkago.Message{Key: []byte(key), Value: value, Time: at(seq)})
	}
	env.produceMessages(t, msgs)
	checkDelivered(t, subs, expected(subs, n, base), 2*time.Minute)
	before := make([]map[int]int, len(subs))
	for i, s := range subs {
		before[i], _, _ = s.recv.snapshot()
	}

	// Replay the middle hour of the webhook subscription.
	started := time.Now()
	rp := env.gateway.api(t, env.key, "POST", "/v1/subscriptions/"+subs[0].id+":replay", map[string]any{
		"start_time": hourStart.Format(time.RFC3339Nano), "end_time": hourStart.Add(time.Hour).Format(time.RFC3339Nano)}, 200)
	replayID, _ := rp["id"].(string)
	if rp["state"] != "RUNNING" || len(replayID) < 5 || replayID[:4] != "rpl_" {
		t.Fatalf("ReplaySubscription answered %v", rp)
	}
	var final map[string]any
	pollUntil(t, time.Minute, "the replay to succeed", func() bool {
		final = env.gateway.api(t, env.key, "GET", "/v1/subscriptions/"+subs[0].id+"/replays/"+replayID, nil, 200)
		if final["state"] == "FAILED" {
			t.Fatalf("the replay failed: %v", final)
		}
		return final["state"] == "SUCCEEDED"
	})
	took := time.Since(started)

	// Exactly the hour's clicks came again, once each, with their ids (the
	// receiver counts an id that differs from the first delivery's).
	want := map[int]bool{}
	for seq := perHour; seq < 2*perHour; seq++ {
		if _, _, fv, _ := testRecord(seq, base); fv == fvClicks {
			want[seq] = true
		}
	}
	got, badSig, idMismatch := clicks.snapshot()
	var again []int
	for seq, c := range got {
		switch extra := c - before[0][seq]; {
		case extra == 1 && want[seq]:
			again = append(again, seq)
		case extra != 0:
			t.Errorf("record %d (clicks): %d extra deliveries after the replay, want %d", seq, extra, map[bool]int{true: 1}[want[seq]])
		}
	}
	if len(again) != len(want) {
		t.Errorf("the replay re-delivered %d of the hour's %d clicks", len(again), len(want))
	}
	if badSig != 0 || idMismatch != 0 {
		t.Errorf("clicks receiver: %d bad signatures, %d events whose id changed", badSig, idMismatch)
	}
	if vgot, _, _ := views.snapshot(); !maps.Equal(vgot, before[1]) {
		t.Error("a subscription that was not replayed received events during the replay")
	}
	if total, read, delivered := final["records_total"], final["records_read"], final["events_delivered"]; total != fmt.Sprint(perHour) || read != fmt.Sprint(perHour) || delivered != fmt.Sprint(len(want)) {
		t.Errorf("replay progress: records_total %v, records_read %v, events_delivered %v; want %d, %d, %d",
			total, read, delivered, perHour, perHour, len(want))
	}
	list := env.gateway.api(t, env.key, "GET", "/v1/subscriptions/"+subs[0].id+"/replays", nil, 200)
	if rs, _ := list["replays"].([]any); len(rs) != 1 || rs[0].(map[string]any)["id"] != replayID {
		t.Errorf("ListReplays = %v, want the one replay", list)
	}
	t.Logf("replayed an hour (%d records, %d matching events) in %s", perHour, len(want), took.Round(time.Millisecond))

	// The CLI shows the same progress, and runs a replay to its end.
	cli := func(args ...string) string {
		return runOutflow(t, env.databaseURL, append(args, "--grpc-addr", env.gateway.grpcAddr, "--api-key", env.key)...)
	}
	if out := cli("replay", "get", "--subscription", subs[0].id, "--id", replayID); !strings.Contains(out, replayID+" SUCCEEDED") ||
		!strings.Contains(out, fmt.Sprintf("%d of %d records read, %d events delivered", perHour, perHour, len(want))) {
		t.Errorf("outflow replay get printed %q", out)
	}
	if out := cli("replay", "list", "--subscription", subs[0].id); !strings.Contains(out, replayID) {
		t.Errorf("outflow replay list printed %q", out)
	}
	out := cli("replay", "start", "--subscription", subs[1].id, "--from", at(0).Format(time.RFC3339), "--to", at(perHour).Format(time.RFC3339), "--wait", "--poll-interval", "100ms")
	if !strings.Contains(out, "SUCCEEDED") || !strings.Contains(out, fmt.Sprintf("%d of %d records read, %d events delivered", perHour, perHour, perHour/3)) {
		t.Errorf("outflow replay start --wait printed %q", out)
	}

	// A stream subscription's replay: a token at the hour's start; the
	// stream from it begins with the hour's carts, none older.
	srp := env.gateway.api(t, env.key, "POST", "/v1/subscriptions/"+streamID+":replay", map[string]any{
		"start_time": hourStart.Format(time.RFC3339Nano), "end_time": hourStart.Add(time.Hour).Format(time.RFC3339Nano)}, 200)
	token, _ := srp["resume_token"].(string)
	if srp["state"] != "SUCCEEDED" || token == "" {
		t.Fatalf("stream replay answered %v", srp)
	}
	client, authed := streamClient(t, env.gateway, env.key)
	ctx, cancel := context.WithTimeout(authed, time.Minute)
	defer cancel()
	s, err := client.StreamEvents(ctx, &outflowv1.StreamEventsRequest{SubscriptionId: streamID, ResumeToken: token})
	if err != nil {
		t.Fatal(err)
	}
	carts := map[int]bool{}
	for seq := perHour; seq < 2*perHour; seq++ {
		if _, _, fv, _ := testRecord(seq, base); fv == fvCart {
			carts[seq] = true
		}
	}
	seen := map[int]bool{}
	for len(seen) < len(carts) {
		ev, err := nextEvent(s)
		if err != nil {
			t.Fatalf("stream after %d of the hour's %d carts: %v", len(seen), len(carts), err)
		}
		switch {
		case ev.seq < perHour:
			t.Fatalf("the replay stream delivered record %d, from before the hour", ev.seq)
		case carts[ev.seq]:
			seen[ev.seq] = true
		}
	}
	t.Logf("the stream replay delivered the hour's %d carts, first ones %v", len(seen), slices.Sorted(maps.Keys(seen))[:3])
}

// TestReplayDoesNotBlockLive: while a replay re-sends hundreds of events to
// a slow receiver, live events of the same subscription still arrive within
// a bound set by the replay's in-flight cap, not after the whole replay.
func TestReplayDoesNotBlockLive(t *testing.T) {
	t.Parallel()
	env := newLoadEnv(t)
	recv := newReceiver(t)
	recv.status = func() int {
		time.Sleep(20 * time.Millisecond) // a slow receiver: about 50 events a second
		return 200
	}
	sub := &e2eSubscription{name: "clicks", recv: recv, wants: func(fv, _ string) bool { return fv == fvClicks },
		body: map[string]any{"name": "clicks", "feature_view_names": []string{fvClicks}, "webhook": map[string]any{"url": recv.srv.URL, "max_in_flight": 2}}}
	env.subscribe(t, []*e2eSubscription{sub})

	// 900 records an hour ago (300 clicks), delivered live first.
	const n = 900
	hourStart := time.Now().Add(-2 * time.Hour)
	base := time.Now().Add(-3 * time.Hour)
	msgs := make([]kafkago.Message, 0, n)
	for seq := range n {
		key, value, _, _ := testRecord(seq, base)
		msgs = append(msgs, kafkago.Message{Key: []byte(key), Value: value, Time: hourStart.Add(time.Duration(seq) * time.Second)})
	}
	env.produceMessages(t, msgs)
	checkDelivered(t, []*e2eSubscription{sub}, expected([]*e2eSubscription{sub}, n, base), 2*time.Minute)

	rp := env.gateway.api(t, env.key, "POST", "/v1/subscriptions/"+sub.id+":replay", map[string]any{
		"start_time": hourStart.Format(time.RFC3339Nano), "end_time": hourStart.Add(time.Hour).Format(time.RFC3339Nano)}, 200)
	replayID := rp["id"].(string)
	replayState := func() map[string]any {
		return env.gateway.api(t, env.key, "GET", "/v1/subscriptions/"+sub.id+"/replays/"+replayID, nil, 200)
	}
	pollUntil(t, 30*time.Second, "the replay to be under way", func() bool {
		r := replayState()
		return r["state"] == "RUNNING" && r["events_delivered"] != nil
	})

	// Ten live clicks while the replay runs.
	const live = 10
	produced := time.Now()
	var liveMsgs []kafkago.Message
	var liveSeqs []int
	for i := range live {
		seq := 1_000_000 + 3*i // a click (seq % 3 == 1)
		key, value, _, _ := testRecord(seq, base)
		liveMsgs = append(liveMsgs, kafkago.Message{Key: []byte(key), Value: value})
		liveSeqs = append(liveSeqs, seq)
	}
	env.produceMessages(t, liveMsgs)
	var liveTook time.Duration
	pollUntil(t, time.Minute, "the live events", func() bool {
		got, _, _ := recv.snapshot()
		for _, seq := range liveSeqs {
			if got[seq] == 0 {
				return false
			}
		}
		liveTook = time.Since(produced)
		return true
	})
	during := replayState()
	var replayTook time.Duration
	pollUntil(t, 2*time.Minute, "the replay to succeed", func() bool {
		replayTook = time.Since(produced)
		return replayState()["state"] == "SUCCEEDED"
	})
	t.Logf("live events arrived %s after they were produced, while the replay stood at %v of 300 events; the replay ended %s after them",
		liveTook.Round(time.Millisecond), during["events_delivered"], replayTook.Round(time.Millisecond))
	// Had the replay queued all its events ahead of them, the live events
	// would have arrived only once it had delivered everything.
	if during["state"] != "RUNNING" {
		t.Errorf("the live events arrived only after the replay had ended (%v): they waited behind it", during)
	}
}
