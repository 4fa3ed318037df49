package store

import "github.com/jackc/pgx/v5/pgxpool"

// PoolForTest exposes the pool to tests that check rows directly.
func (s *Store) PoolForTest() *pgxpool.Pool { return s.pool }
