package tecton

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/internal/httpretry"
)

func TestConfigWithDefaults(t *testing.T) {
	t.Parallel()

	got := Config{BaseURL: " https://acme.tecton.ai ", APIKey: testAPIKey}.WithDefaults()
	if got.BaseURL != "https://acme.tecton.ai" {
		t.Errorf("BaseURL %q, want it trimmed", got.BaseURL)
	}
	if got.Timeout != DefaultTimeout || DefaultTimeout != 5*time.Second {
		t.Errorf("Timeout %s, want %s", got.Timeout, DefaultTimeout)
	}
	if got.MaxResponseBytes != DefaultMaxResponseBytes || DefaultMaxResponseBytes != 8<<20 {
		t.Errorf("MaxResponseBytes %d, want %d", got.MaxResponseBytes, DefaultMaxResponseBytes)
	}
	if got.HTTPClient == nil || got.Logger == nil {
		t.Fatal("HTTPClient or Logger not defaulted")
	}
	if got.HTTPClient == http.DefaultClient {
		t.Error("the default must not be the shared http.DefaultClient")
	}
	if got.HTTPClient.CheckRedirect == nil {
		t.Error("the default client must not follow redirects")
	}

	hc := &http.Client{}
	logger := slog.New(slog.DiscardHandler)
	set := Config{BaseURL: "http://x", APIKey: "k", HTTPClient: hc, Timeout: time.Second, MaxResponseBytes: 10, Logger: logger}.WithDefaults()
	if set.HTTPClient != hc || set.Timeout != time.Second || set.MaxResponseBytes != 10 || set.Logger != logger {
		t.Errorf("WithDefaults overwrote set fields: %v", set)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name     string
		cfg      Config
		contains string // empty: valid
	}{
		{name: "valid https", cfg: Config{BaseURL: "https://acme.tecton.ai", APIKey: testAPIKey}},
		{name: "valid http with path", cfg: Config{BaseURL: "http://127.0.0.1:8080/proxy/", APIKey: testAPIKey}},
		{name: "no base URL", cfg: Config{APIKey: testAPIKey}, contains: "BaseURL is required"},
		{name: "unparseable base URL", cfg: Config{BaseURL: "http://[::1", APIKey: testAPIKey}, contains: "not a valid URL"},
		{name: "ftp", cfg: Config{BaseURL: "ftp://acme.tecton.ai", APIKey: testAPIKey}, contains: "scheme must be http or https"},
		{name: "no scheme", cfg: Config{BaseURL: "acme.tecton.ai", APIKey: testAPIKey}, contains: "scheme must be http or https"},
		{name: "no host", cfg: Config{BaseURL: "https:///path", APIKey: testAPIKey}, contains: "no host"},
		{name: "credentials in URL", cfg: Config{BaseURL: "https://user:" + testAPIKey + "@acme.tecton.ai", APIKey: testAPIKey}, contains: "must not carry credentials"},
		{name: "query", cfg: Config{BaseURL: "https://acme.tecton.ai?x=1", APIKey: testAPIKey}, contains: "query or fragment"},
		{name: "no API key", cfg: Config{BaseURL: "https://acme.tecton.ai"}, contains: "APIKey is required"},
		{name: "API key with newline", cfg: Config{BaseURL: "https://acme.tecton.ai", APIKey: testAPIKey + "\n"}, contains: "whitespace or control"},
		{name: "API key with space", cfg: Config{BaseURL: "https://acme.tecton.ai", APIKey: "Tecton-key " + testAPIKey}, contains: "whitespace or control"},
		{name: "negative timeout", cfg: Config{BaseURL: "https://acme.tecton.ai", APIKey: testAPIKey, Timeout: -time.Second}, contains: "Timeout must not be negative"},
		{name: "negative max bytes", cfg: Config{BaseURL: "https://acme.tecton.ai", APIKey: testAPIKey, MaxResponseBytes: -1}, contains: "MaxResponseBytes must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := NewClient(tt.cfg)
			if tt.contains == "" {
				if err != nil || c == nil {
					t.Fatalf("NewClient = %v, %v; want a client", c, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("NewClient succeeded, want an error mentioning %q", tt.contains)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v does not wrap ErrInvalidConfig", err)
			}
			if IsRetriable(err) {
				t.Errorf("a config error is retriable")
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("error %q does not mention %q", err, tt.contains)
			}
			if strings.Contains(err.Error(), testAPIKey) {
				t.Errorf("error %q contains the API key", err)
			}
		})
	}
}

func TestConfigAndClientNeverPrintTheKey(t *testing.T) {
	t.Parallel()

	cfg := Config{BaseURL: "https://acme.tecton.ai", APIKey: testAPIKey, Timeout: 2 * time.Second}
	client, err := NewClient(cfg)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	values := map[string]any{"Config": cfg, "*Config": &cfg, "*Client": client}
	for name, v := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
			out := fmt.Sprintf(verb, v)
			if strings.Contains(out, testAPIKey) {
				t.Errorf("Sprintf(%q, %s) leaks the key: %s", verb, name, out)
			}
			if !strings.Contains(out, httpretry.Redacted) {
				t.Errorf("Sprintf(%q, %s) = %s; want the key shown as %s", verb, name, out, httpretry.Redacted)
			}
			if !strings.Contains(out, "acme.tecton.ai") {
				t.Errorf("Sprintf(%q, %s) = %s; want the base URL", verb, name, out)
			}
		}
	}

	// Also nested in another struct, as a caller's own config would hold it.
	type appConfig struct{ Tecton Config }
	if out := fmt.Sprintf("%+v", appConfig{Tecton: cfg}); strings.Contains(out, testAPIKey) {
		t.Errorf("nested Config leaks the key: %s", out)
	}

	for _, h := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
	} {
		var buf bytes.Buffer
		slog.New(h(&buf)).Info("starting", slog.Any("tecton", cfg), "ptr", &cfg)
		if out := buf.String(); strings.Contains(out, testAPIKey) || !strings.Contains(out, httpretry.Redacted) || !strings.Contains(out, "timeout") {
			t.Errorf("slog output leaks the key or lacks fields: %s", out)
		}
	}
}
