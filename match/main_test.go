package match

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind, such as a
// Matcher's listener after Run returned.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
