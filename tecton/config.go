package tecton

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
	// DefaultTimeout bounds one GetFeatures call. The feature server answers in milliseconds;
	// five seconds leaves room for a cold connection and TLS handshake while staying well
	// inside the default consistency_timeout (10 s), so one hung call cannot eat the whole
	// consistency budget of an event.
	DefaultTimeout = 5 * time.Second
	// DefaultMaxResponseBytes bounds a response body: 8 MiB is orders of magnitude above a
	// real feature vector (a few KiB) yet small enough that a runaway answer cannot exhaust
	// memory when many calls are in flight.
	DefaultMaxResponseBytes int64 = 8 << 20
)

// Config configures a Client. The zero value is not usable: BaseURL and APIKey are required.
// Call WithDefaults (NewClient does) to fill in the optional fields.
//
// Config prints and logs with its APIKey redacted (String, GoString, LogValue), so it is safe
// to log; the APIKey field itself is a plain string and must not be printed on its own.
type Config struct {
	// BaseURL is the Tecton cluster, e.g. "https://acme.tecton.ai" (or the reference feature
	// server of `outflow dev`). The scheme must be http or https; a path prefix is kept (for a
	// proxy) and a trailing slash is ignored. Credentials in the URL are rejected: the API key
	// travels in its own header. Required.
	BaseURL string
	// APIKey is a Tecton API key with read access to the workspaces used. It is sent as
	// "Authorization: Tecton-key <APIKey>" and never appears in errors or logs. Required.
	APIKey string
	// HTTPClient sends the requests. When nil, a dedicated client is used: a clone of
	// http.DefaultTransport keeping up to 64 idle connections to the feature server, and no
	// redirect following (a redirect from a POST API means a wrong BaseURL; it is reported as
	// a non-retriable *APIError instead of being chased). A caller-supplied client is used
	// as is; its own Timeout, if any, applies in addition to Timeout below.
	HTTPClient *http.Client
	// Timeout bounds one call, from sending the request to reading the last byte of the
	// response; it is applied as a context deadline, so an earlier deadline on the caller's
	// context wins. A call that runs out of this time fails with a retriable
	// *TransportError. Default DefaultTimeout (5 s); negative is invalid.
	Timeout time.Duration
	// MaxResponseBytes bounds the body of a successful response, in bytes; a larger body
	// fails with ErrResponseTooLarge. Error bodies are read up to 64 KiB regardless. Default
	// DefaultMaxResponseBytes (8 MiB); negative is invalid.
	MaxResponseBytes int64
	// TransportRetries is how many times the HTTP transport (go-retryablehttp) retries one
	// call after a connection failure or a 429/500/502/503/504 answer, with jittered backoff
	// from 25 ms (capped at 250 ms) or the server's Retry-After when that is at most 1 s; a
	// longer Retry-After is not waited for but returned on the *APIError. The retries happen
	// inside Timeout, so they spend the same budget as the call. Default 0: one request per
	// call, so a caller that wants to see every answer (the reference feature server's fault
	// tests) does; `outflow serve` sets 2 (httpretry.DefaultRetryMax). Negative is invalid.
	TransportRetries int
	// Logger receives one debug record per call (operation, HTTP status, duration, bytes) and
	// never the API key, join keys or feature values. Failures are returned, not logged, so
	// they are logged once by the caller that decides what to do. Default: discard.
	Logger *slog.Logger
}

// WithDefaults returns a copy of c with every unset optional field set to its default. It
// does not validate: NewClient does that after applying defaults.
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

// validate reports the first problem with a defaulted Config. Its errors wrap
// ErrInvalidConfig and never quote the API key.
func (c Config) validate() error {
	if err := httpretry.CheckBaseURL(c.BaseURL, "APIKey"); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if c.APIKey == "" {
		return fmt.Errorf("%w: APIKey is required", ErrInvalidConfig)
	}
	if strings.ContainsFunc(c.APIKey, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		// Never quote the key, not even in part.
		return fmt.Errorf("%w: APIKey contains whitespace or control characters", ErrInvalidConfig)
	}
	if c.HTTPClient == nil {
		return fmt.Errorf("%w: HTTPClient is nil", ErrInvalidConfig)
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
	if c.Logger == nil {
		return fmt.Errorf("%w: Logger is nil", ErrInvalidConfig)
	}
	return nil
}

// String returns the Config with its APIKey redacted, so that %v, %+v and %s are safe.
func (c Config) String() string {
	return fmt.Sprintf("tecton.Config{BaseURL:%q APIKey:%s HTTPClient:%s Timeout:%s MaxResponseBytes:%d}",
		httpretry.RedactURL(c.BaseURL), httpretry.RedactSecret(c.APIKey), describeClient(c.HTTPClient), c.Timeout, c.MaxResponseBytes)
}

// GoString returns the same redacted form as String, so that %#v is safe too.
func (c Config) GoString() string { return c.String() }

// LogValue renders the Config for log/slog with its APIKey redacted.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("base_url", httpretry.RedactURL(c.BaseURL)),
		slog.String("api_key", httpretry.RedactSecret(c.APIKey)),
		slog.Duration("timeout", c.Timeout),
		slog.Int64("max_response_bytes", c.MaxResponseBytes),
	)
}

// describeClient names the HTTP client without dumping its internals.
func describeClient(c *http.Client) string {
	if c == nil {
		return "default"
	}
	return "set"
}
