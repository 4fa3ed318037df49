package webhook

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// SecretPrefix starts every webhook signing secret, as in the Standard
// Webhooks specification, so a secret is recognisable in a configuration file
// and secret scanners can find it.
const SecretPrefix = "whsec_"

// Bounds and default for the number of random bytes in a signing secret. The
// Standard Webhooks specification asks for 24 to 64 bytes; 32 bytes (256 bits)
// matches the HMAC-SHA256 block of security and is the default.
const (
	MinSecretBytes     = 24
	MaxSecretBytes     = 64
	DefaultSecretBytes = 32
)

// redacted replaces a secret wherever it would otherwise be printed.
const redacted = "[redacted]"

// ErrInvalidSecret is wrapped by every error of [ParseSecret] and
// [GenerateSecret] about the secret's form or size. Its messages never contain
// the secret or any part of it.
var ErrInvalidSecret = errors.New("invalid webhook secret")

// Secret is a decoded webhook signing key. Its zero value holds no key and
// signs nothing. It cannot be printed, logged or marshalled by accident:
// String, GoString, Format and LogValue all print "[redacted]", and it has no
// exported fields for encoding/json to write. Store and return the "whsec_"
// string it was parsed from instead.
type Secret struct {
	// key is a string, not a []byte, so copies of a Secret share nothing
	// mutable.
	key string
}

// ParseSecret decodes a secret of the form "whsec_" followed by the standard
// (padded) base64 encoding of 24 to 64 bytes. The prefix is required, and the
// encoding must be canonical, so a stored secret has exactly one spelling.
// Errors wrap [ErrInvalidSecret] and never repeat the input.
func ParseSecret(s string) (Secret, error) {
	encoded, ok := strings.CutPrefix(s, SecretPrefix)
	if !ok {
		return Secret{}, fmt.Errorf("%w: missing %q prefix", ErrInvalidSecret, SecretPrefix)
	}
	// Every decoded length in range has an encoded length in this range; check
	// before decoding so hostile input costs nothing.
	if len(encoded) < base64.StdEncoding.EncodedLen(MinSecretBytes) ||
		len(encoded) > base64.StdEncoding.EncodedLen(MaxSecretBytes) {
		return Secret{}, fmt.Errorf("%w: must encode %d to %d bytes", ErrInvalidSecret, MinSecretBytes, MaxSecretBytes)
	}
	// encoding/base64 silently skips '\r' and '\n'; refuse them so the
	// encoding stays canonical.
	if strings.ContainsAny(encoded, "\r\n") {
		return Secret{}, fmt.Errorf("%w: line breaks in base64", ErrInvalidSecret)
	}
	key, err := base64.StdEncoding.Strict().DecodeString(encoded)
	if err != nil {
		// A base64.CorruptInputError reports only an offset, never the data.
		return Secret{}, fmt.Errorf("%w: not standard base64: %w", ErrInvalidSecret, err)
	}
	if len(key) < MinSecretBytes || len(key) > MaxSecretBytes {
		return Secret{}, fmt.Errorf("%w: decodes to %d bytes, want %d to %d",
			ErrInvalidSecret, len(key), MinSecretBytes, MaxSecretBytes)
	}
	return Secret{key: string(key)}, nil
}

// GenerateSecret returns a new secret, "whsec_" followed by the standard
// base64 encoding of n bytes read from r. n of 0 means [DefaultSecretBytes]
// (32); otherwise n must lie in [MinSecretBytes, MaxSecretBytes] (24 to 64). A
// nil r means crypto/rand.Reader; tests pass a deterministic reader. The API
// server calls this on create and on rotate, and returns the string once.
func GenerateSecret(r io.Reader, n int) (string, error) {
	if n == 0 {
		n = DefaultSecretBytes
	}
	if n < MinSecretBytes || n > MaxSecretBytes {
		return "", fmt.Errorf("%w: size %d bytes, want %d to %d", ErrInvalidSecret, n, MinSecretBytes, MaxSecretBytes)
	}
	if r == nil {
		r = rand.Reader
	}
	key := make([]byte, n)
	if _, err := io.ReadFull(r, key); err != nil {
		return "", fmt.Errorf("generate webhook secret: read random bytes: %w", err)
	}
	return SecretPrefix + base64.StdEncoding.EncodeToString(key), nil
}

// IsZero reports whether s holds no key, as the zero Secret does. [Sign]
// skips such secrets.
func (s Secret) IsZero() bool { return s.key == "" }

// String returns "[redacted]" so a Secret never reaches a log or an error.
func (s Secret) String() string { return redacted }

// GoString returns "[redacted]" so %#v does not print the key either.
func (s Secret) GoString() string { return redacted }

// Format prints "[redacted]" for every verb. Without it, verbs such as %d
// or %x would print the key's bytes through reflection.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// LogValue makes log/slog print "[redacted]" in place of the key.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// Sign returns the value of the Standard Webhooks "webhook-signature" header
// for one attempt: "v1,<base64 HMAC-SHA256>" of "{id}.{ts in unix
// seconds}.{body}", keyed with each secret's decoded bytes. With several
// secrets (a rotated secret still inside its overlap window, SPEC §5) it
// returns one signature per secret, separated by single spaces, in the order
// given; a receiver holding either secret accepts the request. Zero secrets
// are skipped; with no usable secret the result is "".
func Sign(secrets []Secret, id string, ts time.Time, body []byte) string {
	return sign(nil, secrets, id, ts, body)
}

// sign is Sign with its HMAC states from macs (nil: new ones).
func sign(macs *macCache, secrets []Secret, id string, ts time.Time, body []byte) string {
	// The signed content is "{id}.{ts}.{body}": the prefix and the body are
	// written to the MAC one after the other, so the body (the bulk of it)
	// is never copied.
	var buf [128]byte
	prefix := append(buf[:0], id...)
	prefix = append(prefix, '.')
	prefix = strconv.AppendInt(prefix, ts.Unix(), 10)
	prefix = append(prefix, '.')

	const sigLen = len("v1,") + (sha256.Size+2)/3*4 // 47
	out := make([]byte, 0, len(secrets)*(sigLen+1))
	var sum [sha256.Size]byte
	for _, s := range secrets {
		if s.IsZero() {
			continue
		}
		mac, pool := macs.get(s.key)
		mac.Write(prefix)
		mac.Write(body)
		if len(out) > 0 {
			out = append(out, ' ')
		}
		out = append(out, "v1,"...)
		out = base64.StdEncoding.AppendEncode(out, mac.Sum(sum[:0]))
		macs.put(pool, mac)
	}
	return string(out)
}

// scrubForms returns the printable forms of s that a receiver could echo
// back in a response body: the encoded secret, with and without its prefix.
func (s Secret) scrubForms() []string {
	if s.IsZero() {
		return nil
	}
	enc := base64.StdEncoding.EncodeToString([]byte(s.key))
	return []string{SecretPrefix + enc, enc}
}
