package stream

import (
	"bytes"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"
)

func TestTokensCarryShardPositions(t *testing.T) {
	t.Parallel()
	tok := mustTokens(t, testKey(4))
	seq := "49680825713011036106314782874244872083627753250616246290"
	tests := []struct {
		name   string
		pos    Position
		shards ShardPosition
	}{
		{"kinesis only", nil, ShardPosition{"s": {"shardId-000000000000": seq, "shardId-000000000001": ShardDone}}},
		{"both", Position{"t": {0: 7}}, ShardPosition{"s": {"shardId-000000000002": ShardStart}, "r": {"x": ShardAt(time.UnixMilli(1234))}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			token := tok.EncodeAll("sub_1", tt.pos, tt.shards)
			p, s, err := tok.DecodeAll(token, "sub_1")
			if err != nil {
				t.Fatal(err)
			}
			if countPartitions(p) != countPartitions(tt.pos) || !maps.EqualFunc(s, tt.shards, maps.Equal) {
				t.Errorf("DecodeAll = %v, %v; want %v, %v", p, s, tt.pos, tt.shards)
			}
			if _, err := tok.Decode(token, "sub_1"); !errors.Is(err, ErrInvalidToken) {
				t.Errorf("Decode of a token with shards = %v, want ErrInvalidToken (it would drop them)", err)
			}
			if _, _, err := tok.DecodeAll(token, "sub_2"); !errors.Is(err, ErrInvalidToken) {
				t.Errorf("another subscription's token accepted: %v", err)
			}
		})
	}
	// Without shards, EncodeAll makes exactly Encode's (version 1) token.
	if a, b := tok.EncodeAll("sub_1", Position{"t": {1: 2}}, ShardPosition{"s": {}}), tok.Encode("sub_1", Position{"t": {1: 2}}); a != b {
		t.Errorf("EncodeAll without shards = %q, Encode = %q", a, b)
	}
}

func TestValidShardValue(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]bool{
		"": true, "end": true, "0": true, "123": true, "@0": true, "@1700000000000": true,
		"0123": false, "12a": false, "@": false, "@-1": false, "@01": false, "-1": false, "done": false,
	} {
		if got := validShardValue(v); got != want {
			t.Errorf("validShardValue(%q) = %v, want %v", v, got, want)
		}
	}
}

// FuzzParseShards checks the shard part of tokens, which is behind the
// signature and so out of reach of FuzzDecodeToken: parseShards never
// panics, and whatever it accepts is canonical (appendShards gives the
// same bytes back) and within the limits.
func FuzzParseShards(f *testing.F) {
	for _, s := range []ShardPosition{{"s": {"a": "1"}}, {"s": {"a": "", "b": "end"}, "t": {"x": "@5"}}} {
		f.Add(appendShards(nil, s))
	}
	f.Add([]byte{1, 1, 's', 1, 1, 'a', 3, 'e', 'n', 'd'})
	f.Add([]byte{0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &reader{b: b}
		s, err := parseShards(r, 0)
		if err != nil || len(r.b) != 0 {
			return
		}
		if again := appendShards(nil, s); !bytes.Equal(again, b) {
			t.Fatalf("parsed %v from %x, which re-encodes to %x", s, b, again)
		}
		if countShards(s) > MaxTokenPartitions {
			t.Fatalf("accepted %d shards", countShards(s))
		}
		for name, shards := range s {
			for id, v := range shards {
				if name == "" || id == "" || len(name) > MaxShardNameLen || !validShardValue(v) || strings.ContainsRune(v, ' ') {
					t.Fatalf("accepted stream %q shard %q value %q", name, id, v)
				}
			}
		}
	})
}
