package stream

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/source"
)

func TestConfigWithDefaults(t *testing.T) {
	t.Parallel()
	c := Config{}.WithDefaults()
	switch {
	case c.BufferSize != DefaultBufferSize,
		c.SlowClientGrace != DefaultSlowClientGrace,
		c.MaxWait != DefaultMaxWait,
		c.FetchMaxBytes != DefaultFetchMaxBytes,
		c.EnrichConcurrency != DefaultEnrichConcurrency,
		c.PartitionWatchInterval != DefaultPartitionWatchInterval,
		c.Logger == nil:
		t.Fatalf("WithDefaults left a field unset: %+v", c)
	}
	set := Config{BufferSize: 3, SlowClientGrace: time.Second, MaxWait: time.Second, FetchMaxBytes: 10, EnrichConcurrency: 2, PartitionWatchInterval: -1}
	if got := set.WithDefaults(); got.BufferSize != 3 || got.SlowClientGrace != time.Second || got.MaxWait != time.Second ||
		got.FetchMaxBytes != 10 || got.EnrichConcurrency != 2 || got.PartitionWatchInterval != -1 {
		t.Fatalf("WithDefaults changed set fields: %+v", got)
	}
}

// validConfig returns a Config that passes validate, for tests to break.
func validConfig(t testing.TB) Config {
	return Config{
		Source:   testLog(t, []string{"127.0.0.1:1"}),
		Topics:   []string{"t"},
		Tokens:   mustTokens(t, testKey(1)),
		Envelope: func(string, source.Position, []byte, *outflowv1.FeatureVector) ([]byte, error) { return nil, nil },
	}.WithDefaults()
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"valid", func(*Config) {}, ""},
		// The broker list is checked by kafka.NewLog (TestNewLogValidates).
		{"no source", func(c *Config) { c.Source = nil }, "Source is required"},
		{"no topics", func(c *Config) { c.Topics = nil }, "Topics is required"},
		{"empty topic", func(c *Config) { c.Topics = []string{"a", ""} }, "Topics has an empty entry"},
		{"duplicate topic", func(c *Config) { c.Topics = []string{"a", "b", "a"} }, "twice"},
		{"long topic", func(c *Config) { c.Topics = []string{strings.Repeat("t", MaxTopicNameLen+1)} }, "longer than"},
		{"no tokens", func(c *Config) { c.Tokens = nil }, "Tokens is required"},
		{"no envelope", func(c *Config) { c.Envelope = nil }, "Envelope is required"},
		{"negative buffer", func(c *Config) { c.BufferSize = -1 }, "BufferSize"},
		{"negative grace", func(c *Config) { c.SlowClientGrace = -time.Second }, "SlowClientGrace"},
		{"tiny max wait", func(c *Config) { c.MaxWait = time.Microsecond }, "MaxWait"},
		{"huge max wait", func(c *Config) { c.MaxWait = time.Minute }, "MaxWait"},
		{"negative fetch bytes", func(c *Config) { c.FetchMaxBytes = -1 }, "FetchMaxBytes"},
		{"negative concurrency", func(c *Config) { c.EnrichConcurrency = -1 }, "EnrichConcurrency"},
		{"nil logger", func(c *Config) { c.Logger = nil }, "Logger"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := validConfig(t)
			tt.change(&c)
			err := c.validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("validate = %v, want ErrInvalidConfig mentioning %q", err, tt.want)
			}
		})
	}
}

// TestOpenRefusesBadInput checks that Open validates before connecting:
// the broker address in validConfig does not answer.
func TestOpenRefusesBadInput(t *testing.T) {
	t.Parallel()
	sub := testSubscription(t, "sub_x", "")
	badFilter := testSubscription(t, "sub_y", "record.nope")
	tests := []struct {
		name string
		cfg  Config
		req  Request
		want error
	}{
		{"bad config", Config{}, Request{Subscription: sub}, ErrInvalidConfig},
		{"no subscription", validConfig(t), Request{}, ErrInvalidRequest},
		{"filter does not compile", validConfig(t), Request{Subscription: badFilter}, ErrInvalidRequest},
		{"bad shard", validConfig(t), Request{Subscription: sub, Shard: &Shard{Index: 3, Count: 3}}, ErrInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := Open(context.Background(), tt.cfg, tt.req)
			if !errors.Is(err, tt.want) {
				if s != nil {
					s.Close()
				}
				t.Fatalf("Open = %v, want %v", err, tt.want)
			}
		})
	}
}
