package kafka

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: a
// partition reader, a consumer group, a heartbeat, a pooled connection or a
// handler blocked past Run's return.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
