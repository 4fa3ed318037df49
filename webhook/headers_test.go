package webhook_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/outflow-dev/outflow/webhook"
)

func TestReservedHeader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		reserved bool
	}{
		{"content-type", true},
		{"Content-Type", true},
		{"CONTENT-LENGTH", true},
		{"Transfer-Encoding", true},
		{"host", true},
		{"user-agent", true},
		{"connection", true},
		{"te", true},
		{"webhook-id", true},
		{"Webhook-Signature", true},
		{"webhook-timestamp", true},
		{"webhook-anything", true},
		{"outflow-attempt", true},
		{"Outflow-Future", true},
		{"proxy-authorization", true},
		{"authorization", false},
		{"x-api-key", false},
		{"x-webhook-id", false},
		{"webhooks", false},
		{"cookie", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := webhook.ReservedHeader(tt.name); got != tt.reserved {
				t.Fatalf("ReservedHeader(%q) = %v, want %v", tt.name, got, tt.reserved)
			}
		})
	}
}

func TestValidateHeader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, header, value string
		valid               bool
	}{
		{"ordinary", "Authorization", "Bearer abc", true},
		{"token punctuation", "X-A!#$%&'*+.^_`|~1", "v", true},
		{"tab in value", "X-A", "a\tb", true},
		{"empty value", "X-A", "", true},
		{"utf-8 value", "X-A", "héllo", true},
		{"reserved", "Webhook-Id", "v", false},
		{"empty name", "", "v", false},
		{"space in name", "X A", "v", false},
		{"colon in name", "X-A:", "v", false},
		{"non-ASCII name", "X-Ä", "v", false},
		{"CRLF injection", "X-A", "v\r\nX-B: w", false},
		{"NUL", "X-A", "v\x00", false},
		{"DEL", "X-A", "v\x7f", false},
		{"long name", strings.Repeat("a", webhook.MaxHeaderNameBytes+1), "v", false},
		{"long value", "X-A", strings.Repeat("v", webhook.MaxHeaderValueBytes+1), false},
		{"longest value", "X-A", strings.Repeat("v", webhook.MaxHeaderValueBytes), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := webhook.ValidateHeader(tt.header, tt.value)
			if tt.valid != (err == nil) {
				t.Fatalf("ValidateHeader(%q, …) = %v, want valid=%v", tt.header, err, tt.valid)
			}
			if err != nil {
				if !errors.Is(err, webhook.ErrInvalidHeader) {
					t.Fatalf("error %v does not wrap ErrInvalidHeader", err)
				}
				if len(tt.value) > 3 && strings.Contains(err.Error(), tt.value) {
					t.Fatalf("error %q repeats the value", err)
				}
			}
		})
	}
}

func TestValidateHeaders(t *testing.T) {
	t.Parallel()
	if err := webhook.ValidateHeaders(map[string]string{"Authorization": "Bearer x", "X-Team": "promo"}); err != nil {
		t.Fatalf("ValidateHeaders = %v", err)
	}
	if err := webhook.ValidateHeaders(nil); err != nil {
		t.Fatalf("ValidateHeaders(nil) = %v", err)
	}
	err := webhook.ValidateHeaders(map[string]string{"Content-Type": "x", "bad name": "y", "X-Ok": "z"})
	if !errors.Is(err, webhook.ErrInvalidHeader) || !strings.Contains(err.Error(), "Content-Type") || !strings.Contains(err.Error(), "bad name") {
		t.Fatalf("ValidateHeaders = %v, want both bad headers named", err)
	}
	many := map[string]string{}
	for i := range webhook.MaxHeaders + 1 {
		many[fmt.Sprintf("X-H%d", i)] = "v"
	}
	if err := webhook.ValidateHeaders(many); !errors.Is(err, webhook.ErrInvalidHeader) {
		t.Fatalf("ValidateHeaders with %d headers = %v", len(many), err)
	}
}
