package stream

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: a
// partition reader, an enrichment, the partition watcher, or a connection
// of a stream's kafka-go transport left open after Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
