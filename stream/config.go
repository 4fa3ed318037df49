package stream

import (
	"fmt"
	"log/slog"
	"slices"
	"time"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/record"
	"github.com/outflow-dev/outflow/source"
)

// Defaults applied by Config.WithDefaults.
const (
	// DefaultBufferSize is the default number of events a stream holds
	// ready for its client. A thousand events of about a kilobyte each
	// bounds a stream's memory to about a mebibyte while absorbing bursts
	// and gRPC's send latency.
	DefaultBufferSize = 1024

	// DefaultSlowClientGrace is how long, by default, a stream's buffer may
	// stay full with the client taking nothing before the stream ends with
	// ErrSlowClient. Five seconds rides out a GC pause or a short network
	// stall, but frees a stuck client's readers quickly.
	DefaultSlowClientGrace = 5 * time.Second

	// DefaultMaxWait is how long the broker may hold a fetch open waiting
	// for new records. Half a second (the Java consumer's fetch.max.wait.ms)
	// keeps live-tail latency low and Close prompt (Close waits for the fetch
	// in flight), at two idle fetches per second per partition and stream.
	DefaultMaxWait = 500 * time.Millisecond

	// DefaultFetchMaxBytes bounds one fetch response, in bytes. 256 KiB is
	// hundreds of typical records per round trip when catching up, while
	// keeping a stream's memory small: a server runs many streams, each with
	// one fetch per partition. A record larger than this is still fetched
	// (the broker always returns at least one batch).
	DefaultFetchMaxBytes = 256 << 10

	// DefaultEnrichConcurrency is how many records of one partition may be
	// enriched at once. Enrichment can take seconds (consistency retries),
	// so one at a time would cap a stream at a few events per second per
	// partition; events are still handed out in offset order.
	DefaultEnrichConcurrency = 16

	// DefaultPartitionWatchInterval is how often a stream looks for
	// partitions added to its topics, which it then reads from their
	// earliest offset.
	DefaultPartitionWatchInterval = 10 * time.Second
)

// requestTimeout bounds each metadata and offset request, and a fetch
// beyond its MaxWait.
const requestTimeout = 10 * time.Second

// EnvelopeFunc builds an event's JSON envelope (SPEC §5), the same bytes a
// webhook receives: the event id derived from subscription id and position,
// the record's raw JSON, the feature vector (nil: none) and the source
// position. It must be safe for concurrent use.
type EnvelopeFunc func(subID string, pos source.Position, raw []byte, fv *outflowv1.FeatureVector) ([]byte, error)

// Config configures the streams a server opens. Source and Topics (Kafka),
// or Shards and KinesisStreams (Kinesis), or both, and Tokens and Envelope
// are required; WithDefaults (which Open applies) fills in the rest.
// One Config is meant to be shared by all streams of a server.
type Config struct {
	// Source is the log the topics are read from (source/kafka.Log): each
	// stream opens its own reader on it, with its own connections. Required.
	Source source.Log
	// Shards reads Kinesis streams (source/kinesis.Reader), and
	// KinesisStreams names those to read. Either they or Source and Topics
	// (or both) are required.
	Shards         source.ShardReader
	KinesisStreams []string
	// Topics are the feature output streams to read: the same topics the
	// gateway's consumer group reads. Required.
	Topics []string
	// Tokens signs and checks resume tokens. Every replica must use the same
	// key. Required.
	Tokens *Tokens
	// Envelope builds the event JSON. Required: it is the dispatcher's
	// envelope, so stream clients and webhook receivers get the same bytes.
	Envelope EnvelopeFunc
	// BufferSize is how many events a stream holds for its client. Default
	// DefaultBufferSize (1024).
	BufferSize int
	// SlowClientGrace is how long the buffer may stay full while Next takes
	// nothing before the stream ends with ErrSlowClient. A client that keeps
	// taking events, however slowly, is not cut off: it reads from the log at
	// its own pace and costs only its bounded buffer. Default
	// DefaultSlowClientGrace (5 s).
	SlowClientGrace time.Duration
	// MaxWait is how long a fetch may wait for new records. Default
	// DefaultMaxWait (500 ms).
	MaxWait time.Duration
	// FetchMaxBytes bounds one fetch response. Default DefaultFetchMaxBytes
	// (256 KiB).
	FetchMaxBytes int
	// EnrichConcurrency bounds the records of one partition being enriched
	// at once. Default DefaultEnrichConcurrency (16).
	EnrichConcurrency int
	// PartitionWatchInterval is how often topics are checked for added
	// partitions; negative disables the check (new partitions are then read
	// after the client reconnects). Default DefaultPartitionWatchInterval
	// (10 s).
	PartitionWatchInterval time.Duration
	// Decode bounds the work spent on one record; the zero value applies
	// record's defaults (1 MiB records).
	Decode record.DecodeOptions
	// Logger receives retried broker failures (warn) and skipped records
	// (debug), never record contents. Default: discard.
	Logger *slog.Logger
}

// WithDefaults returns a copy of c with every unset optional field set to
// its default. It does not validate: Open does that after applying defaults.
func (c Config) WithDefaults() Config {
	if c.BufferSize == 0 {
		c.BufferSize = DefaultBufferSize
	}
	if c.SlowClientGrace == 0 {
		c.SlowClientGrace = DefaultSlowClientGrace
	}
	if c.MaxWait == 0 {
		c.MaxWait = DefaultMaxWait
	}
	if c.FetchMaxBytes == 0 {
		c.FetchMaxBytes = DefaultFetchMaxBytes
	}
	if c.EnrichConcurrency == 0 {
		c.EnrichConcurrency = DefaultEnrichConcurrency
	}
	if c.PartitionWatchInterval == 0 {
		c.PartitionWatchInterval = DefaultPartitionWatchInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// validate reports the first problem with a defaulted Config; its errors wrap
// ErrInvalidConfig.
func (c Config) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	switch {
	case c.Source == nil && (len(c.Topics) > 0 || len(c.KinesisStreams) == 0):
		return bad("Source is required")
	case len(c.Topics) == 0 && len(c.KinesisStreams) == 0:
		return bad("Topics is required")
	case len(c.KinesisStreams) > 0 && c.Shards == nil:
		return bad("Shards is required with KinesisStreams")
	case slices.Contains(c.KinesisStreams, ""):
		return bad("KinesisStreams has an empty entry")
	case slices.Contains(c.Topics, ""):
		return bad("Topics has an empty entry")
	case len(slices.Compact(slices.Sorted(slices.Values(c.Topics)))) != len(c.Topics):
		return bad("Topics lists a topic twice")
	case len(c.Topics) > MaxTokenTopics:
		return bad("at most %d Topics, got %d", MaxTokenTopics, len(c.Topics))
	case c.Tokens == nil:
		return bad("Tokens is required")
	case c.Envelope == nil:
		return bad("Envelope is required")
	case c.BufferSize < 1:
		return bad("BufferSize must be positive, got %d", c.BufferSize)
	case c.SlowClientGrace < 0:
		return bad("SlowClientGrace must be positive, got %s", c.SlowClientGrace)
	case c.MaxWait < time.Millisecond || c.MaxWait > requestTimeout:
		return bad("MaxWait must be between 1ms and %s, got %s", requestTimeout, c.MaxWait)
	case c.FetchMaxBytes < 1:
		return bad("FetchMaxBytes must be positive, got %d", c.FetchMaxBytes)
	case c.EnrichConcurrency < 1:
		return bad("EnrichConcurrency must be positive, got %d", c.EnrichConcurrency)
	case c.Logger == nil:
		return bad("Logger is nil")
	}
	for _, t := range c.Topics {
		if len(t) > MaxTopicNameLen {
			return bad("topic name longer than %d bytes", MaxTopicNameLen)
		}
	}
	return nil
}

// readerConfig is what a stream's reader is opened with: its topics, and
// metadata refreshed at least as often as partitions are watched.
func (c Config) readerConfig() source.ReaderConfig {
	rc := source.ReaderConfig{Streams: slices.Clone(c.Topics)}
	if c.PartitionWatchInterval > 0 {
		rc.Refresh = c.PartitionWatchInterval
	}
	return rc
}
