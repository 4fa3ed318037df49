package webhook_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/outflow-dev/outflow/webhook"
)

// The Standard Webhooks test vector, shared by the reference libraries in
// every language.
const (
	vectorSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTimestamp = 1614265330
	vectorPayload   = `{"test": 2432232314}`
	vectorSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func mustSecret(t testing.TB, s string) webhook.Secret {
	t.Helper()
	sec, err := webhook.ParseSecret(s)
	if err != nil {
		t.Fatalf("ParseSecret: %v", err)
	}
	return sec
}

func encodedSecret(n int, fill byte) string {
	return webhook.SecretPrefix + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{fill}, n))
}

func TestParseSecret(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		in    string
		valid bool
	}{
		{"vector, 24 bytes", vectorSecret, true},
		{"32 bytes", encodedSecret(32, 7), true},
		{"64 bytes", encodedSecret(64, 9), true},
		{"23 bytes", encodedSecret(23, 1), false},
		{"65 bytes", encodedSecret(65, 1), false},
		{"no prefix", strings.TrimPrefix(vectorSecret, "whsec_"), false},
		{"wrong prefix case", "WHSEC_" + strings.TrimPrefix(vectorSecret, "whsec_"), false},
		{"empty", "", false},
		{"prefix only", "whsec_", false},
		{"url-safe alphabet", webhook.SecretPrefix + base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32)), false},
		{"missing padding", strings.TrimRight(encodedSecret(32, 3), "="), false},
		{"non-canonical padding bits", webhook.SecretPrefix + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=", false},
		{"line break", encodedSecret(32, 3)[:20] + "\n" + encodedSecret(32, 3)[20:], false},
		{"space", encodedSecret(32, 3)[:20] + " " + encodedSecret(32, 3)[21:], false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := webhook.ParseSecret(tt.in)
			if tt.valid {
				if err != nil {
					t.Fatalf("ParseSecret: %v", err)
				}
				if s.IsZero() {
					t.Fatal("valid secret parsed to zero Secret")
				}
				return
			}
			if !errors.Is(err, webhook.ErrInvalidSecret) {
				t.Fatalf("error = %v, want ErrInvalidSecret", err)
			}
			if enc := strings.TrimPrefix(tt.in, "whsec_"); len(enc) >= 8 && strings.Contains(err.Error(), enc) {
				t.Fatalf("error %q repeats the secret", err)
			}
		})
	}
}

func TestGenerateSecret(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		n         int
		wantBytes int
		wantErr   bool
	}{
		{"default", 0, 32, false},
		{"min", 24, 24, false},
		{"max", 64, 64, false},
		{"too small", 23, 0, true},
		{"too large", 65, 0, true},
		{"negative", -1, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := webhook.GenerateSecret(nil, tt.n)
			if tt.wantErr {
				if !errors.Is(err, webhook.ErrInvalidSecret) {
					t.Fatalf("error = %v, want ErrInvalidSecret", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("GenerateSecret: %v", err)
			}
			key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whsec_"))
			if err != nil || !strings.HasPrefix(s, "whsec_") || len(key) != tt.wantBytes {
				t.Fatalf("GenerateSecret = %q (%d bytes, %v), want whsec_ + %d bytes", s, len(key), err, tt.wantBytes)
			}
			if _, err := webhook.ParseSecret(s); err != nil {
				t.Fatalf("generated secret does not parse: %v", err)
			}
		})
	}

	t.Run("deterministic reader", func(t *testing.T) {
		t.Parallel()
		s, err := webhook.GenerateSecret(bytes.NewReader(bytes.Repeat([]byte{1}, 32)), 32)
		if err != nil || s != encodedSecret(32, 1) {
			t.Fatalf("GenerateSecret = %q, %v; want %q", s, err, encodedSecret(32, 1))
		}
	})
	t.Run("short reader", func(t *testing.T) {
		t.Parallel()
		if _, err := webhook.GenerateSecret(bytes.NewReader(make([]byte, 10)), 32); err == nil {
			t.Fatal("GenerateSecret with a short reader succeeded")
		}
	})
}

func TestSignKnownAnswer(t *testing.T) {
	t.Parallel()
	got := webhook.Sign([]webhook.Secret{mustSecret(t, vectorSecret)}, vectorID, time.Unix(vectorTimestamp, 0), []byte(vectorPayload))
	if got != vectorSignature {
		t.Fatalf("Sign = %q, want %q", got, vectorSignature)
	}
}

func TestSignVerifiesWithReferenceLibrary(t *testing.T) {
	t.Parallel()
	oldSecret, newSecret := encodedSecret(32, 0xa1), encodedSecret(48, 0x5c)
	otherSecret := encodedSecret(32, 0x77)
	tests := []struct {
		name    string
		signing []string
		verify  string
		valid   bool
	}{
		{"one secret", []string{newSecret}, newSecret, true},
		{"two secrets, verify with the new", []string{newSecret, oldSecret}, newSecret, true},
		{"two secrets, verify with the old", []string{newSecret, oldSecret}, oldSecret, true},
		{"two secrets, unrelated verifier", []string{newSecret, oldSecret}, otherSecret, false},
		{"one secret, unrelated verifier", []string{newSecret}, otherSecret, false},
	}
	body := []byte(`{"id":"evt_1","type":"feature_view.output","record":{"entity_keys":{"user_id":"u1"}}}`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var secrets []webhook.Secret
			for _, s := range tt.signing {
				secrets = append(secrets, mustSecret(t, s))
			}
			ts := time.Now()
			sig := webhook.Sign(secrets, "evt_1", ts, body)
			if n := len(strings.Fields(sig)); n != len(tt.signing) {
				t.Fatalf("Sign gave %d signatures, want %d: %q", n, len(tt.signing), sig)
			}
			h := http.Header{}
			h.Set(standardwebhooks.HeaderWebhookID, "evt_1")
			h.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(ts.Unix(), 10))
			h.Set(standardwebhooks.HeaderWebhookSignature, sig)
			wh, err := standardwebhooks.NewWebhook(tt.verify)
			if err != nil {
				t.Fatalf("NewWebhook: %v", err)
			}
			err = wh.Verify(body, h)
			if tt.valid && err != nil {
				t.Fatalf("reference Verify: %v", err)
			}
			if !tt.valid && err == nil {
				t.Fatal("reference Verify accepted a signature made with other secrets")
			}
			// A changed body must never verify.
			if err := wh.Verify(append(bytes.Clone(body), ' '), h); err == nil {
				t.Fatal("reference Verify accepted a changed body")
			}
		})
	}
}

func TestSignSkipsZeroSecrets(t *testing.T) {
	t.Parallel()
	if got := webhook.Sign(nil, "id", time.Unix(1, 0), nil); got != "" {
		t.Fatalf("Sign(nil) = %q, want empty", got)
	}
	one := mustSecret(t, vectorSecret)
	want := webhook.Sign([]webhook.Secret{one}, "id", time.Unix(1, 0), nil)
	if got := webhook.Sign([]webhook.Secret{{}, one, {}}, "id", time.Unix(1, 0), nil); got != want {
		t.Fatalf("Sign with zero secrets = %q, want %q", got, want)
	}
}

func TestSecretRedaction(t *testing.T) {
	t.Parallel()
	s := mustSecret(t, vectorSecret)
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(vectorSecret, "whsec_"))

	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "secret", s, slog.Any("any", s))
	js, err := json.Marshal(struct{ S webhook.Secret }{s})
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	outputs := map[string]string{
		"String":        s.String(),
		"%v":            fmt.Sprintf("%v", s),
		"%+v":           fmt.Sprintf("%+v", s),
		"%#v":           fmt.Sprintf("%#v", s),
		"%s":            fmt.Sprintf("%s", s),
		"%d":            fmt.Sprintf("%d", s),
		"%x":            fmt.Sprintf("%x", s),
		"%q":            fmt.Sprintf("%q", s),
		"in slice":      fmt.Sprintf("%v", []webhook.Secret{s}),
		"in struct %+v": fmt.Sprintf("%+v", struct{ S webhook.Secret }{s}),
		"in struct %#v": fmt.Sprintf("%#v", struct{ S webhook.Secret }{s}),
		"slog":          logged.String(),
		"json":          string(js),
	}
	forms := []string{
		strings.TrimPrefix(vectorSecret, "whsec_"),
		fmt.Sprintf("%x", raw),
		fmt.Sprintf("%v", raw),
		string(raw),
	}
	for name, out := range outputs {
		for _, f := range forms {
			if strings.Contains(out, f) {
				t.Errorf("%s output %q contains the secret", name, out)
			}
		}
	}
	if !strings.Contains(outputs["slog"], "[redacted]") || outputs["String"] != "[redacted]" {
		t.Errorf("redaction marker missing: %q, %q", outputs["slog"], outputs["String"])
	}
}

// TestSignLongIDVerifies: an event id longer than Sign's stack buffer for
// the "{id}.{ts}." prefix still signs what the reference library verifies.
func TestSignLongIDVerifies(t *testing.T) {
	t.Parallel()
	secret := encodedSecret(32, 0xa1)
	id := "evt_" + strings.Repeat("x", 300)
	body := []byte(`{"id":"` + id + `"}`)
	ts := time.Now()
	h := http.Header{}
	h.Set(standardwebhooks.HeaderWebhookID, id)
	h.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(standardwebhooks.HeaderWebhookSignature, webhook.Sign([]webhook.Secret{mustSecret(t, secret)}, id, ts, body))
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatalf("NewWebhook: %v", err)
	}
	if err := wh.Verify(body, h); err != nil {
		t.Fatalf("reference Verify: %v", err)
	}
}
