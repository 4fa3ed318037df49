package feast

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/outflow-dev/outflow/internal/httpretry"
)

// Defaults applied by Config.WithDefaults.
const (
	// DefaultTimeout bounds one call, transport retries included: well inside the default
	// consistency_timeout (10 s), so one hung call cannot eat an event's whole budget.
	DefaultTimeout = 5 * time.Second
	// DefaultMaxResponseBytes bounds a response body (8 MiB), far above a real answer.
	DefaultMaxResponseBytes int64 = 8 << 20
)

// Config configures a Client. Only BaseURL is required; call WithDefaults (NewClient does) to
// fill in the rest. Config prints and logs with its Token redacted.
type Config struct {
	// BaseURL is the feature server, e.g. "http://127.0.0.1:6566". The scheme must be http or
	// https; a path prefix is kept and a trailing slash ignored. Credentials in the URL are
	// rejected: use Token. Required.
	BaseURL string
	// Token, when set, is sent as "Authorization: Bearer <Token>", for a feature server with
	// Feast's OIDC or Kubernetes auth (or a proxy in front of it). Optional: a plain
	// `feast serve` takes no credentials. It never appears in errors or logs.
	Token string
	// HTTPClient sends the requests. When nil, a dedicated client is used: a clone of
	// http.DefaultTransport keeping up to 64 idle connections, and no redirect following (a
	// redirect from a POST API means a wrong BaseURL; it is reported as a non-retriable
	// *APIError).
	HTTPClient *http.Client
	// Timeout bounds one call, from the first request to the last byte of the answer,
	// transport retries included. Default DefaultTimeout (5 s); negative is invalid.
	Timeout time.Duration
	// MaxResponseBytes bounds the body of a successful answer, in bytes. Default
	// DefaultMaxResponseBytes (8 MiB); negative is invalid.
	MaxResponseBytes int64
	// TransportRetries is how many times the HTTP transport (go-retryablehttp) retries one
	// call after a connection failure or a 429/500/502/503/504 answer (see internal/httpretry:
	// 25–250 ms apart, or a Retry-After of at most 1 s), inside Timeout. Default 0: one request
	// per call; `outflow serve` sets 2 (httpretry.DefaultRetryMax). Negative is invalid.
	TransportRetries int
	// Logger receives one debug record per call and per transport retry, never the token,
	// join keys or feature values. Default: discard.
	Logger *slog.Logger
}

// WithDefaults returns a copy of c with every unset optional field set to its default.
func (c Config) WithDefaults() Config {
	c.BaseURL = strings.TrimSpace(c.BaseURL)
	if c.HTTPClient == nil {
		c.HTTPClient = httpretry.DefaultHTTPClient()
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxResponseBytes == 0 {
		c.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// validate reports the first problem with a defaulted Config, never quoting the token.
func (c Config) validate() error {
	if err := httpretry.CheckBaseURL(c.BaseURL, "Token"); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if strings.ContainsFunc(c.Token, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("%w: Token contains whitespace or control characters", ErrInvalidConfig)
	}
	if c.Timeout < 0 {
		return fmt.Errorf("%w: Timeout must not be negative, got %s", ErrInvalidConfig, c.Timeout)
	}
	if c.MaxResponseBytes < 0 {
		return fmt.Errorf("%w: MaxResponseBytes must not be negative, got %d", ErrInvalidConfig, c.MaxResponseBytes)
	}
	if c.TransportRetries < 0 {
		return fmt.Errorf("%w: TransportRetries must not be negative, got %d", ErrInvalidConfig, c.TransportRetries)
	}
	return nil
}

// String returns the Config with its Token redacted, so that %v, %+v and %s are safe.
func (c Config) String() string {
	return fmt.Sprintf("feast.Config{BaseURL:%q Token:%s Timeout:%s MaxResponseBytes:%d TransportRetries:%d}",
		httpretry.RedactURL(c.BaseURL), httpretry.RedactSecret(c.Token), c.Timeout, c.MaxResponseBytes, c.TransportRetries)
}

// GoString returns the same redacted form as String, so that %#v is safe too.
func (c Config) GoString() string { return c.String() }

// LogValue renders the Config for log/slog with its Token redacted.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("base_url", httpretry.RedactURL(c.BaseURL)),
		slog.String("token", httpretry.RedactSecret(c.Token)),
		slog.Duration("timeout", c.Timeout),
		slog.Int64("max_response_bytes", c.MaxResponseBytes),
	)
}
