package featureserver

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine (an HTTP connection, a Kafka reader, a
// handler parked in injected latency) outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
