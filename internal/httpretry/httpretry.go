// Package httpretry is the HTTP transport the feature-store clients (tecton and feast) share:
// an *http.Client wrapped in hashicorp/go-retryablehttp with the one retry policy both use.
//
// It retries what a transport layer should retry and nothing else: a connection that could
// not be made or broke, and 429, 500, 502, 503 and 504 answers, a few times, quickly, honouring
// a short Retry-After. Everything a retry cannot fix (a 4xx, a redirect, a bad certificate) is
// answered at once. The consistency loop (calling again until the online store reflects a
// record) is not a transport concern and stays in package enrich; webhook delivery has its own
// sender and durable retry queue and does not use this package.
//
// The retry budget is deliberately small — by default 2 retries, 25 ms then 50 ms apart, or the
// server's Retry-After when it is at most 1 s — so that it fits well inside an event's
// consistency_timeout (10 s by default). A Retry-After longer than that, or one that would
// end past the caller's deadline, is not waited for here: the answer is returned, and the
// caller's typed error carries the Retry-After up to the enrich loop and the retry queue.
//
// go-retryablehttp's own logging is switched off: its log lines name the request URL, and a
// feature-store URL is operator configuration that does not belong in debug logs of every
// retry. Instead each retry is reported to a *slog.Logger at debug level with the method, the
// URL path, the attempt number and the status — never headers, which carry credentials.
package httpretry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// Defaults applied by Config.WithDefaults.
const (
	// DefaultRetryMax is how many times one call is retried after its first try: two, so a
	// call makes at most three requests. More would spend the consistency budget of an event
	// on a feature store that is down, which the enrich loop and the retry queue handle better.
	DefaultRetryMax = 2
	// DefaultWaitMin is the first backoff delay (25 ms); each retry doubles it, with jitter.
	DefaultWaitMin = 25 * time.Millisecond
	// DefaultWaitMax caps an exponential backoff delay (250 ms).
	DefaultWaitMax = 250 * time.Millisecond
	// DefaultMaxRetryAfter is the longest Retry-After waited for inside one call (1 s, the
	// shortest non-zero value the header can express). A longer one ends the call with the
	// server's answer, so that the caller schedules the retry.
	DefaultMaxRetryAfter = time.Second
)

// NoRetries as Config.RetryMax makes every call a single request.
const NoRetries = -1

// Config configures a retrying HTTP client. The zero value is usable: every field has a
// default.
type Config struct {
	// HTTPClient sends each request. Required: the feature-store clients pass their own, with
	// no redirect following and a warm connection pool.
	HTTPClient *http.Client
	// RetryMax is how many times a call is retried after its first request. Default
	// DefaultRetryMax (2); NoRetries (-1) turns retries off.
	RetryMax int
	// WaitMin is the base backoff delay before the first retry. Default DefaultWaitMin (25 ms).
	WaitMin time.Duration
	// WaitMax caps the exponential backoff delay, jitter included. Default DefaultWaitMax
	// (250 ms).
	WaitMax time.Duration
	// MaxRetryAfter is the longest Retry-After honoured with a retry inside the call; a longer
	// one returns the answer. Default DefaultMaxRetryAfter (1 s).
	MaxRetryAfter time.Duration
	// Logger receives one debug record per retry (component, method, URL path, attempt,
	// status). Default: discard.
	Logger *slog.Logger
	// Component names the client in log records, e.g. "tecton" or "feast".
	Component string
}

// WithDefaults returns c with every unset field set to its default.
func (c Config) WithDefaults() Config {
	if c.RetryMax == 0 {
		c.RetryMax = DefaultRetryMax
	}
	if c.RetryMax < 0 {
		c.RetryMax = 0
	}
	if c.WaitMin <= 0 {
		c.WaitMin = DefaultWaitMin
	}
	if c.WaitMax <= 0 {
		c.WaitMax = DefaultWaitMax
	}
	c.WaitMax = max(c.WaitMax, c.WaitMin)
	if c.MaxRetryAfter <= 0 {
		c.MaxRetryAfter = DefaultMaxRetryAfter
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// New returns a retryablehttp.Client for cfg (after WithDefaults). Its Do returns the last
// answer as is when retries run out (a 503 stays a 503 response, not a "giving up" error), so
// the caller classifies it; and the last transport error unwrapped, so errors.Is sees the
// context and net errors underneath.
//
// retryablehttp's Do closes every idle connection of its HTTP client whenever a call ends in
// failure. Under load that would make one failed call drop every warm connection to the
// feature server (the reason webhook delivery does not use the library at all). So the client
// it gets sends through cfg.HTTPClient's transport wrapped in a RoundTripper without
// CloseIdleConnections, which makes those calls no-ops; the caller still closes the pool
// through cfg.HTTPClient itself.
func New(cfg Config) *retryablehttp.Client {
	cfg = cfg.WithDefaults()
	p := &policy{maxRetryAfter: cfg.MaxRetryAfter}
	logger, component := cfg.Logger, cfg.Component
	hc := *cfg.HTTPClient
	hc.Transport = keepIdle{transportOf(cfg.HTTPClient)}
	return &retryablehttp.Client{
		HTTPClient:   &hc,
		Logger:       nil, // its records name URLs; see RequestLogHook
		RetryWaitMin: cfg.WaitMin,
		RetryWaitMax: cfg.WaitMax,
		RetryMax:     cfg.RetryMax,
		CheckRetry:   p.checkRetry,
		Backoff:      p.backoff,
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
		RequestLogHook: func(_ retryablehttp.Logger, req *http.Request, attempt int) {
			if attempt == 0 {
				return
			}
			logger.LogAttrs(req.Context(), slog.LevelDebug, "feature store retry",
				slog.String("component", component),
				slog.String("method", req.Method),
				slog.String("path", req.URL.Path),
				slog.Int("attempt", attempt+1),
			)
		},
	}
}

// keepIdle forwards requests to its RoundTripper and, having no CloseIdleConnections method,
// keeps http.Client.CloseIdleConnections from reaching the pool (see New).
type keepIdle struct{ rt http.RoundTripper }

func (k keepIdle) RoundTrip(req *http.Request) (*http.Response, error) { return k.rt.RoundTrip(req) }

func transportOf(c *http.Client) http.RoundTripper {
	if c.Transport != nil {
		return c.Transport
	}
	return http.DefaultTransport
}

// policy holds the knobs CheckRetry and Backoff need beyond what retryablehttp passes them.
type policy struct {
	maxRetryAfter time.Duration
}

// RetriableStatus reports whether an HTTP status is worth another request later: 429, 500,
// 502, 503 and 504. 501 Not Implemented and every 4xx but 429 are not: the same request gets
// the same answer.
func RetriableStatus(code int) bool {
	switch code {
	case http.StatusTooManyRequests,
		http.StatusInternalServerError,
		http.StatusBadGateway,
		http.StatusServiceUnavailable,
		http.StatusGatewayTimeout:
		return true
	default:
		return false
	}
}

// checkRetry is the retryablehttp.CheckRetry: retry connection failures and retriable
// statuses, never once ctx is done, never for a Retry-After longer than maxRetryAfter or one
// that would end after ctx's deadline. It never returns an error of its own, so Do returns
// the last response or transport error untouched.
func (p *policy) checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, nil
	}
	if err != nil {
		return retriableTransport(err), nil
	}
	if resp == nil || !RetriableStatus(resp.StatusCode) {
		return false, nil
	}
	if d, ok := retryAfter(resp); ok {
		if d > p.maxRetryAfter {
			return false, nil
		}
		if deadline, has := ctx.Deadline(); has && time.Until(deadline) <= d {
			return false, nil
		}
	}
	return true, nil
}

// retriableTransport reports whether a failed request (no response) may succeed when sent
// again: not for a certificate the client refuses or a redirect loop, which a retry repeats.
func retriableTransport(err error) bool {
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return false
	}
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		return false
	}
	if _, ok := errors.AsType[x509.HostnameError](err); ok {
		return false
	}
	return true
}

// backoff is the retryablehttp.Backoff: the server's Retry-After when it sent one (checkRetry
// has already refused one that is too long), else "equal jitter" exponential backoff, a delay
// drawn from [b/2, b] with b = min(waitMin × 2^attempt, waitMax), so the cap is never exceeded.
func (p *policy) backoff(waitMin, waitMax time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil {
		if d, ok := retryAfter(resp); ok {
			return min(d, p.maxRetryAfter)
		}
	}
	b := waitMax
	if attempt < 30 {
		b = min(waitMin<<attempt, waitMax)
	}
	half := b / 2
	return half + rand.N(b-half+1)
}

// retryAfter reads a Retry-After header on a 429 or 503.
func retryAfter(resp *http.Response) (time.Duration, bool) {
	if resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable {
		return 0, false
	}
	d := ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	return d, d > 0 || strings.TrimSpace(resp.Header.Get("Retry-After")) == "0"
}

// MaxRetryAfter caps what ParseRetryAfter returns, so that a buggy or hostile header cannot
// park work for days; callers cap it further with their own policy.
const MaxRetryAfter = time.Hour

// ParseRetryAfter reads a Retry-After header value: delay-seconds or an HTTP date (RFC 9110
// §10.2.3), measured from now. It returns 0 for an absent, unparseable, negative or past value
// and caps the result at MaxRetryAfter.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return min(time.Duration(min(secs, int64(MaxRetryAfter/time.Second)))*time.Second, MaxRetryAfter)
	}
	if strings.TrimLeft(v, "0123456789") == "" {
		return MaxRetryAfter // all digits but beyond int64: far beyond the cap
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	return min(max(at.Sub(now), 0), MaxRetryAfter)
}
