package dispatcher

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/outflow-dev/outflow/enrich"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/source"
)

// EventType is the type of events made from stream records.
const EventType = "feature_view.output"

var eventIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// EventID derives the id of the event for a subscription and a source
// position: "evt_" and 26 characters of a SHA-256 over both. It is the same
// on every retry, redelivery and replay, so receivers can de-duplicate on it.
func EventID(subscriptionID string, pos source.Position) string {
	var key [256]byte // on the stack unless the ids are unusually long
	k := append(key[:0], subscriptionID...)
	k = append(k, 0)
	sum := sha256.Sum256(pos.AppendKey(k))
	var id [len("evt_") + 52]byte // 52: 32 bytes in base32, unpadded
	return string(eventIDEncoding.AppendEncode(append(id[:0], "evt_"...), sum[:])[:len("evt_")+26])
}

// envelope is the event (SPEC §5) of one record for one subscription, kept
// as parts rather than as an outflowv1.Event so that the record's bytes pass
// through untouched: unknown fields, key order and 64-bit integers included.
//
// The event model lives here, beside the pipeline that is its only writer,
// rather than in a package of its own: the stream package receives it as an
// injected EnvelopeFunc and the server only relays its bytes, so a separate
// package would add an import edge and no reader.
//
// body writes the event with one allocation: the per-subscription head (id,
// type, subscription_id, created_at) is spliced in front of the parts every
// subscription shares (the compacted record, the feature vector encoded once
// per enrichment result, the source position), and the result is signed per
// subscription. Nothing on this path goes through reflection or protojson
// (issue 10 measured event encoding at a fifth of a backlog's CPU).
//
// The json tags are for reading a stored event back (retry): body writes
// the same names, and source.Position's field names match the source
// object's keys.
type envelope struct {
	ID             string          `json:"id"`
	SubscriptionID string          `json:"subscription_id"`
	CreatedAt      string          `json:"created_at"`
	Record         json.RawMessage `json:"record"` // compacted, shared, read-only
	Source         source.Position `json:"source"`
}

// newEnvelope starts the event of a record for a subscription; the feature
// vector is added per attempt.
func newEnvelope(subscriptionID string, pos source.Position, raw []byte, now time.Time) *envelope {
	return newCompactEnvelope(subscriptionID, pos, compact(raw), now)
}

// newCompactEnvelope is newEnvelope for a record already compacted, which
// the events of one record share (read-only).
func newCompactEnvelope(subscriptionID string, pos source.Position, raw json.RawMessage, now time.Time) *envelope {
	return &envelope{
		ID:             EventID(subscriptionID, pos),
		SubscriptionID: subscriptionID,
		CreatedAt:      now.UTC().Format("2006-01-02T15:04:05.000Z07:00"),
		Record:         raw,
		Source:         pos,
	}
}

// body returns the event's JSON with vector (a JSON object, or nil for
// none) as its feature_vector. It allocates once.
func (e *envelope) body(vector []byte) []byte {
	if vector == nil {
		return e.bodyWith(0, nil)
	}
	return e.bodyWith(len(vector), func(b []byte) []byte { return append(b, vector...) })
}

// bodyWith returns the event's JSON, its feature_vector written by
// appendVector (nil: none) straight into the body, about vectorLen bytes
// (a hint: more only costs a reallocation). On the webhook path the vector
// is written once, not into a buffer of its own and then copied.
func (e *envelope) bodyWith(vectorLen int, appendVector func([]byte) []byte) []byte {
	n := envelopeFixedLen + len(e.ID) + len(e.SubscriptionID) + len(e.CreatedAt) + len(e.Record) + vectorLen +
		len(e.Source.Kind) + len(e.Source.Topic) + len(e.Source.Stream) + len(e.Source.Shard) + len(e.Source.Sequence)
	b := make([]byte, 0, n)
	b = append(b, `{"id":`...)
	b = appendQuoted(b, e.ID)
	b = append(b, `,"type":"`+EventType+`","subscription_id":`...)
	b = appendQuoted(b, e.SubscriptionID)
	b = append(b, `,"created_at":`...)
	b = appendQuoted(b, e.CreatedAt)
	b = append(b, `,"record":`...)
	if len(e.Record) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, e.Record...)
	}
	if appendVector != nil {
		b = append(b, `,"feature_vector":`...)
		b = appendVector(b)
	}
	b = append(b, `,"source":`...)
	b = appendSource(b, e.Source)
	return append(b, '}')
}

// envelopeFixedLen is the most bodyWith writes besides the envelope's
// strings, the record and the vector: every member name and quote, and the
// longest partition and offset numbers. Sized right, the body is one
// allocation; issue 10's records outgrew an estimate that left out
// created_at, and every body was allocated twice.
const envelopeFixedLen = len(`{"id":""`) + len(`,"type":"`+EventType+`","subscription_id":""`) +
	len(`,"created_at":""`) + len(`,"record":null`) + len(`,"feature_vector":`) + len(`,"source":`) +
	len(`{"kind":""`) + len(`,"topic":""`) + len(`,"partition":-2147483648`) + len(`,"offset":-9223372036854775808`) +
	len(`,"stream":""`) + len(`,"shard":""`) + len(`,"sequence":""`) + len(`}}`)

// appendSource writes a source position (SPEC §5): offsets as JSON numbers,
// empty fields left out.
func appendSource(b []byte, p source.Position) []byte {
	b = append(b, `{"kind":`...)
	b = appendQuoted(b, p.Kind)
	if p.Topic != "" {
		b = append(b, `,"topic":`...)
		b = appendQuoted(b, p.Topic)
	}
	if p.Kind == "kafka" {
		b = append(b, `,"partition":`...)
		b = strconv.AppendInt(b, int64(p.Partition), 10)
		b = append(b, `,"offset":`...)
		b = strconv.AppendInt(b, p.Offset, 10)
	}
	for _, f := range [...]struct{ name, value string }{{"stream", p.Stream}, {"shard", p.Shard}, {"sequence", p.Sequence}} {
		if f.value != "" {
			b = append(b, `,"`+f.name+`":`...)
			b = appendQuoted(b, f.value)
		}
	}
	return append(b, '}')
}

// appendQuoted writes s as a JSON string. Ids, topics and timestamps are
// plain ASCII and are copied; anything else is left to encoding/json.
func appendQuoted(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// withVector returns the envelope's JSON with fv as its feature_vector (nil:
// none). The webhook path writes the vector straight from the enrichment
// result (enrich.Result.AppendJSON) and calls body; this form serves the
// stream package, which hands over the vector as a message, and writes it
// without protojson too (enrich.AppendVectorJSON).
func (e *envelope) withVector(fv *outflowv1.FeatureVector) ([]byte, error) {
	if fv == nil {
		return e.body(nil), nil
	}
	b, err := enrich.AppendVectorJSON(make([]byte, 0, 512), fv)
	if err != nil {
		return nil, fmt.Errorf("encoding the feature vector of event %s: %w", e.ID, err)
	}
	return e.body(b), nil
}

// compact returns raw without insignificant white space (the decoder has
// already checked it is valid JSON; if compaction fails, raw is kept). A
// record without any white space byte, as producers write them, is
// returned as it is: compacting it would copy it unchanged (4% of the
// gateway's CPU in a backlog).
func compact(raw []byte) json.RawMessage {
	if bytes.IndexByte(raw, ' ') < 0 && bytes.IndexByte(raw, '\n') < 0 &&
		bytes.IndexByte(raw, '\t') < 0 && bytes.IndexByte(raw, '\r') < 0 {
		return raw
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return raw
	}
	return b.Bytes()
}

// Envelope returns the JSON event for a record read at pos, for the
// subscription subID, with fv as its feature vector (nil: none). Webhooks and
// streams carry the same JSON.
func Envelope(subID string, pos source.Position, raw []byte, fv *outflowv1.FeatureVector, now time.Time) ([]byte, error) {
	return newEnvelope(subID, pos, raw, now).withVector(fv)
}
