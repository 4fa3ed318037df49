package kafka

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/outflow-dev/outflow/source"
)

// Defaults applied by Config.WithDefaults.
const (
	// DefaultClientID is sent to the brokers as the client id, so that the
	// gateway's connections are recognisable in broker logs and quotas.
	DefaultClientID = "outflow"

	// DefaultMaxInFlightPerPartition bounds the messages of one partition
	// handed to the handler but not yet Done. Ten thousand absorbs a burst of
	// slow enrichments or deliveries (each can take seconds: consistency
	// retries, webhook timeouts) without pausing the partition, while keeping
	// memory bounded to a few MiB of records per partition.
	DefaultMaxInFlightPerPartition = 10_000

	// DefaultUncommittedFactor sets the default MaxUncommittedPerPartition to
	// this multiple of MaxInFlightPerPartition (1,000,000 messages with the
	// defaults).
	DefaultUncommittedFactor = 100

	// DefaultCommitInterval is how often safe offsets are committed. One
	// second keeps the redelivery after a crash (kill -9) to about a second of
	// traffic on top of the in-flight messages, at one small request per
	// second to the group coordinator.
	DefaultCommitInterval = time.Second

	// DefaultDrainTimeout bounds how long Run waits at shutdown for in-flight
	// messages to be Done before its final commit. Ten seconds covers a
	// webhook attempt at its default timeout and fits in Kubernetes' default
	// 30 s termination grace period.
	DefaultDrainTimeout = 10 * time.Second

	// DefaultRebalanceDrainTimeout bounds how long a member waits for
	// in-flight messages when a rebalance ends its generation. The whole group
	// is paused while any member has not rejoined, so this is kept short: two
	// seconds lets ordinary deliveries (milliseconds) finish, so partitions
	// that stay with this member are not redelivered, without holding the
	// group for a slow receiver, whose messages are redelivered instead.
	DefaultRebalanceDrainTimeout = 2 * time.Second

	// DefaultSessionTimeout is how long the coordinator waits for a
	// member's heartbeat before it evicts the member. After a kill -9 the
	// dead member holds its partitions until then: a restarted gateway
	// joins as a new member (kafka-go starts every process with an empty
	// member id), and the coordinator completes that rebalance only once
	// the old member rejoined or was evicted. Six seconds is the brokers'
	// default group.min.session.timeout.ms, the shortest they accept; with
	// join, sync and the offset fetch it puts consumption back within 10 s
	// of a crash. (kafka-go's default, 30 s, left nothing consumed for
	// ~30 s after every crash.)
	DefaultSessionTimeout = 6 * time.Second
	// DefaultHeartbeatInterval is a third of DefaultSessionTimeout, Kafka's
	// rule, so two heartbeats lost to a network hiccup do not evict a live
	// member. It is also how soon a member notices that a rebalance began.
	DefaultHeartbeatInterval = 2 * time.Second
	// DefaultRebalanceTimeout is how long the coordinator waits for live
	// members to rejoin once a rebalance began. A member rejoins after
	// RebalanceDrainTimeout (2 s) and a commit, so 10 s leaves room for a
	// slow commit without evicting a live member; a dead member is evicted
	// by its session timeout (6 s) sooner. kafka-go also bounds its
	// JoinGroup call by this plus its request timeout.
	DefaultRebalanceTimeout = 10 * time.Second
	// DefaultJoinGroupBackoff is how long kafka-go waits after a failed
	// join (coordinator unreachable: a broker restart) before trying again.
	// One second, instead of kafka-go's 5 s, rejoins within a second of the
	// broker's return at the cost of one connection attempt a second while
	// it is down.
	DefaultJoinGroupBackoff = time.Second

	// DefaultPartitionWatchInterval is how often the group checks the topics
	// for added partitions (kafka-go's default). A change starts a rebalance
	// that assigns the new partitions.
	DefaultPartitionWatchInterval = 5 * time.Second
)

// StartOffset says where a consumer group starts reading a partition for
// which it has no committed offset (Kafka's auto.offset.reset).
type StartOffset string

const (
	// StartEarliest reads a partition from its oldest retained record. It is
	// the default because the gateway promises at-least-once delivery
	// (SPEC §5): a new deployment, or a partition added to a topic, must not
	// silently skip records already written to the stream.
	StartEarliest StartOffset = "earliest"
	// StartLatest reads only records appended after the group first reads
	// the partition, for operators who deliberately do not want the backlog
	// on a first deployment. The resolved offset is committed at once, so a
	// restart does not skip the records written in between.
	StartLatest StartOffset = "latest"
)

// SASL mechanisms accepted in SASL.Mechanism.
const (
	// SASLPlain is SASL/PLAIN: the password travels as is, so use it with TLS.
	SASLPlain = "PLAIN"
	// SASLScramSHA256 is SCRAM-SHA-256 (RFC 7677).
	SASLScramSHA256 = "SCRAM-SHA-256"
	// SASLScramSHA512 is SCRAM-SHA-512.
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// redacted replaces the SASL password wherever a Config is printed or logged.
const redacted = "[REDACTED]"

// SASL holds the credentials for SASL authentication with the brokers. The
// zero value means no SASL. It prints and logs with the password redacted
// (String, GoString, LogValue); the Password field itself is a plain string
// and must not be printed on its own.
type SASL struct {
	// Mechanism is "" (no SASL), SASLPlain, SASLScramSHA256 or
	// SASLScramSHA512. Matching ignores case.
	Mechanism string
	// Username and Password are required when Mechanism is set.
	Username string
	Password string
}

// String returns the SASL settings with the password redacted.
func (s SASL) String() string {
	return fmt.Sprintf("kafka.SASL{Mechanism:%q Username:%q Password:%s}", s.Mechanism, s.Username, redactSecret(s.Password))
}

// GoString returns the same redacted form as String, so that %#v is safe too.
func (s SASL) GoString() string { return s.String() }

// LogValue renders the SASL settings for log/slog with the password redacted.
func (s SASL) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("mechanism", s.Mechanism),
		slog.String("username", s.Username),
		slog.String("password", redactSecret(s.Password)),
	)
}

// mechanism builds kafka-go's SASL mechanism; nil means no SASL.
func (s SASL) mechanism() (sasl.Mechanism, error) {
	switch strings.ToUpper(s.Mechanism) {
	case "":
		return nil, nil
	case SASLPlain:
		return plain.Mechanism{Username: s.Username, Password: s.Password}, nil
	case SASLScramSHA256:
		return scram.Mechanism(scram.SHA256, s.Username, s.Password)
	case SASLScramSHA512:
		return scram.Mechanism(scram.SHA512, s.Username, s.Password)
	default:
		return nil, fmt.Errorf("unsupported SASL mechanism %q", s.Mechanism)
	}
}

// Config configures a Source. Brokers, Topics and GroupID are required; call
// WithDefaults (New does) to fill in the rest. Config prints and logs with the
// SASL password redacted (String, GoString, LogValue), so it is safe to log.
type Config struct {
	// Brokers are the bootstrap brokers, host:port. Required.
	Brokers []string
	// Topics are the feature output streams to consume, one or more; all are
	// consumed by one consumer group. Required.
	Topics []string
	// GroupID names the consumer group. Every replica of the gateway uses the
	// same GroupID so that the partitions are split among them (SPEC §8).
	// Required.
	GroupID string
	// ClientID is sent to the brokers. Default DefaultClientID ("outflow").
	ClientID string
	// TLS, when set, is used for every connection to the brokers (it is
	// cloned by the dialer, not modified). Default: plaintext.
	TLS *tls.Config
	// SASL authenticates every connection. Default: none.
	SASL SASL
	// Ownership, when set, is told the partitions of each generation before
	// they are read and after they are given up (source.Ownership): the
	// dispatcher takes up and hands over its detached subscriptions' cursors
	// with them. Default: none.
	Ownership source.Ownership
	// StartOffset applies to partitions without a committed offset. Default
	// StartEarliest: at-least-once forbids skipping records already on the
	// topic.
	StartOffset StartOffset
	// MaxInFlightPerPartition bounds the messages of one partition handed to
	// the handler and not yet Done; reading of that partition pauses (without
	// polling) at the bound and resumes when a message is Done. Default
	// DefaultMaxInFlightPerPartition (10,000).
	MaxInFlightPerPartition int
	// MaxUncommittedPerPartition bounds the messages of one partition read
	// since its oldest not-Done message, Done or not; reading also pauses at
	// this bound. It caps the offset tracker's memory (about 9 bytes a
	// message) and the redelivery after a crash when one message stays in
	// flight for long while those after it complete. Default
	// DefaultUncommittedFactor × MaxInFlightPerPartition (1,000,000); it
	// must not be below MaxInFlightPerPartition.
	MaxUncommittedPerPartition int
	// CommitInterval is how often each partition's safe offset is committed
	// (only when it moved). Commits also happen when a generation ends and at
	// shutdown. Default DefaultCommitInterval (1 s).
	CommitInterval time.Duration
	// DrainTimeout bounds the wait at shutdown, after reading stopped, for
	// in-flight messages to be Done before the final commit; messages still
	// in flight then are redelivered to the group later. What is left of it
	// is Ownership.Revoked's ctx (its own wait for work in flight). A
	// negative value does not wait. Default DefaultDrainTimeout (10 s).
	DrainTimeout time.Duration
	// RebalanceDrainTimeout bounds the same wait when a rebalance ends the
	// generation. A negative value does not wait. Default
	// DefaultRebalanceDrainTimeout (2 s); it must be shorter than
	// RebalanceTimeout, or the coordinator would evict this member.
	RebalanceDrainTimeout time.Duration
	// SessionTimeout is how long the coordinator waits for a heartbeat
	// before it evicts this member and rebalances. It must lie within the
	// broker's group.min/max.session.timeout.ms (6 s to 30 min by default).
	// Default DefaultSessionTimeout (6 s; see there why).
	SessionTimeout time.Duration
	// RebalanceTimeout is how long the coordinator waits for every member
	// to rejoin during a rebalance. Default DefaultRebalanceTimeout (10 s).
	RebalanceTimeout time.Duration
	// HeartbeatInterval is how often this member heartbeats, which is also
	// how soon it notices a rebalance. It must be below SessionTimeout
	// (Kafka advises a third of it). Default DefaultHeartbeatInterval (2 s).
	HeartbeatInterval time.Duration
	// JoinGroupBackoff is how long to wait after a failed attempt to join
	// the group before the next. Default DefaultJoinGroupBackoff (1 s).
	JoinGroupBackoff time.Duration
	// PartitionWatchInterval is how often the topics are checked for added
	// partitions; a negative value disables the check, and added partitions
	// are then picked up at the next rebalance. Default
	// DefaultPartitionWatchInterval (5 s).
	PartitionWatchInterval time.Duration
	// Logger receives group membership changes (info), retried failures
	// (warn) and kafka-go's own diagnostics (debug). It never receives the
	// SASL password or record contents. Default: discard.
	Logger *slog.Logger
}

// WithDefaults returns a copy of c with every unset optional field set to
// its default. It does not validate: New does that after applying defaults.
func (c Config) WithDefaults() Config {
	if c.ClientID == "" {
		c.ClientID = DefaultClientID
	}
	if c.StartOffset == "" {
		c.StartOffset = StartEarliest
	}
	if c.MaxInFlightPerPartition == 0 {
		c.MaxInFlightPerPartition = DefaultMaxInFlightPerPartition
	}
	if c.MaxUncommittedPerPartition == 0 && c.MaxInFlightPerPartition > 0 && c.MaxInFlightPerPartition <= math.MaxInt32/DefaultUncommittedFactor {
		c.MaxUncommittedPerPartition = DefaultUncommittedFactor * c.MaxInFlightPerPartition
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = DefaultCommitInterval
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.RebalanceDrainTimeout == 0 {
		c.RebalanceDrainTimeout = DefaultRebalanceDrainTimeout
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = DefaultSessionTimeout
	}
	if c.RebalanceTimeout == 0 {
		c.RebalanceTimeout = DefaultRebalanceTimeout
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.JoinGroupBackoff == 0 {
		c.JoinGroupBackoff = DefaultJoinGroupBackoff
	}
	if c.PartitionWatchInterval == 0 {
		c.PartitionWatchInterval = DefaultPartitionWatchInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// maxProtocolDuration is the largest duration Kafka's protocol carries in an
// int32 of milliseconds.
const maxProtocolDuration = time.Duration(math.MaxInt32) * time.Millisecond

// validate reports the first problem with a defaulted Config. Its errors wrap
// ErrInvalidConfig and never quote the password.
func (c Config) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	if err := c.validateConnection(); err != nil {
		return err
	}
	switch {
	case len(c.Topics) == 0:
		return bad("Topics is required")
	case slices.Contains(c.Topics, ""):
		return bad("Topics has an empty entry")
	case hasDuplicate(c.Topics):
		return bad("Topics lists a topic twice")
	case c.GroupID == "":
		return bad("GroupID is required")
	case c.StartOffset != StartEarliest && c.StartOffset != StartLatest:
		return bad("StartOffset must be %q or %q, got %q", StartEarliest, StartLatest, c.StartOffset)
	case c.MaxInFlightPerPartition < 1:
		return bad("MaxInFlightPerPartition must be positive, got %d", c.MaxInFlightPerPartition)
	case c.MaxUncommittedPerPartition < c.MaxInFlightPerPartition:
		return bad("MaxUncommittedPerPartition (%d) must be at least MaxInFlightPerPartition (%d)", c.MaxUncommittedPerPartition, c.MaxInFlightPerPartition)
	case c.MaxUncommittedPerPartition > maxTrackerSpan:
		return bad("MaxUncommittedPerPartition must be at most %d, got %d", maxTrackerSpan, c.MaxUncommittedPerPartition)
	case c.CommitInterval < 0:
		return bad("CommitInterval must be positive, got %s", c.CommitInterval)
	case c.SessionTimeout < time.Millisecond || c.SessionTimeout > maxProtocolDuration:
		return bad("SessionTimeout out of range: %s", c.SessionTimeout)
	case c.RebalanceTimeout < time.Millisecond || c.RebalanceTimeout > maxProtocolDuration:
		return bad("RebalanceTimeout out of range: %s", c.RebalanceTimeout)
	case c.JoinGroupBackoff < 0 || c.JoinGroupBackoff > maxProtocolDuration:
		return bad("JoinGroupBackoff out of range: %s", c.JoinGroupBackoff)
	case c.HeartbeatInterval < 0 || c.HeartbeatInterval >= c.SessionTimeout:
		return bad("HeartbeatInterval (%s) must be positive and below SessionTimeout (%s)", c.HeartbeatInterval, c.SessionTimeout)
	case c.RebalanceDrainTimeout >= c.RebalanceTimeout:
		return bad("RebalanceDrainTimeout (%s) must be below RebalanceTimeout (%s)", c.RebalanceDrainTimeout, c.RebalanceTimeout)
	case c.PartitionWatchInterval > maxProtocolDuration:
		return bad("PartitionWatchInterval out of range: %s", c.PartitionWatchInterval)
	}
	return nil
}

// validateConnection checks the settings every use of the cluster needs
// (the consumer group, and Log's readers): Brokers, SASL and Logger. Its
// errors wrap ErrInvalidConfig and never quote the password.
func (c Config) validateConnection() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	switch {
	case len(c.Brokers) == 0:
		return bad("Brokers is required")
	case slices.Contains(c.Brokers, ""):
		return bad("Brokers has an empty entry")
	case c.Logger == nil:
		return bad("Logger is nil")
	}
	if _, err := c.SASL.mechanism(); err != nil {
		return bad("SASL: %w", err)
	}
	if c.SASL.Mechanism != "" && (c.SASL.Username == "" || c.SASL.Password == "") {
		return bad("SASL %s needs a Username and a Password", c.SASL.Mechanism)
	}
	return nil
}

// hasDuplicate reports whether s holds a value twice.
func hasDuplicate(s []string) bool {
	seen := make(map[string]bool, len(s))
	for _, v := range s {
		if seen[v] {
			return true
		}
		seen[v] = true
	}
	return false
}

// String returns the Config with the SASL password redacted, so that %v,
// %+v and %s are safe.
func (c Config) String() string {
	return fmt.Sprintf("kafka.Config{Brokers:%q Topics:%q GroupID:%q ClientID:%q TLS:%t SASL:%s StartOffset:%s "+
		"MaxInFlightPerPartition:%d MaxUncommittedPerPartition:%d CommitInterval:%s DrainTimeout:%s RebalanceDrainTimeout:%s "+
		"SessionTimeout:%s RebalanceTimeout:%s HeartbeatInterval:%s PartitionWatchInterval:%s}",
		c.Brokers, c.Topics, c.GroupID, c.ClientID, c.TLS != nil, c.SASL, c.StartOffset,
		c.MaxInFlightPerPartition, c.MaxUncommittedPerPartition, c.CommitInterval, c.DrainTimeout, c.RebalanceDrainTimeout,
		c.SessionTimeout, c.RebalanceTimeout, c.HeartbeatInterval, c.PartitionWatchInterval)
}

// GoString returns the same redacted form as String, so that %#v is safe too.
func (c Config) GoString() string { return c.String() }

// LogValue renders the Config for log/slog with the SASL password redacted.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Any("brokers", c.Brokers),
		slog.Any("topics", c.Topics),
		slog.String("group_id", c.GroupID),
		slog.String("client_id", c.ClientID),
		slog.Bool("tls", c.TLS != nil),
		slog.Any("sasl", c.SASL),
		slog.String("start_offset", string(c.StartOffset)),
		slog.Int("max_in_flight_per_partition", c.MaxInFlightPerPartition),
		slog.Int("max_uncommitted_per_partition", c.MaxUncommittedPerPartition),
		slog.Duration("commit_interval", c.CommitInterval),
		slog.Duration("drain_timeout", c.DrainTimeout),
		slog.Duration("rebalance_drain_timeout", c.RebalanceDrainTimeout),
		slog.Duration("session_timeout", c.SessionTimeout),
		slog.Duration("rebalance_timeout", c.RebalanceTimeout),
		slog.Duration("heartbeat_interval", c.HeartbeatInterval),
		slog.Duration("partition_watch_interval", c.PartitionWatchInterval),
	)
}

// redactSecret hides a secret but keeps whether it is set, which is what an
// operator reading a config dump needs to know.
func redactSecret(s string) string {
	if s == "" {
		return `""`
	}
	return redacted
}

// dialTimeout bounds connecting (TCP, TLS and SASL) to one broker.
const dialTimeout = 10 * time.Second

// Dialer returns a kafka-go dialer with the configuration's client id, TLS
// and SASL: the consumer group's connections. (Partition reads, streams and
// replays go through Log's transport instead.)
func (c Config) Dialer() (*kafkago.Dialer, error) {
	mech, err := c.SASL.mechanism()
	if err != nil {
		return nil, err
	}
	return &kafkago.Dialer{
		ClientID:      c.ClientID,
		Timeout:       dialTimeout,
		DualStack:     true,
		TLS:           c.TLS,
		SASLMechanism: mech,
	}, nil
}

// transport returns a kafka-go transport for the metadata and offset
// requests of one Run. The caller closes its connections with
// CloseIdleConnections.
func (c Config) transport() (*kafkago.Transport, error) {
	mech, err := c.SASL.mechanism()
	if err != nil {
		return nil, err
	}
	return &kafkago.Transport{
		ClientID:    c.ClientID,
		DialTimeout: dialTimeout,
		TLS:         c.TLS,
		SASL:        mech,
	}, nil
}

// kafkaLogger adapts kafka-go's printf logging to log at level on log.
func kafkaLogger(log *slog.Logger, level slog.Level) kafkago.Logger {
	return kafkago.LoggerFunc(func(format string, args ...any) {
		ctx := context.Background()
		if log.Enabled(ctx, level) {
			log.Log(ctx, level, "kafka-go: "+strings.TrimSpace(fmt.Sprintf(format, args...)))
		}
	})
}
