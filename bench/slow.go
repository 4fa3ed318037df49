package main

import (
	"context"
	"fmt"
	"log"
	"slices"
	"strings"
)

// The slow-receiver pair: eight healthy subscriptions alone (the baseline),
// and the same eight beside one receiver answering in 2 s and one answering
// 503 (issue 10: the eight keep ≥ 95% of their deliveries/s, p99 within
// 1.2×).
const (
	slowBaseline = "slow-receiver-baseline"
	slowBad      = "slow-receiver"
)

// slowRun runs one side of the pair once.
func (b *bench) slowRun(ctx context.Context, name string) (*result, error) {
	if name == slowBaseline {
		return b.backlog(ctx, backlogParams{label: "healthy0", records: 20000, subs: repeat(subSpec{url: "healthy0"}, 8), detaches: true})
	}
	// Only the two bad subscriptions should be detached (each once, unless
	// it rejoins and falls behind again); a healthy one detached is the
	// lane-wait rule mistaking shared backpressure for a laggard.
	subs := append(repeat(subSpec{url: "healthy1"}, 8), subSpec{url: "slow", mode: "slow"}, subSpec{url: "fail", mode: "fail"})
	r, err := b.backlog(ctx, backlogParams{label: "healthy1", records: 20000, subs: subs, detaches: true})
	if err != nil {
		return nil, err
	}
	// What the two bad receivers cost the machine: the requests they were
	// sent while the eight were delivered.
	slow, serr := b.stats("slow", false)
	fail, ferr := b.stats("fail", false)
	if serr == nil && ferr == nil {
		r.Notes = strings.TrimSpace(fmt.Sprintf("%s; requests to the slow receiver %d, to the failing one %d", r.Notes, slow.Requests, fail.Requests))
	}
	return r, nil
}

// slowReceiver returns name's result. The first call runs both sides that
// were asked for -slow-pairs times, interleaved (baseline, bad, baseline,
// bad, …), so load from elsewhere on the machine falls on both alike, and
// keeps each side's medians; the other side's call returns its medians.
func (b *bench) slowReceiver(ctx context.Context, name string) (*result, error) {
	if r := b.slow[name]; r != nil {
		return r, nil
	}
	var sides []string
	for _, s := range []string{slowBaseline, slowBad} {
		if len(b.only) == 0 || b.only[s] {
			sides = append(sides, s)
		}
	}
	runs := map[string][]*result{}
	for i := range b.pairs {
		for _, s := range sides {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			r, err := b.slowRun(ctx, s)
			if err != nil {
				return nil, fmt.Errorf("%s, run %d of %d: %w", s, i+1, b.pairs, err)
			}
			log.Printf("  %s run %d of %d: %s", s, i+1, b.pairs, r.line())
			runs[s] = append(runs[s], r)
		}
	}
	b.slow = map[string]*result{}
	for _, s := range sides {
		b.slow[s] = medianResult(runs[s])
	}
	if base, bad := b.slow[slowBaseline], b.slow[slowBad]; base != nil && bad != nil && base.PerSecond > 0 && base.P99 > 0 {
		bad.Notes = strings.TrimSpace(fmt.Sprintf("healthy eight: %.0f%% of %s's deliveries/s, p99 %.2f× (ratios of the medians); %s",
			100*bad.PerSecond/base.PerSecond, slowBaseline, bad.P99/base.P99, bad.Notes))
	}
	return b.slow[name], nil
}

// medianResult is one result of several runs of a scenario: each figure is
// the median of the runs' (the mean of the middle two for an even count),
// except that losses and duplicates are the worst run's and delivered the
// least; the notes list every run's deliveries/s and p99.
func medianResult(rs []*result) *result {
	med := func(f func(*result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		n := len(v)
		if n%2 == 1 {
			return v[n/2]
		}
		return (v[n/2-1] + v[n/2]) / 2
	}
	// The run of median throughput lends its histogram.
	byRate := slices.Clone(rs)
	slices.SortFunc(byRate, func(a, b *result) int {
		switch {
		case a.PerSecond < b.PerSecond:
			return -1
		case a.PerSecond > b.PerSecond:
			return 1
		}
		return 0
	})
	m := *byRate[len(byRate)/2]
	m.PerSecond = med(func(r *result) float64 { return r.PerSecond })
	m.Seconds = med(func(r *result) float64 { return r.Seconds })
	m.P50 = med(func(r *result) float64 { return r.P50 })
	m.P99 = med(func(r *result) float64 { return r.P99 })
	m.P999 = med(func(r *result) float64 { return r.P999 })
	m.CPUPer10k = med(func(r *result) float64 { return r.CPUPer10k })
	m.PeakRSSMiB = med(func(r *result) float64 { return r.PeakRSSMiB })
	m.PGWritesPerDelivery = med(func(r *result) float64 { return r.PGWritesPerDelivery })
	m.PGCommitsPerDelivery = med(func(r *result) float64 { return r.PGCommitsPerDelivery })
	m.Parked = med(func(r *result) float64 { return r.Parked })
	m.RetryQueued = med(func(r *result) float64 { return r.RetryQueued })
	var rates, p99s, notes []string
	for _, r := range rs {
		m.Delivered = min(m.Delivered, r.Delivered)
		m.Lost = max(m.Lost, r.Lost)
		m.Duplicates = max(m.Duplicates, r.Duplicates)
		rates = append(rates, fmt.Sprintf("%.0f", r.PerSecond))
		p99s = append(p99s, fmt.Sprintf("%.0f", r.P99))
		if r.Notes != "" {
			notes = append(notes, r.Notes)
		}
	}
	m.Notes = fmt.Sprintf("median of %d runs interleaved with the other side of the pair (deliveries/s %s; p99 ms %s)",
		len(rs), strings.Join(rates, ", "), strings.Join(p99s, ", "))
	if len(notes) > 0 {
		m.Notes += "; " + strings.Join(notes, "; ")
	}
	return &m
}
