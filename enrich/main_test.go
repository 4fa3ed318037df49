package enrich

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine (a store call, a batch window timer)
// outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
