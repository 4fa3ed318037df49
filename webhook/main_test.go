package webhook_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind, such as a
// connection of the Sender's pool or a handler of a test receiver.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
