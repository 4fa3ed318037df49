// Command outflow-bench is Outflow's delivery benchmark (`make bench`,
// issue 10). It builds the gateway, runs it as its own process against the
// test environment's Kafka and PostgreSQL (OUTFLOW_TEST_KAFKA_BROKERS,
// OUTFLOW_TEST_DATABASE_URL, as the tests use them), delivers to a receiver
// running as a separate process, and reports per scenario deliveries/s,
// latency percentiles, the gateway's CPU-seconds per 10k deliveries and peak
// RSS, PostgreSQL writes per delivery (pg_stat_database of the scenario's
// own database), duplicates and losses, with throughput as a ratio of
// raw-post (a bare Go HTTP client posting the same bodies to the same
// receiver with the same concurrency) from the same run.
//
// It lives in bench/ rather than cmd/: it is a development tool with its own
// process tree, not part of the shipped binary, and it may import the
// module's packages (store, dispatcher) to set up scenarios without the API.
//
// Every scenario makes its own topic, consumer group and database and
// removes them afterwards; nothing here kills a shared service.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/outflow-dev/outflow/dispatcher"
	"github.com/outflow-dev/outflow/source"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "receiver" {
		if err := runReceiver(); err != nil {
			log.Fatal(err)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		log.Fatal(err)
	}
}

// bench is the state shared by the scenarios of one run.
type bench struct {
	bin      string // the gateway binary
	self     string
	brokers  []string
	adminURL string
	work     string // logs and scratch
	recvAddr string
	recv     *proc // the receiver process, for its CPU time
	only     map[string]bool
	scale    float64
	// steadyRate, when set, is steady-latency's offered load.
	steadyRate float64
	results    []*result
	// floor is raw-post's deliveries/s; maxRate backlog-plain's.
	floor, maxRate float64
	// pairs is how many times slow-receiver-baseline and slow-receiver
	// run, interleaved; slow holds their medians once run.
	pairs int
	slow  map[string]*result
	// pprofDir, when set, receives CPU and allocation profiles of the gateway and the feature server of
	// the backlog scenarios, pprofSeconds long, taken from the gateway's start on, and of
	// the gateway in steady-latency, taken from its first delivery on.
	pprofDir     string
	pprofSeconds int
	// gatewayArgs are appended to every gateway's command line
	// (-gateway-args).
	gatewayArgs []string
}

func run(ctx context.Context) error {
	out := flag.String("out", "bench/results", "directory for the JSON, markdown and PNG results")
	docs := flag.String("docs", "docs/benchmarks.md", "markdown file that gets the latest results (empty: none)")
	only := flag.String("only", "", "comma-separated scenarios to run (default: all)")
	scale := flag.Float64("scale", 1, "multiplies every scenario's record count")
	steadyRate := flag.Float64("steady-rate", 0, "records/s offered in steady-latency (0: half of backlog-plain's deliveries/s in the same run, or 2000 when it did not run)")
	pairs := flag.Int("slow-pairs", 5, "how many times slow-receiver-baseline and slow-receiver run, interleaved (baseline, bad, baseline, bad, …); each reports its median, so the ratio of the two is robust to other load on the machine")
	pprofDir := flag.String("pprof", "", "directory for CPU and allocation profiles of the gateway and the feature server in the backlog scenarios, and of the gateway in steady-latency (empty: none); raise -scale so that a backlog run outlasts -pprof-seconds")
	pprofSeconds := flag.Int("pprof-seconds", 5, "length of each -pprof profile, in seconds")
	gatewayArgs := flag.String("gateway-args", "", "extra flags for every gateway the bench starts, space-separated (e.g. \"--read-ahead=-1\"), to compare a setting against the defaults; the published run uses none")
	flag.Parse()

	dbURL, brokers := os.Getenv("OUTFLOW_TEST_DATABASE_URL"), os.Getenv("OUTFLOW_TEST_KAFKA_BROKERS")
	if dbURL == "" || brokers == "" {
		return errors.New("set OUTFLOW_TEST_DATABASE_URL and OUTFLOW_TEST_KAFKA_BROKERS (source a test environment, or run `make bench`, which starts one)")
	}
	work, err := os.MkdirTemp("", "outflow-bench-")
	if err != nil {
		return err
	}
	log.Printf("logs and scratch in %s", work)
	b := &bench{brokers: strings.Split(brokers, ","), adminURL: dbURL, work: work, scale: *scale, steadyRate: *steadyRate,
		only: map[string]bool{}, pairs: max(*pairs, 1), pprofDir: *pprofDir, pprofSeconds: *pprofSeconds,
		gatewayArgs: strings.Fields(*gatewayArgs)}
	for _, s := range strings.Split(*only, ",") {
		if s != "" {
			b.only[s] = true
		}
	}
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	b.bin = filepath.Join(work, "outflow")
	build := exec.CommandContext(ctx, "go", "build", "-o", b.bin, "./cmd/outflow")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building the gateway: %w", err)
	}
	recv, addr, err := startReceiver(b.self, filepath.Join(work, "receiver.log"))
	if err != nil {
		return err
	}
	defer recv.stop()
	b.recv, b.recvAddr = recv, addr

	started := time.Now()
	for _, sc := range scenarios {
		if len(b.only) > 0 && !b.only[sc.name] {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		log.Printf("scenario %s", sc.name)
		r, err := sc.run(b, ctx)
		if err != nil {
			log.Printf("scenario %s failed: %v", sc.name, err)
			r = &result{Name: sc.name, Notes: "failed: " + err.Error()}
		}
		r.Name = sc.name
		b.results = append(b.results, r)
		log.Printf("  %s", r.line())
	}
	for _, r := range b.results {
		if b.floor > 0 && r.PerSecond > 0 {
			r.RatioToFloor = r.PerSecond / b.floor
		}
	}
	return b.report(*out, *docs, time.Since(started))
}

// scenario is one named measurement.
type scenario struct {
	name string
	run  func(b *bench, ctx context.Context) (*result, error)
}

// scenarios run in this order: raw-post first (the floor), backlog-plain
// before kafka-floor, bridge-floor and steady-latency (which run at half
// its rate, and steady-latency-25 at a quarter).
var scenarios = []scenario{
	{"raw-post", (*bench).rawPost},
	{"backlog-plain", func(b *bench, ctx context.Context) (*result, error) {
		r, err := b.backlog(ctx, backlogParams{label: "plain", records: 50000, subs: []subSpec{{url: "plain"}}})
		if err == nil {
			b.maxRate = r.PerSecond
		}
		return r, err
	}},
	{"backlog-strict", func(b *bench, ctx context.Context) (*result, error) {
		return b.backlog(ctx, backlogParams{label: "strict", records: 20000, strict: true, subs: []subSpec{{url: "strict", strict: true}}})
	}},
	{"backlog-strict-remote", func(b *bench, ctx context.Context) (*result, error) {
		return b.backlog(ctx, backlogParams{label: "remote", records: 10000, strict: true, fsLatency: remoteFeatureStore,
			subs: []subSpec{{url: "remote", strict: true}}})
	}},
	{"fanout-100", func(b *bench, ctx context.Context) (*result, error) {
		return b.backlog(ctx, backlogParams{label: "fan100", records: 500, subs: repeat(subSpec{url: "fan100"}, 100)})
	}},
	{"fanout-1000", func(b *bench, ctx context.Context) (*result, error) {
		return b.backlog(ctx, backlogParams{label: "fan1000", records: 100, subs: repeat(subSpec{url: "fan1000"}, 1000)})
	}},
	{"many-subs-10k", func(b *bench, ctx context.Context) (*result, error) {
		subs := []subSpec{{url: "many"}}
		for i := range 9999 {
			subs = append(subs, subSpec{url: "many-none", user: fmt.Sprintf("nobody%d", i)})
		}
		return b.backlog(ctx, backlogParams{label: "many", records: 50000, subs: subs})
	}},
	{slowBaseline, func(b *bench, ctx context.Context) (*result, error) { return b.slowReceiver(ctx, slowBaseline) }},
	{slowBad, func(b *bench, ctx context.Context) (*result, error) { return b.slowReceiver(ctx, slowBad) }},
	{"kafka-floor", (*bench).kafkaFloor},
	{"bridge-floor", (*bench).bridgeFloor},
	{"steady-latency", func(b *bench, ctx context.Context) (*result, error) { return b.steady(ctx, 1) }},
	{"steady-latency-25", func(b *bench, ctx context.Context) (*result, error) { return b.steady(ctx, 0.5) }},
	{"crash-recover", (*bench).crash},
	{"pg-outage", (*bench).pgOutage},
	{"broker-outage", (*bench).brokerOutage},
}

// remoteFeatureStore is backlog-strict-remote's feature-store latency: a
// serving API across a network answers in milliseconds, not in the tenth of
// a millisecond the reference server takes on loopback, and that is where
// a lane that waited for the store and the receiver in turn lost half its
// pace.
const remoteFeatureStore = 4 * time.Millisecond

func repeat(s subSpec, n int) []subSpec {
	out := make([]subSpec, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// result is one scenario's figures.
type result struct {
	Name string `json:"name"`
	// Expected is how many distinct deliveries the scenario owes, Delivered
	// how many distinct ones arrived; Lost is the difference.
	Expected   int `json:"expected"`
	Delivered  int `json:"delivered"`
	Duplicates int `json:"duplicates"`
	Lost       int `json:"lost"`
	// Seconds is from the first delivery to the last; PerSecond is
	// Delivered over it.
	Seconds      float64 `json:"seconds"`
	PerSecond    float64 `json:"deliveries_per_second"`
	RatioToFloor float64 `json:"ratio_to_raw_post"`
	// Latency from the record's produce time to the receiver, in ms.
	P50  float64 `json:"p50_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p999_ms"`
	// CPUPer10k is the gateway's CPU-seconds per 10,000 deliveries, from
	// its first delivery to its last.
	CPUPer10k  float64 `json:"cpu_seconds_per_10k"`
	PeakRSSMiB float64 `json:"peak_rss_mib"`
	// PGWritesPerDelivery counts rows inserted, updated and deleted in the
	// scenario's database (pg_stat_database) per delivery; PGCommits... its
	// transactions, reads included.
	PGWritesPerDelivery  float64 `json:"pg_writes_per_delivery"`
	PGCommitsPerDelivery float64 `json:"pg_commits_per_delivery"`
	// Parked and RetryQueued are the gateway's own counters.
	Parked      float64 `json:"parked"`
	RetryQueued float64 `json:"retry_queued"`
	// LatencyFrom, when set, leaves records produced before it out of the
	// latency figures (a warm-up; steady-latency and kafka-floor).
	LatencyFrom time.Time `json:"latency_from,omitzero"`
	// ResumeSeconds is, for crash-recover, from the SIGKILL to the first
	// delivery of the restarted gateway.
	ResumeSeconds float64 `json:"resume_seconds,omitempty"`
	Notes         string  `json:"notes,omitempty"`
	Histogram     []int   `json:"-"`
	// WindowMax is the receiver's sinkStats.WindowMax.
	WindowMax []float64 `json:"window_max_ms,omitempty"`
}

// tailNote says how the latency tail is spread over the run: how many 100
// ms windows of produce time held a record over 10 ms (the steady-latency
// target), and the worst window; "" without latencies.
func (r *result) tailNote() string {
	if len(r.WindowMax) == 0 {
		return ""
	}
	over, worst := 0, 0
	for i, m := range r.WindowMax {
		if m > 10 {
			over++
		}
		if m > r.WindowMax[worst] {
			worst = i
		}
	}
	return fmt.Sprintf("%d of %d windows of %s held a record over 10 ms, the worst %.0f ms at +%.1f s",
		over, len(r.WindowMax), statsWindow, r.WindowMax[worst], (time.Duration(worst) * statsWindow).Seconds())
}

func (r *result) line() string {
	return fmt.Sprintf("%d/%d delivered, %.0f/s, p50 %.1fms p99 %.1fms, cpu %.2fs/10k, rss %.0fMiB, pg writes/delivery %.3f, dups %d, lost %d %s",
		r.Delivered, r.Expected, r.PerSecond, r.P50, r.P99, r.CPUPer10k, r.PeakRSSMiB, r.PGWritesPerDelivery, r.Duplicates, r.Lost, r.Notes)
}

// rawPost is the floor: the same bodies the gateway sends, POSTed by a bare
// Go HTTP client with the gateway's default concurrency to the same
// receiver.
func (b *bench) rawPost(ctx context.Context) (*result, error) {
	const label = "raw"
	n := int(50000 * b.scale)
	if err := b.reset(); err != nil {
		return nil, err
	}
	bodies := make([][]byte, n)
	now := time.Now()
	for i := range bodies {
		var err error
		bodies[i], err = dispatcher.Envelope("sub_bench000000", source.Position{Kind: "kafka", Topic: "t", Partition: int32(i % partitions), Offset: int64(i)},
			recordJSON(i, now, now), nil, now)
		if err != nil {
			return nil, err
		}
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	url := "http://" + b.recvAddr + "/r/" + label + "/ok"
	var next atomic.Int64
	var wg sync.WaitGroup
	cpu0 := selfCPU()
	for range 16 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(string(bodies[i])))
				req.Header.Set("content-type", "application/json")
				req.Header.Set("webhook-id", fmt.Sprintf("evt_raw%d", i))
				resp, err := client.Do(req)
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	cpu := selfCPU() - cpu0
	st, err := b.stats(label, false)
	if err != nil {
		return nil, err
	}
	r := &result{Expected: n}
	r.fill(st)
	r.CPUPer10k = cpu.Seconds() / float64(max(r.Delivered, 1)) * 10000
	r.Notes = "16 concurrent POSTs; CPU is the client's (bench process); no latency (bodies are made before the run)"
	b.floor = r.PerSecond
	return r, nil
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// fill sets the delivery figures from the receiver's stats.
func (r *result) fill(st sinkStats) {
	r.Delivered, r.Duplicates = st.Unique, st.Requests-st.Unique
	r.Lost = max(r.Expected-st.Unique, 0)
	if !st.First.IsZero() && st.Last.After(st.First) {
		r.Seconds = st.Last.Sub(st.First).Seconds()
		r.PerSecond = float64(st.Unique) / r.Seconds
	}
	r.P50, r.P99, r.P999 = st.P50, st.P99, st.P999
	r.Histogram = st.Histogram
	r.WindowMax = st.WindowMax
}

func (b *bench) reset() error {
	resp, err := http.Post("http://"+b.recvAddr+"/reset", "", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

func (b *bench) stats(label string, latency bool) (sinkStats, error) {
	return b.statsSince(label, latency, time.Time{})
}

// statsSince is stats with the latencies of records produced at or after
// sentAfter only (zero: all).
func (b *bench) statsSince(label string, latency bool, sentAfter time.Time) (sinkStats, error) {
	u := "http://" + b.recvAddr + "/stats?label=" + label
	if latency {
		u += "&latency=1"
	}
	if !sentAfter.IsZero() {
		u += "&sent_after=" + strconv.FormatInt(sentAfter.UnixNano(), 10)
	}
	resp, err := http.Get(u)
	if err != nil {
		return sinkStats{}, err
	}
	defer resp.Body.Close()
	var st sinkStats
	return st, json.NewDecoder(resp.Body).Decode(&st)
}
