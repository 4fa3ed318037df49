package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// APIKeyPrefix starts every API key, so leaked keys are easy to recognise in
// secret scanners.
const APIKeyPrefix = "ofk_"

// APIKey describes a stored key; the plaintext is never stored.
type APIKey struct {
	ID         string
	TenantID   string
	TenantName string
	Name       string
	CreateTime time.Time
	// RevokeTime is zero while the key is valid.
	RevokeTime time.Time
}

// CreateAPIKey creates a key for the tenant named tenantName, creating the
// tenant when it does not exist yet, and returns the key's plaintext, which is
// shown once and never stored.
func (s *Store) CreateAPIKey(ctx context.Context, tenantName, keyName string) (APIKey, string, error) {
	if tenantName == "" {
		return APIKey{}, "", errors.New("creating an API key: the tenant name is empty")
	}
	secret, err := randomToken(32)
	if err != nil {
		return APIKey{}, "", err
	}
	plaintext := APIKeyPrefix + secret
	keyID, err := NewID("key_")
	if err != nil {
		return APIKey{}, "", err
	}
	tenantID, err := NewID("ten_")
	if err != nil {
		return APIKey{}, "", err
	}
	key := APIKey{ID: keyID, TenantName: tenantName, Name: keyName}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Insert-or-read in one statement so two concurrent first keys of a
		// tenant do not race.
		err := tx.QueryRow(ctx, `
			WITH ins AS (
				INSERT INTO tenants (id, name) VALUES ($1, $2)
				ON CONFLICT (name) DO NOTHING
				RETURNING id)
			SELECT id FROM ins UNION ALL SELECT id FROM tenants WHERE name = $2
			LIMIT 1`, tenantID, tenantName).Scan(&key.TenantID)
		if err != nil {
			return fmt.Errorf("creating tenant %q: %w", tenantName, interpretError(err))
		}
		err = tx.QueryRow(ctx, `
			INSERT INTO api_keys (id, tenant_id, name, key_hash) VALUES ($1, $2, $3, $4)
			RETURNING create_time`, key.ID, key.TenantID, keyName, hashKey(plaintext)).Scan(&key.CreateTime)
		if err != nil {
			return fmt.Errorf("storing the API key: %w", interpretError(err))
		}
		return nil
	})
	if err != nil {
		return APIKey{}, "", err
	}
	return key, plaintext, nil
}

// ListAPIKeys returns every key of every tenant, newest first.
func (s *Store) ListAPIKeys(ctx context.Context) ([]APIKey, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT k.id, k.tenant_id, t.name, k.name, k.create_time, k.revoke_time
		FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
		ORDER BY k.create_time DESC, k.id`)
	if err != nil {
		return nil, fmt.Errorf("listing API keys: %w", interpretError(err))
	}
	keys, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (APIKey, error) {
		var k APIKey
		var revoked *time.Time
		err := row.Scan(&k.ID, &k.TenantID, &k.TenantName, &k.Name, &k.CreateTime, &revoked)
		if revoked != nil {
			k.RevokeTime = *revoked
		}
		return k, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing API keys: %w", interpretError(err))
	}
	return keys, nil
}

// RevokeAPIKey revokes the key with the given id. Revoking a revoked key is
// not an error; an unknown id is ErrNotFound.
func (s *Store) RevokeAPIKey(ctx context.Context, id string) error {
	tag, err := s.pool.Exec(ctx,
		`UPDATE api_keys SET revoke_time = COALESCE(revoke_time, now()) WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("revoking API key %s: %w", id, interpretError(err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("revoking API key %s: %w", id, ErrNotFound)
	}
	return nil
}

// Authenticate returns the tenant id of a valid (unrevoked) key, or
// ErrNotFound.
func (s *Store) Authenticate(ctx context.Context, plaintext string) (string, error) {
	k, err := s.AuthenticateKey(ctx, plaintext)
	return k.TenantID, err
}

// KeyIdentity is what a valid API key stands for.
type KeyIdentity struct {
	// ID is the key's id ("key_…"), for checking later whether it is still
	// valid (ValidAPIKeys) without keeping its plaintext.
	ID string
	// TenantID owns the key.
	TenantID string
}

// AuthenticateKey returns the id and tenant of a valid (unrevoked) key, or
// ErrNotFound.
func (s *Store) AuthenticateKey(ctx context.Context, plaintext string) (KeyIdentity, error) {
	if !strings.HasPrefix(plaintext, APIKeyPrefix) {
		return KeyIdentity{}, ErrNotFound
	}
	var k KeyIdentity
	err := s.pool.QueryRow(ctx,
		`SELECT id, tenant_id FROM api_keys WHERE key_hash = $1 AND revoke_time IS NULL`,
		hashKey(plaintext)).Scan(&k.ID, &k.TenantID)
	if err != nil {
		return KeyIdentity{}, fmt.Errorf("authenticating an API key: %w", interpretError(err))
	}
	return k, nil
}

// ValidAPIKeys returns which of the key ids are still valid: not revoked, and
// not deleted with their tenant. The API server asks it periodically for the
// keys of its open streams.
func (s *Store) ValidAPIKeys(ctx context.Context, ids []string) (map[string]struct{}, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT id FROM api_keys WHERE id = ANY($1) AND revoke_time IS NULL`, ids)
	if err != nil {
		return nil, fmt.Errorf("checking API keys: %w", interpretError(err))
	}
	valid, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("checking API keys: %w", interpretError(err))
	}
	out := make(map[string]struct{}, len(valid))
	for _, id := range valid {
		out[id] = struct{}{}
	}
	return out, nil
}

func hashKey(plaintext string) []byte {
	sum := sha256.Sum256([]byte(plaintext))
	return sum[:]
}

// NewID returns prefix followed by 16 random bytes in unpadded base32
// (lowercase), for example "sub_" + 26 characters.
func NewID(prefix string) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating an id: %w", err)
	}
	return prefix + strings.ToLower(base32NoPad.EncodeToString(b[:])), nil
}

func randomToken(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating a key: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
