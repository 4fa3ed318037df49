package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/outflow-dev/outflow/dispatcher"
	"github.com/outflow-dev/outflow/source"
)

// steadyLoad is the records/s steady-latency and kafka-floor offer: the
// -steady-rate flag, else half of backlog-plain's deliveries/s in the same
// run (the "50% of max"), else 2,000/s when backlog-plain did not
// run.
func (b *bench) steadyLoad() float64 {
	switch {
	case b.steadyRate > 0:
		return b.steadyRate
	case b.maxRate > 0:
		return b.maxRate / 2
	default:
		return 2000
	}
}

// describeLoad says what rate is, for the notes.
func (b *bench) describeLoad(rate float64) string {
	if b.maxRate > 0 {
		return fmt.Sprintf("offered %.0f records/s, %.0f%% of backlog-plain's deliveries/s", rate, 100*rate/b.maxRate)
	}
	return fmt.Sprintf("offered %.0f records/s", rate)
}

// kafkaFloor is steady-latency without the gateway: the same producer at
// the same rate, and in the bench process one fetch loop per partition made
// the way the gateway's consumer makes them (fetchLoops). Its latency, from
// produce to fetched, is what the broker and this machine cost before the
// gateway does anything: the floor steady-latency's figures are read
// against.
func (b *bench) kafkaFloor(ctx context.Context) (*result, error) {
	rate := b.steadyLoad()
	topic := "bench-floor-" + randomSuffix()
	if err := createTopic(ctx, b.brokers, topic); err != nil {
		return nil, err
	}
	defer deleteTopic(b.brokers, topic)
	prod := newProducer(b.brokers, topic)
	defer prod.close()

	var (
		mu     sync.Mutex
		lats   []time.Duration // every record's
		steady []time.Duration // those produced after the warm-up
		first  time.Time
		last   time.Time
	)
	// Production starts right after the readers: records sent from here
	// on are the measured ones.
	from := time.Now().Add(steadyWarmup)
	stop := fetchLoops(ctx, b.brokers, topic, func(now time.Time, recs []fetched) {
		var got, gotSteady []time.Duration
		for _, rec := range recs {
			if sent, ok := sentAt(rec.value); ok {
				got = append(got, now.Sub(sent))
				if !sent.Before(from) {
					gotSteady = append(gotSteady, now.Sub(sent))
				}
			}
		}
		mu.Lock()
		defer mu.Unlock()
		lats = append(lats, got...)
		steady = append(steady, gotSteady...)
		if first.IsZero() {
			first = now
		}
		last = now
	})
	cpu0 := machineCPU()
	n, err := prod.produceAt(ctx, 0, rate, steadyWarmup+15*time.Second)
	busy := cpu0.busySince()
	if err != nil {
		stop()
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		got := len(lats)
		mu.Unlock()
		if got >= n || time.Now().After(deadline) {
			break
		}
		if !sleepFor(ctx, 20*time.Millisecond) {
			break
		}
	}
	stop()
	r := &result{Expected: n, Delivered: len(lats), Lost: max(n-len(lats), 0)}
	if last.After(first) {
		r.Seconds = last.Sub(first).Seconds()
		r.PerSecond = float64(len(lats)) / r.Seconds
	}
	r.LatencyFrom = from
	r.P50, r.P99, r.P999 = percentileMs(steady, 0.50), percentileMs(steady, 0.99), percentileMs(steady, 0.999)
	r.Notes = fmt.Sprintf("Kafka alone, no gateway: %s for %s, latency from produce to fetched in the bench process, of the last 15 s; machine CPU %.0f%% busy",
		b.describeLoad(rate), steadyWarmup+15*time.Second, busy)
	return r, nil
}

// bridgeConcurrency is bridge-floor's requests under way at once: a
// subscription's default max_in_flight, and raw-post's concurrency.
const bridgeConcurrency = 16

// bridgeFloor is steady-latency with the gateway replaced by the least a
// Kafka → HTTP bridge does: kafka-floor's fetch loops in the bench process
// hand each record, in the envelope raw-post sends (unsigned), to
// bridgeConcurrency workers posting to the same receiver over kept
// connections with net/http. No matching, no signing, no lanes, no
// bookkeeping of offsets. Its latency, from produce to receipt, is what
// this machine costs to carry a record from the producer to the receiver
// at steady-latency's rate: the floor of steady-latency on this machine.
func (b *bench) bridgeFloor(ctx context.Context) (*result, error) {
	const label = "bridge"
	rate := b.steadyLoad()
	topic := "bench-bridge-" + randomSuffix()
	if err := createTopic(ctx, b.brokers, topic); err != nil {
		return nil, err
	}
	defer deleteTopic(b.brokers, topic)
	if err := b.reset(); err != nil {
		return nil, err
	}
	prod := newProducer(b.brokers, topic)
	defer prod.close()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: bridgeConcurrency}}
	defer client.CloseIdleConnections()
	url := "http://" + b.recvAddr + "/r/" + label + "/ok"
	type post struct {
		id   string
		body []byte
	}
	work := make(chan post, 1024)
	var failed atomic.Int64
	var posters sync.WaitGroup
	for range bridgeConcurrency {
		posters.Go(func() {
			for p := range work {
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(p.body))
				if err != nil {
					failed.Add(1)
					continue
				}
				req.Header.Set("content-type", "application/json")
				req.Header.Set("webhook-id", p.id)
				resp, err := client.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	from := time.Now().Add(steadyWarmup)
	stop := fetchLoops(ctx, b.brokers, topic, func(_ time.Time, recs []fetched) {
		for _, rec := range recs {
			pos := source.Position{Kind: "kafka", Topic: topic, Partition: rec.partition, Offset: rec.offset}
			body, err := dispatcher.Envelope("sub_bridge", pos, rec.value, nil, time.Now())
			if err != nil {
				failed.Add(1)
				continue
			}
			select {
			case work <- post{id: "evt_bridge_" + strconv.Itoa(int(rec.partition)) + "_" + strconv.FormatInt(rec.offset, 10), body: body}:
			case <-ctx.Done():
				return
			}
		}
	})
	cpu0, recvCPU := machineCPU(), b.recv.cpu()
	n, err := prod.produceAt(ctx, 0, rate, steadyWarmup+15*time.Second)
	busy, recvCPU := cpu0.busySince(), b.recv.cpu()-recvCPU
	if err == nil {
		deadline := time.Now().Add(30 * time.Second)
		for {
			st, serr := b.stats(label, false)
			if serr != nil {
				err = serr
				break
			}
			if st.Unique >= n || time.Now().After(deadline) || !sleepFor(ctx, 20*time.Millisecond) {
				break
			}
		}
	}
	stop()
	close(work)
	posters.Wait()
	if err != nil {
		return nil, err
	}
	st, err := b.statsSince(label, true, from)
	if err != nil {
		return nil, err
	}
	r := &result{Expected: n, LatencyFrom: from}
	r.fill(st)
	r.Notes = fmt.Sprintf("no gateway: kafka-floor's fetch loops and %d net/http workers in the bench process posting raw-post's bodies; %s for %s, latency of the last 15 s; machine CPU %.0f%% busy, the receiver's CPU %.2fs/10k; %s",
		bridgeConcurrency, b.describeLoad(rate), steadyWarmup+15*time.Second, busy, per10k(recvCPU, n), r.tailNote())
	if f := failed.Load(); f > 0 {
		r.Notes += fmt.Sprintf("; %d posts failed", f)
	}
	return r, nil
}

// per10k is cpu per 10,000 of n, in seconds.
func per10k(cpu time.Duration, n int) float64 {
	return cpu.Seconds() / float64(max(n, 1)) * 10000
}

// fetched is one record fetchLoops read.
type fetched struct {
	partition int32
	offset    int64
	value     []byte
}

// fetchLoops reads topic from its first offset with one fetch loop per
// partition, made the way the gateway's consumer makes them (kafka-go's
// Client.Fetch, MinBytes 1, a long MaxWait), and hands each fetch's records
// to got with the time the fetch came back; got is called from several
// goroutines at once. stop ends the loops and waits for them.
func fetchLoops(ctx context.Context, brokers []string, topic string, got func(now time.Time, recs []fetched)) (stop func()) {
	client := &kafkago.Client{Addr: kafkago.TCP(brokers...), Timeout: 10 * time.Second}
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for p := range partitions {
		wg.Go(func() {
			offset := kafkago.FirstOffset
			for cctx.Err() == nil {
				resp, err := client.Fetch(cctx, &kafkago.FetchRequest{Topic: topic, Partition: p, Offset: offset,
					MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 500 * time.Millisecond})
				if err != nil || resp.Error != nil {
					if !sleepFor(cctx, 50*time.Millisecond) {
						return
					}
					continue
				}
				now := time.Now()
				var recs []fetched
				for {
					rec, err := resp.Records.ReadRecord()
					if err != nil {
						break
					}
					v, _ := kafkago.ReadAll(rec.Value)
					recs = append(recs, fetched{partition: int32(p), offset: rec.Offset, value: v})
					offset = rec.Offset + 1
				}
				if len(recs) > 0 {
					got(now, recs)
				}
			}
		})
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

// sentAt reads the sent_ns member recordJSON writes, from a record or
// from an event that holds one.
func sentAt(v []byte) (time.Time, bool) {
	i := bytes.Index(v, sentMarker)
	if i < 0 {
		return time.Time{}, false
	}
	rest := v[i+len(sentMarker):]
	j := bytes.IndexByte(rest, '"')
	if j <= 0 {
		return time.Time{}, false
	}
	ns, err := strconv.ParseInt(string(rest[:j]), 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

// percentileMs is the q-quantile of ds in milliseconds (0 when empty).
func percentileMs(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[int(q*float64(len(s)-1))].Microseconds()) / 1000
}

// sleepFor waits d or until ctx ends; false when ctx ended.
func sleepFor(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// cpuSample is the machine's CPU time from /proc/stat, in clock ticks.
type cpuSample struct{ busy, total uint64 }

// machineCPU reads /proc/stat's first line; the zero sample when it cannot.
func machineCPU() cpuSample {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuSample{}
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	fields := strings.Fields(string(line))
	if len(fields) < 5 || fields[0] != "cpu" {
		return cpuSample{}
	}
	var s cpuSample
	for i, f := range fields[1:] {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return cpuSample{}
		}
		s.total += v
		if i != 3 && i != 4 { // idle, iowait
			s.busy += v
		}
	}
	return s
}

// busySince is the share of the machine's CPU time (all cores, every
// process, other users' too) that was busy since s, in percent; -1 when
// unknown.
func (s cpuSample) busySince() float64 {
	now := machineCPU()
	if s.total == 0 || now.total <= s.total {
		return -1
	}
	return 100 * float64(now.busy-s.busy) / float64(now.total-s.total)
}
