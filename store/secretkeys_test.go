package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outflow-dev/outflow/internal/storetest"
	"github.com/outflow-dev/outflow/store"
)

// TestEveryRotationKeepsItsOverlap: after several rotations in a row, every
// secret rotated out within the overlap still signs, each until its own
// expiry; past MaxPreviousSecrets overlapping ones, rotation is refused
// rather than cutting an overlap short.
func TestEveryRotationKeepsItsOverlap(t *testing.T) {
	t.Parallel()
	st := setup(t)
	ctx := context.Background()
	key, _, _ := st.CreateAPIKey(ctx, "t", "k")
	if _, err := st.CreateSubscription(ctx, key.TenantID, newSub("sub_r", "r"), "whsec_0", 10); err != nil {
		t.Fatal(err)
	}
	var rotated *store.Subscription
	for i := 1; i <= 3; i++ {
		var err error
		if rotated, err = st.RotateSecret(ctx, key.TenantID, "sub_r", fmt.Sprintf("whsec_%d", i), time.Duration(i)*time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	for _, tc := range []struct {
		at   time.Time
		want string
	}{
		{now, "whsec_3 whsec_2 whsec_1 whsec_0"},
		{now.Add(90 * time.Minute), "whsec_3 whsec_2 whsec_1"}, // whsec_0's hour is over
		{now.Add(150 * time.Minute), "whsec_3 whsec_2"},
		{now.Add(4 * time.Hour), "whsec_3"},
	} {
		if got := strings.Join(rotated.Secrets.Active(tc.at), " "); got != tc.want {
			t.Errorf("active at +%s = %s, want %s", tc.at.Sub(now).Round(time.Minute), got, tc.want)
		}
	}
	again, err := st.GetSubscription(ctx, key.TenantID, "sub_r")
	if err != nil || !again.Secrets.Equal(rotated.Secrets) {
		t.Errorf("read back = %+v, %v; want %+v", again.Secrets, err, rotated.Secrets)
	}

	for i := 4; i <= store.MaxPreviousSecrets; i++ {
		if _, err := st.RotateSecret(ctx, key.TenantID, "sub_r", fmt.Sprintf("whsec_%d", i), time.Hour); err != nil {
			t.Fatalf("rotation %d: %v", i, err)
		}
	}
	if _, err := st.RotateSecret(ctx, key.TenantID, "sub_r", "whsec_x", time.Hour); !errors.Is(err, store.ErrLimitExceeded) {
		t.Errorf("rotation %d: %v, want ErrLimitExceeded", store.MaxPreviousSecrets+1, err)
	}
	// Expired ones make room: a zero overlap expires at once.
	st2 := setup(t)
	key2, _, _ := st2.CreateAPIKey(ctx, "t", "k")
	if _, err := st2.CreateSubscription(ctx, key2.TenantID, newSub("sub_z", "z"), "whsec_0", 10); err != nil {
		t.Fatal(err)
	}
	for i := range store.MaxPreviousSecrets + 5 {
		if _, err := st2.RotateSecret(ctx, key2.TenantID, "sub_z", fmt.Sprintf("whsec_%d", i+1), 0); err != nil {
			t.Fatalf("rotation %d with no overlap: %v", i+1, err)
		}
	}
}

// TestSecretsEncryptedAtRest: the database holds no secret in plaintext, each
// value names its key; rows from before encryption stay readable; a store
// without the key cannot read them; ReencryptSecrets moves every row (legacy
// plaintext included) to the new primary key without touching revisions.
func TestSecretsEncryptedAtRest(t *testing.T) {
	t.Parallel()
	db := storetest.New(t)
	st := db.Store
	ctx := context.Background()
	key, _, _ := st.CreateAPIKey(ctx, "t", "k")
	if _, err := st.CreateSubscription(ctx, key.TenantID, newSub("sub_e", "e"), "whsec_first", 10); err != nil {
		t.Fatal(err)
	}
	if _, err := st.RotateSecret(ctx, key.TenantID, "sub_e", "whsec_second", time.Hour); err != nil {
		t.Fatal(err)
	}
	// A row written before encryption at rest, as migration 004 leaves it.
	if _, err := db.Conn.Exec(ctx, `INSERT INTO subscriptions (id, tenant_id, name, feature_view_names, spec, state, secret, previous_secrets)
		VALUES ('sub_legacy', $1, 'legacy', '{fv}', '{"stream": {}}', 'ACTIVE', 'whsec_plain',
		        jsonb_build_array(jsonb_build_object('secret', 'whsec_older', 'expire_time', now() + interval '1 hour')))`, key.TenantID); err != nil {
		t.Fatal(err)
	}
	stored := func() map[string]string {
		t.Helper()
		rows, err := db.Conn.Query(ctx, `SELECT id, secret || ' ' || previous_secrets::text FROM subscriptions`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string]string{}
		for rows.Next() {
			var id, v string
			if err := rows.Scan(&id, &v); err != nil {
				t.Fatal(err)
			}
			out[id] = v
		}
		return out
	}
	raw := stored()
	if v := raw["sub_e"]; strings.Contains(v, "whsec_") || !strings.HasPrefix(v, "v1:test:") || !strings.Contains(v, `"v1:test:`) {
		t.Errorf("stored secrets of sub_e = %s, want both encrypted with key test", v)
	}
	for id, want := range map[string]string{"sub_e": "whsec_second whsec_first", "sub_legacy": "whsec_plain whsec_older"} {
		sub, err := st.SubscriptionByID(ctx, id)
		if err != nil || strings.Join(sub.Secrets.Active(time.Now()), " ") != want {
			t.Errorf("%s: %v, %v; want %s", id, sub, err, want)
		}
	}
	// Another key cannot read them, and says so without key material.
	other, _ := store.GenerateSecretKey("other")
	otherKeys, _ := store.ParseSecretKeys(other)
	if _, err := store.New(st.PoolForTest(), store.WithSecretKeys(otherKeys)).SubscriptionByID(ctx, "sub_e"); !errors.Is(err, store.ErrSecretKey) {
		t.Errorf("reading with another key: %v, want ErrSecretKey", err)
	}
	if _, err := store.New(st.PoolForTest()).SubscriptionByID(ctx, "sub_e"); !errors.Is(err, store.ErrSecretKey) {
		t.Errorf("reading without keys: %v, want ErrSecretKey", err)
	}

	// Rotate the key: new one first, old one kept for reading.
	next, _ := store.GenerateSecretKey("next")
	both, err := store.ParseSecretKeys(next + "," + db.KeySpec)
	if err != nil {
		t.Fatal(err)
	}
	var revBefore int64
	_ = db.Conn.QueryRow(ctx, `SELECT revision FROM subscriptions WHERE id = 'sub_e'`).Scan(&revBefore)
	moved := store.New(st.PoolForTest(), store.WithSecretKeys(both))
	if n, err := moved.ReencryptSecrets(ctx); err != nil || n != 2 {
		t.Fatalf("ReencryptSecrets = %d, %v; want 2 rows", n, err)
	}
	if n, err := moved.ReencryptSecrets(ctx); err != nil || n != 0 {
		t.Errorf("ReencryptSecrets again = %d, %v; want 0", n, err)
	}
	for id, v := range stored() {
		if strings.Contains(v, "whsec_") || strings.Contains(v, "v1:test:") || !strings.HasPrefix(v, "v1:next:") {
			t.Errorf("%s after re-encryption: %s, want only key next", id, v)
		}
	}
	var revAfter int64
	_ = db.Conn.QueryRow(ctx, `SELECT revision FROM subscriptions WHERE id = 'sub_e'`).Scan(&revAfter)
	if revAfter != revBefore {
		t.Errorf("revision %d → %d: re-encryption must not change etags", revBefore, revAfter)
	}
	nextOnly, _ := store.ParseSecretKeys(next)
	for id, want := range map[string]string{"sub_e": "whsec_second whsec_first", "sub_legacy": "whsec_plain whsec_older"} {
		sub, err := store.New(st.PoolForTest(), store.WithSecretKeys(nextOnly)).SubscriptionByID(ctx, id)
		if err != nil || strings.Join(sub.Secrets.Active(time.Now()), " ") != want {
			t.Errorf("%s with only the new key: %v, %v; want %s", id, sub, err, want)
		}
	}
}

func TestParseSecretKeys(t *testing.T) {
	t.Parallel()
	good, _ := store.GenerateSecretKey("k1")
	material := strings.SplitN(good, ":", 2)[1]
	for _, tc := range []struct {
		spec    string
		wantErr bool
		primary string
	}{
		{good, false, "k1"},
		{"k2:" + strings.TrimRight(material, "=") + " , " + good, false, "k2"}, // unpadded, spaces
		{"", true, ""},
		{"k1", true, ""},
		{"k1:" + material + "," + good, true, ""}, // id twice
		{"bad id:" + material, true, ""},
		{"k1:c2hvcnQ=", true, ""}, // 5 bytes
		{"k1:!!!", true, ""},
	} {
		keys, err := store.ParseSecretKeys(tc.spec)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseSecretKeys(%q) error = %v, want error %v", tc.spec, err, tc.wantErr)
			continue
		}
		if err != nil {
			if !errors.Is(err, store.ErrSecretKey) || strings.Contains(err.Error(), material) {
				t.Errorf("ParseSecretKeys(%q) error = %v: must wrap ErrSecretKey and not repeat key material", tc.spec, err)
			}
			continue
		}
		if keys.Primary() != tc.primary {
			t.Errorf("primary = %s, want %s", keys.Primary(), tc.primary)
		}
		for _, s := range []string{keys.String(), fmt.Sprintf("%v %+v %#v %s", keys, keys, keys, keys), keys.LogValue().String()} {
			if strings.Contains(s, material) || strings.Contains(s, strings.TrimRight(material, "=")) {
				t.Errorf("formatted keys show key material: %s", s)
			}
		}
	}
}

// FuzzParseSecretKeys: ParseSecretKeys never panics, and its errors wrap
// ErrSecretKey and never repeat the input's key material (anything after an
// id's colon, unless the same text is also an id, which errors name).
func FuzzParseSecretKeys(f *testing.F) {
	good, _ := store.GenerateSecretKey("k1")
	for _, s := range []string{good, good + "," + good, "", ":", "k:", ",,", "k1:AAAA", "k1:" + strings.Repeat("A", 43)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		_, err := store.ParseSecretKeys(spec)
		if err == nil {
			return
		}
		if !errors.Is(err, store.ErrSecretKey) {
			t.Fatalf("error %v does not wrap ErrSecretKey", err)
		}
		// Errors name ids; take them out before looking for material.
		text := err.Error()
		parts := strings.Split(spec, ",")
		for _, part := range parts {
			if id, _, ok := strings.Cut(strings.TrimSpace(part), ":"); ok && id != "" {
				text = strings.ReplaceAll(text, id, "")
			}
		}
		for _, part := range parts {
			if _, material, ok := strings.Cut(strings.TrimSpace(part), ":"); ok && len(material) >= 8 && strings.Contains(text, material) {
				t.Fatalf("error %q repeats key material %q", err, material)
			}
		}
	})
}
