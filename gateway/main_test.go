package gateway_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a Gateway leaves a goroutine behind after
// Stop: sources, lanes, writers, the retry worker, the matcher and the API
// must all have ended.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
