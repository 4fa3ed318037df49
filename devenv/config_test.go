package devenv

import (
	"strings"
	"testing"
)

// TestNewValidates: New refuses a Config `outflow dev` could not run,
// naming the flag at fault, before it starts anything.
func TestNewValidates(t *testing.T) {
	t.Parallel()
	ok := Config{Users: 20, NewUsers: 0.25, Rate: 2}
	for _, tc := range []struct {
		name    string
		edit    func(*Config)
		wantErr string
	}{
		{"defaults", func(*Config) {}, ""},
		{"bad source", func(c *Config) { c.Source = "pulsar" }, `--source "pulsar"`},
		{"negative rate", func(c *Config) { c.Rate = -1 }, "--rate -1"},
		{"no users", func(c *Config) { c.Users = 0 }, "--users 0"},
		{"new users above 1", func(c *Config) { c.NewUsers = 1.5 }, "--new-users 1.5"},
		{"negative lag", func(c *Config) { c.Lag = -1 }, "--lag"},
		{"download and bin dir", func(c *Config) { c.PostgresDownload, c.PostgresBinDir = true, "/x" }, "--postgres-download"},
		{"bad secret keys", func(c *Config) { c.SecretKeys = "nope" }, "--secret-keys"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := ok
			tc.edit(&cfg)
			_, err := New(cfg)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("New = %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("New = %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}
