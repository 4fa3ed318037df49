package main

import (
	"context"
	"fmt"
	"strconv"

	"github.com/outflow-dev/outflow/migrations"
)

func runMigrate(ctx context.Context, env *environment, args []string) error {
	fs := newFlagSet(env, "migrate")
	databaseURL := fs.String("database-url", "", "PostgreSQL connection URL (required)")
	if err := parseFlags(env, fs, args); err != nil {
		return err
	}
	if err := requireFlags(fs, "database-url"); err != nil {
		return err
	}
	action, rest := "up", fs.Args()
	if len(rest) > 0 {
		action, rest = rest[0], rest[1:]
	}
	steps := 0
	switch {
	case action == "down" && len(rest) == 1:
		n, err := strconv.Atoi(rest[0])
		if err != nil || n < 1 {
			return fmt.Errorf("down takes a positive number of migrations to undo, got %q", rest[0])
		}
		steps = n
	case action == "down":
		return fmt.Errorf("down needs the number of migrations to undo, e.g. 'migrate down 1'")
	case len(rest) > 0:
		return fmt.Errorf("unexpected argument %q", rest[0])
	case action != "up" && action != "status":
		return fmt.Errorf("unknown action %q: use up, down N or status", action)
	}

	conn, err := connect(ctx, *databaseURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var done []int
	switch action {
	case "up":
		done, err = migrations.Up(ctx, conn, migrations.Options{})
	case "down":
		done, err = migrations.Down(ctx, conn, steps, migrations.Options{})
	}
	for _, v := range done {
		fmt.Fprintf(env.stdout, "%s %03d\n", action, v)
	}
	if err != nil {
		return err
	}
	version, err := migrations.Version(ctx, conn)
	if err != nil {
		return err
	}
	all, err := migrations.All()
	if err != nil {
		return err
	}
	latest := 0
	if len(all) > 0 {
		latest = all[len(all)-1].Version
	}
	fmt.Fprintf(env.stdout, "schema version %d (latest %d)\n", version, latest)
	return nil
}
