package feast

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/outflow-dev/outflow/internal/httpretry"
)

// ErrInvalidConfig is wrapped by every error NewClient returns for a Config that fails
// validation. It is never retriable.
var ErrInvalidConfig = errors.New("feast: invalid config")

// ErrInvalidRequest is wrapped by the errors GetFeatures and GetFeaturesBatch return, before
// anything is sent, for a request Feast would reject anyway (no feature service, no join keys,
// an empty batch or one that mixes feature services). It is never retriable.
var ErrInvalidRequest = errors.New("feast: invalid request")

// ErrResponseTooLarge is wrapped by the error returned when a successful response body is
// larger than Config.MaxResponseBytes. It is not retriable.
var ErrResponseTooLarge = errors.New("feast: response too large")

const (
	// maxErrorBodyBytes is how much of a non-2xx body is read to find Feast's error.
	maxErrorBodyBytes = 64 << 10
	// maxErrorTextLen bounds APIError.Class and APIError.Message, in bytes.
	maxErrorTextLen = 512
)

// APIError is a non-2xx answer from the feature server.
//
// Feast's feature server answers its own errors with a JSON string that itself holds
// {"module", "class", "message"} (e.g. 404 with class FeatureServiceNotFoundException), FastAPI
// validation errors with {"detail": [...]} (422), and some failures with a plain JSON string
// (500). Anything else — a proxy's HTML page — is kept as a bounded, sanitised excerpt.
type APIError struct {
	// StatusCode is the HTTP status of the response.
	StatusCode int
	// Class is the Python exception class Feast named, e.g. "FeatureServiceNotFoundException";
	// empty when the body named none. At most 512 bytes.
	Class string
	// Message is Feast's message, or an excerpt of a body that is not Feast's error; at most
	// 512 bytes, control characters replaced.
	Message string
	// Retriable reports whether the same request may succeed later: true for 429, 500, 502, 503
	// and 504 (after the transport's own retries ran out); false for every other status (400,
	// 401/403 bad token, 404 unknown feature service, 422 malformed request, redirects).
	Retriable bool
	// RetryAfter is the delay the server asked for with a Retry-After header, capped at one
	// hour; 0 when absent or unparseable.
	RetryAfter time.Duration
}

// Error returns a one-line description: the status, the class and Feast's message, never the
// request, the token or more than a bounded excerpt of the body.
func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("feast: HTTP ")
	b.WriteString(strconv.Itoa(e.StatusCode))
	if text := http.StatusText(e.StatusCode); text != "" {
		b.WriteByte(' ')
		b.WriteString(text)
	}
	if e.Class != "" {
		b.WriteString(": ")
		b.WriteString(e.Class)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.RetryAfter > 0 {
		b.WriteString(" (retry after ")
		b.WriteString(e.RetryAfter.String())
		b.WriteByte(')')
	}
	return b.String()
}

// TransportError is a call that got no complete HTTP answer: the connection could not be made
// or broke, the per-call Timeout expired, the caller's context ended, or the body could not be
// read to its end.
type TransportError struct {
	// Err is the underlying error; errors.Is sees context.Canceled and DeadlineExceeded.
	Err error
	// Timeout reports whether the call ran out of time rather than failing outright.
	Timeout bool
	// Retriable is true unless the caller's own context was done.
	Retriable bool
}

// Error describes the failure with the underlying error, which names the URL but never headers.
func (e *TransportError) Error() string {
	if e.Err == nil {
		return "feast: transport error"
	}
	if e.Timeout {
		return "feast: transport timeout: " + e.Err.Error()
	}
	return "feast: transport: " + e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *TransportError) Unwrap() error { return e.Err }

// ParseError is a 2xx response whose body is not a get-online-features answer this package
// understands.
type ParseError struct {
	// Err describes what was wrong. It never quotes feature values.
	Err error
	// Retriable is true only for a body cut short (an empty body, or valid JSON that stops
	// early): that is transient. A complete body of the wrong shape would come back the same.
	Retriable bool
}

// Error describes the parse failure.
func (e *ParseError) Error() string {
	if e.Err == nil {
		return "feast: parsing response"
	}
	return "feast: parsing response: " + e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *ParseError) Unwrap() error { return e.Err }

// IsRetriable reports whether err, or any error it wraps, is an *APIError, *TransportError or
// *ParseError that says the same call may succeed later. Every other error, and nil, is not.
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

// newAPIError builds the APIError for a non-2xx response from its status, headers and the
// (already bounded) start of its body.
func newAPIError(status int, header http.Header, body []byte, now time.Time) *APIError {
	e := &APIError{
		StatusCode: status,
		Retriable:  httpretry.RetriableStatus(status),
		RetryAfter: httpretry.ParseRetryAfter(header.Get("Retry-After"), now),
	}
	e.Class, e.Message = errorText(body)
	e.Class = sanitize(e.Class, maxErrorTextLen)
	e.Message = sanitize(e.Message, maxErrorTextLen)
	return e
}

// feastError is the object inside Feast's error string.
type feastError struct {
	Module  *string         `json:"module"`
	Class   *string         `json:"class"`
	Message *string         `json:"message"`
	Detail  json.RawMessage `json:"detail"`
}

// errorText finds the class and message in an error body in any of the shapes Feast uses.
func errorText(body []byte) (class, message string) {
	var s string
	if err := json.Unmarshal(body, &s); err == nil {
		// A JSON string: Feast's own error object encoded once more, or a message that may
		// itself be JSON-quoted again (seen on 500s).
		var inner feastError
		if err := json.Unmarshal([]byte(s), &inner); err == nil && (inner.Class != nil || inner.Message != nil) {
			return deref(inner.Class), deref(inner.Message)
		}
		var again string
		if err := json.Unmarshal([]byte(s), &again); err == nil {
			return "", again
		}
		return "", s
	}
	var obj feastError
	if err := json.Unmarshal(body, &obj); err == nil {
		switch {
		case obj.Class != nil || obj.Message != nil:
			return deref(obj.Class), deref(obj.Message)
		case len(obj.Detail) > 0:
			var detail string
			if err := json.Unmarshal(obj.Detail, &detail); err == nil {
				return "", detail
			}
			return "", string(obj.Detail)
		}
	}
	return "", string(body)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
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
