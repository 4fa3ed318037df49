package kinesis

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/internal/testenv"
	"github.com/outflow-dev/outflow/store"
)

func TestConfigWithDefaults(t *testing.T) {
	t.Parallel()
	c := Config{}.WithDefaults()
	if c.GroupID != DefaultGroupID || c.StartPosition != StartTrimHorizon || c.LeaseDuration != DefaultLeaseDuration ||
		c.RenewInterval != DefaultLeaseDuration/3 || c.IdleWait != DefaultIdleWait || c.MaxRecordsPerCall != DefaultMaxRecordsPerCall ||
		c.MaxInFlightPerShard != DefaultMaxInFlightPerShard || c.CommitInterval != DefaultCommitInterval ||
		c.DrainTimeout != DefaultDrainTimeout || c.ShardSyncInterval != DefaultShardSyncInterval || c.Logger == nil {
		t.Errorf("WithDefaults = %+v", c)
	}
	a, b := Config{}.WithDefaults().WorkerID, Config{}.WithDefaults().WorkerID
	if a == "" || a == b {
		t.Errorf("default worker ids %q and %q: want unique", a, b)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	t.Parallel()
	valid := func() Config {
		return Config{Streams: []string{"s"}, AWS: testenv.KinesisAWS(), Leases: (*store.Store)(nil)}
	}
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no streams", func(c *Config) { c.Streams = nil }, "Streams is required"},
		{"empty stream", func(c *Config) { c.Streams = []string{""} }, "empty entry"},
		{"duplicate stream", func(c *Config) { c.Streams = []string{"a", "a"} }, "twice"},
		{"no leases", func(c *Config) { c.Leases = nil }, "Leases is required"},
		{"no region", func(c *Config) { c.AWS.Region = "" }, "Region"},
		{"no credentials", func(c *Config) { c.AWS.Credentials = nil }, "Credentials"},
		{"bad start", func(c *Config) { c.StartPosition = "middle" }, "StartPosition"},
		{"short lease", func(c *Config) { c.LeaseDuration = time.Millisecond }, "LeaseDuration"},
		{"renew above lease", func(c *Config) { c.LeaseDuration, c.RenewInterval = 2*time.Second, 3*time.Second }, "RenewInterval"},
		{"too many records", func(c *Config) { c.MaxRecordsPerCall = 10_001 }, "MaxRecordsPerCall"},
		{"negative in flight", func(c *Config) { c.MaxInFlightPerShard = -1 }, "MaxInFlightPerShard"},
	}
	if _, err := New(valid()); err != nil {
		t.Fatalf("New(valid) = %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := valid()
			tt.change(&c)
			_, err := New(c)
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, want ErrInvalidConfig mentioning %q", err, tt.want)
			}
		})
	}
}
