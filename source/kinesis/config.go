package kinesis

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// Defaults applied by Config.WithDefaults.
const (
	// DefaultGroupID names the lease group: the replicas of one gateway.
	DefaultGroupID = "outflow"
	// DefaultLeaseDuration is how long a lease lasts without renewal: the
	// time after which a dead replica's shards are taken over. Ten seconds
	// is the Kinesis Client Library's failover time.
	DefaultLeaseDuration = 10 * time.Second
	// DefaultShardSyncInterval is how often the streams' shards are listed
	// to find the children of a split or merge (a shard that ends triggers a
	// listing at once too).
	DefaultShardSyncInterval = 10 * time.Second
	// DefaultIdleWait is the pause between GetRecords calls on a shard that
	// had nothing new. Kinesis allows five GetRecords a second per shard,
	// shared by every reader of the stream; two a second leaves room for
	// others while keeping latency under a second.
	DefaultIdleWait = 500 * time.Millisecond
	// DefaultMaxRecordsPerCall bounds one GetRecords (Kinesis allows up to
	// 10,000).
	DefaultMaxRecordsPerCall = 1000
	// DefaultMaxInFlightPerShard bounds the records of one shard handed to
	// the handler and not Done, as kafka's MaxInFlightPerPartition does.
	DefaultMaxInFlightPerShard = 10_000
	// DefaultCommitInterval is how often moved checkpoints are written.
	DefaultCommitInterval = time.Second
	// DefaultDrainTimeout bounds the wait at shutdown for in-flight
	// records before the last checkpoints; it fits Kubernetes' default
	// 30 s termination grace period.
	DefaultDrainTimeout = 10 * time.Second
)

// StartPosition says where a shard without a checkpoint is read from.
type StartPosition string

const (
	// StartTrimHorizon reads from the oldest retained record: the default,
	// because at-least-once forbids skipping records already on the stream.
	StartTrimHorizon StartPosition = "trim_horizon"
	// StartLatest reads only records added after the shard is first read.
	StartLatest StartPosition = "latest"
)

// ErrInvalidConfig is wrapped by every error New returns for a bad Config.
var ErrInvalidConfig = errors.New("kinesis source: invalid config")

// Config configures a Source. Streams, Leases and AWS are required.
type Config struct {
	// Streams are the Kinesis streams to read, by name. Required.
	Streams []string
	// AWS is the SDK configuration: region, credentials (the standard
	// chain, from config.LoadDefaultConfig) and retries. Required.
	AWS aws.Config
	// Endpoint, when set, replaces the regional endpoint (a local Kinesis
	// such as kinesalite, or a VPC endpoint). Default: AWS's.
	Endpoint string
	// Leases keeps checkpoints and leases: *store.Store. Required.
	Leases Leases
	// GroupID names the lease group; every replica of a gateway uses the
	// same one. Default DefaultGroupID ("outflow").
	GroupID string
	// WorkerID names this replica in leases; it must be unique among the
	// replicas. Default: host name, process id and a random suffix.
	WorkerID string
	// StartPosition applies to shards without a checkpoint. Default
	// StartTrimHorizon.
	StartPosition StartPosition
	// LeaseDuration is how long a lease lasts without renewal. Default
	// DefaultLeaseDuration (10 s).
	LeaseDuration time.Duration
	// RenewInterval is how often leases are renewed and balanced. Default
	// LeaseDuration/3; it must be below LeaseDuration.
	RenewInterval time.Duration
	// ShardSyncInterval: see DefaultShardSyncInterval (10 s).
	ShardSyncInterval time.Duration
	// IdleWait: see DefaultIdleWait (500 ms).
	IdleWait time.Duration
	// MaxRecordsPerCall: see DefaultMaxRecordsPerCall (1000).
	MaxRecordsPerCall int
	// MaxInFlightPerShard: see DefaultMaxInFlightPerShard (10,000).
	MaxInFlightPerShard int
	// CommitInterval: see DefaultCommitInterval (1 s).
	CommitInterval time.Duration
	// DrainTimeout: see DefaultDrainTimeout (10 s); negative: no wait.
	DrainTimeout time.Duration
	// Logger receives lease changes (info) and retried failures (warn),
	// never record contents. Default: discard.
	Logger *slog.Logger
}

// WithDefaults returns a copy of c with every unset optional field set to
// its default. It does not validate: New does.
func (c Config) WithDefaults() Config {
	if c.GroupID == "" {
		c.GroupID = DefaultGroupID
	}
	if c.WorkerID == "" {
		c.WorkerID = defaultWorkerID()
	}
	if c.StartPosition == "" {
		c.StartPosition = StartTrimHorizon
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = DefaultLeaseDuration
	}
	if c.RenewInterval == 0 {
		c.RenewInterval = c.LeaseDuration / 3
	}
	if c.ShardSyncInterval == 0 {
		c.ShardSyncInterval = DefaultShardSyncInterval
	}
	if c.IdleWait == 0 {
		c.IdleWait = DefaultIdleWait
	}
	if c.MaxRecordsPerCall == 0 {
		c.MaxRecordsPerCall = DefaultMaxRecordsPerCall
	}
	if c.MaxInFlightPerShard == 0 {
		c.MaxInFlightPerShard = DefaultMaxInFlightPerShard
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = DefaultCommitInterval
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// defaultWorkerID is the host name, the process id and a random suffix, so
// that two processes on one host, or a restarted one, never share leases.
func defaultWorkerID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "outflow"
	}
	return host + "-" + strconv.Itoa(os.Getpid()) + "-" + strings.ToLower(rand.Text()[:8])
}

// validate reports the first problem with a defaulted Config.
func (c Config) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	switch {
	case len(c.Streams) == 0:
		return bad("Streams is required")
	case slices.Contains(c.Streams, ""):
		return bad("Streams has an empty entry")
	case len(slices.Compact(slices.Sorted(slices.Values(c.Streams)))) != len(c.Streams):
		return bad("Streams lists a stream twice")
	case c.Leases == nil:
		return bad("Leases is required")
	case c.WorkerID == "":
		return bad("WorkerID is required")
	case c.StartPosition != StartTrimHorizon && c.StartPosition != StartLatest:
		return bad("StartPosition must be %q or %q, got %q", StartTrimHorizon, StartLatest, c.StartPosition)
	case c.LeaseDuration < time.Second:
		return bad("LeaseDuration must be at least 1s, got %s", c.LeaseDuration)
	case c.RenewInterval <= 0 || c.RenewInterval >= c.LeaseDuration:
		return bad("RenewInterval (%s) must be positive and below LeaseDuration (%s)", c.RenewInterval, c.LeaseDuration)
	case c.ShardSyncInterval <= 0:
		return bad("ShardSyncInterval must be positive, got %s", c.ShardSyncInterval)
	case c.IdleWait <= 0:
		return bad("IdleWait must be positive, got %s", c.IdleWait)
	case c.MaxRecordsPerCall < 1 || c.MaxRecordsPerCall > 10_000:
		return bad("MaxRecordsPerCall must be between 1 and 10000, got %d", c.MaxRecordsPerCall)
	case c.MaxInFlightPerShard < 1:
		return bad("MaxInFlightPerShard must be positive, got %d", c.MaxInFlightPerShard)
	case c.CommitInterval <= 0:
		return bad("CommitInterval must be positive, got %s", c.CommitInterval)
	case c.Logger == nil:
		return bad("Logger is nil")
	}
	return validateAWS(c.AWS)
}

// validateAWS checks what every client of Kinesis needs (the Source's and
// the range Reader's): a region and credentials.
func validateAWS(c aws.Config) error {
	switch {
	case c.Region == "":
		return fmt.Errorf("%w: AWS.Region is required", ErrInvalidConfig)
	case c.Credentials == nil:
		return fmt.Errorf("%w: AWS.Credentials is required", ErrInvalidConfig)
	}
	return nil
}
