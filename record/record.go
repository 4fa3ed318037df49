// Package record decodes and validates the output-stream record, schema
// version "1" (SPEC §2): the JSON object a streaming feature pipeline writes
// to Kafka or Kinesis each time it updates a feature value.
//
// Decode is the single gate between the stream and the rest of Outflow. A
// record it accepts is safe to route, filter, shard and deliver; a record it
// rejects is poison, reported as a *PoisonError whose Reason is a
// low-cardinality metric label. Decode is called once per stream message, so
// it parses the record in one pass with a small purpose-built scanner instead
// of encoding/json's reflection (see BenchmarkDecode).
//
// Accepted records are strict JSON in the I-JSON sense (RFC 7493): valid
// UTF-8 without lone surrogate escapes, no member name twice in one object,
// numbers within the float64 range. That makes every accepted Raw decodable
// without error by encoding/json and by protojson into a
// google.protobuf.Struct, which is how the record travels in an Event; a
// record that some receiver or a later stage could not parse is rejected here,
// where it is counted and kept, rather than failing later.
package record

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
)

// Version is the only record schema version Outflow accepts.
const Version = "1"

// Record is one decoded output-stream record. Decode fills every field; the
// maps must be treated as read-only once the record is shared.
type Record struct {
	// Version is the schema version; always "1" in a decoded record.
	Version string
	// Producer names the writer, for example "tecton"; empty when absent.
	// Kept, not checked.
	Producer string
	// JobType is "stream" today; empty when absent. Kept, not checked.
	JobType string
	// FeatureViewName is the feature view that produced the record; never
	// empty. Subscriptions match on it.
	FeatureViewName string
	// FeatureViewID identifies the feature view; empty when absent.
	FeatureViewID string
	// FeatureTimestamp is when the feature values took effect, in UTC with
	// nanosecond precision. The offset the producer wrote is kept in Raw.
	FeatureTimestamp time.Time
	// EntityKeys holds the entity's join keys by name; at least one, names
	// never empty.
	EntityKeys map[string]string
	// FeatureValues holds the feature values by feature name when the output
	// stream includes them. It is nil when the member is absent or null, and
	// an empty non-nil map when the record has "feature_values": {}.
	FeatureValues map[string]string
	// Raw is a copy of the bytes the record was decoded from, unknown members
	// and original formatting included: receivers get the record as it was
	// written, not as Outflow understood it. Decode copies, so the caller may
	// reuse its buffer.
	Raw json.RawMessage
}

// Default limits applied by DecodeOptions.WithDefaults.
const (
	// DefaultMaxBytes is the default record size limit, 1 MiB (SPEC §2).
	DefaultMaxBytes = 1 << 20
	// DefaultMaxDepth is the default nesting limit. Each JSON object level
	// becomes three message levels once the record is carried as a
	// google.protobuf.Struct inside an Event (Struct, map entry, Value), and
	// the C++, Java and Python protobuf runtimes used by stream clients stop
	// at 100 levels by default; 32 JSON levels stay below that.
	DefaultMaxDepth = 32
	// DefaultMaxEntityKeys is the default limit on entity_keys members. Real
	// feature views have a handful of join keys; the limit bounds the work of
	// sorting and hashing them per record.
	DefaultMaxEntityKeys = 64
	// DefaultMaxFeatureValues is the default limit on feature_values members.
	DefaultMaxFeatureValues = 1024
)

// DecodeOptions bounds the work and memory Decode spends on one record, so a
// hostile or broken producer cannot exhaust the consumer. The zero value is
// ready to use: each zero (or negative) field takes its default.
type DecodeOptions struct {
	// MaxBytes is the largest record accepted, in bytes. It is checked before
	// any parsing. Default DefaultMaxBytes (1 MiB).
	MaxBytes int
	// MaxDepth is the deepest nesting of objects and arrays accepted, the
	// record object itself counting as 1 and entity_keys as 2. Default
	// DefaultMaxDepth (32); values of 1 are raised to 2 so that entity_keys
	// can be read at all. The parser does not recurse, so the limit is
	// about the records' consumers, not Decode's stack.
	MaxDepth int
	// MaxEntityKeys is the most members entity_keys may have. Default
	// DefaultMaxEntityKeys (64).
	MaxEntityKeys int
	// MaxFeatureValues is the most members feature_values may have. Default
	// DefaultMaxFeatureValues (1024).
	MaxFeatureValues int
}

// WithDefaults returns a copy of o with every zero or negative field set to
// its default.
func (o DecodeOptions) WithDefaults() DecodeOptions {
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	switch {
	case o.MaxDepth <= 0:
		o.MaxDepth = DefaultMaxDepth
	case o.MaxDepth < 2:
		o.MaxDepth = 2
	}
	if o.MaxEntityKeys <= 0 {
		o.MaxEntityKeys = DefaultMaxEntityKeys
	}
	if o.MaxFeatureValues <= 0 {
		o.MaxFeatureValues = DefaultMaxFeatureValues
	}
	return o
}

// Decode parses and validates one output-stream record (SPEC §2). It returns
// either the record and nil, or nil and a *PoisonError; never both, never
// another error type. data is not retained: Record.Raw is a copy.
//
// Beyond SPEC §2, Decode enforces:
//   - feature_timestamp is RFC 3339 (internet date-time) with at most nine
//     fractional digits, a 'T' (or 't') separator, and a 'Z' or ±hh:mm
//     offset; years 0001–9999, no leap second 60 (not representable in Go or
//     in google.protobuf.Timestamp);
//   - producer, job_type and feature_view_id, when present and not null, are
//     strings;
//   - entity_keys and feature_values values are strings (null is not);
//     feature_values names may be empty, entity key names may not;
//   - no object anywhere in the record has the same member name twice (after
//     unescaping): parsers disagree on which one wins, and the receivers read
//     Raw with their own parser;
//   - the limits of DecodeOptions.
//
// Null counts as absent for every top-level member: "feature_values": null is
// the same as no feature_values. A required member that is absent or null is
// ReasonMissingField; one that is present but empty ("" or {}) is
// ReasonInvalidField. The Reason constants say which problem gets which
// reason, and which one is reported when a record has several.
func Decode(data []byte, opts DecodeOptions) (rec *Record, err error) {
	defer func() {
		// A bug in the parser must cost one record, not the consumer: the
		// same message would crash every replica that reads it.
		if v := recover(); v != nil {
			rec, err = nil, &PoisonError{Reason: ReasonInternal, Err: fmt.Errorf("decoder panic: %v", v)}
		}
	}()
	d := getDecoder(data, opts.WithDefaults())
	r, perr := d.decode()
	d.release()
	if perr != nil {
		return nil, perr
	}
	return r, nil
}

// Proto returns the record as the outflowv1.Record message that CEL
// subscription filters are checked and evaluated against. Unknown members of
// Raw are not part of it. The message owns copies of the maps, so the caller
// may change it freely.
func (r *Record) Proto() *outflowv1.Record {
	return &outflowv1.Record{
		Version:          r.Version,
		Producer:         r.Producer,
		JobType:          r.JobType,
		FeatureViewName:  r.FeatureViewName,
		FeatureViewId:    r.FeatureViewID,
		FeatureTimestamp: timestamppb.New(r.FeatureTimestamp),
		EntityKeys:       maps.Clone(r.EntityKeys),
		FeatureValues:    maps.Clone(r.FeatureValues),
	}
}

// FNV-1a 64-bit parameters (http://www.isthe.com/chongo/tech/comp/fnv/).
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// EntityHash returns a stable 64-bit hash of the entity keys, used to split
// a subscription's events among stream clients (shard = hash % count) and
// among its delivery lanes, keeping one entity's events in order. It depends
// only on the entity keys, not on the feature view or any other member, and
// it never changes between releases, so users can compute the shard of an
// entity themselves:
//
// The hash is FNV-1a 64 over the entity keys sorted by name in bytewise
// order, each contributing its name's bytes, one 0x00 byte, its value's
// bytes, and one 0x00 byte, then finalised with MurmurHash3's fmix64:
//
//	k ^= k >> 33; k *= 0xff51afd7ed558ccd; k ^= k >> 33; k *= 0xc4ceb9fe1a85ec53; k ^= k >> 33
//
// For {"user_id": "u1"} that is fmix64(FNV-1a 64 of "user_id\x00u1\x00"),
// 0xe919038c15959078 (see ExampleRecord_EntityHash). The finaliser matters:
// plain FNV-1a modulo 3 or 5 splits similar keys very unevenly (50 users
// over 3 shards gave 40/0/10; with fmix64, 19/16/15).
func (r *Record) EntityHash() uint64 {
	var buf [8]string
	h := uint64(fnvOffset64)
	for _, k := range sortedKeys(r.EntityKeys, buf[:0]) {
		h = fnvString(h, k)
		h *= fnvPrime64 // the 0x00 separator; h ^= 0 would change nothing
		h = fnvString(h, r.EntityKeys[k])
		h *= fnvPrime64 // the 0x00 separator
	}
	return fmix64(h)
}

// fmix64 is MurmurHash3's 64-bit finaliser: every input bit affects every
// output bit, so the hash modulo any count is evenly spread.
func fmix64(k uint64) uint64 {
	k ^= k >> 33
	k *= 0xff51afd7ed558ccd
	k ^= k >> 33
	k *= 0xc4ceb9fe1a85ec53
	k ^= k >> 33
	return k
}

func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime64
	}
	return h
}

// EntityKey returns the entity keys as one canonical string, for use as a map
// key or an ordering key: the keys sorted by name in bytewise order, each as
// name=value with both escaped by url.QueryEscape, joined by "&". It is the
// same string url.Values.Encode gives for one value per key, so it parses
// back with url.ParseQuery, and two records have the same EntityKey exactly
// when their entity keys are equal. For {"user_id": "u 1", "org": "a&b"} it is
// "org=a%26b&user_id=u+1".
func (r *Record) EntityKey() string {
	var buf [8]string
	keys := sortedKeys(r.EntityKeys, buf[:0])
	if len(keys) == 1 {
		k := keys[0]
		return url.QueryEscape(k) + "=" + url.QueryEscape(r.EntityKeys[k])
	}
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(k))
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(r.EntityKeys[k]))
	}
	return b.String()
}

// sortedKeys appends the keys of m to dst and sorts them bytewise.
func sortedKeys(m map[string]string, dst []string) []string {
	for k := range m {
		dst = append(dst, k)
	}
	slices.Sort(dst)
	return dst
}
