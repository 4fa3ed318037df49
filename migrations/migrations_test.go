package migrations_test

import (
	"context"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outflow-dev/outflow/internal/testenv"
	"github.com/outflow-dev/outflow/migrations"
)

func connect(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func tables(t *testing.T, conn *pgx.Conn) map[string]bool {
	t.Helper()
	rows, err := conn.Query(context.Background(),
		`SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, n := range names {
		out[n] = true
	}
	return out
}

func TestUpDownUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := connect(t)
	all, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	latest := all[len(all)-1].Version

	applied, err := migrations.Up(ctx, conn, migrations.Options{})
	if err != nil {
		t.Fatalf("up: %v", err)
	}
	if len(applied) != len(all) {
		t.Fatalf("up applied %v, want all %d migrations", applied, len(all))
	}
	for _, want := range []string{"tenants", "api_keys", "subscriptions", "server_keys"} {
		if !tables(t, conn)[want] {
			t.Errorf("after up, table %s is missing", want)
		}
	}
	if v, err := migrations.Version(ctx, conn); err != nil || v != latest {
		t.Fatalf("Version = %d, %v; want %d", v, err, latest)
	}
	if again, err := migrations.Up(ctx, conn, migrations.Options{}); err != nil || len(again) != 0 {
		t.Fatalf("second up = %v, %v; want nothing to do", again, err)
	}

	undone, err := migrations.Down(ctx, conn, 0, migrations.Options{})
	if err != nil {
		t.Fatalf("down: %v", err)
	}
	if len(undone) != len(all) {
		t.Fatalf("down undid %v, want all %d", undone, len(all))
	}
	if left := tables(t, conn); len(left) != 0 {
		t.Fatalf("after down, tables remain: %v", left)
	}
	if v, err := migrations.Version(ctx, conn); err != nil || v != 0 {
		t.Fatalf("Version after down = %d, %v; want 0", v, err)
	}

	if _, err := migrations.Up(ctx, conn, migrations.Options{}); err != nil {
		t.Fatalf("up again: %v", err)
	}
	if !tables(t, conn)["subscriptions"] {
		t.Fatal("after up again, subscriptions is missing")
	}
}

func TestConcurrentRunnersApplyOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testenv.Postgres(t)
	const runners = 4
	var wg sync.WaitGroup
	results := make([][]int, runners)
	errs := make([]error, runners)
	for i := range runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				errs[i] = err
				return
			}
			defer conn.Close(ctx)
			results[i], errs[i] = migrations.Up(ctx, conn, migrations.Options{})
		}()
	}
	wg.Wait()
	total := 0
	for i := range runners {
		if errs[i] != nil {
			t.Fatalf("runner %d: %v", i, errs[i])
		}
		total += len(results[i])
	}
	all, _ := migrations.All()
	if total != len(all) {
		t.Fatalf("runners applied %d migrations in all, want each of the %d exactly once", total, len(all))
	}
}

func TestFailedMigrationLeavesNoTrace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn := connect(t)
	if _, err := migrations.Up(ctx, conn, migrations.Options{}); err != nil {
		t.Fatal(err)
	}
	before, _ := migrations.Version(ctx, conn)
	// A migration whose second statement fails must not leave its first.
	bad := migrations.Migration{Version: 999, Name: "broken",
		Up: "CREATE TABLE half_done (id int); SELECT * FROM no_such_table;", Down: "DROP TABLE half_done;"}
	if err := migrations.ApplyForTest(ctx, conn, bad); err == nil {
		t.Fatal("a failing migration reported success")
	}
	if tables(t, conn)["half_done"] {
		t.Error("the failed migration's first statement was kept")
	}
	if after, _ := migrations.Version(ctx, conn); after != before {
		t.Errorf("version moved from %d to %d after a failed migration", before, after)
	}
}

func TestParseRejectsBadFileSets(t *testing.T) {
	t.Parallel()
	tests := map[string]fstest.MapFS{
		"bad name":     {"1_x.up.sql": {}, "1_x.down.sql": {}},
		"missing down": {"001_x.up.sql": {Data: []byte("SELECT 1")}},
		"two names":    {"001_x.up.sql": {Data: []byte("SELECT 1")}, "001_y.down.sql": {Data: []byte("SELECT 1")}},
	}
	for name, fsys := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := migrations.ParseForTest(fsys); err == nil {
				t.Errorf("parse accepted %v", fsys)
			}
		})
	}
}
