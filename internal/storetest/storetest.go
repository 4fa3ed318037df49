// Package storetest gives a test a Store over its own freshly migrated
// database on the test environment's PostgreSQL (see internal/testenv).
package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outflow-dev/outflow/internal/testenv"
	"github.com/outflow-dev/outflow/migrations"
	"github.com/outflow-dev/outflow/store"
)

// DB is a migrated database that lives as long as the test.
type DB struct {
	// URL connects to the database.
	URL string
	// Conn is a direct connection, for tests that check rows themselves.
	Conn *pgx.Conn
	// Store reads and writes through a pool of its own, encrypting webhook
	// secrets with Keys as the gateway does.
	Store *store.Store
	// Keys is a random key ring of one key, "test"; KeySpec writes it as
	// store.ParseSecretKeys reads it.
	Keys    *store.SecretKeys
	KeySpec string
}

// New creates the database, applies every migration and opens a Store;
// everything is closed and dropped when the test ends.
func New(t testing.TB) *DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := testenv.Postgres(t)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	if _, err := migrations.Up(ctx, conn, migrations.Options{}); err != nil {
		t.Fatal(err)
	}
	pool, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	spec, err := store.GenerateSecretKey("test")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := store.ParseSecretKeys(spec)
	if err != nil {
		t.Fatal(err)
	}
	return &DB{URL: url, Conn: conn, Store: store.New(pool, store.WithSecretKeys(keys)), Keys: keys, KeySpec: spec}
}
