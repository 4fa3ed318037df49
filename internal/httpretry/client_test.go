package httpretry_test

import (
	"net/http"
	"testing"

	"github.com/outflow-dev/outflow/internal/httpretry"
)

func TestCheckBaseURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		raw, want string // want "" means valid
	}{
		{"https://acme.tecton.ai", ""},
		{"http://127.0.0.1:6566/prefix/", ""},
		{"", "BaseURL is required"},
		{"http://[::1", "BaseURL is not a valid URL"},
		{"ftp://host", `BaseURL scheme must be http or https, got "ftp"`},
		{"https://", "BaseURL has no host"},
		{"https://u:p4ss@host", "BaseURL must not carry credentials; set APIKey instead"},
		{"https://host/?q=1", "BaseURL must not have a query or fragment"},
		{"https://host/#f", "BaseURL must not have a query or fragment"},
		{"https://host/?", "BaseURL must not have a query or fragment"},
	}
	for _, tt := range tests {
		err := httpretry.CheckBaseURL(tt.raw, "APIKey")
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("CheckBaseURL(%q) = %v, want nil", tt.raw, err)
		case tt.want != "" && (err == nil || err.Error() != tt.want):
			t.Errorf("CheckBaseURL(%q) = %v, want %q", tt.raw, err, tt.want)
		}
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	urls := map[string]string{
		"":                                "",
		"https://acme.tecton.ai":          "https://acme.tecton.ai",
		"https://u:p4ss@acme.tecton.ai/x": "https://redacted@acme.tecton.ai/x",
		"http://[::1":                     "<invalid URL>",
	}
	for in, want := range urls {
		if got := httpretry.RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
	if got := httpretry.RedactSecret(""); got != `""` {
		t.Errorf(`RedactSecret("") = %s, want ""`, got)
	}
	if got := httpretry.RedactSecret("k3y"); got != httpretry.Redacted {
		t.Errorf("RedactSecret(key) = %s, want %s", got, httpretry.Redacted)
	}
}

func TestDefaultHTTPClient(t *testing.T) {
	t.Parallel()
	c := httpretry.DefaultHTTPClient()
	if tr, ok := c.Transport.(*http.Transport); !ok || tr.MaxIdleConnsPerHost != httpretry.MaxIdleConnsPerHost {
		t.Errorf("transport %T keeps %v idle connections per host, want %d", c.Transport, c.Transport, httpretry.MaxIdleConnsPerHost)
	}
	if err := c.CheckRedirect(nil, nil); err != http.ErrUseLastResponse {
		t.Errorf("CheckRedirect = %v, want http.ErrUseLastResponse (never follow)", err)
	}
	if httpretry.RetryMaxFor(0) != httpretry.NoRetries || httpretry.RetryMaxFor(3) != 3 {
		t.Errorf("RetryMaxFor(0), RetryMaxFor(3) = %d, %d", httpretry.RetryMaxFor(0), httpretry.RetryMaxFor(3))
	}
}
