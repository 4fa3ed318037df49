package testenv

import (
	"context"
	"fmt"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"
	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: kafka-go's
// Writer, Reader and Transport all start background goroutines that only stop
// when they are closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestKafkaProduceConsume is the smoke test of the broker: keyed messages
// written to a 3-partition topic all come back, with their values, to one
// member of a new consumer group, which must therefore have been assigned
// every partition (the group coordinator works).
func TestKafkaProduceConsume(t *testing.T) {
	t.Parallel()
	const n = 100
	brokers := KafkaBrokers(t)
	topic := NewTopic(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	want := make(map[string]string, n)
	msgs := make([]kafka.Message, 0, n)
	for i := range n {
		k, v := fmt.Sprintf("key-%03d", i), fmt.Sprintf("value-%03d", i)
		want[k] = v
		msgs = append(msgs, kafka.Message{Key: []byte(k), Value: []byte(v)})
	}

	// An explicit Transport: a Writer without one uses kafka.DefaultTransport,
	// whose connection goroutines outlive Writer.Close.
	transport := &kafka.Transport{}
	defer transport.CloseIdleConnections()
	w := &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 10 * time.Millisecond,
		Transport:    transport,
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		w.Close()
		t.Fatalf("write %d messages: %v", n, err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("close writer: %v", err)
	}

	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: brokers,
		Topic:   topic,
		GroupID: topic + "-group",
		// The first group on a fresh broker waits for __consumer_offsets to
		// be created; retry the join quickly rather than after the default 5s.
		JoinGroupBackoff: 100 * time.Millisecond,
		MaxWait:          250 * time.Millisecond,
	})
	defer r.Close()

	got := make(map[string]string, n)
	partitions := make(map[int]int)
	var fetched []kafka.Message
	for len(got) < n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("fetch after %d of %d messages: %v", len(got), n, err)
		}
		fetched = append(fetched, m)
		got[string(m.Key)] = string(m.Value)
		partitions[m.Partition]++
	}
	if err := r.CommitMessages(ctx, fetched...); err != nil {
		t.Errorf("commit offsets: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("close reader: %v", err)
	}

	for k, v := range want {
		if got[k] != v {
			t.Errorf("key %s: got value %q, want %q", k, got[k], v)
		}
	}
	if len(fetched) != n {
		t.Errorf("fetched %d messages, want %d (duplicates)", len(fetched), n)
	}
	if len(partitions) != 3 {
		t.Errorf("messages came from partitions %v, want all 3", partitions)
	}
}

// TestPostgresIsolated checks that each Postgres call yields its own usable
// database: a row written through one URL is invisible through the other.
func TestPostgresIsolated(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbs := []struct {
		url, marker string
		conn        *pgx.Conn
	}{
		{url: Postgres(t), marker: "a"},
		{url: Postgres(t), marker: "b"},
	}
	if dbs[0].url == dbs[1].url {
		t.Fatalf("Postgres returned %s twice", dbs[0].url)
	}

	for i := range dbs {
		db := &dbs[i]
		conn, err := pgx.Connect(ctx, db.url)
		if err != nil {
			t.Fatalf("connect to %s: %v", db.url, err)
		}
		// Registered after Postgres's cleanup, so it runs before the DROP.
		t.Cleanup(func() { conn.Close(context.Background()) })
		db.conn = conn

		var name string
		if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&name); err != nil {
			t.Fatalf("query current_database: %v", err)
		}
		if u, _ := url.Parse(db.url); "/"+name != u.Path {
			t.Errorf("connected to database %q through %s", name, db.url)
		}
		if _, err := conn.Exec(ctx, "CREATE TABLE marker (v text NOT NULL)"); err != nil {
			t.Fatalf("create table in %s: %v", name, err)
		}
		if _, err := conn.Exec(ctx, "INSERT INTO marker (v) VALUES ($1)", db.marker); err != nil {
			t.Fatalf("insert into %s: %v", name, err)
		}
	}

	for _, db := range dbs {
		rows, err := db.conn.Query(ctx, "SELECT v FROM marker ORDER BY v")
		if err != nil {
			t.Fatalf("select from %s: %v", db.url, err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("read rows from %s: %v", db.url, err)
		}
		if want := []string{db.marker}; !slices.Equal(got, want) {
			t.Errorf("%s has rows %q, want %q", db.url, got, want)
		}
	}
}

func TestSplitBrokers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		raw  string
		want []string
	}{
		{raw: "127.0.0.1:9092", want: []string{"127.0.0.1:9092"}},
		{raw: " a:1, b:2 ,,", want: []string{"a:1", "b:2"}},
		{raw: " , ", want: nil},
	}
	for _, tt := range tests {
		if got := splitBrokers(tt.raw); !slices.Equal(got, tt.want) {
			t.Errorf("splitBrokers(%q) = %q, want %q", tt.raw, got, tt.want)
		}
	}
}

// TestRequireEnv pins the skip policy: a set variable is returned; a missing
// one skips the test, except under CI where it fails it.
func TestRequireEnv(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		want    string
		outcome string // "", "skip" or "fatal"
	}{
		{name: "set", env: map[string]string{"X": "v"}, want: "v"},
		{name: "set under CI", env: map[string]string{"X": "v", "CI": "true"}, want: "v"},
		{name: "missing", env: nil, outcome: "skip"},
		{name: "missing, CI=false", env: map[string]string{"CI": "false"}, outcome: "skip"},
		{name: "missing, CI=true", env: map[string]string{"CI": "true"}, outcome: "fatal"},
		{name: "missing, CI=1", env: map[string]string{"CI": "1"}, outcome: "fatal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tb := &recordingTB{}
			var got string
			done := make(chan struct{})
			// Skipf and Fatalf end their goroutine, as the real ones do.
			go func() {
				defer close(done)
				got = requireEnv(tb, func(k string) string { return tt.env[k] }, "X")
			}()
			<-done

			if tb.outcome != tt.outcome {
				t.Fatalf("outcome %q (%s), want %q", tb.outcome, tb.msg, tt.outcome)
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if tt.outcome != "" && !strings.Contains(tb.msg, "make test") {
				t.Errorf("message %q does not say to run `make test`", tb.msg)
			}
		})
	}
}

// recordingTB records how requireEnv ends a test. Its embedded TB is nil, so
// a call to any other method panics and shows up as a test failure.
type recordingTB struct {
	testing.TB
	outcome, msg string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Skipf(format string, args ...any) {
	r.outcome, r.msg = "skip", fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recordingTB) Fatalf(format string, args ...any) {
	r.outcome, r.msg = "fatal", fmt.Sprintf(format, args...)
	runtime.Goexit()
}
