package enrich

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/tecton"
)

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	c := Config{Store: &fakeStore{}}.WithDefaults()
	if c.InitialBackoff != 25*time.Millisecond || c.MaxBackoff != time.Second || c.Multiplier != 2 ||
		c.BatchWindow != 2*time.Millisecond || c.MaxErrorRetries != 3 ||
		c.Rand == nil || c.Observer == nil || c.Logger == nil || c.Now == nil {
		t.Errorf("defaults = %+v", c)
	}
	// An InitialBackoff above the default cap raises the default cap with it.
	if c := (Config{InitialBackoff: 5 * time.Second}).WithDefaults(); c.MaxBackoff != 5*time.Second {
		t.Errorf("MaxBackoff = %s, want 5s", c.MaxBackoff)
	}
	// Disabling values survive defaulting.
	if c := (Config{BatchWindow: NoBatching, MaxErrorRetries: -1}).WithDefaults(); c.BatchWindow != NoBatching || c.MaxErrorRetries != -1 {
		t.Errorf("disabling values lost: %+v", c)
	}
}

func TestNewInvalidConfig(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		cfg  Config
	}{
		{"no store", Config{}},
		{"negative initial backoff", Config{Store: &fakeStore{}, InitialBackoff: -time.Millisecond}},
		{"cap below initial", Config{Store: &fakeStore{}, InitialBackoff: time.Second, MaxBackoff: time.Millisecond}},
		{"multiplier below 1", Config{Store: &fakeStore{}, Multiplier: 0.5}},
		{"multiplier NaN", Config{Store: &fakeStore{}, Multiplier: math.NaN()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := New(tt.cfg); !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("New = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

func TestTectonClientIsAFeatureStore(t *testing.T) {
	t.Parallel()
	client, err := tecton.NewClient(tecton.Config{BaseURL: "http://127.0.0.1:1", APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Store: client}); err != nil {
		t.Fatal(err)
	}
}
