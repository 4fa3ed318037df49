package main

import (
	"context"
	"fmt"

	"github.com/outflow-dev/outflow/store"
)

// secretKeysUsage documents --secret-keys wherever a command takes it.
const secretKeysUsage = "keys that encrypt webhook secrets at rest, comma-separated id:base64 (32 bytes each; make one with 'outflow secrets generate-key'); the first encrypts, all decrypt, so a new key goes first and old ones stay until 'outflow secrets rotate-key' has run (prefer the environment variable)"

func runSecrets(ctx context.Context, env *environment, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(env.stdout, `Usage: outflow secrets <generate-key|rotate-key> [flags]

  generate-key [--id ID]  print a new random key for --secret-keys (id:base64)
  rotate-key              re-encrypt every stored webhook secret with the first of
                          --secret-keys (rows stored in plaintext before encryption
                          at rest included); old keys may be dropped afterwards

rotate-key takes --database-url (env OUTFLOW_DATABASE_URL) and --secret-keys
(env OUTFLOW_SECRET_KEYS).`)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	sub, args := args[0], args[1:]
	fs := newFlagSet(env, "secrets "+sub)
	switch sub {
	case "generate-key":
		id := fs.String("id", "k1", "id of the new key, stored with every secret it encrypts (1 to 32 letters, digits, '_' or '-')")
		if err := parseFlags(env, fs, args); err != nil {
			return err
		}
		if err := noArgs(fs); err != nil {
			return err
		}
		spec, err := store.GenerateSecretKey(*id)
		if err != nil {
			return err
		}
		fmt.Fprintln(env.stdout, spec)
		return nil
	case "rotate-key":
		databaseURL := fs.String("database-url", "", "PostgreSQL connection URL (required)")
		keys := fs.String("secret-keys", "", secretKeysUsage+" (required)")
		if err := parseFlags(env, fs, args); err != nil {
			return err
		}
		if err := noArgs(fs); err != nil {
			return err
		}
		if err := requireFlags(fs, "database-url", "secret-keys"); err != nil {
			return err
		}
		ring, err := store.ParseSecretKeys(*keys)
		if err != nil {
			return fmt.Errorf("--secret-keys: %w", err)
		}
		pool, err := store.Open(ctx, *databaseURL)
		if err != nil {
			return err
		}
		defer pool.Close()
		n, err := store.New(pool, store.WithSecretKeys(ring)).ReencryptSecrets(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "re-encrypted the webhook secrets of %d subscriptions with key %s\n", n, ring.Primary())
		return nil
	}
	return fmt.Errorf("unknown subcommand %q: use generate-key or rotate-key", sub)
}
