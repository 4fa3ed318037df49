package store

import (
	"context"
	"crypto/rand"
	"fmt"
)

// ServerKey returns the 32-byte key stored under name, creating it on first
// use. Every replica gets the same key, so a token one replica signs (a page
// token, a resume token) is accepted by all of them.
func (s *Store) ServerKey(ctx context.Context, name string) ([]byte, error) {
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return nil, fmt.Errorf("generating server key %q: %w", name, err)
	}
	var key []byte
	// The no-op update makes RETURNING yield the stored row when it exists.
	err := s.pool.QueryRow(ctx, `
		INSERT INTO server_keys (name, key) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET name = excluded.name
		RETURNING key`, name, fresh).Scan(&key)
	if err != nil {
		return nil, fmt.Errorf("reading server key %q: %w", name, interpretError(err))
	}
	return key, nil
}
