package migrations

import (
	"context"
	"io/fs"

	"github.com/jackc/pgx/v5"
)

// ParseForTest exposes parse to the external tests.
func ParseForTest(fsys fs.FS) ([]Migration, error) { return parse(fsys) }

// ApplyForTest applies one migration up, as Up would.
func ApplyForTest(ctx context.Context, conn *pgx.Conn, m Migration) error {
	return apply(ctx, conn, Options{}.WithDefaults(), step{m: m, up: true})
}
