package gateway

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"

	"github.com/outflow-dev/outflow/migrations"
)

// Migrate applies the pending database migrations on one connection to
// databaseURL (Config.Migrate does it before the Gateway starts; `outflow
// dev` before it creates its API key).
func Migrate(ctx context.Context, databaseURL string, logger *slog.Logger) error {
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		// The URL may hold a password: never repeat it.
		return fmt.Errorf("parsing the database URL: invalid connection string")
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connecting to the database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := migrations.Up(ctx, conn, migrations.Options{Logger: logger}); err != nil {
		return fmt.Errorf("applying migrations: %w", err)
	}
	return nil
}
