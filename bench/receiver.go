package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The receiver runs as its own process (`outflow-bench receiver`), so that
// the gateway's CPU and memory are measured without it and it competes for
// the CPU the way a real receiver on the same host would. Its paths are
// /r/<label>/<mode>: mode ok answers 204 at once, slow after 2 s, fail 503.
// Per label it counts requests and distinct webhook-ids (duplicates are the
// difference) and keeps the latency of each first arrival, measured from the
// sent_ns the producer wrote into the record. GET /stats returns them (with
// ?sent_after=<unix ns>, the latencies of records produced from then on
// only); POST /reset forgets everything.

// sink is one label's tally.
type sink struct {
	requests int
	// ids holds each distinct webhook-id's hash (maphash, the receiver's
	// seed), not the id: a map without pointers, which the garbage
	// collector does not scan. At 400,000 ids in a run, two ids share a
	// hash with a chance of 10⁻⁸.
	ids       map[uint64]struct{}
	latencies []time.Duration
	sent      []int64 // each latency's record's sent_ns
	first     time.Time
	last      time.Time
}

type receiver struct {
	mu    sync.Mutex
	sinks map[string]*sink
	seed  maphash.Seed
	// bodies are buffers for request bodies, kept for the next request: a
	// receiver that allocated each body anew took more CPU per request
	// than it had to, on the 2 cores it shares with what it measures.
	bodies sync.Pool
}

// sinkStats is what /stats reports for a label.
type sinkStats struct {
	Requests int       `json:"requests"`
	Unique   int       `json:"unique"`
	First    time.Time `json:"first"`
	Last     time.Time `json:"last"`
	// Latencies are sorted, in microseconds.
	P50  float64 `json:"p50_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p999_ms"`
	// Arrivals after, when asked with ?after=<unix ns>: the first arrival
	// after that time.
	FirstAfter time.Time `json:"first_after,omitzero"`
	// Histogram is the latency distribution in 1 ms buckets up to 1 s, for
	// the plot.
	Histogram []int `json:"histogram,omitempty"`
	// WindowMax is, for each 100 ms of produce time from the first record
	// measured, the longest latency of its records in ms (0: none): it
	// tells a tail spread over the run from a few stalls.
	WindowMax []float64 `json:"window_max_ms,omitempty"`
}

var sentMarker = []byte(`"sent_ns":"`)

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	switch {
	case r.URL.Path == "/stats":
		rc.stats(w, r)
		return
	case r.URL.Path == "/reset":
		rc.mu.Lock()
		rc.sinks = map[string]*sink{}
		rc.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
		return
	}
	label, mode, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/r/"), "/")
	if !ok || strings.Contains(mode, "/") {
		http.NotFound(w, r)
		return
	}
	buf, _ := rc.bodies.Get().(*bytes.Buffer)
	if buf == nil {
		buf = new(bytes.Buffer)
	}
	defer rc.bodies.Put(buf)
	buf.Reset()
	_, _ = buf.ReadFrom(r.Body)
	body := buf.Bytes()
	switch mode {
	case "fail":
		// Counted as requests only: none of them was delivered.
		rc.mu.Lock()
		rc.sink(label).requests++
		rc.mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	case "slow":
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
			return
		}
		now = time.Now()
	}
	var lat time.Duration = -1
	sent, ok := sentAt(body)
	if ok {
		lat = now.Sub(sent)
	}
	id := maphash.String(rc.seed, r.Header.Get("webhook-id"))
	rc.mu.Lock()
	s := rc.sink(label)
	s.requests++
	if _, dup := s.ids[id]; !dup {
		s.ids[id] = struct{}{}
		if lat >= 0 {
			s.latencies = append(s.latencies, lat)
			s.sent = append(s.sent, sent.UnixNano())
		}
		if s.first.IsZero() {
			s.first = now
		}
		s.last = now
	}
	rc.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// sink returns label's tally, made on first use; rc.mu is held.
func (rc *receiver) sink(label string) *sink {
	s := rc.sinks[label]
	if s == nil {
		s = &sink{ids: map[uint64]struct{}{}}
		rc.sinks[label] = s
	}
	return s
}

func (rc *receiver) stats(w http.ResponseWriter, r *http.Request) {
	label := r.URL.Query().Get("label")
	rc.mu.Lock()
	s := rc.sinks[label]
	var out sinkStats
	var lats []time.Duration
	var sent []int64
	if s != nil {
		out = sinkStats{Requests: s.requests, Unique: len(s.ids), First: s.first, Last: s.last}
		if r.URL.Query().Get("latency") != "" {
			// ?sent_after=<unix ns>: only records produced from then on
			// (a warm-up left out).
			after, _ := strconv.ParseInt(r.URL.Query().Get("sent_after"), 10, 64)
			for i, l := range s.latencies {
				if s.sent[i] >= after {
					lats = append(lats, l)
					sent = append(sent, s.sent[i])
				}
			}
		}
	}
	rc.mu.Unlock()
	if len(lats) > 0 {
		out.WindowMax = windowMax(lats, sent)
		slices.Sort(lats)
		pick := func(q float64) float64 {
			return float64(lats[min(len(lats)-1, int(q*float64(len(lats))))]) / float64(time.Millisecond)
		}
		out.P50, out.P99, out.P999 = pick(0.50), pick(0.99), pick(0.999)
		out.Histogram = make([]int, 1001)
		for _, l := range lats {
			out.Histogram[min(1000, int(l/time.Millisecond))]++
		}
	}
	w.Header().Set("content-type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// statsWindow is the span of produce time each of sinkStats.WindowMax's
// entries covers.
const statsWindow = 100 * time.Millisecond

// windowMax is sinkStats.WindowMax of the latencies lats of records
// produced at sent (unix ns).
func windowMax(lats []time.Duration, sent []int64) []float64 {
	lo, hi := slices.Min(sent), slices.Max(sent)
	out := make([]float64, (hi-lo)/int64(statsWindow)+1)
	for i, l := range lats {
		w := (sent[i] - lo) / int64(statsWindow)
		out[w] = max(out[w], float64(l)/float64(time.Millisecond))
	}
	return out
}

// runReceiver serves until SIGTERM; it prints "listening <addr>" first.
func runReceiver() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("receiver: %w", err)
	}
	fmt.Fprintf(os.Stdout, "listening %s\n", lis.Addr())
	srv := &http.Server{Handler: &receiver{sinks: map[string]*sink{}, seed: maphash.MakeSeed()}, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
