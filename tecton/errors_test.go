package tecton

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestIsRetriable(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain error", errors.New("boom"), false},
		{"context canceled alone", context.Canceled, false},
		{"invalid config", fmt.Errorf("%w: x", ErrInvalidConfig), false},
		{"invalid request", fmt.Errorf("%w: x", ErrInvalidRequest), false},
		{"response too large", fmt.Errorf("%w: x", ErrResponseTooLarge), false},
		{"retriable API error", &APIError{StatusCode: 503, Retriable: true}, true},
		{"non-retriable API error", &APIError{StatusCode: 404}, false},
		{"wrapped retriable API error", fmt.Errorf("enriching: %w", &APIError{StatusCode: 429, Retriable: true}), true},
		{"wrapped twice", fmt.Errorf("a: %w", fmt.Errorf("b: %w", &APIError{StatusCode: 500, Retriable: true})), true},
		{"retriable transport error", &TransportError{Err: errors.New("reset"), Retriable: true}, true},
		{"cancelled transport error", &TransportError{Err: context.Canceled}, false},
		{"retriable parse error", &ParseError{Err: errors.New("cut"), Retriable: true}, true},
		{"non-retriable parse error", &ParseError{Err: errors.New("bad")}, false},
		{"joined", errors.Join(errors.New("x"), &TransportError{Err: errors.New("y"), Retriable: true}), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := IsRetriable(tt.err); got != tt.want {
				t.Errorf("IsRetriable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestAPIErrorError(t *testing.T) {
	t.Parallel()

	tests := []struct {
		err  *APIError
		want string
	}{
		{&APIError{StatusCode: 503}, "tecton: HTTP 503 Service Unavailable"},
		{&APIError{StatusCode: 599}, "tecton: HTTP 599"},
		{&APIError{StatusCode: 404, ErrorText: "not found", Message: "not found", Code: 5}, "tecton: HTTP 404 Not Found: not found (code 5)"},
		{&APIError{StatusCode: 400, ErrorText: "INVALID_ARGUMENT", Message: "join key user_id missing", Code: 3}, "tecton: HTTP 400 Bad Request: join key user_id missing (error: INVALID_ARGUMENT) (code 3)"},
		{&APIError{StatusCode: 401, ErrorText: "unauthenticated"}, "tecton: HTTP 401 Unauthorized: unauthenticated"},
		{&APIError{StatusCode: 429, Message: "slow down", RetryAfter: 2 * time.Second, Retriable: true}, "tecton: HTTP 429 Too Many Requests: slow down (retry after 2s)"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestErrorUnwrap(t *testing.T) {
	t.Parallel()

	inner := errors.New("inner")
	if !errors.Is(&TransportError{Err: inner}, inner) {
		t.Error("TransportError does not unwrap")
	}
	if !errors.Is(&ParseError{Err: inner}, inner) {
		t.Error("ParseError does not unwrap")
	}
	if got := (&TransportError{Err: inner, Timeout: true}).Error(); got != "tecton: transport timeout: inner" {
		t.Errorf("TransportError.Error() = %q", got)
	}
	if got := (&ParseError{Err: inner}).Error(); got != "tecton: parsing response: inner" {
		t.Errorf("ParseError.Error() = %q", got)
	}
}

func TestNewAPIErrorTolerance(t *testing.T) {
	t.Parallel()

	now := time.Now()
	tests := []struct {
		name        string
		body        string
		wantMessage string
		wantCode    int
	}{
		{"empty", "", "", 0},
		{"code only", `{"code":14}`, "", 14},
		{"wrong types", `{"error":1,"message":["x"],"code":"x"}`, `{"error":1,"message":["x"],"code":"x"}`, 0},
		{"invalid UTF-8", "bad \xff\xfe bytes", "bad \uFFFD bytes", 0},
	}
	for _, tt := range tests {
		e := newAPIError(http.StatusBadGateway, http.Header{}, []byte(tt.body), now)
		if e.Message != tt.wantMessage || e.Code != tt.wantCode {
			t.Errorf("%s: message %q code %d, want %q %d", tt.name, e.Message, e.Code, tt.wantMessage, tt.wantCode)
		}
		if !e.Retriable {
			t.Errorf("%s: 502 must be retriable", tt.name)
		}
	}
}

func TestSanitize(t *testing.T) {
	t.Parallel()

	tests := []struct {
		in     string
		maxLen int
		want   string
	}{
		{"  hello  ", 10, "hello"},
		{"a\nb\tc", 10, "a b c"},
		{"abcdef", 3, "abc…"},
		{"ééé", 5, "éé…"},
		{"\xff", 10, "\uFFFD"},
	}
	for _, tt := range tests {
		got := sanitize(tt.in, tt.maxLen)
		if got != tt.want {
			t.Errorf("sanitize(%q, %d) = %q, want %q", tt.in, tt.maxLen, got, tt.want)
		}
		if !utf8.ValidString(got) || strings.ContainsAny(got, "\n\r\t") {
			t.Errorf("sanitize(%q) = %q is not clean", tt.in, got)
		}
	}
}
