package kafka

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/source"
)

// validConfig returns the smallest valid Config.
func validConfig() Config {
	return Config{Brokers: []string{"127.0.0.1:1"}, Topics: []string{"fv-output"}, GroupID: "outflow"}
}

func TestConfigWithDefaults(t *testing.T) {
	t.Parallel()
	c := validConfig().WithDefaults()
	checks := []struct {
		name      string
		got, want any
	}{
		{"ClientID", c.ClientID, DefaultClientID},
		{"StartOffset", c.StartOffset, StartEarliest},
		{"MaxInFlightPerPartition", c.MaxInFlightPerPartition, 10_000},
		{"MaxUncommittedPerPartition", c.MaxUncommittedPerPartition, 1_000_000},
		{"CommitInterval", c.CommitInterval, time.Second},
		{"DrainTimeout", c.DrainTimeout, 10 * time.Second},
		{"RebalanceDrainTimeout", c.RebalanceDrainTimeout, 2 * time.Second},
		{"SessionTimeout", c.SessionTimeout, 6 * time.Second},
		{"RebalanceTimeout", c.RebalanceTimeout, 10 * time.Second},
		{"HeartbeatInterval", c.HeartbeatInterval, 2 * time.Second},
		{"JoinGroupBackoff", c.JoinGroupBackoff, time.Second},
		{"PartitionWatchInterval", c.PartitionWatchInterval, 5 * time.Second},
		{"Logger set", c.Logger != nil, true},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if err := c.validate(); err != nil {
		t.Fatalf("defaulted minimal config invalid: %v", err)
	}
	// MaxUncommittedPerPartition follows a custom MaxInFlightPerPartition.
	c2 := Config{MaxInFlightPerPartition: 10}.WithDefaults()
	if c2.MaxUncommittedPerPartition != 1000 {
		t.Errorf("MaxUncommittedPerPartition = %d for MaxInFlightPerPartition 10, want 1000", c2.MaxUncommittedPerPartition)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"no brokers", func(c *Config) { c.Brokers = nil }, "Brokers is required"},
		{"empty broker", func(c *Config) { c.Brokers = []string{""} }, "empty entry"},
		{"no topics", func(c *Config) { c.Topics = nil }, "Topics is required"},
		{"empty topic", func(c *Config) { c.Topics = []string{"a", ""} }, "empty entry"},
		{"duplicate topic", func(c *Config) { c.Topics = []string{"a", "a"} }, "twice"},
		{"no group", func(c *Config) { c.GroupID = "" }, "GroupID"},
		{"bad start offset", func(c *Config) { c.StartOffset = "middle" }, "StartOffset"},
		{"negative in-flight", func(c *Config) { c.MaxInFlightPerPartition = -1 }, "MaxInFlightPerPartition"},
		{"uncommitted below in-flight", func(c *Config) { c.MaxInFlightPerPartition = 10; c.MaxUncommittedPerPartition = 5 }, "MaxUncommittedPerPartition"},
		{"negative commit interval", func(c *Config) { c.CommitInterval = -time.Second }, "CommitInterval"},
		{"heartbeat not below session", func(c *Config) { c.HeartbeatInterval = time.Minute }, "HeartbeatInterval"},
		{"rebalance drain not below rebalance timeout", func(c *Config) { c.RebalanceDrainTimeout = time.Minute }, "RebalanceDrainTimeout"},
		{"session timeout too large", func(c *Config) { c.SessionTimeout = 1000 * time.Hour }, "SessionTimeout"},
		{"unknown SASL mechanism", func(c *Config) { c.SASL = SASL{Mechanism: "GSSAPI", Username: "u", Password: "p"} }, "unsupported SASL mechanism"},
		{"SASL without password", func(c *Config) { c.SASL = SASL{Mechanism: SASLPlain, Username: "u"} }, "Password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := validConfig()
			tt.modify(&c)
			_, err := New(c)
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("New error = %v, want ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New error = %q, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestNewAcceptsSASLMechanisms(t *testing.T) {
	t.Parallel()
	for _, mech := range []string{"", SASLPlain, SASLScramSHA256, SASLScramSHA512, "scram-sha-512"} {
		t.Run(mech, func(t *testing.T) {
			t.Parallel()
			c := validConfig()
			if mech != "" {
				c.SASL = SASL{Mechanism: mech, Username: "u", Password: "p"}
			}
			s, err := New(c)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if got := s.dialer.SASLMechanism; (got == nil) != (mech == "") {
				t.Fatalf("dialer SASL mechanism = %v for %q", got, mech)
			}
		})
	}
}

// TestConfigNeverPrintsPassword checks every way a Config or its SASL
// settings may reach a log line or an error.
func TestConfigNeverPrintsPassword(t *testing.T) {
	t.Parallel()
	const password = "hunter2-very-secret"
	c := validConfig()
	c.SASL = SASL{Mechanism: SASLScramSHA512, Username: "gateway", Password: password}

	var logged bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logged, nil))
	logger.Info("config", slog.Any("config", c), slog.Any("sasl", c.SASL))

	outputs := map[string]string{
		"%v":          fmt.Sprintf("%v", c),
		"%+v":         fmt.Sprintf("%+v", c),
		"%#v":         fmt.Sprintf("%#v", c),
		"String()":    c.String(),
		"SASL %v":     fmt.Sprintf("%v", c.SASL),
		"SASL %+v":    fmt.Sprintf("%+v", c.SASL),
		"SASL %#v":    fmt.Sprintf("%#v", c.SASL),
		"&config %+v": fmt.Sprintf("%+v", &c),
		"slog JSON":   logged.String(),
	}
	for name, out := range outputs {
		if strings.Contains(out, password) {
			t.Errorf("%s prints the password: %s", name, out)
		}
		if !strings.Contains(out, redacted) {
			t.Errorf("%s does not show that a password is set: %s", name, out)
		}
		if !strings.Contains(out, "gateway") {
			t.Errorf("%s hides the username, which is not secret: %s", name, out)
		}
	}
	// An error from New never quotes it either.
	c.SASL.Mechanism = "SCRAM-SHA-1"
	if _, err := New(c); err == nil || strings.Contains(err.Error(), password) {
		t.Errorf("New error = %v; want an error without the password", err)
	}
}

// TestNewLogValidates checks that NewLog applies the connection part of the
// one validation (brokers, SASL) and ignores the group settings it does not
// use.
func TestNewLogValidates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		want string // "" when valid
	}{
		{"brokers only", Config{Brokers: []string{"127.0.0.1:1"}}, ""},
		{"no brokers", Config{}, "Brokers is required"},
		{"empty broker", Config{Brokers: []string{""}}, "Brokers has an empty entry"},
		{"bad SASL", Config{Brokers: []string{"b:1"}, SASL: SASL{Mechanism: "GSSAPI"}}, "unsupported SASL mechanism"},
		{"SASL without password", Config{Brokers: []string{"b:1"}, SASL: SASL{Mechanism: SASLPlain, Username: "u"}}, "needs a Username and a Password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewLog(tt.cfg)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("NewLog: %v", err)
			case tt.want != "" && (!errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("NewLog error = %v, want ErrInvalidConfig mentioning %q", err, tt.want)
			}
		})
	}
}

// TestSharedLogReadersShareOneTransport: readers of a SharedLog use its one
// transport, and closing one leaves it to the owner.
func TestSharedLogReadersShareOneTransport(t *testing.T) {
	t.Parallel()
	l, err := NewLog(Config{Brokers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	shared := l.Shared(source.ReaderConfig{Streams: []string{"t"}})
	a, b := shared.NewReader(source.ReaderConfig{}), shared.NewReader(source.ReaderConfig{})
	ra, rb := a.(sharedReader), b.(sharedReader)
	if ra.transport != rb.transport || ra.transport != shared.transport {
		t.Error("readers of a SharedLog have their own transports")
	}
	a.Close()
	shared.CloseIdleConnections()
	own1, own2 := l.NewReader(source.ReaderConfig{}).(*reader), l.NewReader(source.ReaderConfig{}).(*reader)
	if own1.transport == own2.transport {
		t.Error("readers of a Log share a transport")
	}
}
