package devenv

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"
)

// devBrokerConfig configures the in-process Kafka-protocol broker of
// `outflow dev`.
type devBrokerConfig struct {
	// Addr is the TCP address to listen on; port 0 picks a free port.
	Addr string
	// Topic is created at start with Partitions partitions.
	Topic      string
	Partitions int
	// Logger receives the broker's own warnings and errors at debug level:
	// they are the fake's internals, not the user's problem.
	Logger *slog.Logger
}

// devBroker is a single-node Kafka-protocol broker running in this process
// (github.com/twmb/franz-go/pkg/kfake), so `outflow dev` needs no JVM and no
// Docker. It keeps its log in memory: everything is gone when it stops.
//
// kafka-go speaks to it unchanged: kfake accepts the old protocol versions
// kafka-go pins (JoinGroup v1/v2, OffsetCommit v2, ListOffsets v1, Fetch
// v10, ...) and implements classic consumer groups without an initial
// rebalance delay, so the gateway joins at once. No workaround was needed.
// TestDevBrokerServesKafkaGo exercises every client the dev setup uses:
// the demo producer's Writer, the feature server's group Reader, the
// consumer group of package source/kafka with its commits, and package
// stream's Client.Fetch, ListOffsets and ListOffsets-by-time (replays).
type devBroker struct {
	cluster *kfake.Cluster
	addr    string
}

// startDevBroker starts the broker with cfg.Topic created. Stop it with
// Close.
func startDevBroker(ctx context.Context, cfg devBrokerConfig) (*devBroker, error) {
	host, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("--kafka-addr %q: %w", cfg.Addr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return nil, fmt.Errorf("--kafka-addr %q: bad port", cfg.Addr)
	}
	var lc net.ListenConfig
	cluster, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.SeedTopics(int32(cfg.Partitions), cfg.Topic),
		kfake.ClusterID("outflow-dev"),
		// kfake always asks for 127.0.0.1:<port>; listen where the user
		// said instead. The broker advertises the address it listens on.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return lc.Listen(ctx, network, net.JoinHostPort(host, port))
		}),
		kfake.WithLogger(kfakeLogger{cfg.Logger}),
	)
	if err != nil {
		return nil, fmt.Errorf("starting the in-process Kafka broker on %s: %w", cfg.Addr, err)
	}
	return &devBroker{cluster: cluster, addr: cluster.ListenAddrs()[0]}, nil
}

// Addr is the broker's host:port, for bootstrap lists.
func (b *devBroker) Addr() string { return b.addr }

// Close stops the broker and closes its clients' connections; the data is
// dropped. It is idempotent.
func (b *devBroker) Close() { b.cluster.Close() }

// kfakeLogger forwards kfake's log lines to slog at debug level.
type kfakeLogger struct{ logger *slog.Logger }

func (l kfakeLogger) Logf(level kfake.LogLevel, format string, args ...any) {
	if l.logger == nil || level > kfake.LogLevelWarn {
		return
	}
	l.logger.Debug("kafka broker: "+fmt.Sprintf(format, args...), slog.String("broker_level", level.String()))
}
