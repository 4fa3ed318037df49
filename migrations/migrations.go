// Package migrations holds Outflow's PostgreSQL schema as numbered SQL files
// (NNN_name.up.sql and NNN_name.down.sql, embedded in the binary) and the
// runner that applies them.
//
// The runner is ours rather than a library's because of one property we need:
// each migration runs in its own transaction together with the row that
// records it, so a failed migration leaves the database exactly at the last
// good version, with no "dirty" state to repair by hand. Each transaction sets
// a lock timeout, so a migration waiting on a busy table fails fast instead of
// queueing every query behind it. A session-level advisory lock serialises
// runners, so replicas that all migrate at start are safe.
package migrations

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"regexp"
	"sort"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

//go:embed *.sql
var files embed.FS

// Migration is one schema change with the SQL that makes and undoes it.
type Migration struct {
	Version int
	Name    string
	Up      string
	Down    string
}

// Options tunes a run. The zero value is usable.
type Options struct {
	// LockTimeout bounds how long one statement waits for a table lock.
	// Defaults to 10s.
	LockTimeout time.Duration
	// StatementTimeout bounds one statement. Defaults to 5m.
	StatementTimeout time.Duration
	// Logger receives one line per applied migration. Defaults to discarding.
	Logger *slog.Logger
}

// WithDefaults returns o with its zero fields set to their defaults.
func (o Options) WithDefaults() Options {
	if o.LockTimeout <= 0 {
		o.LockTimeout = 10 * time.Second
	}
	if o.StatementTimeout <= 0 {
		o.StatementTimeout = 5 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// advisoryLockKey is an arbitrary constant ("outflow" in ASCII) naming the
// advisory lock that serialises migration runs.
const advisoryLockKey = 0x6f7574666c6f77

var fileName = regexp.MustCompile(`^(\d{3,})_([a-z0-9_]+)\.(up|down)\.sql$`)

// All returns the embedded migrations in version order. It fails when a
// version lacks its up or down file, or two files claim one version.
func All() ([]Migration, error) {
	return parse(files)
}

func parse(fsys fs.FS) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("reading migrations: %w", err)
	}
	byVersion := map[int]*Migration{}
	for _, e := range entries {
		m := fileName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration file %q is not named NNN_name.up.sql or NNN_name.down.sql", e.Name())
		}
		version, _ := strconv.Atoi(m[1])
		body, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, fmt.Errorf("reading migration %s: %w", e.Name(), err)
		}
		mig := byVersion[version]
		if mig == nil {
			mig = &Migration{Version: version, Name: m[2]}
			byVersion[version] = mig
		}
		if mig.Name != m[2] {
			return nil, fmt.Errorf("migration %d has two names, %q and %q", version, mig.Name, m[2])
		}
		if m[3] == "up" {
			mig.Up = string(body)
		} else {
			mig.Down = string(body)
		}
	}
	out := make([]Migration, 0, len(byVersion))
	for _, m := range byVersion {
		if m.Up == "" || m.Down == "" {
			return nil, fmt.Errorf("migration %03d_%s needs both an up and a down file", m.Version, m.Name)
		}
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// Up applies every migration newer than the database's version and returns
// the versions it applied.
func Up(ctx context.Context, conn *pgx.Conn, opts Options) ([]int, error) {
	all, err := All()
	if err != nil {
		return nil, err
	}
	return run(ctx, conn, opts.WithDefaults(), func(current int) []step {
		var steps []step
		for _, m := range all {
			if m.Version > current {
				steps = append(steps, step{m, true})
			}
		}
		return steps
	})
}

// Down undoes the newest n applied migrations (all of them when n <= 0) and
// returns the versions it undid.
func Down(ctx context.Context, conn *pgx.Conn, n int, opts Options) ([]int, error) {
	all, err := All()
	if err != nil {
		return nil, err
	}
	return run(ctx, conn, opts.WithDefaults(), func(current int) []step {
		var steps []step
		for i := len(all) - 1; i >= 0; i-- {
			if all[i].Version <= current && (n <= 0 || len(steps) < n) {
				steps = append(steps, step{all[i], false})
			}
		}
		return steps
	})
}

// Version returns the newest applied migration, 0 for an empty database.
func Version(ctx context.Context, conn *pgx.Conn) (int, error) {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('schema_migrations') IS NOT NULL").Scan(&exists); err != nil {
		return 0, fmt.Errorf("looking for schema_migrations: %w", err)
	}
	if !exists {
		return 0, nil
	}
	return currentVersion(ctx, conn)
}

type step struct {
	m  Migration
	up bool
}

func run(ctx context.Context, conn *pgx.Conn, opts Options, plan func(current int) []step) ([]int, error) {
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(advisoryLockKey)); err != nil {
		return nil, fmt.Errorf("taking the migration lock: %w", err)
	}
	defer func() {
		// A fresh context: the caller's may be done, and the lock must not
		// outlive this run on a pooled connection.
		unlockCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, _ = conn.Exec(unlockCtx, "SELECT pg_advisory_unlock($1)", int64(advisoryLockKey))
	}()

	if err := ensureTable(ctx, conn); err != nil {
		return nil, err
	}
	current, err := currentVersion(ctx, conn)
	if err != nil {
		return nil, err
	}
	var done []int
	for _, s := range plan(current) {
		if err := apply(ctx, conn, opts, s); err != nil {
			return done, err
		}
		done = append(done, s.m.Version)
		direction := "up"
		if !s.up {
			direction = "down"
		}
		opts.Logger.InfoContext(ctx, "migration applied",
			slog.Int("version", s.m.Version), slog.String("name", s.m.Name), slog.String("direction", direction))
	}
	return done, nil
}

func apply(ctx context.Context, conn *pgx.Conn, opts Options, s step) error {
	name := fmt.Sprintf("%03d_%s", s.m.Version, s.m.Name)
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		timeouts := fmt.Sprintf("SET LOCAL lock_timeout = %d; SET LOCAL statement_timeout = %d",
			opts.LockTimeout.Milliseconds(), opts.StatementTimeout.Milliseconds())
		if _, err := tx.Exec(ctx, timeouts); err != nil {
			return fmt.Errorf("migration %s: setting timeouts: %w", name, err)
		}
		sql, record, args := s.m.Up, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", []any{s.m.Version, s.m.Name}
		if !s.up {
			sql, record, args = s.m.Down, "DELETE FROM schema_migrations WHERE version = $1", []any{s.m.Version}
		}
		// No arguments: pgx sends the file with the simple protocol, which
		// accepts several statements.
		if _, err := tx.Exec(ctx, sql); err != nil {
			return fmt.Errorf("migration %s: %w", name, err)
		}
		if _, err := tx.Exec(ctx, record, args...); err != nil {
			return fmt.Errorf("migration %s: recording it: %w", name, err)
		}
		return nil
	})
}

func ensureTable(ctx context.Context, conn *pgx.Conn) error {
	_, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer     PRIMARY KEY,
		name       text        NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`)
	if err != nil {
		return fmt.Errorf("creating schema_migrations: %w", err)
	}
	return nil
}

func currentVersion(ctx context.Context, conn *pgx.Conn) (int, error) {
	var v int
	if err := conn.QueryRow(ctx, "SELECT COALESCE(max(version), 0) FROM schema_migrations").Scan(&v); err != nil {
		return 0, fmt.Errorf("reading the schema version: %w", err)
	}
	return v, nil
}
