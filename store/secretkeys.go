package store

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ErrSecretKey is wrapped by the errors of ParseSecretKeys and by a stored
// secret that no configured key opens: a deployment problem (a missing or
// wrong --secret-keys), never the client's.
var ErrSecretKey = errors.New("webhook secret encryption key")

// sealedPrefix starts a stored secret that is encrypted:
// "v1:<key id>:<base64url(nonce ‖ AES-256-GCM ciphertext ‖ tag)>". A stored
// value without it is a plaintext secret written before encryption at rest
// ("whsec_…"), still read until `outflow secrets rotate-key` encrypts it.
const sealedPrefix = "v1:"

// SecretKeyBytes is the size of an encryption key: AES-256.
const SecretKeyBytes = 32

var keyIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// SecretKeys encrypts webhook signing secrets at rest with AES-256-GCM. The
// first key encrypts; every key decrypts, so the operator can rotate: put a
// new key first, keep the old ones until `outflow secrets rotate-key` has
// re-encrypted every row, then drop them. Each ciphertext names its key and
// is bound to its subscription's id (as GCM's additional data), so a row's
// secret cannot be moved to another subscription by editing the database.
//
// Its String, GoString and LogValue name the key ids only, never the keys.
type SecretKeys struct {
	primary string
	ids     []string
	aeads   map[string]cipher.AEAD
}

// ParseSecretKeys reads keys written as comma-separated "id:base64" pairs,
// the first one encrypting, e.g. "k2:<32 bytes in base64>,k1:<…>". Ids are 1
// to 32 characters of letters, digits, '_' and '-'. Errors wrap ErrSecretKey
// and never repeat key material.
func ParseSecretKeys(spec string) (*SecretKeys, error) {
	k := &SecretKeys{aeads: make(map[string]cipher.AEAD)}
	for i, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		id, encoded, ok := strings.Cut(part, ":")
		if !ok || !keyIDPattern.MatchString(id) {
			return nil, fmt.Errorf("%w: entry %d is not id:base64 with an id of 1 to 32 letters, digits, '_' or '-'", ErrSecretKey, i+1)
		}
		raw, err := decodeKey(encoded)
		if err != nil || len(raw) != SecretKeyBytes {
			return nil, fmt.Errorf("%w: key %q is not %d bytes in base64", ErrSecretKey, id, SecretKeyBytes)
		}
		if _, dup := k.aeads[id]; dup {
			return nil, fmt.Errorf("%w: key id %q appears twice", ErrSecretKey, id)
		}
		block, err := aes.NewCipher(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: key %q: %w", ErrSecretKey, id, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("%w: key %q: %w", ErrSecretKey, id, err)
		}
		if i == 0 {
			k.primary = id
		}
		k.ids = append(k.ids, id)
		k.aeads[id] = aead
	}
	return k, nil
}

// decodeKey accepts standard and URL-safe base64, padded or not.
func decodeKey(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if b, err := base64.RawStdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawURLEncoding.DecodeString(s)
}

// GenerateSecretKey returns a new random key under id, written as
// ParseSecretKeys reads it.
func GenerateSecretKey(id string) (string, error) {
	if !keyIDPattern.MatchString(id) {
		return "", fmt.Errorf("%w: invalid key id %q", ErrSecretKey, id)
	}
	var raw [SecretKeyBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("generating a key: %w", err)
	}
	return id + ":" + base64.StdEncoding.EncodeToString(raw[:]), nil
}

// Primary returns the id of the key that encrypts.
func (k *SecretKeys) Primary() string { return k.primary }

// String names the keys by id only.
func (k *SecretKeys) String() string {
	if k == nil {
		return "SecretKeys(none)"
	}
	return "SecretKeys(primary " + k.primary + "; ids " + strings.Join(k.ids, ",") + ")"
}

// GoString is String, so %#v does not print key material either.
func (k *SecretKeys) GoString() string { return k.String() }

// LogValue is String, for slog.
func (k *SecretKeys) LogValue() slog.Value { return slog.StringValue(k.String()) }

// seal encrypts a secret of subscription subID with the primary key. Without
// keys it returns the plaintext (stores built without SecretKeys, in tests
// of other packages).
func (k *SecretKeys) seal(subID, plaintext string) (string, error) {
	if k == nil {
		return plaintext, nil
	}
	aead := k.aeads[k.primary]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("encrypting a webhook secret: %w", err)
	}
	sealed := aead.Seal(nonce, nonce, []byte(plaintext), []byte(subID))
	return sealedPrefix + k.primary + ":" + base64.RawURLEncoding.EncodeToString(sealed), nil
}

// open decrypts a stored secret of subscription subID; a plaintext one
// (stored before encryption) is returned as is.
func (k *SecretKeys) open(subID, stored string) (string, error) {
	rest, sealed := strings.CutPrefix(stored, sealedPrefix)
	if !sealed {
		return stored, nil
	}
	id, encoded, _ := strings.Cut(rest, ":")
	if k == nil {
		return "", fmt.Errorf("%w: subscription %s's secret is encrypted (key %q) but no keys are configured", ErrSecretKey, subID, id)
	}
	aead, ok := k.aeads[id]
	if !ok {
		return "", fmt.Errorf("%w: subscription %s's secret is encrypted with key %q, which is not configured", ErrSecretKey, subID, id)
	}
	raw, err := base64.RawURLEncoding.DecodeString(encoded)
	if err != nil || len(raw) < aead.NonceSize()+aead.Overhead() {
		return "", fmt.Errorf("%w: subscription %s's stored secret is malformed", ErrSecretKey, subID)
	}
	plain, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], []byte(subID))
	if err != nil {
		return "", fmt.Errorf("%w: subscription %s's secret does not decrypt with key %q (wrong key, or the row was altered)", ErrSecretKey, subID, id)
	}
	return string(plain), nil
}

// sealedWith returns the id of the key a stored secret is encrypted with,
// "" for a plaintext one.
func sealedWith(stored string) string {
	rest, sealed := strings.CutPrefix(stored, sealedPrefix)
	if !sealed {
		return ""
	}
	id, _, _ := strings.Cut(rest, ":")
	return id
}

// Has reports whether id is one of the keys.
func (k *SecretKeys) Has(id string) bool { return k != nil && slices.Contains(k.ids, id) }

// reencryptBatch is how many subscriptions ReencryptSecrets rewrites per
// transaction, so that it never holds many row locks for long.
const reencryptBatch = 100

// ReencryptSecrets encrypts every stored webhook secret, current and
// previous, with the primary key: plaintext ones stored before encryption at
// rest and those of other keys. Rows are rewritten in small transactions
// without changing their revision or etag (the secrets themselves do not
// change); running it again is harmless. It returns how many subscriptions
// it rewrote. It fails with ErrSecretKey for a secret no configured key
// opens, after rewriting the batches before it.
func (s *Store) ReencryptSecrets(ctx context.Context) (int, error) {
	if s.keys == nil {
		return 0, fmt.Errorf("%w: no keys configured", ErrSecretKey)
	}
	primary := s.keys.Primary()
	rewritten, after := 0, ""
	for {
		var last string
		n := 0
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, `
				SELECT id, secret, previous_secrets FROM subscriptions
				WHERE id > $1 ORDER BY id LIMIT $2 FOR UPDATE`, after, reencryptBatch)
			if err != nil {
				return interpretError(err)
			}
			type row struct {
				id, secret string
				previous   []PreviousSecret
			}
			var batch []row
			for rows.Next() {
				var r row
				var raw []byte
				if err := rows.Scan(&r.id, &r.secret, &raw); err != nil {
					return interpretError(err)
				}
				if err := json.Unmarshal(raw, &r.previous); err != nil {
					return fmt.Errorf("decoding subscription %s's previous secrets: %w", r.id, err)
				}
				batch = append(batch, r)
			}
			if err := rows.Err(); err != nil {
				return interpretError(err)
			}
			for _, r := range batch {
				last, n = r.id, n+1
				stale := sealedWith(r.secret) != primary
				for _, p := range r.previous {
					stale = stale || sealedWith(p.Secret) != primary
				}
				if !stale {
					continue
				}
				if r.secret, err = s.reseal(r.id, r.secret); err != nil {
					return err
				}
				for i := range r.previous {
					if r.previous[i].Secret, err = s.reseal(r.id, r.previous[i].Secret); err != nil {
						return err
					}
				}
				enc, err := json.Marshal(r.previous)
				if err != nil {
					return fmt.Errorf("encoding subscription %s's previous secrets: %w", r.id, err)
				}
				if _, err := tx.Exec(ctx, `UPDATE subscriptions SET secret = $2, previous_secrets = $3 WHERE id = $1`,
					r.id, r.secret, enc); err != nil {
					return interpretError(err)
				}
				rewritten++
			}
			return nil
		})
		if err != nil {
			return rewritten, fmt.Errorf("re-encrypting webhook secrets: %w", err)
		}
		if n < reencryptBatch {
			return rewritten, nil
		}
		after = last
	}
}

// reseal decrypts a stored secret and encrypts it with the primary key.
func (s *Store) reseal(subID, stored string) (string, error) {
	plain, err := s.keys.open(subID, stored)
	if err != nil {
		return "", err
	}
	return s.keys.seal(subID, plain)
}
