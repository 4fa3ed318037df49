package match_test

import (
	"errors"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/match"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/store"
	"github.com/outflow-dev/outflow/webhook"
)

// TestSigningSecrets checks that the secrets decoded once at Compile sign as
// the stored secrets Active at the same moment would, decoded per request:
// the current one, then the previous ones whose overlap lasts; and that a
// secret that does not decode is an error only while it would sign.
func TestSigningSecrets(t *testing.T) {
	t.Parallel()
	const (
		cur  = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
		old1 = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
		old2 = "whsec_dGhpcyBpcyBhIHRlc3Qgc2VjcmV0IGtleSE="
		bad  = "whsec_not*base64"
	)
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	later, earlier := now.Add(time.Hour), now.Add(-time.Second)
	for _, tc := range []struct {
		name    string
		secrets store.Secrets
		want    int  // secrets that sign at now
		wantErr bool // ErrInvalidSecret
	}{
		{"current only", store.Secrets{Current: cur}, 1, false},
		{"one overlapping", store.Secrets{Current: cur, Previous: []store.PreviousSecret{{Secret: old1, ExpireTime: later}}}, 2, false},
		{"two overlapping", store.Secrets{Current: cur, Previous: []store.PreviousSecret{
			{Secret: old1, ExpireTime: later}, {Secret: old2, ExpireTime: later}}}, 3, false},
		{"one expired", store.Secrets{Current: cur, Previous: []store.PreviousSecret{
			{Secret: old1, ExpireTime: later}, {Secret: old2, ExpireTime: earlier}}}, 2, false},
		{"expiring now", store.Secrets{Current: cur, Previous: []store.PreviousSecret{{Secret: old1, ExpireTime: now}}}, 1, false},
		{"an empty previous", store.Secrets{Current: cur, Previous: []store.PreviousSecret{{ExpireTime: later}}}, 1, false},
		{"an invalid expired one", store.Secrets{Current: cur, Previous: []store.PreviousSecret{{Secret: bad, ExpireTime: earlier}}}, 1, false},
		{"an invalid overlapping one", store.Secrets{Current: cur, Previous: []store.PreviousSecret{{Secret: bad, ExpireTime: later}}}, 0, true},
		{"an invalid current one", store.Secrets{Current: bad}, 0, true},
		{"no current one", store.Secrets{}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			compiled := match.Compile(nil, &store.Subscription{Secrets: tc.secrets,
				Proto: &outflowv1.Subscription{Id: "sub_1", State: outflowv1.Subscription_ACTIVE}})
			// A Subscription not made by Compile decodes them on the spot.
			literal := &match.Subscription{ID: "sub_1", Secrets: tc.secrets}
			for _, sub := range []*match.Subscription{compiled, literal} {
				got, err := sub.SigningSecrets(nil, now)
				if tc.wantErr {
					if !errors.Is(err, webhook.ErrInvalidSecret) {
						t.Errorf("SigningSecrets = %d secrets, %v; want ErrInvalidSecret", len(got), err)
					}
					continue
				}
				if err != nil || len(got) != tc.want {
					t.Fatalf("SigningSecrets = %d secrets, %v; want %d", len(got), err, tc.want)
				}
				var want []webhook.Secret
				for _, s := range tc.secrets.Active(now) {
					sec, err := webhook.ParseSecret(s)
					if err != nil {
						t.Fatal(err)
					}
					want = append(want, sec)
				}
				body := []byte(`{"id":"evt_1"}`)
				if g, w := webhook.Sign(got, "evt_1", now, body), webhook.Sign(want, "evt_1", now, body); g != w {
					t.Errorf("signature %q, want %q (the Active secrets, in order)", g, w)
				}
			}
		})
	}
}

// TestSigningSecretsAllocatesNothing checks that a request's secrets come
// from the decoded ones without an allocation when buf has room.
func TestSigningSecretsAllocatesNothing(t *testing.T) {
	sub := match.Compile(nil, &store.Subscription{
		Secrets: store.Secrets{Current: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", Previous: []store.PreviousSecret{
			{Secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", ExpireTime: time.Now().Add(time.Hour)}}},
		Proto: &outflowv1.Subscription{Id: "sub_1"}})
	var buf [2]webhook.Secret
	now := time.Now()
	if n := testing.AllocsPerRun(100, func() {
		if got, err := sub.SigningSecrets(buf[:0], now); err != nil || len(got) != 2 {
			t.Fatalf("SigningSecrets = %d, %v", len(got), err)
		}
	}); n != 0 {
		t.Errorf("SigningSecrets allocates %.0f times per call, want 0", n)
	}
}
