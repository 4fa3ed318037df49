package webhook_test

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/outflow-dev/outflow/webhook"
)

// Sign produces the webhook-signature header; with a rotated secret still
// overlapping, pass both and the receiver accepts either.
func ExampleSign() {
	secret, err := webhook.ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		panic(err)
	}
	sig := webhook.Sign([]webhook.Secret{secret}, "msg_p5jXN8AQM9LWM0D4loKWxJek",
		time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	fmt.Println(sig)
	fmt.Println(secret) // secrets never print
	// Output:
	// v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=
	// [redacted]
}

// Backoff with a nil random source shows the default schedule without
// jitter: the delay before each attempt.
func ExampleBackoff() {
	for attempt := 1; attempt <= 9; attempt++ {
		fmt.Printf("attempt %d after %v\n", attempt, webhook.Backoff(attempt, nil))
	}
	// Output:
	// attempt 1 after 0s
	// attempt 2 after 5s
	// attempt 3 after 5m0s
	// attempt 4 after 30m0s
	// attempt 5 after 2h0m0s
	// attempt 6 after 5h0m0s
	// attempt 7 after 10h0m0s
	// attempt 8 after 10h0m0s
	// attempt 9 after 10h0m0s
}

// The guard refuses internal addresses unless the operator allow-lists them;
// cloud metadata needs an exact entry.
func ExampleGuard_CheckAddr() {
	g, err := webhook.NewGuard(webhook.GuardConfig{
		AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("169.254.0.0/16")},
	})
	if err != nil {
		panic(err)
	}
	for _, a := range []string{"8.8.8.8", "10.1.2.3", "127.0.0.1", "::ffff:127.0.0.1", "169.254.169.254"} {
		fmt.Println(a, g.CheckAddr(netip.MustParseAddr(a)))
	}
	// Output:
	// 8.8.8.8 <nil>
	// 10.1.2.3 <nil>
	// 127.0.0.1 address 127.0.0.1 blocked by the SSRF guard: loopback
	// ::ffff:127.0.0.1 address ::ffff:127.0.0.1 blocked by the SSRF guard: loopback
	// 169.254.169.254 address 169.254.169.254 blocked by the SSRF guard: cloud metadata service
}
