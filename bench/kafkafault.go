package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// privateKafka is a single-node KRaft broker of the bench's own, started
// the way scripts/testenv.sh starts the test broker, which the
// broker-outage scenario may kill: the shared broker must never be killed.
type privateKafka struct {
	java, libs, dir, props, log, addr string
	proc                              *proc
}

func startPrivateKafka(ctx context.Context, work string) (*privateKafka, error) {
	java, err := exec.LookPath("java")
	if err != nil {
		return nil, errors.New("no java for a private Kafka broker")
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	libs := filepath.Join(cache, "outflow", "kafka-3.9.1", "libs")
	if _, err := os.Stat(libs); err != nil {
		return nil, fmt.Errorf("no Kafka jars in %s (scripts/testenv.sh fetches them): %w", libs, err)
	}
	dir, err := os.MkdirTemp(work, "kafka-")
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	caddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	k := &privateKafka{java: java, libs: filepath.Join(libs, "*"), dir: dir, props: filepath.Join(dir, "server.properties"),
		log: filepath.Join(work, "broker-outage.kafka.log"), addr: addr}
	props := fmt.Sprintf(`process.roles=broker,controller
node.id=1
controller.quorum.voters=1@%[2]s
listeners=PLAINTEXT://%[1]s,CONTROLLER://%[2]s
advertised.listeners=PLAINTEXT://%[1]s
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=%[3]s
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
num.network.threads=2
num.io.threads=4
`, addr, caddr, filepath.Join(dir, "logs"))
	if err := os.WriteFile(k.props, []byte(props), 0o644); err != nil {
		return nil, err
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	cid := strings.TrimLeft(base64.RawURLEncoding.EncodeToString(id), "-")
	if out, err := exec.CommandContext(ctx, java, append(k.jvm(), "kafka.tools.StorageTool", "format", "-t", cid, "-c", k.props)...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("formatting the private broker's storage: %w: %s", err, out)
	}
	return k, k.start(ctx)
}

// jvm returns the JVM flags of scripts/testenv.sh: a small heap, the serial
// collector and C1 only start fast on 2 cores.
func (k *privateKafka) jvm() []string {
	wd, _ := os.Getwd()
	return []string{"-Xms256m", "-Xmx768m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:+ExitOnOutOfMemoryError",
		"-Djava.awt.headless=true", "-Dlog4j.configuration=file:" + filepath.Join(wd, "scripts", "kafka", "log4j.properties"),
		"-cp", k.libs}
}

// start runs the broker and waits until it logs that it started.
func (k *privateKafka) start(ctx context.Context) error {
	before := countLines(k.log)
	p, err := start(k.java, k.log, append(k.jvm(), "kafka.Kafka", k.props)...)
	if err != nil {
		return err
	}
	k.proc = p
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(k.log)
		lines := strings.Split(string(b), "\n")
		if len(lines) > before && strings.Contains(strings.Join(lines[before:], "\n"), "Kafka Server started") {
			return nil
		}
		select {
		case <-p.done:
			return errors.New("the private broker exited while starting")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return errors.New("the private broker did not start within 2 minutes")
}

func (k *privateKafka) stop() {
	if k.proc != nil {
		k.proc.kill()
	}
	_ = os.RemoveAll(k.dir)
}

// brokerOutage delivers 300 records/s through a broker of the bench's own,
// kills it with -9 8 s in and starts it again 15 s later. It reports the
// time from the broker's return to the next delivery, duplicates and
// losses.
func (b *bench) brokerOutage(ctx context.Context) (*result, error) {
	const label, rate = "brokerok", 300.0
	k, err := startPrivateKafka(ctx, b.work)
	if err != nil {
		return nil, err
	}
	defer k.stop()
	saved := b.brokers
	b.brokers = []string{k.addr}
	defer func() { b.brokers = saved }()
	e, err := b.newEnv(ctx, "broker-outage", []subSpec{{url: label}})
	if err != nil {
		return nil, err
	}
	defer e.db.drop()
	if err := b.reset(); err != nil {
		return nil, err
	}
	g, err := b.startGateway(ctx, e)
	if err != nil {
		return nil, err
	}
	defer g.p.stop()
	prod := newProducer(b.brokers, e.topic)
	prod.patience = 2 * time.Minute // it waits out the outage
	defer prod.close()
	done := make(chan int, 1)
	go func() {
		n, _ := prod.produceAt(ctx, 0, rate, 40*time.Second)
		done <- n
	}()
	time.Sleep(8 * time.Second) // traffic before the fault: the scenario, not synchronisation
	k.proc.kill()
	time.Sleep(15 * time.Second) // the outage itself
	if err := k.start(ctx); err != nil {
		return nil, fmt.Errorf("restarting the broker: %w", err)
	}
	back := time.Now()
	st0, err := b.stats(label, false)
	if err != nil {
		return nil, err
	}
	r := &result{}
	for time.Since(back) < 2*time.Minute {
		st, err := b.stats(label, false)
		if err != nil {
			return nil, err
		}
		if st.Unique > st0.Unique {
			r.ResumeSeconds = time.Since(back).Seconds()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.Expected = <-done
	if err := b.follow(ctx, g, r, label, r.Expected, 2*time.Minute); err != nil {
		r.Notes = err.Error() + "; "
	}
	r.PeakRSSMiB = g.p.peakRSS()
	if st, err := b.stats(label, false); err == nil {
		r.Duplicates = st.Requests - st.Unique
	}
	r.Notes += "kill -9 of the broker for 15 s at 300 records/s; resume s = from the broker's return (its 'started' log line) to the next delivery"
	return r, nil
}
