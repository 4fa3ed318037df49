package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
)

// Default values of [SenderConfig].
const (
	DefaultUserAgent           = "outflow/dev"
	DefaultTimeout             = 10 * time.Second
	DefaultMaxResponseBytes    = 64 << 10
	DefaultMaxIdleConns        = 1024
	DefaultMaxIdleConnsPerHost = 16
	DefaultIdleConnTimeout     = 30 * time.Second
)

// MaxErrorBodyBytes bounds the excerpt of a failed answer's body kept in a
// [DeliveryError] for debugging.
const MaxErrorBodyBytes = 1 << 10

// maxResponseHeaderBytes bounds the headers a receiver may send back.
const maxResponseHeaderBytes = 64 << 10

// minScrubBytes is the shortest header value scrubbed from a response
// excerpt; shorter values ("1", "json") are too common to be secrets and
// would blank out ordinary text.
const minScrubBytes = 8

// Errors a [DeliveryError] may wrap, for errors.Is.
var (
	// ErrRedirect is the cause of a 3xx answer: redirects are not followed
	// (SPEC §5), because the guard would have to vet a target the
	// subscription never named and because a receiver that moved should be
	// updated, not chased.
	ErrRedirect = errors.New("redirect not followed")
	// ErrTimeout is the cause when no answer arrived within the attempt's
	// timeout. The error also matches context.DeadlineExceeded.
	ErrTimeout = errors.New("no answer within the timeout")
	// ErrNoSecret is the cause when a Request carries no usable signing
	// secret; unsigned webhooks are never sent.
	ErrNoSecret = errors.New("no signing secret")
)

// Outcome classifies one delivery attempt for the caller.
type Outcome int

// The outcomes of one attempt. Only OutcomeDelivered ends the delivery
// successfully; OutcomeGone ends the subscription; OutcomeRetry and
// OutcomeBlocked are failed attempts that count against the retry policy.
// The zero Outcome is OutcomeRetry, so a Result left unset fails safe.
const (
	// OutcomeRetry is a failed attempt that may succeed later: a 5xx, 429,
	// 3xx or 4xx answer other than 410, a timeout, a connection error, a
	// request that could not be built. Schedule the next attempt with
	// [RetryAfterOrBackoff].
	OutcomeRetry Outcome = iota
	// OutcomeDelivered is a 2xx answer within the timeout.
	OutcomeDelivered
	// OutcomeGone is a 410 answer: the receiver asked to stop, and the caller
	// disables the subscription at once (SPEC §5).
	OutcomeGone
	// OutcomeBlocked is a refusal by the SSRF guard, of the URL or of the
	// address it resolved to; nothing was sent. It is a failed attempt like
	// OutcomeRetry, with the [*BlockedError] or [ErrInvalidURL] kept in the
	// error: the operator's allow-list and the receiver's DNS can change, so
	// the event is retried under the normal policy and dead-lettered (and
	// redeliverable) when it runs out, rather than dropped. It is a separate
	// outcome so metrics and the circuit breaker can tell a misconfigured
	// URL from a failing receiver.
	OutcomeBlocked
)

// String returns the outcome's lower-case name, for logs and metric labels.
func (o Outcome) String() string {
	switch o {
	case OutcomeRetry:
		return "retry"
	case OutcomeDelivered:
		return "delivered"
	case OutcomeGone:
		return "gone"
	case OutcomeBlocked:
		return "blocked"
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// DeliveryError explains a failed attempt. It is safe to store and show to
// the subscription's tenant (Delivery.last_error): it carries no secret, no
// user header value, and no URL path or query.
type DeliveryError struct {
	// StatusCode is the receiver's HTTP status, or 0 when no answer arrived.
	StatusCode int
	// Retriable is false only for 410 Gone, after which the subscription is
	// disabled. Every other failure may succeed on a later attempt.
	Retriable bool
	// Body is an excerpt of the answer's body, at most [MaxErrorBodyBytes]
	// bytes of valid UTF-8, with secrets and long user header values replaced
	// by "[redacted]". Empty when no answer arrived.
	Body string
	// Err is the cause: a transport error, [ErrTimeout], [ErrRedirect],
	// [ErrNoSecret], a [*BlockedError], or nil for a plain failing status.
	Err error
}

// Error describes the failure on one line, in words safe to show the
// tenant: the status, the kind of failure and the body excerpt. It never
// holds the resolver's address, what the webhook host resolved to or the
// names in a refused certificate: a tenant could otherwise point webhooks at
// internal names and read the operator's network off last_error (a DNS
// oracle). [DeliveryError.Detail] has the full cause, for the operator's
// logs.
func (e *DeliveryError) Error() string { return e.describe(safeCause(e.Err)) }

// Detail describes the failure with the full cause (addresses included),
// for the operator's logs only; never show it to a tenant.
func (e *DeliveryError) Detail() string {
	if e.Err == nil {
		return e.describe("")
	}
	return e.describe(e.Err.Error())
}

func (e *DeliveryError) describe(cause string) string {
	var b strings.Builder
	b.WriteString("webhook attempt failed")
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, ": HTTP %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	}
	if cause != "" {
		b.WriteString(": ")
		b.WriteString(cause)
	}
	if e.Body != "" {
		fmt.Fprintf(&b, ": body %q", e.Body)
	}
	return b.String()
}

// safeCause names the kind of a failed attempt's cause without the
// addresses and names that transport errors carry.
func safeCause(err error) string {
	var dnsErr *net.DNSError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrBlocked):
		return "the webhook host resolves to an address this gateway may not reach (SSRF guard)"
	case errors.Is(err, ErrTimeout):
		return ErrTimeout.Error()
	case errors.Is(err, context.Canceled):
		return "attempt cancelled (the gateway is stopping)"
	case errors.Is(err, ErrInvalidURL), errors.Is(err, ErrInvalidHeader), errors.Is(err, ErrNoSecret), errors.Is(err, ErrRedirect):
		// Ours, and built never to repeat the URL, a secret or a header value.
		return err.Error()
	case errors.As(err, &dnsErr):
		switch {
		case dnsErr.IsNotFound:
			return "DNS lookup of the webhook host failed: no such host"
		case dnsErr.IsTimeout:
			return "DNS lookup of the webhook host failed: timeout"
		}
		return "DNS lookup of the webhook host failed"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "webhook host unreachable"
	case isCertificateError(err):
		return "TLS: the webhook host's certificate was not accepted"
	case errors.As(err, new(tls.RecordHeaderError)):
		return "TLS handshake failed: the webhook host did not answer with TLS"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the connection closed before an answer"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "network timeout"
	}
	return "the connection to the webhook host failed"
}

// isCertificateError reports a refused server certificate. Their messages
// name the certificate's hosts and addresses, so they are never shown.
func isCertificateError(err error) bool {
	var (
		verify    *tls.CertificateVerificationError
		unknown   x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		systemErr x509.SystemRootsError
	)
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &hostname) ||
		errors.As(err, &invalid) || errors.As(err, &systemErr)
}

// Unwrap returns the cause.
func (e *DeliveryError) Unwrap() error { return e.Err }

// Request is one delivery attempt.
type Request struct {
	// URL is the subscription's webhook URL.
	URL string
	// Headers are the subscription's static headers. Reserved names
	// ([ReservedHeader]) are skipped, so they never replace the headers the
	// Sender sets; an invalid name or value fails the attempt.
	Headers map[string]string
	// EventID is the event id, sent as webhook-id and signed. The same on
	// every attempt, so receivers can de-duplicate.
	EventID string
	// Body is the JSON event envelope, sent as is and signed.
	Body []byte
	// Secrets sign the request; more than one while a rotated secret
	// overlaps the new one. At least one must be non-zero.
	Secrets []Secret
	// Attempt is this attempt's number, from 1, sent as outflow-attempt.
	// Values below 1 are sent as 1.
	Attempt int
	// Timeout bounds the attempt: connecting, sending, and receiving the
	// answer's status and headers. A body still streaming when it expires
	// is cut short without changing the outcome. Zero means the Sender's
	// DefaultTimeout.
	Timeout time.Duration
	// Trace holds the W3C trace context of this attempt ("traceparent" and,
	// when present, "tracestate"), so that a receiver can continue the
	// gateway's trace. Set after the static headers, replacing any of the
	// same name, and not counted against MaxHeaders. Nil when the gateway
	// does not trace.
	Trace map[string]string
}

// Result is what one attempt came to.
type Result struct {
	// StatusCode is the receiver's HTTP status, or 0 when no answer arrived.
	StatusCode int
	// Outcome classifies the attempt.
	Outcome Outcome
	// RetryAfter is the receiver's Retry-After on a 429 or 503 answer,
	// bounded to [0, MaxRetryAfter]; 0 when absent, malformed or another
	// status. Pass it to [RetryAfterOrBackoff].
	RetryAfter time.Duration
	// Err is a [*DeliveryError] for every outcome but OutcomeDelivered, for
	// which it is nil.
	Err error
	// Duration is how long Send took, reading the answer included.
	Duration time.Duration
}

// SenderConfig configures a [Sender]. The zero value is usable.
type SenderConfig struct {
	// Guard vets every URL and every connected address. Default: a Guard
	// built from the zero GuardConfig (https only, default deny list, no
	// allow-list).
	Guard *Guard
	// UserAgent is sent as user-agent; SPEC §5 wants "outflow/<version>".
	// Default: "outflow/dev".
	UserAgent string
	// DefaultTimeout is used for requests whose Timeout is zero. Default: 10s.
	DefaultTimeout time.Duration
	// MaxResponseBytes is how much of an answer's body is read, then
	// discarded, so the connection can be reused; a longer body closes the
	// connection instead. Bodies are never kept beyond a
	// [MaxErrorBodyBytes] excerpt of failures. Default: 64 KiB.
	MaxResponseBytes int64
	// MaxIdleConns bounds idle keep-alive connections across all receivers.
	// Default: 1024.
	MaxIdleConns int
	// MaxIdleConnsPerHost bounds idle keep-alive connections to one receiver
	// (host and port). Default: 16, the default max_in_flight of a
	// subscription, so a busy receiver keeps its connections warm. A
	// sender shared by subscriptions that may share a receiver wants its
	// whole concurrency here (the gateway gives its sender pool's size):
	// each connection returned past the bound is closed, and the next
	// attempt dials again.
	MaxIdleConnsPerHost int
	// IdleConnTimeout closes keep-alive connections idle this long. It is
	// kept below common server keep-alive timeouts (nginx 75s) so a request
	// rarely races a server closing the connection. Default: 30s.
	IdleConnTimeout time.Duration
	// TLSConfig is cloned for connections to receivers, for example to
	// trust a private CA. Default: the system roots. MinVersion is raised to
	// TLS 1.2 when lower.
	TLSConfig *tls.Config
	// Logger receives one debug record per attempt and warnings about
	// skipped reserved headers. Default: discard.
	Logger *slog.Logger
	// Now is the clock for webhook-timestamp and for Retry-After dates.
	// Default: time.Now.
	Now func() time.Time
}

// WithDefaults returns a copy of c with every zero field set to its default.
// A nil Guard stays nil here; [NewSender] builds the default Guard.
func (c SenderConfig) WithDefaults() SenderConfig {
	if c.UserAgent == "" {
		c.UserAgent = DefaultUserAgent
	}
	if c.DefaultTimeout == 0 {
		c.DefaultTimeout = DefaultTimeout
	}
	if c.MaxResponseBytes == 0 {
		c.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if c.MaxIdleConns == 0 {
		c.MaxIdleConns = DefaultMaxIdleConns
	}
	if c.MaxIdleConnsPerHost == 0 {
		c.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	}
	if c.IdleConnTimeout == 0 {
		c.IdleConnTimeout = DefaultIdleConnTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func (c SenderConfig) validate() error {
	switch {
	case c.DefaultTimeout < 0:
		return errors.New("DefaultTimeout is negative")
	case c.MaxResponseBytes < 0:
		return errors.New("MaxResponseBytes is negative")
	case c.MaxIdleConns < 0:
		return errors.New("MaxIdleConns is negative")
	case c.MaxIdleConnsPerHost < 0:
		return errors.New("MaxIdleConnsPerHost is negative")
	case c.IdleConnTimeout < 0:
		return errors.New("IdleConnTimeout is negative")
	case checkHeaderSyntax("user-agent", c.UserAgent) != nil:
		return errors.New("UserAgent is not a valid header value")
	}
	return nil
}

// Sender makes single webhook delivery attempts (SPEC §5). One Sender serves
// every subscription: its connection pool is shared, sized for many
// receivers, and safe for concurrent use. Per-subscription rate limits and
// in-flight bounds are the caller's.
//
// Its HTTP client dials only through the [Guard], never uses a proxy (the
// guard would vet the proxy's address instead of the receiver's, and the
// proxy would reach internal addresses for us; HTTP_PROXY and friends are
// therefore ignored), never follows redirects, and does not ask for
// compressed answers, whose bodies are discarded anyway.
type Sender struct {
	cfg   SenderConfig
	guard *Guard
	// rt makes the requests: the transport itself, not an http.Client,
	// whose only work here would be copying each request's headers in case
	// of a redirect it never follows (it is told not to).
	rt        http.RoundTripper
	transport *http.Transport
	urls      urlCache // URLs the guard accepted, parsed
	macs      macCache // keyed HMAC-SHA256 states, per secret
}

// NewSender builds a Sender from cfg after applying
// [SenderConfig.WithDefaults].
func NewSender(cfg SenderConfig) (*Sender, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("webhook sender config: %w", err)
	}
	guard := cfg.Guard
	if guard == nil {
		var err error
		if guard, err = NewGuard(GuardConfig{}); err != nil {
			return nil, fmt.Errorf("webhook sender: default guard: %w", err)
		}
	}
	var tlsConfig *tls.Config
	if cfg.TLSConfig != nil {
		tlsConfig = cfg.TLSConfig.Clone()
	} else {
		tlsConfig = &tls.Config{}
	}
	tlsConfig.MinVersion = max(tlsConfig.MinVersion, tls.VersionTLS12)

	transport := &http.Transport{
		Proxy:                  nil,
		DialContext:            guard.DialContext,
		TLSClientConfig:        tlsConfig,
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    10 * time.Second,
		MaxIdleConns:           cfg.MaxIdleConns,
		MaxIdleConnsPerHost:    cfg.MaxIdleConnsPerHost,
		IdleConnTimeout:        cfg.IdleConnTimeout,
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
		DisableCompression:     true,
	}
	return &Sender{cfg: cfg, guard: guard, rt: transport, transport: transport}, nil
}

// CloseIdleConnections closes the Sender's idle keep-alive connections. Call
// it on shutdown; the Sender stays usable.
func (s *Sender) CloseIdleConnections() { s.transport.CloseIdleConnections() }

// Send makes one attempt to deliver req and reports what happened. It never
// returns early without a Result: every failure is in Result.Err. It sends
// POST with content-type: application/json, webhook-id, webhook-timestamp
// (this attempt's time, in unix seconds), webhook-signature, user-agent,
// outflow-attempt, and the request's own headers except reserved names.
//
// A cancelled ctx (shutdown) ends the attempt as OutcomeRetry with the
// context's error in the cause; the caller decides whether that counts as an
// attempt.
func (s *Sender) Send(ctx context.Context, req Request) Result {
	start := time.Now()
	res := s.send(ctx, req)
	res.Duration = time.Since(start)
	if !s.cfg.Logger.Enabled(ctx, slog.LevelDebug) {
		return res
	}
	attrs := []slog.Attr{
		slog.String("event_id", req.EventID),
		slog.String("host", hostOf(req.URL)),
		slog.Int("attempt", max(req.Attempt, 1)),
		slog.String("outcome", res.Outcome.String()),
		slog.Int("status", res.StatusCode),
		slog.Duration("duration", res.Duration),
	}
	if derr, ok := errors.AsType[*DeliveryError](res.Err); ok {
		// The full cause is for the operator only; the tenant sees Error().
		attrs = append(attrs, slog.String("error_detail", derr.Detail()))
	}
	s.cfg.Logger.LogAttrs(ctx, slog.LevelDebug, "webhook attempt", attrs...)
	return res
}

func (s *Sender) send(ctx context.Context, req Request) Result {
	target, err := s.urls.check(s.guard, req.URL)
	if err != nil {
		return failed(OutcomeBlocked, &DeliveryError{Retriable: true, Err: err})
	}
	ts := s.cfg.Now()
	signature := sign(&s.macs, req.Secrets, req.EventID, ts, req.Body)
	if signature == "" {
		return failed(OutcomeRetry, &DeliveryError{Retriable: true, Err: ErrNoSecret})
	}
	if req.EventID == "" {
		return failed(OutcomeRetry, &DeliveryError{Retriable: true, Err: fmt.Errorf("%w: empty event id", ErrInvalidHeader)})
	}
	if err := checkHeaderSyntax("webhook-id", req.EventID); err != nil {
		return failed(OutcomeRetry, &DeliveryError{Retriable: true, Err: fmt.Errorf("event id: %w", err)})
	}

	timeout := req.Timeout
	if timeout <= 0 {
		timeout = s.cfg.DefaultTimeout
	}
	attemptCtx, cancel := context.WithTimeoutCause(ctx, timeout, ErrTimeout)
	defer cancel()

	// The URL was parsed once, when the guard accepted it; each request
	// gets its own copy, so nothing the transport does to one can reach
	// another. (An empty URL parses without error: NewRequestWithContext is
	// kept for what else it sets, GetBody and ContentLength among them.)
	httpReq, err := http.NewRequestWithContext(attemptCtx, http.MethodPost, "", bytes.NewReader(req.Body))
	if err != nil {
		return failed(OutcomeRetry, &DeliveryError{Retriable: true, Err: fmt.Errorf("build request: %w", stripURL(err))})
	}
	u := *target
	httpReq.URL, httpReq.Host = &u, u.Host
	if len(req.Headers) > MaxHeaders {
		return failed(OutcomeRetry, &DeliveryError{Retriable: true,
			Err: fmt.Errorf("%w: %d headers, at most %d", ErrInvalidHeader, len(req.Headers), MaxHeaders)})
	}
	h := make(http.Header, 6+len(req.Headers)+len(req.Trace))
	httpReq.Header = h
	for name, value := range req.Headers {
		if ReservedHeader(name) {
			s.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "webhook: reserved user header skipped",
				slog.String("event_id", req.EventID), slog.String("header", name))
			continue
		}
		if err := checkHeaderSyntax(name, value); err != nil {
			return failed(OutcomeRetry, &DeliveryError{Retriable: true, Err: err})
		}
		h.Set(name, value)
	}
	// The gateway's own headers, set after the user's so that they win
	// (ReservedHeader skipped those already), with canonical names and one
	// backing array for their values: a delivery's headers are a fifth of
	// its allocations otherwise. Each value slice is capped at its length,
	// so an Add cannot write into its neighbour.
	vals := make([]string, 6)
	vals[0], vals[1], vals[2] = "application/json", req.EventID, strconv.FormatInt(ts.Unix(), 10)
	vals[3], vals[4], vals[5] = signature, s.cfg.UserAgent, strconv.Itoa(max(req.Attempt, 1))
	h["Content-Type"] = vals[0:1:1]
	h["Webhook-Id"] = vals[1:2:2]
	h["Webhook-Timestamp"] = vals[2:3:3]
	h["Webhook-Signature"] = vals[3:4:4]
	h["User-Agent"] = vals[4:5:5]
	h["Outflow-Attempt"] = vals[5:6:6]
	for name, value := range req.Trace {
		if err := checkHeaderSyntax(name, value); err == nil && !ReservedHeader(name) {
			h.Set(name, value)
		}
	}

	resp, err := s.rt.RoundTrip(httpReq)
	if err != nil {
		return failed(classifyTransportError(ctx, attemptCtx, err))
	}
	defer resp.Body.Close()
	if ctx.Err() == nil && attemptCtx.Err() != nil {
		// The status came after the attempt's timeout (the transport may
		// still hand over an answer that raced the deadline): only a 2xx
		// within the timeout is a success (SPEC §5), so this is a timed
		// out attempt, and the event is tried again.
		return failed(classifyTransportError(ctx, attemptCtx, context.Cause(attemptCtx)))
	}

	res := Result{StatusCode: resp.StatusCode}
	ok := resp.StatusCode >= 200 && resp.StatusCode < 300
	var excerpt []byte
	if !ok {
		// Read enough past the excerpt to scrub a value that starts inside
		// it, so truncation never leaves a secret's prefix behind.
		excerpt, _ = io.ReadAll(io.LimitReader(resp.Body, min(s.cfg.MaxResponseBytes, MaxErrorBodyBytes+MaxHeaderValueBytes)))
	}
	// Drain the rest, bounded, so the connection can be reused. A body that
	// stalls or errors after a 2xx does not undo the delivery: the status
	// arrived within the timeout.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, s.cfg.MaxResponseBytes-int64(len(excerpt))))

	switch {
	case ok:
		res.Outcome = OutcomeDelivered
		return res
	case resp.StatusCode == http.StatusGone:
		res.Outcome = OutcomeGone
	default:
		res.Outcome = OutcomeRetry
	}
	derr := &DeliveryError{
		StatusCode: resp.StatusCode,
		Retriable:  res.Outcome == OutcomeRetry,
		Body:       scrubExcerpt(excerpt, req),
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		derr.Err = ErrRedirect
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		if d, ok := ParseRetryAfter(resp.Header.Get("Retry-After"), s.cfg.Now()); ok {
			res.RetryAfter = min(d, MaxRetryAfter)
		}
	}
	res.Err = derr
	return res
}

func failed(o Outcome, err *DeliveryError) Result {
	return Result{Outcome: o, Err: err}
}

// classifyTransportError turns a client.Do error into an outcome: blocked
// when the guard refused the dial, otherwise a retriable failure with the
// timeout or cancellation made explicit.
func classifyTransportError(parent, attempt context.Context, err error) (Outcome, *DeliveryError) {
	err = stripURL(err)
	if errors.Is(err, ErrBlocked) {
		return OutcomeBlocked, &DeliveryError{Retriable: true, Err: err}
	}
	switch {
	case parent.Err() != nil:
		err = fmt.Errorf("attempt cancelled: %w", context.Cause(parent))
	case errors.Is(context.Cause(attempt), ErrTimeout):
		// Keep both: ErrTimeout for us, DeadlineExceeded for generic code.
		err = fmt.Errorf("%w: %w", ErrTimeout, context.DeadlineExceeded)
	}
	return OutcomeRetry, &DeliveryError{Retriable: true, Err: err}
}

// stripURL removes the *url.Error layer, whose message repeats the full URL
// with its path and query, which may hold credentials.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// hostOf returns the URL's host for logs, or "" when it does not parse.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}

// scrubExcerpt returns at most MaxErrorBodyBytes of body as valid UTF-8,
// with the request's secrets and long header values redacted,
// for receivers that echo the request back.
func scrubExcerpt(body []byte, req Request) string {
	if len(body) == 0 {
		return ""
	}
	s := strings.ToValidUTF8(string(body), "\uFFFD")
	var needles []string
	for _, sec := range req.Secrets {
		needles = append(needles, sec.scrubForms()...)
	}
	for _, v := range req.Headers {
		if len(v) >= minScrubBytes {
			needles = append(needles, v)
		}
	}
	// Longest first, so a value containing another is redacted whole.
	slices.SortFunc(needles, func(a, b string) int { return len(b) - len(a) })
	for _, n := range needles {
		s = strings.ReplaceAll(s, n, redacted)
	}
	if len(s) > MaxErrorBodyBytes {
		cut := MaxErrorBodyBytes
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}
