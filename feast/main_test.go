package feast

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine (a connection, a timer, a blocked
// handler) outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
