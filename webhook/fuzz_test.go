package webhook

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"golang.org/x/net/idna"
)

// FuzzParseSecret checks, for any input:
//   - ParseSecret never panics;
//   - a failure wraps ErrInvalidSecret and its message never contains the
//     encoded key (checked for base64-alphabet runs of 16 bytes or more,
//     which no fixed message text contains);
//   - a success holds 24 to 64 bytes, re-encodes to exactly the input (one
//     spelling per secret), never prints the key, and signs exactly as the
//     Standard Webhooks reference library does with the same secret.
func FuzzParseSecret(f *testing.F) {
	f.Add("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	f.Add("whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 32)))
	f.Add("whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 64)))
	f.Add("whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 23)))
	f.Add("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=")
	f.Add("whsec_AAAAAAAAAAAAAAAAAAAA\nAAAAAAAAAAAAAAAAAAAAAAA=")
	f.Add("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	f.Add("whsec_")
	f.Add("")
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseSecret(in)
		encoded := strings.TrimPrefix(in, SecretPrefix)
		if err != nil {
			if !errors.Is(err, ErrInvalidSecret) {
				t.Fatalf("error %v does not wrap ErrInvalidSecret", err)
			}
			if !s.IsZero() {
				t.Fatal("failed parse returned a key")
			}
			if len(encoded) >= 16 && strings.Trim(encoded, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") == "" &&
				strings.Contains(err.Error(), encoded) {
				t.Fatalf("error %q repeats the secret", err)
			}
			return
		}
		if n := len(s.key); n < MinSecretBytes || n > MaxSecretBytes {
			t.Fatalf("accepted a %d-byte key", n)
		}
		if back := SecretPrefix + base64.StdEncoding.EncodeToString([]byte(s.key)); back != in {
			t.Fatalf("re-encoding %q gives %q", in, back)
		}
		for _, out := range []string{s.String(), fmt.Sprintf("%v %+v %#v %x %d %s", s, s, s, s, s, s)} {
			if strings.Contains(out, encoded) {
				t.Fatalf("printing the secret shows it: %q", out)
			}
		}
		ts := time.Unix(1614265330, 0)
		body := []byte(`{"k":1}`)
		wh, err := standardwebhooks.NewWebhook(in)
		if err != nil {
			t.Fatalf("reference library refuses a secret we accept: %v", err)
		}
		want, _ := wh.Sign("msg_1", ts, body)
		if got := Sign([]Secret{s}, "msg_1", ts, body); got != want {
			t.Fatalf("Sign = %q, reference = %q", got, want)
		}
	})
}

// FuzzRetryAfter checks, for any header value:
//   - ParseRetryAfter never panics and is deterministic for a given now;
//   - ok false means d is 0; ok true means d >= 0;
//   - a value of decimal digits (after trimming spaces) is always ok, and
//     means exactly that many seconds unless it overflows, where d saturates
//     at the largest Duration;
//   - an accepted date means max(0, date - now);
//   - whatever the value, RetryAfterOrBackoff stays within
//     max(MaxBackoff, MaxRetryAfter).
func FuzzRetryAfter(f *testing.F) {
	now := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	for _, s := range []string{
		"120", "0", "007", " 30 ", "", "-1", "+1", "1.5", "10s",
		"Tue, 24 Nov 2026 10:01:30 GMT", "Tuesday, 24-Nov-26 10:05:00 GMT", "Tue Nov 24 10:00:10 2026",
		"Mon, 01 Jan 0001 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT",
		"9223372036", "9223372037", "99999999999999999999999",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := ParseRetryAfter(v, now)
		if d2, ok2 := ParseRetryAfter(v, now); d2 != d || ok2 != ok {
			t.Fatalf("not deterministic: %v,%v then %v,%v", d, ok, d2, ok2)
		}
		if !ok && d != 0 {
			t.Fatalf("ok false with d = %v", d)
		}
		if d < 0 {
			t.Fatalf("negative delay %v", d)
		}
		trimmed := strings.TrimSpace(v)
		if trimmed != "" && isDigits(trimmed) {
			if !ok {
				t.Fatalf("digits %q refused", trimmed)
			}
			n, err := strconv.ParseUint(trimmed, 10, 64)
			fits := err == nil && n <= uint64(math.MaxInt64/int64(time.Second))-9
			if fits && d != time.Duration(n)*time.Second {
				t.Fatalf("%q gave %v, want %d s", trimmed, d, n)
			}
			if !fits && d != math.MaxInt64 && d != time.Duration(n)*time.Second {
				t.Fatalf("%q gave %v, want saturation", trimmed, d)
			}
		} else if ok {
			date, err := http.ParseTime(trimmed)
			if err != nil {
				t.Fatalf("accepted %q, which is neither seconds nor an HTTP date", v)
			}
			if want := max(date.Sub(now), 0); d != want {
				t.Fatalf("%q gave %v, want %v", v, d, want)
			}
		}
		if r := RetryAfterOrBackoff(3, d, nil); r > max(MaxBackoff, MaxRetryAfter) || r < 0 {
			t.Fatalf("RetryAfterOrBackoff = %v", r)
		}
	})
}

// FuzzCheckURL checks, for any URL string (it is user input at subscription
// time):
//   - CheckURL never panics;
//   - a failure wraps ErrInvalidURL or is a *BlockedError;
//   - an accepted URL parses, is absolute https, has a host, no user
//     information, and a literal IP host that CheckAddr allows;
//   - an error never repeats the URL's query or user information.
func FuzzCheckURL(f *testing.F) {
	g, err := NewGuard(GuardConfig{})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		"https://example.com/hook", "https://user:pass@example.com/", "http://example.com/",
		"https://127.0.0.1/", "https://[::ffff:10.0.0.1]:8443/", "https://[fe80::1%25eth0]/",
		"https://2130706433/", "https://0x7f.1/", "https://localhost./", "https:///x",
		"https://exa mple.com/?token=abc", "https://example.com:99999/", "javascript:alert(1)",
		"https://127\u30020\u30020\u30021/", "https://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/",
		"https://169\uff0e254\uff0e169\uff0e254/", "https://b\u00fccher.example/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		err := g.CheckURL(raw)
		if err != nil {
			var be *BlockedError
			if !errors.Is(err, ErrInvalidURL) && !errors.As(err, &be) {
				t.Fatalf("CheckURL(%q) = %v: neither ErrInvalidURL nor *BlockedError", raw, err)
			}
			if u, perr := url.Parse(raw); perr == nil {
				for _, secret := range []string{u.RawQuery, u.User.String()} {
					if len(secret) >= 16 && strings.Contains(err.Error(), secret) {
						t.Fatalf("error %q repeats %q", err, secret)
					}
				}
			}
			return
		}
		u, perr := url.Parse(raw)
		if perr != nil {
			t.Fatalf("accepted %q, which does not parse: %v", raw, perr)
		}
		if u.Scheme != "https" || u.Hostname() == "" || u.User != nil || u.Opaque != "" {
			t.Fatalf("accepted %q: scheme %q host %q user %v", raw, u.Scheme, u.Hostname(), u.User)
		}
		if ip, err := netip.ParseAddr(u.Hostname()); err == nil && g.CheckAddr(ip) != nil {
			t.Fatalf("accepted %q with a blocked address", raw)
		}
		// The host net/http will dial (a non-ASCII name goes through IDNA
		// first) is no blocked literal either.
		if dialled, err := idna.Lookup.ToASCII(u.Hostname()); err == nil {
			if ip, err := netip.ParseAddr(dialled); err == nil && g.CheckAddr(ip) != nil {
				t.Fatalf("accepted %q, which net/http dials as the blocked %s", raw, ip)
			}
			if d := strings.ToLower(strings.TrimSuffix(dialled, ".")); d == "localhost" || strings.HasSuffix(d, ".localhost") {
				t.Fatalf("accepted %q, which net/http dials as %s", raw, d)
			}
		}
	})
}
