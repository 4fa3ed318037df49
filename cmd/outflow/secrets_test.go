package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outflow-dev/outflow/internal/testenv"
	outflowv1 "github.com/outflow-dev/outflow/proto/outflow/v1"
	"github.com/outflow-dev/outflow/store"
)

// TestSecretsRotateKey: `outflow secrets rotate-key` encrypts rows written
// in plaintext before encryption at rest and moves rows of the old key to the
// new one; afterwards the new key alone reads every secret.
func TestSecretsRotateKey(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := testenv.Postgres(t)
	runOutflow(t, url, "migrate")
	oldKey := runOutflow(t, url, "secrets", "generate-key", "--id", "old")
	newKey := runOutflow(t, url, "secrets", "generate-key", "--id", "new")

	pool, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	oldRing, err := store.ParseSecretKeys(oldKey)
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(pool, store.WithSecretKeys(oldRing))
	key, _, err := st.CreateAPIKey(ctx, "t", "k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateSubscription(ctx, key.TenantID, newSubProto("sub_enc", "enc"), "whsec_encrypted", 10); err != nil {
		t.Fatal(err)
	}
	// Written in plaintext, as before migration 004's encryption at rest.
	if _, err := store.New(pool).CreateSubscription(ctx, key.TenantID, newSubProto("sub_plain", "plain"), "whsec_plaintext", 10); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(outflowBinary(t), "secrets", "rotate-key")
	cmd.Env = append(os.Environ(), "OUTFLOW_DATABASE_URL="+url, "OUTFLOW_SECRET_KEYS="+newKey+","+oldKey)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("secrets rotate-key: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "2 subscriptions with key new") {
		t.Errorf("rotate-key said %q", stdout.String())
	}
	if strings.Contains(stdout.String()+stderr.String(), strings.SplitN(newKey, ":", 2)[1]) {
		t.Error("rotate-key printed key material")
	}

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT id, secret FROM subscriptions ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct{ ID, Secret string }])
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range stored {
		if !strings.HasPrefix(r.Secret, "v1:new:") {
			t.Errorf("%s stored as %q, want encrypted with key new", r.ID, r.Secret)
		}
	}
	newRing, _ := store.ParseSecretKeys(newKey)
	for id, want := range map[string]string{"sub_enc": "whsec_encrypted", "sub_plain": "whsec_plaintext"} {
		sub, err := store.New(pool, store.WithSecretKeys(newRing)).SubscriptionByID(ctx, id)
		if err != nil || sub.Secrets.Current != want {
			t.Errorf("%s with the new key alone: %v, %v", id, sub, err)
		}
	}
}

func newSubProto(id, name string) *outflowv1.Subscription {
	return &outflowv1.Subscription{Id: id, Name: name, FeatureViewNames: []string{"fv"}, State: outflowv1.Subscription_ACTIVE,
		Target: &outflowv1.Subscription_Stream{Stream: &outflowv1.StreamTarget{}}}
}
