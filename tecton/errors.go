package tecton

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// ErrInvalidConfig is wrapped by every error NewClient returns for a Config that fails
// validation. It is never retriable: the same Config fails the same way.
var ErrInvalidConfig = errors.New("tecton: invalid config")

// ErrInvalidRequest is wrapped by the errors GetFeatures and GetFeaturesBatch return, before
// anything is sent, for a Request that Tecton would reject anyway (no workspace, no feature
// service, no join keys, a batch that is empty, too large or mixes services). It is never
// retriable.
var ErrInvalidRequest = errors.New("tecton: invalid request")

// ErrResponseTooLarge is wrapped by the error returned when a successful response body is
// larger than Config.MaxResponseBytes. It is not retriable: the same request would return the
// same oversized answer, so the limit (or the feature service) has to change instead.
var ErrResponseTooLarge = errors.New("tecton: response too large")

// Bounds on the text an error carries, so that a misbehaving server or proxy cannot turn an
// error message (and every log line that prints it) into a copy of a large body.
const (
	// maxErrorBodyBytes is how much of a non-2xx body is read to find Tecton's error JSON.
	maxErrorBodyBytes = 64 << 10
	// maxErrorTextLen bounds APIError.ErrorText and APIError.Message, in bytes.
	maxErrorTextLen = 512
	// maxRetryAfter caps APIError.RetryAfter so that a buggy or hostile Retry-After header
	// cannot park work for days; callers cap it further with their own policy.
	maxRetryAfter = time.Hour
)

// APIError is a non-2xx answer from the feature server.
//
// Tecton answers errors with a JSON body {"error": "...", "message": "...", "code": N} where
// code is the gRPC status code behind the HTTP status. Bodies that are not JSON (from a load
// balancer or proxy) are tolerated: Message then holds a bounded, sanitised excerpt.
type APIError struct {
	// StatusCode is the HTTP status of the response.
	StatusCode int
	// Code is the "code" field of Tecton's error body (a gRPC status code), or 0 when absent.
	Code int
	// ErrorText is the "error" field of Tecton's error body, at most 512 bytes.
	ErrorText string
	// Message is the "message" field of Tecton's error body or, for a body that is not
	// Tecton's error JSON, an excerpt of it; at most 512 bytes, control characters replaced.
	Message string
	// Retriable reports whether the same request may succeed later: true for 429, 500, 502,
	// 503 and 504; false for every other status (400 bad request, 401/403 bad key, 404 unknown
	// workspace or feature service, redirects), which fail the event at once (SPEC §4).
	Retriable bool
	// RetryAfter is the delay the server asked for with a Retry-After header (delay-seconds or
	// an HTTP date), capped at one hour; 0 when the header is absent or unparseable.
	RetryAfter time.Duration
}

// Error returns a one-line description that holds the status and Tecton's message, never the
// request, the API key or more than a bounded excerpt of the body.
func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("tecton: HTTP ")
	b.WriteString(strconv.Itoa(e.StatusCode))
	if text := http.StatusText(e.StatusCode); text != "" {
		b.WriteByte(' ')
		b.WriteString(text)
	}
	switch {
	case e.Message != "" && e.ErrorText != "" && e.ErrorText != e.Message:
		b.WriteString(": ")
		b.WriteString(e.Message)
		b.WriteString(" (error: ")
		b.WriteString(e.ErrorText)
		b.WriteByte(')')
	case e.Message != "":
		b.WriteString(": ")
		b.WriteString(e.Message)
	case e.ErrorText != "":
		b.WriteString(": ")
		b.WriteString(e.ErrorText)
	}
	if e.Code != 0 {
		b.WriteString(" (code ")
		b.WriteString(strconv.Itoa(e.Code))
		b.WriteByte(')')
	}
	if e.RetryAfter > 0 {
		b.WriteString(" (retry after ")
		b.WriteString(e.RetryAfter.String())
		b.WriteByte(')')
	}
	return b.String()
}

// TransportError is a call that got no complete HTTP answer: the connection could not be
// made or broke, the per-call Timeout expired, the caller's context ended, or the body could
// not be read to its end.
type TransportError struct {
	// Err is the underlying error from net/http, net or context; errors.Is(err,
	// context.Canceled) and errors.Is(err, context.DeadlineExceeded) see through it.
	Err error
	// Timeout reports whether the call ran out of time (Config.Timeout, the http.Client's own
	// timeout or a network timeout) rather than failing outright.
	Timeout bool
	// Retriable is true unless the caller's own context was done: connection failures and
	// timeouts are transient, but once the caller has given up a retry has nobody to serve.
	Retriable bool
}

// Error describes the failure with the underlying error, which names the URL but never
// carries headers, so never the API key.
func (e *TransportError) Error() string {
	if e.Err == nil {
		return "tecton: transport error"
	}
	if e.Timeout {
		return "tecton: transport timeout: " + e.Err.Error()
	}
	return "tecton: transport: " + e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *TransportError) Unwrap() error { return e.Err }

// ParseError is a 2xx response whose body is not a GetFeatures answer this package
// understands: not JSON, the wrong shape, values and metadata of different lengths, a feature
// without a name, or an effective time in no known spelling.
type ParseError struct {
	// Err describes what was wrong. It never quotes feature values.
	Err error
	// Retriable is true only when the body is a prefix of valid JSON that stops early (an empty
	// body, or a body cut short without a transport error, as a proxy may do): that is
	// transient. Everything else is deterministic — the feature server would return the same
	// body again — so it is not retriable and the event fails at once with the error kept.
	Retriable bool
}

// Error describes the parse failure.
func (e *ParseError) Error() string {
	if e.Err == nil {
		return "tecton: parsing response"
	}
	return "tecton: parsing response: " + e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *ParseError) Unwrap() error { return e.Err }

// IsRetriable reports whether err, or any error it wraps, is an *APIError, *TransportError or
// *ParseError that says the same call may succeed later. Every other error — invalid config,
// invalid request, ErrResponseTooLarge, or nil — is not retriable.
func IsRetriable(err error) bool {
	if apiErr, ok := errors.AsType[*APIError](err); ok {
		return apiErr.Retriable
	}
	if tErr, ok := errors.AsType[*TransportError](err); ok {
		return tErr.Retriable
	}
	if pErr, ok := errors.AsType[*ParseError](err); ok {
		return pErr.Retriable
	}
	return false
}

// retriableStatus reports whether an HTTP status means "try again later".
func retriableStatus(code int) bool {
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

// newAPIError builds the APIError for a non-2xx response from its status, headers and the
// (already bounded) start of its body.
func newAPIError(status int, header http.Header, body []byte, now time.Time) *APIError {
	e := &APIError{
		StatusCode: status,
		Retriable:  retriableStatus(status),
		RetryAfter: parseRetryAfter(header.Get("Retry-After"), now),
	}
	var wire struct {
		Error   *string `json:"error"`
		Message *string `json:"message"`
		Code    *int    `json:"code"`
	}
	if err := json.Unmarshal(body, &wire); err == nil && (wire.Error != nil || wire.Message != nil || wire.Code != nil) {
		if wire.Error != nil {
			e.ErrorText = sanitize(*wire.Error, maxErrorTextLen)
		}
		if wire.Message != nil {
			e.Message = sanitize(*wire.Message, maxErrorTextLen)
		}
		if wire.Code != nil {
			e.Code = *wire.Code
		}
		return e
	}
	e.Message = sanitize(string(body), maxErrorTextLen)
	return e
}

// parseRetryAfter reads a Retry-After header value: delay-seconds or an HTTP date (RFC 9110
// §10.2.3). It returns 0 for an absent, unparseable, negative or past value, and caps the
// result at maxRetryAfter.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs >= int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		return time.Duration(secs) * time.Second
	}
	if strings.TrimLeft(v, "0123456789") == "" {
		// All digits but too large for int64: far beyond the cap.
		return maxRetryAfter
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	d := at.Sub(now)
	if d <= 0 {
		return 0
	}
	return min(d, maxRetryAfter)
}

// sanitize makes s safe and short enough to carry in an error message: invalid UTF-8 and
// control characters (which could forge log lines) are replaced, surrounding space trimmed,
// and the result cut to at most maxLen bytes on a rune boundary with "…" marking the cut.
func sanitize(s string, maxLen int) string {
	s = strings.TrimSpace(s)
	var b strings.Builder
	b.Grow(min(len(s), maxLen))
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		if unicode.IsControl(r) {
			r = ' '
		}
		if b.Len()+utf8.RuneLen(r) > maxLen {
			return strings.TrimSpace(b.String()) + "…"
		}
		b.WriteRune(r)
	}
	return b.String()
}
