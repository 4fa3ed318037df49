package httpretry

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
)

// MaxIdleConnsPerHost is how many idle connections DefaultHTTPClient keeps to one host: a
// feature-store client talks to one server under concurrency, where net/http's default of 2
// would redial on almost every concurrent call.
const MaxIdleConnsPerHost = 64

// DefaultHTTPClient returns the *http.Client a feature-store client uses when its Config names
// none: a clone of http.DefaultTransport keeping MaxIdleConnsPerHost idle connections per host,
// that never follows a redirect (a feature store does not redirect API calls, and following
// one could carry the credentials elsewhere).
func DefaultHTTPClient() *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = MaxIdleConnsPerHost
	return &http.Client{
		Transport: transport,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// CheckBaseURL reports what is wrong with a feature store's base URL, or nil: it must be an
// absolute http(s) URL with a host, without credentials (credentialField names the Config field
// that carries them instead) and without a query or fragment. Its errors never quote the URL,
// which may hold a credential pasted into the wrong field; callers wrap them in their own
// ErrInvalidConfig.
func CheckBaseURL(raw, credentialField string) error {
	if raw == "" {
		return errors.New("BaseURL is required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse errors quote the input; describe it instead.
		return errors.New("BaseURL is not a valid URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("BaseURL scheme must be http or https, got %q", u.Scheme)
	case u.Host == "":
		return errors.New("BaseURL has no host")
	case u.User != nil:
		return fmt.Errorf("BaseURL must not carry credentials; set %s instead", credentialField)
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return errors.New("BaseURL must not have a query or fragment")
	}
	return nil
}

// Redacted replaces a secret wherever a feature-store Config or Client is printed or logged.
const Redacted = "[REDACTED]"

// RedactSecret hides a secret but keeps whether it is set, which is what an operator reading a
// log needs to know.
func RedactSecret(s string) string {
	if s == "" {
		return `""`
	}
	return Redacted
}

// RedactURL hides any password in a URL; an unparseable URL is not echoed at all, since it may
// be a credential pasted into the wrong field.
func RedactURL(s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil {
		return "<invalid URL>"
	}
	if u.User != nil {
		u.User = url.User("redacted")
	}
	return u.String()
}

// RetryMaxFor maps a client Config's TransportRetries (0: one request per call) to
// Config.RetryMax (where 0 means DefaultRetryMax).
func RetryMaxFor(transportRetries int) int {
	if transportRetries == 0 {
		return NoRetries
	}
	return transportRetries
}
