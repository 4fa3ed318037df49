package webhook

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Bounds on the static headers a subscription may send (SPEC §7: every input
// is bounded). The API documents at most 32 headers.
const (
	MaxHeaders          = 32
	MaxHeaderNameBytes  = 256
	MaxHeaderValueBytes = 4096
)

// ErrInvalidHeader is wrapped by every [ValidateHeader] and
// [ValidateHeaders] error. The messages name the header, never its value,
// which is often a credential.
var ErrInvalidHeader = errors.New("invalid webhook header")

// reservedHeaders are set by the Sender or by net/http, or change how the
// request is framed or routed; a user header must never replace them.
var reservedHeaders = []string{
	"accept-encoding",
	"connection",
	"content-encoding",
	"content-length",
	"content-type",
	"expect",
	"host",
	"http2-settings",
	"keep-alive",
	"te",
	"trailer",
	"transfer-encoding",
	"upgrade",
	"user-agent",
}

// reservedPrefixes cover whole families: the Standard Webhooks headers, our
// own, and proxy headers (no proxy is used, and none should be addressed).
var reservedPrefixes = []string{"webhook-", "outflow-", "proxy-"}

// ReservedHeader reports whether name (any case) is a header the [Sender]
// sets itself or that controls the HTTP framing, and so cannot be a static
// user header: content-type, content-length, content-encoding,
// transfer-encoding, accept-encoding, connection, keep-alive, te, trailer,
// upgrade, expect, host, http2-settings, user-agent, and every name starting
// with "webhook-", "outflow-" or "proxy-". The API refuses these at
// subscription time; the Sender skips them should one be stored anyway.
func ReservedHeader(name string) bool {
	n := strings.ToLower(name)
	if slices.Contains(reservedHeaders, n) {
		return true
	}
	for _, p := range reservedPrefixes {
		if strings.HasPrefix(n, p) {
			return true
		}
	}
	return false
}

// ValidateHeader checks one static user header: its name must be an HTTP
// token (RFC 9110) of at most [MaxHeaderNameBytes] bytes and not
// [ReservedHeader]; its value at most [MaxHeaderValueBytes] bytes with no
// control character other than horizontal tab. Errors wrap
// [ErrInvalidHeader] and do not contain the value.
func ValidateHeader(name, value string) error {
	if err := checkHeaderSyntax(name, value); err != nil {
		return err
	}
	if ReservedHeader(name) {
		return fmt.Errorf("%w: %q is reserved", ErrInvalidHeader, name)
	}
	return nil
}

// ValidateHeaders checks a subscription's static headers: at most
// [MaxHeaders], each valid by [ValidateHeader]. Every problem is reported,
// joined with errors.Join, in name order.
func ValidateHeaders(h map[string]string) error {
	var errs []error
	if len(h) > MaxHeaders {
		errs = append(errs, fmt.Errorf("%w: %d headers, at most %d", ErrInvalidHeader, len(h), MaxHeaders))
	}
	for _, name := range slices.Sorted(maps.Keys(h)) {
		if err := ValidateHeader(name, h[name]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// checkHeaderSyntax is ValidateHeader without the reserved-name rule, for
// the Sender, which skips reserved names rather than failing.
func checkHeaderSyntax(name, value string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty name", ErrInvalidHeader)
	case len(name) > MaxHeaderNameBytes:
		return fmt.Errorf("%w: name longer than %d bytes", ErrInvalidHeader, MaxHeaderNameBytes)
	case strings.IndexFunc(name, func(r rune) bool { return !isTokenChar(r) }) >= 0:
		return fmt.Errorf("%w: %q is not a valid header name", ErrInvalidHeader, name)
	case len(value) > MaxHeaderValueBytes:
		return fmt.Errorf("%w: value of %q longer than %d bytes", ErrInvalidHeader, name, MaxHeaderValueBytes)
	case strings.IndexFunc(value, func(r rune) bool { return (r < ' ' && r != '\t') || r == 0x7f }) >= 0:
		return fmt.Errorf("%w: value of %q contains a control character", ErrInvalidHeader, name)
	}
	return nil
}

// isTokenChar reports whether r is a tchar of RFC 9110 §5.6.2.
func isTokenChar(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	}
	return strings.ContainsRune("!#$%&'*+-.^_`|~", r)
}
