package dispatcher

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: lanes,
// writers and retry workers must all end with Stop or their context.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
