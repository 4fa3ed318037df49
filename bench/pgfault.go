package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	kafkago "github.com/segmentio/kafka-go"
)

// privatePG is a PostgreSQL cluster of the bench's own, at the server's
// default (durable) settings, which the pg-outage scenario may kill: the
// shared test cluster runs with fsync off and must never be killed.
type privatePG struct {
	bin, dir, port string
	asPG           bool
	proc           *proc
	log            string
}

// findPGBin returns the directory of initdb and postgres.
func findPGBin() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(m) == 0 {
		return "", errors.New("no PostgreSQL server binaries (initdb)")
	}
	return filepath.Dir(m[len(m)-1]), nil
}

func startPrivatePG(ctx context.Context, work string) (*privatePG, error) {
	bin, err := findPGBin()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(work, "pg-")
	if err != nil {
		return nil, err
	}
	pg := &privatePG{bin: bin, dir: dir, asPG: os.Geteuid() == 0, log: filepath.Join(work, "pg-outage.postgres.log")}
	if pg.asPG { // initdb and postgres refuse to run as root
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root without a postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
		_ = os.Chmod(work, 0o755)
	}
	if out, err := pg.command(ctx, filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"), "-A", "trust",
		"-U", "outflow", "-E", "UTF8", "--no-locale").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w: %s", err, out)
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	pg.port = addr[strings.LastIndexByte(addr, ':')+1:]
	return pg, pg.start(ctx)
}

func (pg *privatePG) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if pg.asPG {
		return exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
	}
	return exec.CommandContext(ctx, name, args...)
}

func (pg *privatePG) url() string {
	return "postgres://outflow@127.0.0.1:" + pg.port + "/postgres?sslmode=disable"
}

// start runs the server at its default durability settings and waits until
// it takes connections. After a kill -9, the old server's processes may
// hold its shared memory for a moment: start retries for 30 s.
func (pg *privatePG) start(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		args := []string{"-u", "postgres", "--", filepath.Join(pg.bin, "postgres")}
		name := "runuser"
		if !pg.asPG {
			name, args = filepath.Join(pg.bin, "postgres"), nil
		}
		args = append(args, "-D", filepath.Join(pg.dir, "data"), "-p", pg.port, "-k", pg.dir,
			"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200")
		p, err := start(name, pg.log, args...)
		if err != nil {
			return err
		}
		pg.proc = p
		for time.Now().Before(deadline) {
			c, err := pgx.Connect(ctx, pg.url())
			if err == nil {
				c.Close(ctx)
				return nil
			}
			select {
			case <-p.done:
			case <-time.After(100 * time.Millisecond):
				continue
			}
			break
		}
		if time.Now().After(deadline) {
			return errors.New("private PostgreSQL did not start within 30s")
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// kill9 sends SIGKILL to the postmaster (read from postmaster.pid, since
// runuser stands between it and the bench).
func (pg *privatePG) kill9() error {
	f, err := os.Open(filepath.Join(pg.dir, "data", "postmaster.pid"))
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	pid, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return err
	}
	<-pg.proc.done
	return nil
}

func (pg *privatePG) stop() {
	_ = pg.kill9()
	_ = os.RemoveAll(pg.dir)
}

// countLines returns how many lines path has.
func countLines(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "\n")
}

// pgOutage runs one healthy and one failing (503) subscription at 300
// records/s on a private PostgreSQL at durable settings, kills it with -9
// 8 s in and starts it again 20 s later. It reports the healthy
// subscription's delivery gap, the gateway's log lines during the outage,
// and whether every event of the failing subscription is kept once the
// database is back: in the retry queue, or in the log at or after its
// durable cursor (losses).
func (b *bench) pgOutage(ctx context.Context) (*result, error) {
	const label, rate = "pgok", 300.0
	pg, err := startPrivatePG(ctx, b.work)
	if err != nil {
		return nil, err
	}
	defer pg.stop()
	saved := b.adminURL
	b.adminURL = pg.url()
	e, err := b.newEnv(ctx, "pg-outage", []subSpec{{url: label}, {url: "pgfail", mode: "fail"}})
	b.adminURL = saved
	if err != nil {
		return nil, err
	}
	defer deleteTopic(b.brokers, e.topic)
	if err := b.reset(); err != nil {
		return nil, err
	}
	g, err := b.startGateway(ctx, e)
	if err != nil {
		return nil, err
	}
	defer g.p.stop()
	logPath := filepath.Join(b.work, e.name+".gateway.log")
	prod := newProducer(b.brokers, e.topic)
	defer prod.close()
	done := make(chan int, 1)
	go func() {
		n, _ := prod.produceAt(ctx, 0, rate, 40*time.Second)
		done <- n
	}()
	time.Sleep(8 * time.Second) // traffic before the fault: the scenario, not synchronisation
	linesBefore := countLines(logPath)
	if err := pg.kill9(); err != nil {
		return nil, fmt.Errorf("killing PostgreSQL: %w", err)
	}
	killed := time.Now()
	var maxGap time.Duration
	lastCount, lastChange := -1, time.Now()
	for time.Since(killed) < 20*time.Second {
		if st, err := b.stats(label, false); err == nil {
			if st.Unique != lastCount {
				lastCount, lastChange = st.Unique, time.Now()
			}
			maxGap = max(maxGap, time.Since(lastChange))
		}
		time.Sleep(50 * time.Millisecond)
	}
	linesDuring := countLines(logPath) - linesBefore
	if err := pg.start(ctx); err != nil {
		return nil, fmt.Errorf("restarting PostgreSQL: %w", err)
	}
	back := time.Now()
	// Consumption resumed when the healthy subscription gets a new event
	// (at once when it never stopped).
	var resume time.Duration
	for time.Since(back) < time.Minute {
		st, err := b.stats(label, false)
		if err == nil && (st.Unique != lastCount || time.Since(lastChange) < time.Second) {
			resume = time.Since(back)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	r := &result{Expected: <-done}
	if err := b.follow(ctx, g, r, label, r.Expected, 2*time.Minute); err != nil {
		r.Notes = err.Error() + "; "
	}
	r.PeakRSSMiB = g.p.peakRSS()
	r.Parked = g.counter(`outflow_deliveries_total{outcome="parked"}`)
	// Every event of the failing subscription must be kept: in the retry
	// queue (a failed attempt, or parked), or still in the log at or after
	// its durable cursor (held while its circuit is open). Wait (bounded)
	// for the writers to catch up after the restart.
	var cov coverage
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		c, err := failingCoverage(ctx, b.brokers, e.topic, e.db.url, "sub_bench000001")
		if err != nil {
			cov.err = err
			continue
		}
		cov = c
		if cov.lost() == 0 {
			break
		}
	}
	r.ResumeSeconds = resume.Seconds()
	r.Notes += fmt.Sprintf("kill -9 of PostgreSQL (durable settings) for 20 s at 300 records/s: resume s = from the restart to the healthy subscription's next delivery; its longest gap during the outage %.1f s; %d gateway log lines during the outage; failing subscription, %.0f s after the restart: of %d events on the topic %d in the retry queue, %d at or after its durable cursor (subscription_cursors), %d lost",
		maxGap.Seconds(), linesDuring, time.Since(back).Seconds(), cov.total, cov.queued, cov.behind, cov.lost())
	if cov.err != nil {
		r.Notes += fmt.Sprintf(" (last check failed: %v)", cov.err)
	}
	r.Lost += int(cov.lost())
	return r, nil
}

// coverage is where a subscription's events are kept: total on the topic,
// queued in the retry queue, behind (not queued) at or after its cursor.
type coverage struct {
	total, queued, behind int64
	err                   error
}

func (c coverage) lost() int64 { return c.total - c.queued - c.behind }

// failingCoverage counts, partition by partition up to the topic's end
// offsets (every record matches the subscription), the events of subID in
// the retry queue (by the source position in the stored event) and those
// not in it at or after the subscription's durable cursor. A partition
// without a cursor is covered by the queue alone.
func failingCoverage(ctx context.Context, brokers []string, topic, dbURL, subID string) (coverage, error) {
	client := &kafkago.Client{Addr: kafkago.TCP(brokers...), Timeout: 10 * time.Second}
	var reqs []kafkago.OffsetRequest
	for p := range partitions {
		reqs = append(reqs, kafkago.LastOffsetOf(p))
	}
	resp, err := client.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{topic: reqs}})
	if err != nil {
		return coverage{}, fmt.Errorf("listing offsets: %w", err)
	}
	ends := map[int32]int64{}
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			return coverage{}, fmt.Errorf("listing offsets of partition %d: %w", po.Partition, po.Error)
		}
		ends[int32(po.Partition)] = po.LastOffset
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return coverage{}, err
	}
	defer conn.Close(ctx)
	queued := map[int32]map[int64]bool{}
	rows, err := conn.Query(ctx, `SELECT DISTINCT (e->'source'->>'partition')::int, (e->'source'->>'offset')::bigint
		FROM (SELECT convert_from(event, 'UTF8')::jsonb AS e FROM deliveries WHERE subscription_id = $1) d`, subID)
	if err != nil {
		return coverage{}, err
	}
	for rows.Next() {
		var p int32
		var o int64
		if err := rows.Scan(&p, &o); err != nil {
			rows.Close()
			return coverage{}, err
		}
		if queued[p] == nil {
			queued[p] = map[int64]bool{}
		}
		queued[p][o] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return coverage{}, err
	}
	cursors := map[int32]int64{}
	crows, err := conn.Query(ctx, `SELECT partition_id, next_offset FROM subscription_cursors WHERE subscription_id = $1 AND topic = $2`, subID, topic)
	if err != nil {
		return coverage{}, err
	}
	for crows.Next() {
		var p int32
		var o int64
		if err := crows.Scan(&p, &o); err != nil {
			crows.Close()
			return coverage{}, err
		}
		cursors[p] = o
	}
	crows.Close()
	if err := crows.Err(); err != nil {
		return coverage{}, err
	}
	var c coverage
	for p, end := range ends {
		c.total += end
		cursor, ok := cursors[p]
		if !ok {
			cursor = end
		}
		for o := range end {
			switch {
			case queued[p][o]:
				c.queued++
			case o >= cursor:
				c.behind++
			}
		}
	}
	return c, nil
}
