// Package testenv gives each test its own database on the real PostgreSQL
// cluster and its own topic on the real Kafka broker that scripts/testenv.sh
// starts for `make test`, so that tests run in parallel against real services
// without seeing each other's data.
//
// The services are found through three environment variables, exported by
// `scripts/testenv.sh run -- ...` (which `make test` uses) or, for an
// interactive shell, by `make testenv-start` followed by
// `eval "$(scripts/testenv.sh env)"`:
//
//	OUTFLOW_TEST_DATABASE_URL   superuser URL of the cluster's maintenance database
//	OUTFLOW_TEST_KAFKA_BROKERS  comma-separated bootstrap brokers, host:port
//	OUTFLOW_TEST_FEAST_URL      base URL of the Feast feature server (see FeastURL)
//	OUTFLOW_TEST_KINESIS_ENDPOINT  URL of the local Kinesis (kinesalite; see kinesis.go)
//
// When a variable is missing the test is skipped, so a plain `go test ./...`
// still runs the unit tests; with CI=true it fails instead (see requireEnv).
package testenv

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"
)

// DatabaseURLEnv names the environment variable holding a PostgreSQL URL with
// the right to create and drop databases; Postgres derives per-test URLs from
// it.
const DatabaseURLEnv = "OUTFLOW_TEST_DATABASE_URL"

// KafkaBrokersEnv names the environment variable holding the comma-separated
// host:port list of Kafka bootstrap brokers returned by KafkaBrokers.
const KafkaBrokersEnv = "OUTFLOW_TEST_KAFKA_BROKERS"

const (
	// opTimeout bounds each setup and cleanup step (connect and CREATE or DROP
	// DATABASE; create a topic and wait for its leaders; delete a topic). It is
	// generous for a loaded 2-core CI machine yet short enough that a dead
	// service fails the test instead of hanging until go test's timeout.
	opTimeout = 30 * time.Second

	// pollInterval is how often NewTopic re-reads topic metadata while it
	// waits for partition leaders, which take a few milliseconds to appear.
	pollInterval = 20 * time.Millisecond
)

// Postgres creates a new, empty database for the calling test and returns a
// URL for it, with the same user and options as OUTFLOW_TEST_DATABASE_URL.
// The database is dropped when the test and its subtests finish, with FORCE so
// that connections the test left open do not keep it alive. A database per
// test, rather than a schema or a rolled-back transaction, leaves the code
// under test free to open pools, run migrations and commit.
func Postgres(t testing.TB) string {
	t.Helper()
	adminURL := requireEnv(t, os.Getenv, DatabaseURLEnv)
	u, err := url.Parse(adminURL)
	if err != nil {
		t.Fatalf("testenv: parse %s: %v", DatabaseURLEnv, err)
	}
	name := "test_" + strings.ToLower(rand.Text())
	ident := pgx.Identifier{name}.Sanitize()

	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	defer cancel()
	if err := execAdmin(ctx, adminURL, "CREATE DATABASE "+ident); err != nil {
		t.Fatalf("testenv: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		// t.Context is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		if err := execAdmin(ctx, adminURL, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			t.Errorf("testenv: drop database %s: %v", name, err)
		}
	})

	u.Path = "/" + name
	u.RawPath = ""
	return u.String()
}

// execAdmin runs one statement on its own short-lived connection to the admin
// database: holding a connection there between tests would make every
// DROP DATABASE ... WITH (FORCE) of another test's database contend with it,
// and CREATE DATABASE cannot run in a transaction or pool anyway.
func execAdmin(ctx context.Context, adminURL, sql string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect to admin database: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("exec %q: %w", sql, err)
	}
	return nil
}

// KafkaBrokers returns the bootstrap brokers from OUTFLOW_TEST_KAFKA_BROKERS,
// for clients such as kafka.Writer and kafka.Reader. Tests that produce or
// consume should use a topic from NewTopic.
func KafkaBrokers(t testing.TB) []string {
	t.Helper()
	raw := requireEnv(t, os.Getenv, KafkaBrokersEnv)
	brokers := splitBrokers(raw)
	if len(brokers) == 0 {
		t.Fatalf("testenv: %s=%q lists no broker", KafkaBrokersEnv, raw)
	}
	return brokers
}

// splitBrokers parses a comma-separated broker list, ignoring blanks and
// empty entries.
func splitBrokers(raw string) []string {
	var brokers []string
	for b := range strings.SplitSeq(raw, ",") {
		if b = strings.TrimSpace(b); b != "" {
			brokers = append(brokers, b)
		}
	}
	return brokers
}

// NewTopic creates a topic with the given number of partitions (replication
// factor 1) for the calling test and returns its name. It returns once every
// partition has a leader, so a producer's first write does not fail with
// LeaderNotAvailable, and deletes the topic when the test and its subtests
// finish. The broker does not auto-create topics, so a test can only use
// topics it made.
func NewTopic(t testing.TB, partitions int) string {
	t.Helper()
	if partitions < 1 {
		t.Fatalf("testenv: NewTopic needs at least 1 partition, got %d", partitions)
	}
	brokers := KafkaBrokers(t)
	topic := "test-" + strings.ToLower(rand.Text())

	ctx, cancel := context.WithTimeout(t.Context(), opTimeout)
	defer cancel()
	conn, err := dialController(ctx, brokers)
	if err != nil {
		t.Fatalf("testenv: create topic %s: %v", topic, err)
	}
	defer conn.Close()
	err = conn.CreateTopics(kafka.TopicConfig{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1})
	if err != nil {
		t.Fatalf("testenv: create topic %s: %v", topic, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		if err := deleteTopic(ctx, brokers, topic); err != nil {
			t.Errorf("testenv: delete topic %s: %v", topic, err)
		}
	})
	if err := awaitLeaders(ctx, conn, topic, partitions); err != nil {
		t.Fatalf("testenv: create topic %s: %v", topic, err)
	}
	return topic
}

// awaitLeaders polls the topic's metadata until all its partitions have a
// leader, or ctx ends.
func awaitLeaders(ctx context.Context, conn *kafka.Conn, topic string, partitions int) error {
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		ps, err := conn.ReadPartitions(topic)
		if err == nil && haveLeaders(ps, partitions) {
			return nil
		}
		if kerr := kafka.Error(0); err != nil && !(errors.As(err, &kerr) && kerr.Temporary()) {
			return fmt.Errorf("read metadata: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %d partition leaders (last metadata error: %v): %w", partitions, err, context.Cause(ctx))
		case <-ticker.C:
		}
	}
}

// haveLeaders reports whether ps lists want partitions, each with a leader.
// kafka-go reports a missing leader as a zero Broker, hence the Host check.
func haveLeaders(ps []kafka.Partition, want int) bool {
	if len(ps) != want {
		return false
	}
	for _, p := range ps {
		if p.Leader.Host == "" {
			return false
		}
	}
	return true
}

// deleteTopic deletes a topic; one that is already gone is not an error.
func deleteTopic(ctx context.Context, brokers []string, topic string) error {
	conn, err := dialController(ctx, brokers)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.DeleteTopics(topic); err != nil && !errors.Is(err, kafka.UnknownTopicOrPartition) {
		return fmt.Errorf("delete: %w", err)
	}
	return nil
}

// dialController connects to the cluster's controller, which topic creation
// and deletion must be sent to, via the first bootstrap broker that answers.
// The connection's deadline is ctx's, since kafka.Conn takes no contexts.
func dialController(ctx context.Context, brokers []string) (*kafka.Conn, error) {
	var errs []error
	for _, addr := range brokers {
		conn, err := dial(ctx, addr)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		b, err := conn.Controller()
		conn.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("find controller via %s: %w", addr, err))
			continue
		}
		return dial(ctx, net.JoinHostPort(b.Host, strconv.Itoa(b.Port)))
	}
	return nil, errors.Join(errs...)
}

// dial opens a connection to one broker, bounded by ctx's deadline.
func dial(ctx context.Context, addr string) (*kafka.Conn, error) {
	conn, err := kafka.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial kafka broker %s: %w", addr, err)
	}
	if deadline, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(deadline); err != nil {
			conn.Close()
			return nil, fmt.Errorf("set deadline on connection to %s: %w", addr, err)
		}
	}
	return conn, nil
}

// requireEnv returns the environment variable name, read with getenv. It is
// the package's one policy for a missing service: the test is skipped with a
// pointer to `make test`, so that `go test ./...` without the services still
// runs everything else; but when CI is set to a true value (CI=true, as
// GitHub Actions, GitLab and most CI systems set it; parsed with
// strconv.ParseBool) the test fails, because a CI job must never go green by
// skipping the tests it exists to run.
func requireEnv(t testing.TB, getenv func(string) string, name string) string {
	t.Helper()
	if v := getenv(name); v != "" {
		return v
	}
	if ci, _ := strconv.ParseBool(getenv("CI")); ci {
		t.Fatalf("testenv: %s is not set and CI=%s, where tests must not skip: run them with `make test`", name, getenv("CI"))
	}
	t.Skipf("testenv: %s is not set; run `make test` to start the services this test needs", name)
	return ""
}
