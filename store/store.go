// Package store is Outflow's one seam to PostgreSQL: tenants, API keys,
// subscriptions and the keys the servers share. Driver errors are translated
// to the sentinels below in exactly one place, interpretError, so callers
// never look at pgx or SQLSTATE codes.
package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Domain errors returned (wrapped) by Store methods; test them with errors.Is.
var (
	// ErrNotFound means the row does not exist, or belongs to another tenant.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists means a unique constraint (such as a subscription name
	// within a tenant) refused the write.
	ErrAlreadyExists = errors.New("already exists")
	// ErrConflict means the row changed since the caller read it (a stale
	// etag or revision).
	ErrConflict = errors.New("changed concurrently")
	// ErrLimitExceeded means a per-tenant quota refused the write.
	ErrLimitExceeded = errors.New("limit exceeded")
)

// Store reads and writes Outflow's tables through a pgx connection pool.
type Store struct {
	pool *pgxpool.Pool
	// keys encrypt webhook secrets at rest; nil stores them in plaintext.
	keys *SecretKeys
}

// Option configures a Store.
type Option func(*Store)

// WithSecretKeys encrypts the webhook secrets the Store writes with keys,
// and decrypts those it reads. Without it secrets are written in plaintext
// and encrypted ones cannot be read (ErrSecretKey): the gateway always
// passes it; it is optional for tools and tests that never touch secrets.
func WithSecretKeys(keys *SecretKeys) Option {
	return func(s *Store) { s.keys = keys }
}

// New returns a Store over pool. The pool stays the caller's to close.
func New(pool *pgxpool.Pool, opts ...Option) *Store {
	s := &Store{pool: pool}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Open connects a pool to the database at url and checks it answers.
func Open(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's message can echo the URL, password included: keep only the kind.
		return nil, errors.New("parsing the database URL: invalid connection string")
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("creating the database pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to the database: %w", err)
	}
	return pool, nil
}

// Ping checks the database answers; /readyz uses it.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("pinging the database: %w", err)
	}
	return nil
}

// SQLSTATE codes interpretError knows.
const (
	uniqueViolation = "23505"
)

// interpretError translates a driver error into a domain sentinel (kept in
// the chain with the driver's error, so logs still show the cause).
func interpretError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == uniqueViolation {
		return fmt.Errorf("%w (%s)", ErrAlreadyExists, pgErr.ConstraintName)
	}
	return err
}
