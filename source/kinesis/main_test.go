package kinesis

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: a shard
// reader, the lease loop, or an SDK connection left busy past Run's return.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
