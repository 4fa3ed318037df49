package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/outflow-dev/outflow/store"
)

func runAPIKey(ctx context.Context, env *environment, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(env.stdout, `Usage: outflow apikey <create|list|revoke> [flags]

  create --tenant NAME [--name LABEL]  create a key (and the tenant, if new); prints the key once
  list                                 list keys (never their secret part)
  revoke KEY_ID                        revoke a key; calls with it fail from then on

Each takes --database-url (env OUTFLOW_DATABASE_URL).`)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	sub, args := args[0], args[1:]
	fs := newFlagSet(env, "apikey "+sub)
	databaseURL := fs.String("database-url", "", "PostgreSQL connection URL (required)")
	var tenant, name *string
	switch sub {
	case "create":
		tenant = fs.String("tenant", "", "tenant the key belongs to, created when new (required)")
		name = fs.String("name", "", "label shown by 'apikey list'")
	case "list", "revoke":
	default:
		return fmt.Errorf("unknown subcommand %q: use create, list or revoke", sub)
	}
	if err := parseFlags(env, fs, args); err != nil {
		return err
	}
	required := []string{"database-url"}
	if sub == "create" {
		required = append(required, "tenant")
	}
	if err := requireFlags(fs, required...); err != nil {
		return err
	}
	if sub == "revoke" && fs.NArg() != 1 {
		return fmt.Errorf("revoke takes exactly one key id, e.g. 'apikey revoke key_…'")
	} else if sub != "revoke" {
		if err := noArgs(fs); err != nil {
			return err
		}
	}

	pool, err := store.Open(ctx, *databaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	st := store.New(pool)

	switch sub {
	case "create":
		key, plaintext, err := st.CreateAPIKey(ctx, *tenant, *name)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.stderr, "created API key %s for tenant %q; it is shown only now:\n", key.ID, key.TenantName)
		fmt.Fprintln(env.stdout, plaintext)
	case "list":
		keys, err := st.ListAPIKeys(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tTENANT\tNAME\tCREATED\tREVOKED")
		for _, k := range keys {
			revoked := "-"
			if !k.RevokeTime.IsZero() {
				revoked = k.RevokeTime.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.ID, k.TenantName, k.Name, k.CreateTime.UTC().Format(time.RFC3339), revoked)
		}
		return tw.Flush()
	case "revoke":
		if err := st.RevokeAPIKey(ctx, fs.Arg(0)); err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "revoked %s\n", fs.Arg(0))
	}
	return nil
}
