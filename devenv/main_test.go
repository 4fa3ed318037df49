package devenv

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine (a PostgreSQL server's
// waiter, an HTTP connection of a download) outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
