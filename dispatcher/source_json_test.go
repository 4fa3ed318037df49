package dispatcher

import (
	"encoding/json"
	"maps"
	"reflect"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/source"
)

// TestEnvelopeSourceBySourceKind checks the envelope's "source" for each
// source kind: SPEC §5 names the Kafka fields topic/partition/offset and the
// Kinesis ones stream/shard/sequence, and a kind carries only its own.
func TestEnvelopeSourceBySourceKind(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		pos  source.Position
		want map[string]any
	}{
		{"kafka", source.Position{Kind: "kafka", Topic: "fv", Partition: 0, Offset: 0},
			map[string]any{"kind": "kafka", "topic": "fv", "partition": float64(0), "offset": float64(0)}},
		{"kinesis", source.Position{Kind: "kinesis", Stream: "fv", Shard: "shardId-000000000001", Sequence: "49680825713011036106314782874244872083627753250616246290"},
			map[string]any{"kind": "kinesis", "stream": "fv", "shard": "shardId-000000000001", "sequence": "49680825713011036106314782874244872083627753250616246290"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			body, err := Envelope("sub_x", tt.pos, []byte(`{"version":"1"}`), nil, time.Unix(0, 0))
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Source map[string]any `json:"source"`
			}
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got.Source, tt.want) {
				t.Errorf("source = %v, want %v", got.Source, tt.want)
			}
		})
	}
}

// TestEnvelopeReadBack checks that a stored event (body) decodes back into
// the envelope it was written from, as retry reads it, for both sources.
func TestEnvelopeReadBack(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 24, 10, 0, 0, 123e6, time.UTC)
	for name, pos := range map[string]source.Position{
		"kafka":   {Kind: "kafka", Topic: "fv-output", Partition: 3, Offset: 1234},
		"kinesis": {Kind: "kinesis", Stream: "fv", Shard: "shardId-000000000001", Sequence: "49590338271490256608559692538361571095921575989136588898"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env := newEnvelope("sub_\"x\"", pos, []byte(`{"version": "1", "n": 9007199254740993}`), now)
			var got envelope
			if err := json.Unmarshal(env.body([]byte(`{"attempts":1}`)), &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(&got, env) {
				t.Errorf("read back %+v, want %+v", got, *env)
			}
		})
	}
}

// TestEnvelopeBodyAllocatesOnce checks that body sizes its buffer right:
// one allocation for the event, whatever the source kind and with the
// longest numbers. Not parallel: testing.AllocsPerRun refuses to run in a
// parallel test.
func TestEnvelopeBodyAllocatesOnce(t *testing.T) {
	record := []byte(`{"version":"1","producer":"tecton","job_type":"stream","feature_view_name":"user_items_added_to_cart",` +
		`"feature_timestamp":"2026-12-04T16:39:27.123456789Z","entity_keys":{"user_id":"u12345"},` +
		`"feature_values":{"cart_count":"5","cart_value":"143.25"},"sent_ns":"1796402367123456789"}`)
	vector := []byte(`{"workspace":"prod","feature_service":"promo_fs","consistent":true,"attempts":1,"features":{"a.x":1.5}}`)
	now := time.Date(2026, 12, 4, 16, 39, 27, 123456789, time.UTC)
	tests := []struct {
		name   string
		pos    source.Position
		vector []byte
	}{
		{"kafka", source.Position{Kind: "kafka", Topic: "bench-steady-0123456789", Partition: 5, Offset: 292993}, nil},
		{"kafka, longest numbers", source.Position{Kind: "kafka", Topic: "t", Partition: -2147483648, Offset: -9223372036854775808}, nil},
		{"kafka, with a vector", source.Position{Kind: "kafka", Topic: "fv", Partition: 2147483647, Offset: 9223372036854775807}, vector},
		{"kinesis", source.Position{Kind: "kinesis", Stream: "fv-output", Shard: "shardId-000000000001",
			Sequence: "49680825713011036106314782874244872083627753250616246290"}, vector},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newEnvelope("sub_0123456789abcdef", tt.pos, record, now)
			var body []byte
			if got := testing.AllocsPerRun(50, func() { body = env.body(tt.vector) }); got != 1 {
				t.Errorf("body allocated %v times, want 1 (len %d, cap %d)", got, len(body), cap(body))
			}
			if !json.Valid(body) {
				t.Errorf("body is not JSON: %s", body)
			}
		})
	}
}
