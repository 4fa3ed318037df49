package stream

import (
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"
)

// Position says where a stream continues: for each topic and partition, the
// next offset to read. It is what a resume token carries. A Position is a
// plain map; the Stream never keeps or changes one it was given or returned.
type Position map[string]map[int32]int64

// Clone returns a deep copy of p (nil for nil).
func (p Position) Clone() Position {
	if p == nil {
		return nil
	}
	out := make(Position, len(p))
	for topic, parts := range p {
		out[topic] = maps.Clone(parts)
	}
	return out
}

// Limits on what Decode accepts, so that a token (outside input: the client
// sends it back) costs bounded memory and work. Open refuses to stream topics
// whose partitions together exceed MaxTokenPartitions, so every token a
// Stream hands out decodes.
const (
	// MaxTokenPartitions is the most (topic, partition) entries a token may
	// hold, across all its topics.
	MaxTokenPartitions = 4096
	// MaxTokenTopics is the most topics a token may hold.
	MaxTokenTopics = 256
	// MaxTopicNameLen is Kafka's own limit on a topic name, in bytes.
	MaxTopicNameLen = 249
	// MaxTokenLen is the longest token string Decode looks at, in
	// characters. It is above the base64 length of the largest token the
	// other limits allow in practice (about 4096 × 10 bytes of offsets plus
	// the topic names) and small enough to refuse junk before decoding it.
	MaxTokenLen = 128 << 10
)

// MinTokenKeyLen is the shortest HMAC key NewTokens accepts, in bytes: a
// SHA-256 HMAC key shorter than the hash gives less than its full strength.
const MinTokenKeyLen = 32

// tokenVersion is the first byte of every token, so that the format can
// change without old tokens being misread. Version 1 holds Kafka positions
// only; version 2 appends Kinesis shard positions, and is written only when
// there are some, so Kafka-only tokens are unchanged.
const (
	tokenVersion       = 1
	tokenVersionShards = 2
)

// ShardPosition says where a stream continues in sources whose positions
// are sequence numbers (Kinesis): for each stream and shard, one of
//   - a sequence number (decimal digits): continue after that record;
//   - ShardStart (""): read the shard from its oldest retained record;
//   - "@" and Unix milliseconds (ShardAt): read from the first record that
//     arrived at or after that time;
//   - ShardDone: the shard is closed and was read to its end.
//
// It is what a resume token carries besides Position. A ShardPosition is a
// plain map; the Stream never keeps or changes one it was given or returned.
type ShardPosition map[string]map[string]string

// Special ShardPosition values.
const (
	ShardStart = ""
	ShardDone  = "end"
)

// ShardAt returns the ShardPosition value that reads from time t on.
func ShardAt(t time.Time) string { return "@" + strconv.FormatInt(t.UnixMilli(), 10) }

// Clone returns a deep copy of p (nil for nil).
func (p ShardPosition) Clone() ShardPosition {
	if p == nil {
		return nil
	}
	out := make(ShardPosition, len(p))
	for stream, shards := range p {
		out[stream] = maps.Clone(shards)
	}
	return out
}

// Limits on the shard part of a token.
const (
	// MaxShardNameLen bounds stream names and shard ids in a token, in
	// bytes: Kinesis allows 128 characters for both.
	MaxShardNameLen = 128
	// maxShardValueLen bounds a shard's position value: Kinesis sequence
	// numbers have at most 129 digits.
	maxShardValueLen = 130
)

// tokenMACLen is how much of the HMAC-SHA256 a token carries: 128 bits is
// far beyond what an online forger (one guess per StreamEvents call) can hit,
// and halves the overhead of a full 256-bit tag.
const tokenMACLen = 16

// tokenDomain separates token MACs from anything else the key might sign.
const tokenDomain = "outflow/stream-resume-token"

var tokenEncoding = base64.RawURLEncoding

// ErrInvalidToken is returned by Tokens.Decode (and so by the server's
// StreamEvents) for a token that was not made by Tokens.Encode with one of
// the configured keys for this subscription: garbage, a tampered or
// truncated token, a token of another subscription, or one beyond the size
// limits. The server maps it to INVALID_ARGUMENT; the client should
// reconnect without a token (from the live tail) or with a token it really
// received.
var ErrInvalidToken = errors.New("stream: invalid resume token")

// Tokens makes and checks resume tokens. A token is
// base64url(version ‖ position ‖ HMAC-SHA256(key, subscription id ‖ version ‖
// position)[:16]), with the position in a compact binary form (topics and
// partitions sorted, offsets as varints), so it is bound to one subscription
// and tamper-evident, yet needs no server-side state: any replica holding the
// key can resume any client. Every replica of the gateway must therefore be
// configured with the same key.
//
// Tokens are not encrypted: the topic names and offsets inside are visible
// to the client that holds them, which is its own stream position. A Tokens
// is immutable and safe for concurrent use.
type Tokens struct {
	// keys[0] signs new tokens; every key is accepted when decoding, so a
	// key can be rotated without cutting off connected clients.
	keys [][]byte
}

// NewTokens returns a Tokens that signs with key and accepts tokens signed
// with key or any of previous, which lets operators rotate the key: deploy
// the new key with the old one as previous, and drop the old one once clients
// have reconnected (tokens are short-lived in practice: each event carries a
// fresh one). Keys must be at least MinTokenKeyLen (32) bytes; they are
// copied.
func NewTokens(key []byte, previous ...[]byte) (*Tokens, error) {
	t := &Tokens{}
	for i, k := range append([][]byte{key}, previous...) {
		if len(k) < MinTokenKeyLen {
			return nil, fmt.Errorf("%w: resume token key %d is %d bytes, want at least %d", ErrInvalidConfig, i, len(k), MinTokenKeyLen)
		}
		t.keys = append(t.keys, slices.Clone(k))
	}
	return t, nil
}

// Encode returns the resume token for subscription subID at position p. The
// encoding is canonical: equal positions give equal tokens (topics without
// partitions are left out).
//
// Encode accepts any Position, but Decode refuses one beyond the limits
// (MaxTokenPartitions, MaxTokenTopics, MaxTopicNameLen), an empty topic
// name, or a negative partition or offset; a Stream never produces such a
// position.
func (t *Tokens) Encode(subID string, p Position) string {
	return t.EncodeAll(subID, p, nil)
}

// EncodeAll is Encode for a position that may also hold Kinesis shards.
// Without shards the token is the one Encode makes.
func (t *Tokens) EncodeAll(subID string, p Position, shards ShardPosition) string {
	var payload []byte
	if countShards(shards) == 0 {
		payload = appendPosition([]byte{tokenVersion}, p)
	} else {
		payload = appendShards(appendPosition([]byte{tokenVersionShards}, p), shards)
	}
	out := t.mac(t.keys[0], subID, payload)
	return tokenEncoding.EncodeToString(append(payload, out...))
}

// Decode checks a token made by Encode for subscription subID and returns
// its position. Every failure is ErrInvalidToken (wrapped with the reason):
// tokens are outside input, so Decode never panics, and it refuses a token
// longer than MaxTokenLen before decoding it.
func (t *Tokens) Decode(token, subID string) (Position, error) {
	p, shards, err := t.DecodeAll(token, subID)
	if err == nil && countShards(shards) > 0 {
		return nil, fmt.Errorf("%w: the token holds Kinesis positions; decode it with DecodeAll", ErrInvalidToken)
	}
	return p, err
}

// DecodeAll is Decode for tokens that may also hold Kinesis shard positions
// (EncodeAll); shards is nil for a token without them.
func (t *Tokens) DecodeAll(token, subID string) (Position, ShardPosition, error) {
	if len(token) > MaxTokenLen {
		return nil, nil, fmt.Errorf("%w: longer than %d characters", ErrInvalidToken, MaxTokenLen)
	}
	raw, err := tokenEncoding.DecodeString(token)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: not base64url", ErrInvalidToken)
	}
	if len(raw) < 1+tokenMACLen {
		return nil, nil, fmt.Errorf("%w: too short", ErrInvalidToken)
	}
	if raw[0] != tokenVersion && raw[0] != tokenVersionShards {
		return nil, nil, fmt.Errorf("%w: unknown version %d", ErrInvalidToken, raw[0])
	}
	payload, sum := raw[:len(raw)-tokenMACLen], raw[len(raw)-tokenMACLen:]
	valid := false
	for _, k := range t.keys {
		if hmac.Equal(sum, t.mac(k, subID, payload)) {
			valid = true
			break
		}
	}
	if !valid {
		// Deliberately one message for "tampered" and "another
		// subscription's": they cannot be told apart, by design.
		return nil, nil, fmt.Errorf("%w: signature does not match this subscription", ErrInvalidToken)
	}
	r := &reader{b: payload[1:]}
	p, err := readPosition(r)
	var shards ShardPosition
	if err == nil && raw[0] == tokenVersionShards {
		shards, err = parseShards(r, countPartitions(p))
	}
	if err == nil && len(r.b) != 0 {
		err = fmt.Errorf("%w: %d trailing bytes", errMalformed, len(r.b))
	}
	if err != nil {
		// Only a token signed with our key gets here, so this means a bug
		// or a token made by a future format under the same version.
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	return p, shards, nil
}

// countPartitions counts the partitions of p.
func countPartitions(p Position) int {
	n := 0
	for _, parts := range p {
		n += len(parts)
	}
	return n
}

// countShards counts the shards of s.
func countShards(s ShardPosition) int {
	n := 0
	for _, shards := range s {
		n += len(shards)
	}
	return n
}

// appendShards appends the binary form of s: the stream count, then for
// each stream in bytewise order its length-prefixed name and shard count,
// then its shards in bytewise order of id, each a length-prefixed id and a
// length-prefixed position value.
func appendShards(b []byte, s ShardPosition) []byte {
	streams := slices.DeleteFunc(slices.Sorted(maps.Keys(s)), func(n string) bool { return len(s[n]) == 0 })
	b = binary.AppendUvarint(b, uint64(len(streams)))
	for _, name := range streams {
		b = binary.AppendUvarint(b, uint64(len(name)))
		b = append(b, name...)
		ids := slices.Sorted(maps.Keys(s[name]))
		b = binary.AppendUvarint(b, uint64(len(ids)))
		for _, id := range ids {
			b = binary.AppendUvarint(b, uint64(len(id)))
			b = append(b, id...)
			v := s[name][id]
			b = binary.AppendUvarint(b, uint64(len(v)))
			b = append(b, v...)
		}
	}
	return b
}

// parseShards reads what appendShards wrote, canonical form only, with at
// most MaxTokenPartitions entries in all counting the partitions already
// read.
func parseShards(r *reader, partitions int) (ShardPosition, error) {
	nStreams := r.uvarint()
	if r.err == nil && (nStreams == 0 || nStreams > MaxTokenTopics) {
		return nil, fmt.Errorf("%w: %d streams", errMalformed, nStreams)
	}
	out := make(ShardPosition, min(nStreams, MaxTokenTopics))
	total := uint64(partitions)
	prev := ""
	for i := uint64(0); i < nStreams && r.err == nil; i++ {
		n := r.uvarint()
		if r.err == nil && (n == 0 || n > MaxShardNameLen) {
			return nil, fmt.Errorf("%w: stream name of %d bytes", errMalformed, n)
		}
		name := string(r.bytes(n))
		nShards := r.uvarint()
		if r.err != nil {
			break
		}
		if i > 0 && cmp.Compare(name, prev) <= 0 {
			return nil, fmt.Errorf("%w: streams out of order", errMalformed)
		}
		prev = name
		total += nShards
		if nShards == 0 || total > MaxTokenPartitions {
			return nil, fmt.Errorf("%w: %d shards in stream %d, %d entries in all (at most %d)", errMalformed, nShards, i, total, MaxTokenPartitions)
		}
		shards := make(map[string]string, nShards)
		prevID := ""
		for j := uint64(0); j < nShards && r.err == nil; j++ {
			n := r.uvarint()
			if r.err == nil && (n == 0 || n > MaxShardNameLen) {
				return nil, fmt.Errorf("%w: shard id of %d bytes", errMalformed, n)
			}
			id := string(r.bytes(n))
			m := r.uvarint()
			if r.err == nil && m > maxShardValueLen {
				return nil, fmt.Errorf("%w: shard position of %d bytes", errMalformed, m)
			}
			v := string(r.bytes(m))
			if r.err != nil {
				break
			}
			if j > 0 && cmp.Compare(id, prevID) <= 0 {
				return nil, fmt.Errorf("%w: shards out of order", errMalformed)
			}
			prevID = id
			if !validShardValue(v) {
				return nil, fmt.Errorf("%w: shard position %q", errMalformed, v)
			}
			shards[id] = v
		}
		out[name] = shards
	}
	if r.err != nil {
		return nil, fmt.Errorf("%w: %w", errMalformed, r.err)
	}
	return out, nil
}

// validShardValue reports whether v is a ShardPosition value: ShardStart,
// ShardDone, a sequence number (digits, no leading zero) or "@" and Unix
// milliseconds.
func validShardValue(v string) bool {
	switch {
	case v == ShardStart, v == ShardDone:
		return true
	case v[0] == '@':
		ms, err := strconv.ParseInt(v[1:], 10, 64)
		return err == nil && ms >= 0 && strconv.FormatInt(ms, 10) == v[1:]
	}
	return isSequence(v)
}

// isSequence reports whether v is a sequence number: decimal digits, no
// leading zero unless it is "0".
func isSequence(v string) bool {
	if v == "" || (v[0] == '0' && len(v) > 1) {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return false
		}
	}
	return true
}

// mac returns the truncated HMAC of the subscription id and payload. The id
// is length-prefixed so that no (id, payload) pair can be re-split into
// another.
func (t *Tokens) mac(key []byte, subID string, payload []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(tokenDomain))
	h.Write(binary.AppendUvarint(nil, uint64(len(subID))))
	h.Write([]byte(subID))
	h.Write(payload)
	return h.Sum(nil)[:tokenMACLen]
}

// appendPosition appends the binary form of p: the topic count, then for
// each topic in bytewise order its length-prefixed name and partition count,
// then its partitions in ascending order, the first as a signed varint and
// each next one as the unsigned gap to its predecessor minus one, each
// followed by its offset as a signed varint.
func appendPosition(b []byte, p Position) []byte {
	// Topics without partitions carry nothing and are left out.
	topics := slices.DeleteFunc(slices.Sorted(maps.Keys(p)), func(t string) bool { return len(p[t]) == 0 })
	b = binary.AppendUvarint(b, uint64(len(topics)))
	for _, topic := range topics {
		parts := p[topic]
		b = binary.AppendUvarint(b, uint64(len(topic)))
		b = append(b, topic...)
		ids := slices.Sorted(maps.Keys(parts))
		b = binary.AppendUvarint(b, uint64(len(ids)))
		for i, id := range ids {
			if i == 0 {
				b = binary.AppendVarint(b, int64(id))
			} else {
				b = binary.AppendUvarint(b, uint64(int64(id)-int64(ids[i-1])-1))
			}
			b = binary.AppendVarint(b, parts[id])
		}
	}
	return b
}

// errMalformed is wrapped by parsePosition's errors.
var errMalformed = errors.New("malformed position")

// parsePosition reads what appendPosition wrote, enforcing the limits. It
// accepts only the canonical form (sorted topics, strictly ascending
// partitions, no trailing bytes), so that a decoded position re-encodes to
// the same bytes.
func parsePosition(b []byte) (Position, error) {
	r := &reader{b: b}
	p, err := readPosition(r)
	if err == nil && len(r.b) != 0 {
		err = fmt.Errorf("%w: %d trailing bytes", errMalformed, len(r.b))
	}
	return p, err
}

// readPosition reads a position from r, leaving what follows it.
func readPosition(r *reader) (Position, error) {
	nTopics := r.uvarint()
	if r.err == nil && nTopics > MaxTokenTopics {
		return nil, fmt.Errorf("%w: %d topics, at most %d", errMalformed, nTopics, MaxTokenTopics)
	}
	p := make(Position, min(nTopics, MaxTokenTopics))
	total := uint64(0)
	prevTopic := ""
	for i := uint64(0); i < nTopics && r.err == nil; i++ {
		n := r.uvarint()
		if r.err == nil && (n == 0 || n > MaxTopicNameLen) {
			return nil, fmt.Errorf("%w: topic name of %d bytes", errMalformed, n)
		}
		topic := string(r.bytes(n))
		nParts := r.uvarint()
		if r.err != nil {
			break
		}
		if i > 0 && cmp.Compare(topic, prevTopic) <= 0 {
			return nil, fmt.Errorf("%w: topics out of order", errMalformed)
		}
		prevTopic = topic
		total += nParts
		if nParts == 0 || total > MaxTokenPartitions {
			return nil, fmt.Errorf("%w: %d partitions in topic %d, %d in all (at most %d)", errMalformed, nParts, i, total, MaxTokenPartitions)
		}
		parts := make(map[int32]int64, nParts)
		var id int64
		for j := uint64(0); j < nParts && r.err == nil; j++ {
			if j == 0 {
				id = r.varint()
			} else {
				gap := r.uvarint()
				if gap >= 1<<31 {
					return nil, fmt.Errorf("%w: partition gap %d", errMalformed, gap)
				}
				id += int64(gap) + 1
			}
			offset := r.varint()
			if r.err != nil {
				break
			}
			if id < 0 || id > 1<<31-1 || offset < 0 {
				return nil, fmt.Errorf("%w: partition %d offset %d", errMalformed, id, offset)
			}
			parts[int32(id)] = offset
		}
		p[topic] = parts
	}
	if r.err != nil {
		return nil, fmt.Errorf("%w: %w", errMalformed, r.err)
	}
	return p, nil
}

// reader consumes varints and byte strings, remembering the first error.
type reader struct {
	b   []byte
	err error
}

var (
	errTruncated = errors.New("truncated")
	// errOverlong is a varint with needless continuation bytes, which
	// appendPosition never writes; refusing it keeps the format canonical.
	errOverlong = errors.New("overlong varint")
)

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errTruncated
		return 0
	}
	if n > 1 && r.b[n-1] == 0 {
		r.err = errOverlong
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errTruncated
		return 0
	}
	if n > 1 && r.b[n-1] == 0 {
		r.err = errOverlong
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes(n uint64) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errTruncated
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}
