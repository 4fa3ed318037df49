package stream

import (
	"bytes"
	"errors"
	"maps"
	"reflect"
	"strings"
	"testing"
)

// testKey returns a 32-byte key filled with b.
func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, MinTokenKeyLen) }

func mustTokens(t testing.TB, key []byte, previous ...[]byte) *Tokens {
	t.Helper()
	tok, err := NewTokens(key, previous...)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestNewTokens(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		key      []byte
		previous [][]byte
		wantErr  bool
	}{
		{name: "32 bytes", key: testKey(1)},
		{name: "with previous", key: testKey(1), previous: [][]byte{testKey(2)}},
		{name: "short key", key: testKey(1)[:31], wantErr: true},
		{name: "nil key", key: nil, wantErr: true},
		{name: "short previous", key: testKey(1), previous: [][]byte{{1, 2}}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewTokens(tt.key, tt.previous...)
			if (err != nil) != tt.wantErr {
				t.Fatalf("NewTokens: err = %v, want error %t", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v does not wrap ErrInvalidConfig", err)
			}
		})
	}
}

func TestTokenRoundTrip(t *testing.T) {
	t.Parallel()
	tok := mustTokens(t, testKey(7))
	many := make(map[int32]int64)
	for i := range int32(MaxTokenPartitions) {
		many[i] = int64(i) * 1_000_003
	}
	tests := []struct {
		name string
		pos  Position
	}{
		{name: "empty", pos: Position{}},
		{name: "one partition", pos: Position{"fv-output": {0: 0}}},
		{name: "several topics", pos: Position{"a": {0: 5, 1: 7, 2: 1 << 40}, "b": {3: 9, 10: 11}}},
		{name: "sparse partitions", pos: Position{"t": {0: 1, 1000: 2, 1<<31 - 1: 3}}},
		{name: "max offset", pos: Position{"t": {5: 1<<63 - 1}}},
		{name: "max partitions", pos: Position{"t": many}},
		{name: "long topic", pos: Position{strings.Repeat("x", MaxTopicNameLen): {0: 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			token := tok.Encode("sub_1", tt.pos)
			got, err := tok.Decode(token, "sub_1")
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(got, tt.pos) {
				t.Fatalf("Decode = %v, want %v", got, tt.pos)
			}
			if again := tok.Encode("sub_1", got); again != token {
				t.Errorf("re-encoding gave a different token")
			}
			if len(token) > MaxTokenLen {
				t.Errorf("token of %d characters exceeds MaxTokenLen", len(token))
			}
		})
	}
}

func TestTokenDecodeRejects(t *testing.T) {
	t.Parallel()
	tok := mustTokens(t, testKey(7))
	other := mustTokens(t, testKey(8))
	valid := tok.Encode("sub_1", Position{"t": {0: 10, 1: 20}})
	raw, err := tokenEncoding.DecodeString(valid)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) string {
		b := bytes.Clone(raw)
		b[i] ^= 0x01
		return tokenEncoding.EncodeToString(b)
	}
	tooMany := make(map[int32]int64)
	for i := range int32(MaxTokenPartitions + 1) {
		tooMany[i] = 1
	}
	tests := []struct {
		name  string
		token string
		subID string
	}{
		{name: "empty", token: "", subID: "sub_1"},
		{name: "garbage", token: "not a token!", subID: "sub_1"},
		{name: "padding", token: valid + "==", subID: "sub_1"},
		{name: "other subscription", token: valid, subID: "sub_2"},
		{name: "prefix subscription", token: valid, subID: "sub_"},
		{name: "other key", token: other.Encode("sub_1", Position{"t": {0: 10, 1: 20}}), subID: "sub_1"},
		{name: "flipped version", token: flip(0), subID: "sub_1"},
		{name: "flipped payload", token: flip(3), subID: "sub_1"},
		{name: "flipped mac", token: flip(len(raw) - 1), subID: "sub_1"},
		{name: "truncated", token: tokenEncoding.EncodeToString(raw[:len(raw)-1]), subID: "sub_1"},
		{name: "extended", token: tokenEncoding.EncodeToString(append(bytes.Clone(raw), 0)), subID: "sub_1"},
		{name: "too long", token: strings.Repeat("A", MaxTokenLen+1), subID: "sub_1"},
		{name: "negative offset", token: tok.Encode("sub_1", Position{"t": {0: -1}}), subID: "sub_1"},
		{name: "negative partition", token: tok.Encode("sub_1", Position{"t": {-1: 0}}), subID: "sub_1"},
		{name: "empty topic", token: tok.Encode("sub_1", Position{"": {0: 0}}), subID: "sub_1"},
		{name: "topic too long", token: tok.Encode("sub_1", Position{strings.Repeat("x", MaxTopicNameLen+1): {0: 0}}), subID: "sub_1"},
		{name: "too many partitions", token: tok.Encode("sub_1", Position{"t": tooMany}), subID: "sub_1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := tok.Decode(tt.token, tt.subID)
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("Decode = %v, %v; want ErrInvalidToken", p, err)
			}
		})
	}
}

func TestTokenKeyRotation(t *testing.T) {
	t.Parallel()
	old := mustTokens(t, testKey(1))
	rotated := mustTokens(t, testKey(2), testKey(1))
	pos := Position{"t": {0: 42}}

	if got, err := rotated.Decode(old.Encode("sub_1", pos), "sub_1"); err != nil || !reflect.DeepEqual(got, pos) {
		t.Fatalf("a token of the previous key: Decode = %v, %v; want %v", got, err, pos)
	}
	fresh := rotated.Encode("sub_1", pos)
	if _, err := old.Decode(fresh, "sub_1"); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("the old key accepted a token of the new key: %v", err)
	}
}

func TestTokenEncodeDropsEmptyTopics(t *testing.T) {
	t.Parallel()
	tok := mustTokens(t, testKey(1))
	a := tok.Encode("s", Position{"t": {0: 1}, "empty": {}})
	b := tok.Encode("s", Position{"t": {0: 1}})
	if a != b {
		t.Fatal("a topic without partitions changed the token")
	}
}

func TestPositionClone(t *testing.T) {
	t.Parallel()
	if Position(nil).Clone() != nil {
		t.Fatal("Clone of nil is not nil")
	}
	p := Position{"t": {0: 1}}
	c := p.Clone()
	c["t"][0] = 2
	if p["t"][0] != 1 {
		t.Fatal("Clone shares the partition maps")
	}
}

// FuzzDecodeToken checks the invariants of resume tokens, which clients
// send back and so are outside input:
//   - Decode never panics, whatever the token and subscription id;
//   - a token Decode accepts re-encodes to itself (the format is canonical);
//   - parsePosition, the part behind the signature check (which fuzzing
//     cannot get past), never panics either, and whatever it accepts
//     round-trips: appendPosition gives the same bytes back, and
//     Decode(Encode(p)) == p for the same subscription but is refused for
//     another one.
func FuzzDecodeToken(f *testing.F) {
	tok := mustTokens(f, testKey(3))
	for _, p := range []Position{{}, {"t": {0: 1}}, {"a": {0: 5, 9: 1 << 40}, "b": {2: 0}}} {
		token := tok.Encode("sub_1", p)
		raw, _ := tokenEncoding.DecodeString(token)
		f.Add(token, "sub_1", raw[1:len(raw)-tokenMACLen])
	}
	f.Add("", "", []byte{})
	f.Add("AQ", "sub_1", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, token, subID string, payload []byte) {
		if p, err := tok.Decode(token, subID); err == nil {
			if again := tok.Encode(subID, p); again != token {
				t.Fatalf("accepted token %q re-encodes to %q", token, again)
			}
		} else if !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("Decode error %v is not ErrInvalidToken", err)
		}

		p, err := parsePosition(payload)
		if err != nil {
			return
		}
		if again := appendPosition(nil, p); !bytes.Equal(again, payload) {
			t.Fatalf("parsed %v from %x, which re-encodes to %x", p, payload, again)
		}
		token = tok.Encode(subID, p)
		got, err := tok.Decode(token, subID)
		if err != nil {
			t.Fatalf("Decode(Encode(%v)): %v", p, err)
		}
		if !maps.EqualFunc(got, p, maps.Equal) {
			t.Fatalf("Decode(Encode(%v)) = %v", p, got)
		}
		if _, err := tok.Decode(token, subID+"x"); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("a token for %q was accepted for %q", subID, subID+"x")
		}
	})
}
