package dispatcher

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/source"
)

// EventType is the type of events made from stream records.
const EventType = "feature_view.output"

var eventIDEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// EventID derives the id of the event for a subscription and a source
// position: "evt_" and 26 characters of a SHA-256 over both. It is the same
// on every retry, redelivery and replay, so receivers can de-duplicate on it.
func EventID(subscriptionID string, pos source.Position) string {
	sum := sha256.Sum256([]byte(subscriptionID + "\x00" + pos.Key()))
	return "evt_" + strings.ToLower(eventIDEncoding.EncodeToString(sum[:]))[:26]
}

// envelope is the event as JSON (SPEC §5). It is assembled from parts
// rather than from an outflowv1.Event so that the record's bytes pass
// through untouched: unknown fields, key order and 64-bit integers included.
type envelope struct {
	ID             string          `json:"id"`
	Type           string          `json:"type"`
	SubscriptionID string          `json:"subscription_id"`
	CreatedAt      string          `json:"created_at"`
	Record         json.RawMessage `json:"record"`
	FeatureVector  json.RawMessage `json:"feature_vector,omitempty"`
	Source         sourceJSON      `json:"source"`
}

// sourceJSON is the envelope's source position; offsets are JSON numbers.
type sourceJSON struct {
	Kind           string `json:"kind"`
	Topic          string `json:"topic,omitempty"`
	Partition      *int32 `json:"partition,omitempty"`
	Offset         *int64 `json:"offset,omitempty"`
	Stream         string `json:"stream,omitempty"`
	Shard          string `json:"shard,omitempty"`
	SequenceNumber string `json:"sequence,omitempty"` // SPEC §5: "sequence"
}

func newSourceJSON(p source.Position) sourceJSON {
	s := sourceJSON{Kind: p.Kind, Topic: p.Topic, Stream: p.Stream, Shard: p.Shard, SequenceNumber: p.Sequence}
	if p.Kind == "kafka" {
		s.Partition, s.Offset = &p.Partition, &p.Offset
	}
	return s
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
		Type:           EventType,
		SubscriptionID: subscriptionID,
		CreatedAt:      now.UTC().Format("2006-01-02T15:04:05.000Z07:00"),
		Record:         raw,
		Source:         newSourceJSON(pos),
	}
}

var vectorJSON = protojson.MarshalOptions{UseProtoNames: true}

// withVector returns the envelope's JSON with fv as its feature_vector (nil:
// none).
func (e *envelope) withVector(fv *outflowv1.FeatureVector) ([]byte, error) {
	out := *e
	out.FeatureVector = nil
	if fv != nil {
		b, err := vectorJSON.Marshal(fv)
		if err != nil {
			return nil, fmt.Errorf("encoding the feature vector: %w", err)
		}
		out.FeatureVector = b
	}
	b, err := json.Marshal(&out)
	if err != nil {
		return nil, fmt.Errorf("encoding event %s: %w", e.ID, err)
	}
	return b, nil
}

// compact returns raw without insignificant white space (the decoder has
// already checked it is valid JSON; if compaction fails, raw is kept).
func compact(raw []byte) json.RawMessage {
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
